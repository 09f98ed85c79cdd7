"""The report's evaluation section: metrics beside the baselines, curves, slices, fairness
gaps, the membership audit beside differential privacy, and the gate's verdict."""

from __future__ import annotations

from typing import Any

import pandas as pd

from stages.report.common import _dict, _missing, _num
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


def _metric_table(ev: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[dict]:
    """One row per headline metric the model or a baseline has."""
    table = []
    for key, label, higher in HEADLINE:
        if ev.get(key) is None and not any(b.get(key) is not None for b in baselines.values()):
            continue
        table.append(
            {
                "label": label,
                "model": ev.get(key),
                "baselines": [b.get(key) for b in baselines.values()],
                "higher_is_better": higher,
            }
        )
    return table


def _evaluation_figures(ev: dict[str, Any], plots: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Confusion matrix, ROC, PR and reliability figures from evaluate's plot tables."""
    figures: dict[str, str] = {}
    conf = plots.get("confusion")
    if conf is not None and {"actual", "predicted"} <= set(conf.columns) and len(conf):
        order = list(_dict(ev.get("per_class")))  # the schema's class order where known
        seen = set(conf["actual"].astype(str)) | set(conf["predicted"].astype(str))
        labels = [c for c in order if c in seen] + sorted(seen - set(order))
        matrix = pd.crosstab(conf["actual"].astype(str), conf["predicted"].astype(str)).reindex(
            index=labels, columns=labels, fill_value=0
        )
        figures["confusion"] = plot_confusion(matrix)
    several = "curve" in getattr(plots.get("roc"), "columns", ())
    roc = plots.get("roc")
    if roc is not None and {"fpr", "tpr"} <= set(roc.columns) and len(roc):
        auc = _num(ev.get("roc_auc"))
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
        ap = _num(ev.get("pr_auc"))
        prevalence = None if several else _prevalence(ev)
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
        figures["calibration"] = plot_reliability(cal, _num(ev.get("ece")))
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


def _gap_rows(fairness: dict[str, Any], thresholds: dict[str, Any]) -> list[dict[str, Any]]:
    """Each fairness gap as evaluate wrote it ({value, groups, reason}) beside its limit; a gap
    of fewer than two groups reads "not measured" with the reason, never "within limit"."""
    rows = []
    for gap, by_col in fairness.items():
        limit = thresholds.get(f"max_{gap}")
        for col, g in _dict(by_col).items():
            g = _dict(g)
            x = _num(g.get("value"))
            rows.append(
                {
                    "gap": gap.replace("_", " "),
                    "column": col,
                    "value": x,
                    "groups": g.get("groups"),
                    "reason": g.get("reason"),
                    "limit": limit,
                    "ok": None if limit is None or x is None else x <= float(limit),
                }
            )
    return rows


def model_privacy(ev: dict[str, Any], train: dict[str, Any] | None) -> dict[str, Any]:
    """The membership-inference audit of the model (and of the logistic baseline) beside the
    differential-privacy budget train spent (metrics/train.json `dp`), or "DP off"."""
    audit = _dict(ev.get("membership"))
    lr_audit = _dict(_dict(_dict(ev.get("baselines")).get("logistic_regression")).get("membership"))
    dp = _dict((train or {}).get("dp"))
    return {
        "audited": bool(audit),
        "auc": _num(audit.get("auc")),
        "advantage": _num(audit.get("advantage")),
        "members": audit.get("members"),
        "non_members": audit.get("non_members"),
        "attack": audit.get("attack"),
        "baseline_auc": _num(lr_audit.get("auc")),
        "limit": _dict(_dict(ev.get("gate")).get("thresholds")).get("max_membership_auc"),
        "dp_enabled": bool(dp.get("enabled")),
        "dp": {k: dp.get(k) for k in ("epsilon", "delta", "max_grad_norm", "noise_multiplier")},
        "train_known": train is not None,
    }


def evaluation_section(
    ev: dict[str, Any] | None,
    plots: dict[str, pd.DataFrame],
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics beside the baselines, per-class scores, curves, slices, fairness gaps, the
    membership audit beside ε, and the gate."""
    if ev is None and not any(p in plots for p in ("confusion", "roc", "pr", "calibration")):
        return _missing("evaluate")
    ev = ev or {}
    baselines = {k: _dict(v) for k, v in _dict(ev.get("baselines")).items()}
    per_class = [
        {"class": c, **{k: _dict(v).get(k) for k in ("precision", "recall", "f1", "support")}}
        for c, v in _dict(ev.get("per_class")).items()
    ]
    slice_rows, slice_figure = _slice_block(plots.get("slices"))
    gate = _dict(ev.get("gate"))
    thresholds = _dict(gate.get("thresholds"))
    lift = _dict(ev.get("lift_over_logistic_regression"))
    return {
        "available": True,
        "n": ev.get("n"),
        "positive_class": ev.get("positive_class"),
        "macro_classes": _dict(ev.get("macro_classes")),
        "lift_points": _num(lift.get("accuracy_points")),
        "baseline_names": [n.replace("_", " ") for n in baselines],
        "table": _metric_table(ev, baselines),
        "per_class": per_class,
        "figures": _evaluation_figures(ev, plots),
        "slices": slice_rows,
        "slice_columns": list(slice_rows[0]) if slice_rows else [],
        "slice_figure": slice_figure,
        "gaps": _gap_rows(_dict(ev.get("fairness")), thresholds),
        "model_privacy": model_privacy(ev, train),
        "gate": {
            "known": "passed" in gate,
            "passed": bool(gate.get("passed")),
            "failures": [str(f) for f in gate.get("failures") or []],
            "skipped": [str(f) for f in gate.get("skipped") or []],
            "thresholds": thresholds,
        },
    }


def _prevalence(ev: dict[str, Any]) -> float | None:
    """Share of the positive class in the test split, from the per-class supports."""
    per_class = _dict(ev.get("per_class"))
    positive = ev.get("positive_class") or (list(per_class)[-1] if per_class else None)
    supports = {c: _num(_dict(v).get("support")) for c, v in per_class.items()}
    total = sum(v for v in supports.values() if v)
    if not total or supports.get(positive) is None:
        return None
    return supports[positive] / total
