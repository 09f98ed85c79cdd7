"""Evaluate the model on the test split: metrics, curves, calibration, slices, baselines, a
membership-inference audit and the gate's verdict.

The verdict (passed, or failed with its reasons) is written to metrics/evaluate.json and the stage
exits 0, so that `dvc repro` still builds the report, which shows FAILED at its top; the final
`gate` stage (stages/gate.py) then stops the pipeline with exit 3.

The pure functions live in stages/lib: eval_metrics.py (scores, curves, calibration), fairness.py
(slices and gaps), eval_baselines.py (baselines, membership audit); the gate is here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stages.lib.config import EvaluateConfig, GateConfig, pipeline_params
from stages.lib.errors import run_stage
from stages.lib.eval_baselines import Baselines, baselines, member_sample, membership_audit
from stages.lib.eval_metrics import (
    calibration,
    classification_metrics,
    confusion_frame,
    encode_labels,
    multiclass_curves,
    roc_pr_curves,
)
from stages.lib.fairness import slice_metrics
from stages.lib.features import FeatureSpec, column_policies, feature_spec
from stages.lib.io import read_dataset, write_text_atomic
from stages.lib.params import ParamsError
from stages.lib.paths import MODEL_PATH, PLOTS_DIR
from stages.lib.paths import TRAIN_SPLIT_DIR as TRAIN_DIR
from stages.lib.summaries import EvaluateFields
from stages.lib.summary import StageSummary

TEST_DIR = Path("data/split/test")


# ---------------------------------------------------------------------------------------------
# Gate


@dataclass(frozen=True)
class GateVerdict:
    """The checks that failed (metric, value, threshold) and those that could not be measured."""

    failures: list[str]
    skipped: list[str]

    @property
    def passed(self) -> bool:
        """True when no check failed (a skipped check does not fail the gate)."""
        return not self.failures


def check_gate(metrics: dict[str, Any], gate: GateConfig) -> GateVerdict:
    """Each failed check's metric, value and threshold, and each skipped check's reason.

    A metric that is NaN (undefined, e.g. AUC with one class in the test split) fails its check;
    a fairness gap or lift that was not measured is skipped and says why.
    """
    failures: list[str] = []
    skipped: list[str] = []

    def low(name: str, value: float, key: str, threshold: float | None) -> None:
        if threshold is not None and not value >= threshold:
            failures.append(f"{name} {value:.3f} < {key} {threshold:.3f}")

    def high(name: str, value: float, key: str, threshold: float | None) -> None:
        if threshold is not None and not value <= threshold:
            failures.append(f"{name} {value:.3f} > {key} {threshold:.3f}")

    low("accuracy", metrics["accuracy"], "min_accuracy", gate.min_accuracy)
    low("roc_auc", metrics["roc_auc"], "min_roc_auc", gate.min_roc_auc)
    low("macro_f1", metrics["macro_f1"], "min_macro_f1", gate.min_macro_f1)
    high("ece", metrics.get("ece", float("nan")), "max_ece", gate.max_ece)
    for name, key in (
        ("demographic_parity_diff", "max_demographic_parity_diff"),
        ("equal_opportunity_diff", "max_equal_opportunity_diff"),
    ):
        for col, g in metrics.get("fairness", {}).get(name, {}).items():
            if getattr(gate, key) is not None and g["value"] is None:
                skipped.append(f"{name}[{col}] not measured: {g['reason']}")
            else:
                high(f"{name}[{col}]", g["value"], key, getattr(gate, key))
    if gate.min_lift_over_baseline is not None:
        lift = metrics.get("lift_over_logistic_regression", {}).get("accuracy_points")
        if lift is None:
            skipped.append("lift over baseline not measured: no logistic-regression baseline")
        else:
            low(
                "accuracy lift (points)",
                lift,
                "min_lift_over_baseline",
                gate.min_lift_over_baseline,
            )
    if gate.max_membership_auc is not None:
        auc = metrics.get("membership", {}).get("auc")
        if auc is None:
            skipped.append("membership AUC not measured: no training rows to audit")
        else:
            high("membership_auc", auc, "max_membership_auc", gate.max_membership_auc)
    return GateVerdict(failures, skipped)


# ---------------------------------------------------------------------------------------------
# The stage


def _rounded(obj: Any) -> Any:
    """Floats rounded to 6 places, NaN as null: stable, diffable JSON."""
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_rounded(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return None if np.isnan(obj) else round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


@dataclass(frozen=True)
class Members:
    """The membership audit's members: training rows and a model's probabilities for them."""

    rows: pd.DataFrame
    proba: np.ndarray


def _baseline_metrics(
    base: Baselines,
    metrics: dict[str, Any],
    test_df: pd.DataFrame,
    y_true: np.ndarray,
    spec: FeatureSpec,
    slice_args: tuple[list[str], int, int],
    members: Members | None,
) -> dict[str, Any]:
    """The baselines' headline numbers, the logistic one's gaps and audit, and the model's lift."""
    slice_columns, positive, min_size = slice_args
    out: dict[str, Any] = {"majority": base.majority}
    lift: dict[str, Any] = {}
    if base.logistic_regression is not None:
        lr = out["logistic_regression"] = base.logistic_regression
        _, lr["fairness"] = slice_metrics(
            test_df, y_true, base.logistic_proba, slice_columns, positive, min_size
        )
        if members is not None:
            member_y = encode_labels(members.rows[spec.label], spec.classes)
            lr_member = base.logistic_predict_proba(members.rows, spec)
            lr["membership"] = membership_audit(member_y, lr_member, y_true, base.logistic_proba)
        lift = {m: metrics[m] - lr[m] for m in ("accuracy", "roc_auc", "macro_f1")}
        lift["accuracy_points"] = 100 * lift["accuracy"]
    for b in out.values():
        b.pop("per_class", None)  # headline numbers suffice beside the model
    metrics["baselines"] = out
    return lift


def evaluate(
    test_df: pd.DataFrame,
    proba: np.ndarray,
    classes: list[str],
    train_df: pd.DataFrame,
    spec: FeatureSpec,
    slice_columns: list[str],
    config: EvaluateConfig,
    members: Members | None = None,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Every metric and plot table of the model's test predictions, its baselines, its
    membership audit (when `members` is given) and the gate's verdict."""
    positive_name = config.positive_class or classes[-1]
    if positive_name not in classes:
        raise ParamsError(f"evaluate.positive_class {positive_name!r} is not one of {classes}")
    positive = classes.index(positive_name)
    y_true = encode_labels(test_df[spec.label], classes)

    metrics = classification_metrics(y_true, proba, classes, positive)
    metrics["positive_class"] = positive_name
    if len(classes) == 2:  # calibration of the positive class's probability
        ece, curve = calibration(y_true == positive, proba[:, positive], config.calibration_bins)
        metrics["calibration"] = "positive_class"
    else:  # top-label calibration
        ece, curve = calibration(y_true, proba, config.calibration_bins)
        metrics["calibration"] = "top_label"
    metrics["ece"] = ece
    slices, metrics["fairness"] = slice_metrics(
        test_df, y_true, proba, slice_columns, positive, config.min_slice_size
    )
    if members is not None:
        member_y = encode_labels(members.rows[spec.label], classes)
        metrics["membership"] = membership_audit(member_y, members.proba, y_true, proba)
    base = baselines(train_df, test_df, spec, positive)
    slice_args = (slice_columns, positive, config.min_slice_size)
    metrics["lift_over_logistic_regression"] = _baseline_metrics(
        base, metrics, test_df, y_true, spec, slice_args, members
    )

    verdict = check_gate(metrics, config.gate)
    metrics["gate"] = {
        "passed": verdict.passed,
        "failures": verdict.failures,
        "skipped": verdict.skipped,
        "thresholds": {k: v for k, v in vars(config.gate).items() if v is not None},
    }
    if len(classes) == 2:
        roc, pr = roc_pr_curves(y_true, proba, positive)
    else:
        roc, pr = multiclass_curves(y_true, proba, classes)
    plots = {
        "confusion": confusion_frame(y_true, proba.argmax(axis=1), classes),
        "roc": roc,
        "pr": pr,
        "calibration": curve,
        "slices": slices,
    }
    return metrics, plots


def _slice_columns(config: EvaluateConfig, schema: Any, policies: dict[str, Any]) -> list[str]:
    """The columns to slice by: known to the schema and released by anonymize."""
    slice_columns = list(config.slices or schema.sensitive)
    unknown = [c for c in slice_columns if c not in schema.columns]
    if unknown:
        raise ParamsError(f"evaluate.slices: {unknown} are not schema columns")
    hidden = [c for c in slice_columns if policies[c].action in ("drop", "pseudonymize")]
    if hidden:
        # Slicing by a column anonymize does not release would print its values in the report.
        raise ParamsError(
            f"evaluate.slices: {hidden} are not released by anonymize (policy drop or "
            "pseudonymize); slice by a released column, or generalize the column instead"
        )
    return slice_columns


def main() -> None:
    """Score the model on the test split; write metrics (with the gate's verdict) and plots."""
    from stages.lib.model import load_predictor  # lazy: evaluate's helpers work without torch

    p = pipeline_params()
    config, schema = p.evaluate, p.schema
    policies = column_policies(schema, p.anonymize.policies)
    spec = feature_spec(schema, policies)
    slice_columns = _slice_columns(config, schema, policies)

    summary = StageSummary("evaluate")
    predictor = load_predictor(MODEL_PATH)
    test_df = read_dataset(TEST_DIR).to_pandas()
    train_df = read_dataset(TRAIN_DIR).to_pandas()
    model_classes = list(predictor.classes)
    classes = list(spec.classes)
    if sorted(model_classes) != sorted(classes):
        raise ValueError(f"model classes {model_classes} differ from the schema's {classes}")
    order = [model_classes.index(c) for c in classes]  # columns in the schema's order
    proba = np.asarray(predictor.predict_proba(test_df), dtype=np.float64)[:, order]
    member_rows = member_sample(train_df, len(test_df))
    member_proba = np.asarray(predictor.predict_proba(member_rows), dtype=np.float64)[:, order]

    metrics, plots = evaluate(
        test_df,
        proba,
        classes,
        train_df,
        spec,
        slice_columns,
        config,
        Members(member_rows, member_proba),
    )
    PLOTS_DIR.mkdir(parents=True, exist_ok=True)
    for name, frame in plots.items():
        write_text_atomic(PLOTS_DIR / f"{name}.csv", frame.to_csv(index=False, float_format="%.6g"))
    summary.rows_in = summary.rows_out = len(test_df)
    summary.fields = EvaluateFields.model_validate(_rounded(metrics))
    summary.write()

    gate, audit = metrics["gate"], metrics["membership"]
    print(
        f"evaluate: accuracy {metrics['accuracy']:.4f}, roc_auc {metrics['roc_auc']:.4f}, "
        f"macro_f1 {metrics['macro_f1']:.4f}, ece {metrics['ece']:.4f}, "
        f"membership auc {audit['auc'] if audit['auc'] is None else round(audit['auc'], 4)}; "
        f"gate {'passed' if gate['passed'] else 'FAILED: ' + '; '.join(gate['failures'])} "
        "(the gate stage stops the pipeline after the report)"
    )


if __name__ == "__main__":
    run_stage(main)
