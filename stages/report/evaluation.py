"""The report's evaluation section: metrics beside the baselines, curves, slices, fairness
gaps, the membership audit beside differential privacy, and the gate's verdict."""

from __future__ import annotations

from typing import Any

import pandas as pd

from stages.lib.summaries import EvaluateSummary, Fairness, Scores, TrainSummary
from stages.report.common import _missing, _num
from stages.report.plots import (
    plot_confusion,
    plot_curve,
    plot_reliability,
    plot_slices,
)

HEADLINE = (
    ("accuracy", "Accuracy", True),
    ("macro_precision", "Macro precision", True),
    ("macro_recall", "Macro recall", True),
    ("macro_f1", "Macro F1", True),
    ("roc_auc", "ROC AUC", True),
    ("roc_auc_micro", "ROC AUC (micro average)", True),
    ("pr_auc", "PR AUC (average precision)", True),
    ("pr_auc_micro", "PR AUC (micro average)", True),
    ("log_loss", "Log loss", False),
    ("ece", "Expected calibration error", False),
)


def _metric_table(ev: EvaluateSummary | None, baselines: dict[str, Scores]) -> list[dict]:
    """One row per headline metric the model or a baseline has."""
    table = []
    for key, label, higher in HEADLINE:
        model = getattr(ev, key, None)  # HEADLINE names fields of Scores (ece: the model's only)
        others = [getattr(b, key, None) for b in baselines.values()]
        if model is None and all(x is None for x in others):
            continue
        table.append(
            {"label": label, "model": model, "baselines": others, "higher_is_better": higher}
        )
    return table


def _evaluation_figures(
    ev: EvaluateSummary | None, plots: dict[str, pd.DataFrame]
) -> dict[str, str]:
    """Confusion matrix, ROC, PR and reliability figures from evaluate's plot tables."""
    figures: dict[str, str] = {}
    conf = plots.get("confusion")
    if conf is not None and {"actual", "predicted"} <= set(conf.columns) and len(conf):
        order = list(ev.per_class) if ev else []  # the schema's class order where known
        seen = set(conf["actual"].astype(str)) | set(conf["predicted"].astype(str))
        labels = [c for c in order if c in seen] + sorted(seen - set(order))
        matrix = pd.crosstab(conf["actual"].astype(str), conf["predicted"].astype(str)).reindex(
            index=labels, columns=labels, fill_value=0
        )
        figures["confusion"] = plot_confusion(matrix)
    several = "curve" in getattr(plots.get("roc"), "columns", ())
    roc = plots.get("roc")
    if roc is not None and {"fpr", "tpr"} <= set(roc.columns) and len(roc):
        auc = _num(ev.roc_auc) if ev else None
        figures["roc"] = plot_curve(
            roc,
            "fpr",
            "tpr",
            "ROC curves, one class against the rest" if several else "ROC curve",
            "false positive rate",
            "true positive rate (recall)",
            ((0, 1), (0, 1)),
            "chance",
            "model" + (f" (AUC {auc:.3f})" if auc is not None else ""),
        )
    pr = plots.get("pr")
    if pr is not None and {"recall", "precision"} <= set(pr.columns) and len(pr):
        ap = _num(ev.pr_auc) if ev else None
        prevalence = None if several or ev is None else _prevalence(ev)
        figures["pr"] = plot_curve(
            pr,
            "recall",
            "precision",
            "Precision-recall curves, one class against the rest"
            if several
            else "Precision-recall curve",
            "recall (true positive rate)",
            "precision",
            ((0, 1), (prevalence, prevalence)) if prevalence is not None else None,
            f"chance (prevalence {prevalence:.2f})" if prevalence is not None else "",
            "model" + (f" (AP {ap:.3f})" if ap is not None else ""),
        )
    cal = plots.get("calibration")
    if cal is not None and {"mean_predicted", "fraction_positive"} <= set(cal.columns) and len(cal):
        figures["calibration"] = plot_reliability(cal, _num(ev.ece) if ev else None)
    return figures


def _slice_block(slices: pd.DataFrame | None) -> tuple[list[dict], str | None]:
    """The per-group table and figure from plots/slices.csv."""
    if slices is None or not {"column", "group"} <= set(slices.columns) or not len(slices):
        return [], None
    metrics = tuple(m for m in ("accuracy", "selection_rate", "tpr", "fpr") if m in slices.columns)
    figure = plot_slices(slices, metrics) if "n" in slices.columns and metrics else None
    keep = [
        c
        for c in ("column", "group", "n", "share", "base_rate", *metrics, "roc_auc")
        if c in slices.columns
    ]
    return slices[keep].to_dict("records"), figure


def _gap_rows(fairness: Fairness | None, thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """Each fairness gap as evaluate wrote it ({value, groups, reason}) beside its limit; a gap
    of fewer than two groups reads "not measured" with the reason, never "within limit"."""
    rows = []
    for gap, by_col in fairness or ():
        limit = thresholds.get(f"max_{gap}")
        for col, g in by_col.items():
            x = _num(g.value)
            rows.append(
                {
                    "gap": gap.replace("_", " "),
                    "column": col,
                    "value": x,
                    "groups": g.groups,
                    "reason": g.reason,
                    "limit": limit,
                    "ok": None if limit is None or x is None else x <= float(limit),
                }
            )
    return rows


def model_privacy(ev: EvaluateSummary | None, train: TrainSummary | None) -> dict[str, Any]:
    """The membership-inference audit of the model (and of the logistic baseline) beside the
    differential-privacy budget train spent (metrics/train.json `dp`), or "DP off"."""
    audit = ev.membership if ev else None
    logistic = ev.baselines.logistic_regression if ev else None
    lr_audit = logistic.membership if logistic else None
    dp = train.dp if train else None
    return {
        "audited": audit is not None,
        "auc": _num(audit.auc) if audit else None,
        "advantage": _num(audit.advantage) if audit else None,
        "members": audit.members if audit else None,
        "non_members": audit.non_members if audit else None,
        "attack": audit.attack if audit else None,
        "baseline_auc": _num(lr_audit.auc) if lr_audit else None,
        "limit": ev.gate.thresholds.get("max_membership_auc") if ev else None,
        "dp_enabled": bool(dp and dp.enabled),
        "dp": {
            "epsilon": dp.epsilon if dp else None,
            "delta": dp.delta if dp else None,
            "max_grad_norm": dp.max_grad_norm if dp else None,
            "noise_multiplier": dp.noise_multiplier if dp else None,
        },
        "train_known": train is not None,
    }


def _baselines(ev: EvaluateSummary | None) -> dict[str, Scores]:
    """The baselines evaluate measured, by name in the metrics file's (sorted) order."""
    if ev is None:
        return {}
    return {name: b for name, b in sorted(ev.baselines) if b is not None}


def evaluation_section(
    ev: EvaluateSummary | None,
    plots: dict[str, pd.DataFrame],
    train: TrainSummary | None = None,
) -> dict[str, Any]:
    """Metrics beside the baselines, per-class scores, curves, slices, fairness gaps, the
    membership audit beside ε, and the gate."""
    if ev is None and not any(p in plots for p in ("confusion", "roc", "pr", "calibration")):
        return _missing("evaluate")
    baselines = _baselines(ev)
    per_class = [{"class": c, **s.model_dump()} for c, s in ev.per_class.items()] if ev else []
    slice_rows, slice_figure = _slice_block(plots.get("slices"))
    gate = ev.gate if ev else None
    thresholds = dict(gate.thresholds) if gate else {}
    return {
        "available": True,
        "n": ev.n if ev else None,
        "positive_class": ev.positive_class if ev else None,
        "macro_classes": ev.macro_classes.model_dump() if ev else {},
        "lift_points": _num(ev.lift_over_logistic_regression.accuracy_points) if ev else None,
        "baseline_names": [n.replace("_", " ") for n in baselines],
        "table": _metric_table(ev, baselines),
        "per_class": per_class,
        "figures": _evaluation_figures(ev, plots),
        "slices": slice_rows,
        "slice_columns": list(slice_rows[0]) if slice_rows else [],
        "slice_figure": slice_figure,
        "gaps": _gap_rows(ev.fairness if ev else None, thresholds),
        "model_privacy": model_privacy(ev, train),
        "gate": {
            "known": gate is not None,
            "passed": bool(gate and gate.passed),
            "failures": list(gate.failures) if gate else [],
            "skipped": list(gate.skipped) if gate else [],
            "thresholds": thresholds,
        },
    }


def _prevalence(ev: EvaluateSummary) -> float | None:
    """Share of the positive class in the test split, from the per-class supports."""
    positive = ev.positive_class or (list(ev.per_class)[-1] if ev.per_class else None)
    supports = {c: v.support for c, v in ev.per_class.items()}
    total = sum(v for v in supports.values() if v)
    if not total or supports.get(positive) is None:
        return None
    return supports[positive] / total
