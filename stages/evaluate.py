"""Evaluate the model on the test split: metrics, curves, calibration, slices, baselines, a
membership-inference audit and the gate's verdict.

The verdict (passed, or failed with its reasons) is written to metrics/evaluate.json and the stage
exits 0, so that `dvc repro` still builds the report, which shows FAILED at its top; the final
`gate` stage (stages/gate.py) then stops the pipeline with exit 3.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from stages.lib.errors import run_stage
from stages.lib.features import FeatureSpec, column_policies, feature_spec, numeric_values
from stages.lib.io import read_dataset, write_text_atomic
from stages.lib.params import ParamsError, load_params, section
from stages.lib.schema import load_schema
from stages.lib.summary import StageSummary

MODEL_PATH = Path("models/model.pt")
TEST_DIR = Path("data/split/test")
TRAIN_DIR = Path("data/split/train")
PLOTS_DIR = Path("plots")
MISSING = "(missing)"
# Curves are thinned to at most this many points: enough for a plot, small in git.
MAX_CURVE_POINTS = 500
# Beyond two classes, one-vs-rest curves are drawn for at most this many classes (the most
# frequent), beside the micro and macro averages over all of them.
MAX_CURVE_CLASSES = 10
MICRO, MACRO = "micro-average", "macro-average"
# The membership audit samples training rows with this seed (a fixed one: the audit is part of the
# evaluation, not of training, and must give the same figure on every rerun).
AUDIT_SEED = 0


@dataclass(frozen=True)
class GateConfig:
    """Thresholds the model must meet; null switches a check off."""

    min_accuracy: float | None = None
    min_roc_auc: float | None = None
    min_macro_f1: float | None = None
    max_ece: float | None = None
    max_demographic_parity_diff: float | None = None
    max_equal_opportunity_diff: float | None = None
    # Accuracy points (0-100 scale) the model must gain over logistic regression on the same split.
    min_lift_over_baseline: float | None = None
    # Highest ROC-AUC a loss-threshold membership-inference attack may reach (0.5 = no leak).
    max_membership_auc: float | None = None


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml."""

    # Columns to slice by; empty means the schema's sensitive columns.
    slices: tuple[str, ...] = ()
    # The class whose rate the fairness gaps and the ROC/PR curves use; null means the last class.
    positive_class: str | None = None
    calibration_bins: int = 10
    # A group enters a gap only with at least this many rows (for equal opportunity: rows of the
    # positive class), so that a handful of records cannot swing the gate.
    min_slice_size: int = 30
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        if self.calibration_bins < 1:
            raise ParamsError("evaluate.calibration_bins must be at least 1")
        if self.min_slice_size < 1:
            raise ParamsError("evaluate.min_slice_size must be at least 1")


# ---------------------------------------------------------------------------------------------
# Metrics


def encode_labels(
    labels: pd.Series | np.ndarray, classes: list[str] | tuple[str, ...]
) -> np.ndarray:
    """Class indices of the labels; a label outside `classes` is an error."""
    index = {c: i for i, c in enumerate(classes)}
    values = pd.Series(labels, dtype=object)
    codes = values.map(index)
    if codes.isna().any():
        bad = sorted(map(str, values[codes.isna()].unique()))[:5]
        raise ValueError(f"labels {bad} are not among the classes {list(classes)}")
    return codes.to_numpy(dtype=np.int64)


def classification_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str] | tuple[str, ...],
    positive: int | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class and macro P/R/F1, ROC-AUC and PR-AUC (one-vs-rest beyond two classes).

    `y_true` holds class indices into `classes`, `proba` one column per class. Macro averages are
    over the classes present in `y_true` (a class absent from the test split has no recall to
    average; `macro_classes` says which were left out). With two classes the AUCs are those of
    class `positive` (default: the last); with more they are the unweighted mean of the
    one-vs-rest AUCs over the classes present, and `roc_auc_micro` / `pr_auc_micro` pool every
    (row, class) pair.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    if proba.ndim != 2 or proba.shape != (y_true.size, k):
        raise ValueError(f"proba has shape {proba.shape}, expected ({y_true.size}, {k})")
    labels = np.arange(k)
    y_pred = proba.argmax(axis=1)
    p, r, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    present = support > 0
    if not present.any():  # an empty test split: nothing to average
        present = np.ones(k, dtype=bool)
    per_class = {
        c: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, c in enumerate(classes)
    }
    out = {
        "n": int(y_true.size),
        "accuracy": float(np.mean(y_pred == y_true)) if y_true.size else float("nan"),
        "macro_precision": float(p[present].mean()),
        "macro_recall": float(r[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "macro_classes": {
            "present": int(present.sum()),
            "total": k,
            "absent": [c for i, c in enumerate(classes) if not present[i]],
        },
        "roc_auc": _auc(y_true, proba, skm.roc_auc_score, positive),
        "pr_auc": _auc(y_true, proba, skm.average_precision_score, positive),
        "log_loss": float(skm.log_loss(y_true, np.clip(proba, 1e-15, 1), labels=labels))
        if y_true.size
        else float("nan"),
        "per_class": per_class,
    }
    if k > 2 and y_true.size:
        onehot = np.eye(k, dtype=bool)[y_true].ravel()
        out["roc_auc_micro"] = float(skm.roc_auc_score(onehot, proba.ravel()))
        out["pr_auc_micro"] = float(skm.average_precision_score(onehot, proba.ravel()))
    return out


def _auc(y_true: np.ndarray, proba: np.ndarray, score: Any, positive: int | None) -> float:
    """Binary AUC of the positive class, or the macro one-vs-rest AUC; NaN if undefined."""
    k = proba.shape[1]
    if k == 2:
        pos = 1 if positive is None else positive
        positives = y_true == pos
        if positives.all() or not positives.any():
            return float("nan")
        return float(score(positives, proba[:, pos]))
    aucs = [
        score(y_true == i, proba[:, i]) for i in range(k) if 0 < np.sum(y_true == i) < y_true.size
    ]
    return float(np.mean(aucs)) if aucs else float("nan")


def confusion_frame(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str] | tuple[str, ...]
) -> pd.DataFrame:
    """One (actual, predicted) row of class names per example, as DVC's confusion plot reads."""
    names = np.asarray(classes, dtype=object)
    return pd.DataFrame({"actual": names[y_true], "predicted": names[y_pred]})


def _thin(frame: pd.DataFrame, max_points: int = MAX_CURVE_POINTS) -> pd.DataFrame:
    """At most max_points evenly spaced rows, the first and last always kept."""
    if len(frame) <= max_points:
        return frame.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(frame) - 1, max_points).round().astype(int))
    return frame.iloc[idx].reset_index(drop=True)


def _binary_curves(target: np.ndarray, score: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC (fpr, tpr, threshold) and PR (recall, precision, threshold) of one binary problem."""
    if target.all() or not target.any():
        empty_roc = pd.DataFrame(columns=["fpr", "tpr", "threshold"])
        return empty_roc, pd.DataFrame(columns=["recall", "precision", "threshold"])
    fpr, tpr, thr = skm.roc_curve(target, score)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thr, 1.0)})
    precision, recall, thr = skm.precision_recall_curve(target, score)
    # precision_recall_curve ends at (recall 0, precision 1) without a threshold; reverse so
    # that recall runs upwards like fpr does.
    pr = pd.DataFrame(
        {
            "recall": recall[::-1],
            "precision": precision[::-1],
            "threshold": np.r_[np.nan, thr[::-1]],
        }
    )
    return _thin(roc), _thin(pr)


def roc_pr_curves(
    y_true: np.ndarray, proba: np.ndarray, positive: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC (fpr, tpr, threshold) and PR (recall, precision, threshold) curves for one class."""
    return _binary_curves(np.asarray(y_true) == positive, np.asarray(proba)[:, positive])


def multiclass_curves(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str] | tuple[str, ...],
    top: int = MAX_CURVE_CLASSES,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One-vs-rest ROC and PR curves (a `curve` column names each) for the `top` most frequent
    classes, plus the micro average (every (row, class) pair pooled) and the macro average (the
    mean over every class present of its TPR, or interpolated precision, on a common grid)."""
    y_true, proba = np.asarray(y_true), np.asarray(proba, dtype=np.float64)
    k = len(classes)
    counts = np.bincount(y_true, minlength=k)
    present = [int(i) for i in np.argsort(-counts, kind="stable") if 0 < counts[i] < y_true.size]
    rocs, prs = [], []
    for i in present[:top]:
        roc, pr = roc_pr_curves(y_true, proba, i)
        rocs.append(roc.assign(curve=classes[i]))
        prs.append(pr.assign(curve=classes[i]))
    if present:
        roc, pr = _binary_curves(np.eye(k, dtype=bool)[y_true].ravel(), proba.ravel())
        rocs.append(roc.assign(curve=MICRO))
        prs.append(pr.assign(curve=MICRO))
        grid = np.linspace(0.0, 1.0, 101)
        tprs, precisions = [], []
        for i in present:
            fpr, tpr, _ = skm.roc_curve(y_true == i, proba[:, i])
            tprs.append(np.interp(grid, fpr, tpr))
            precision, recall, _ = skm.precision_recall_curve(y_true == i, proba[:, i])
            # interpolated precision: the best precision at this recall or higher
            best = np.maximum.accumulate(precision)
            precisions.append(np.interp(grid, recall[::-1], best[::-1]))
        nan = np.full(grid.size, np.nan)
        rocs.append(pd.DataFrame({"fpr": grid, "tpr": np.mean(tprs, 0), "threshold": nan}))
        prs.append(pd.DataFrame({"recall": grid, "precision": np.mean(precisions, 0)}))
        rocs[-1]["curve"], prs[-1]["curve"] = MACRO, MACRO
    columns = (["curve", "fpr", "tpr", "threshold"], ["curve", "recall", "precision", "threshold"])
    frames = [pd.concat(f, ignore_index=True) if f else pd.DataFrame() for f in (rocs, prs)]
    return tuple(f.reindex(columns=c) for f, c in zip(frames, columns, strict=True))  # type: ignore[return-value]


def calibration(y_true: np.ndarray, proba: np.ndarray, bins: int) -> tuple[float, pd.DataFrame]:
    """Expected calibration error and the reliability curve over `bins` equal-width bins.

    `proba` 1-D: the predicted probability of an event and `y_true` 0/1 outcomes (binary
    calibration). `proba` 2-D: top-label calibration, the confidence max(proba) against whether
    argmax(proba) equals the class index `y_true`. Bins are right-closed like sklearn's
    calibration_curve; empty bins are left out of the curve.
    """
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    if proba.ndim == 2:
        conf, outcome = proba.max(axis=1), (proba.argmax(axis=1) == y_true).astype(np.float64)
    else:
        conf, outcome = proba, y_true.astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.searchsorted(edges[1:-1], conf, side="left")
    count = np.bincount(which, minlength=bins)
    sum_conf = np.bincount(which, weights=conf, minlength=bins)
    sum_out = np.bincount(which, weights=outcome, minlength=bins)
    filled = count > 0
    mean_pred = np.divide(sum_conf, count, out=np.zeros(bins), where=filled)
    frac_pos = np.divide(sum_out, count, out=np.zeros(bins), where=filled)
    n = conf.size
    ece = float(np.sum(count / n * np.abs(mean_pred - frac_pos))) if n else float("nan")
    curve = pd.DataFrame(
        {
            "bin": np.arange(bins)[filled],
            "bin_lower": edges[:-1][filled],
            "bin_upper": edges[1:][filled],
            "mean_predicted": mean_pred[filled],
            "fraction_positive": frac_pos[filled],
            "count": count[filled],
        }
    )
    return ece, curve


# ---------------------------------------------------------------------------------------------
# Slices and fairness gaps


def slice_metrics(
    df: pd.DataFrame,
    y_true: np.ndarray,
    proba: np.ndarray,
    slice_columns: list[str] | tuple[str, ...],
    positive_class: int,
    min_size: int = 1,
) -> tuple[pd.DataFrame, dict[str, dict[str, dict[str, Any]]]]:
    """Metrics per group of each slice column, and the fairness gaps between groups (see gap()).

    Demographic-parity difference: max - min over groups of the rate of predicting the positive
    class. Equal-opportunity difference: max - min of the true-positive rate (recall of the
    positive class). A group enters the first with at least `min_size` rows, the second with at
    least `min_size` positive rows; missing values form their own group.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba)
    y_pred = proba.argmax(axis=1)
    is_pos, pred_pos = y_true == positive_class, y_pred == positive_class
    rows = []
    gaps: dict[str, dict[str, dict[str, Any]]] = {
        "demographic_parity_diff": {},
        "equal_opportunity_diff": {},
    }
    for col in slice_columns:
        groups = df[col].astype(object).where(df[col].notna(), MISSING).astype(str).to_numpy()
        col_rows = []
        for g in sorted(set(groups)):
            m = groups == g
            n, n_pos = int(m.sum()), int(is_pos[m].sum())
            n_neg = n - n_pos
            auc = (
                float(skm.roc_auc_score(is_pos[m], proba[m, positive_class]))
                if 0 < n_pos < n
                else np.nan
            )
            col_rows.append(
                {
                    "slice": f"{col}={g}",
                    "column": col,
                    "group": g,
                    "n": n,
                    "share": n / y_true.size,
                    "positives": n_pos,
                    "base_rate": n_pos / n,
                    "accuracy": float(np.mean(y_pred[m] == y_true[m])),
                    "selection_rate": float(pred_pos[m].mean()),
                    "tpr": float(pred_pos[m & is_pos].mean()) if n_pos else np.nan,
                    "fpr": float(pred_pos[m & ~is_pos].mean()) if n_neg else np.nan,
                    "precision": float(is_pos[m & pred_pos].mean())
                    if pred_pos[m].any()
                    else np.nan,
                    "roc_auc": auc,
                    "in_dp_gap": n >= min_size,
                    "in_eo_gap": n_pos >= min_size,
                }
            )
        frame = pd.DataFrame(col_rows)
        gaps["demographic_parity_diff"][col] = gap(
            frame.loc[frame.in_dp_gap, "selection_rate"], col, f"at least {min_size} rows"
        )
        gaps["equal_opportunity_diff"][col] = gap(
            frame.loc[frame.in_eo_gap, "tpr"], col, f"at least {min_size} positive rows"
        )
        rows.extend(col_rows)
    return pd.DataFrame(rows), gaps


def gap(values: pd.Series, column: str, rule: str) -> dict[str, Any]:
    """{value: max - min over the groups, groups, reason}; with fewer than two groups the gap
    was not measured: value None and the reason (never a 0 that reads as "within limit")."""
    values = values.dropna()
    if len(values) < 2:
        reason = f"{len(values)} group(s) of {column} with {rule}; a gap needs two"
        return {"value": None, "groups": len(values), "reason": reason}
    return {"value": float(values.max() - values.min()), "groups": len(values), "reason": None}


# ---------------------------------------------------------------------------------------------
# Baselines


def _baseline_frame(df: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The feature columns in the types the sklearn pipeline expects."""
    out = {}
    for c in spec.numeric:
        out[c] = numeric_values(df[c])  # dates: days since epoch, booleans: 0/1
    for c in spec.categorical:
        out[c] = df[c].astype(object).where(df[c].notna(), MISSING).astype(str)
    for c in spec.text:
        out[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return pd.DataFrame(out, index=df.index)


def logistic_pipeline(spec: FeatureSpec, seed: int = 0) -> Any:
    """One-hot categoricals + standardised numerics + hashed character n-grams of text -> LR."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts: list[tuple[str, Any, Any]] = []
    if spec.numeric:
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        parts.append(("numeric", numeric, list(spec.numeric)))
    if spec.categorical:
        parts.append(
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", min_frequency=5),
                list(spec.categorical),
            )
        )
    for c in spec.text:
        # Character n-grams need no tokenizer and work for Chinese as well as English.
        hashed = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 4),
            n_features=2**12,
            alternate_sign=False,
            norm="l2",
        )
        parts.append((f"text_{c}", hashed, c))  # a scalar column: the vectorizer wants 1-D input
    return Pipeline(
        [
            ("features", ColumnTransformer(parts, sparse_threshold=1.0)),
            ("model", LogisticRegression(max_iter=2000, C=1.0, random_state=seed)),
        ]
    )


@dataclass
class Baselines:
    """The baselines fitted on the training split and scored on the test split."""

    majority: dict[str, Any]
    # None when the training split holds a single class (logistic regression cannot be fitted).
    logistic_regression: dict[str, Any] | None = None
    logistic_proba: np.ndarray | None = None  # its test-split probabilities, schema class order
    logistic_model: Any = None  # the fitted sklearn pipeline (labels are schema class indices)

    def logistic_predict_proba(self, df: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
        """The logistic model's probabilities for `df`, one column per schema class."""
        proba = np.zeros((len(df), len(spec.classes)))
        proba[:, self.logistic_model.classes_] = self.logistic_model.predict_proba(
            _baseline_frame(df, spec)
        )
        return proba


def baselines(
    train_df: pd.DataFrame, test_df: pd.DataFrame, spec: FeatureSpec, positive: int | None = None
) -> Baselines:
    """Majority class and logistic regression fitted on `train_df`, scored on `test_df`."""
    classes = list(spec.classes)
    y_train = encode_labels(train_df[spec.label], classes)
    y_test = encode_labels(test_df[spec.label], classes)
    k = len(classes)

    counts = np.bincount(y_train, minlength=k)
    majority = np.tile(counts / counts.sum(), (len(y_test), 1))
    result = Baselines(classification_metrics(y_test, majority, classes, positive))
    result.majority["class"] = classes[int(counts.argmax())]
    if np.unique(y_train).size < 2:  # logistic regression needs two classes to fit
        return result
    result.logistic_model = logistic_pipeline(spec).fit(_baseline_frame(train_df, spec), y_train)
    result.logistic_proba = result.logistic_predict_proba(test_df, spec)
    result.logistic_regression = classification_metrics(
        y_test, result.logistic_proba, classes, positive
    )
    return result


# ---------------------------------------------------------------------------------------------
# Membership-inference audit


def member_sample(train_df: pd.DataFrame, n: int, seed: int = AUDIT_SEED) -> pd.DataFrame:
    """At most `n` training rows drawn without replacement (the audit's members)."""
    if len(train_df) <= n:
        return train_df
    rows = np.sort(np.random.default_rng(seed).choice(len(train_df), size=n, replace=False))
    return train_df.iloc[rows]


def membership_audit(
    member_y: np.ndarray,
    member_proba: np.ndarray,
    non_member_y: np.ndarray,
    non_member_proba: np.ndarray,
    seed: int = AUDIT_SEED,
) -> dict[str, Any]:
    """A loss-threshold membership-inference attack (Yeom et al. 2018): the lower a row's loss,
    the likelier it was trained on. Both sides are cut to the same size, so chance is AUC 0.5.

    Returns the attack's ROC-AUC, its advantage (max over thresholds of TPR - FPR), and the
    number of members and non-members; AUC and advantage are None when a side is empty.
    """
    n = min(len(member_y), len(non_member_y))
    out: dict[str, Any] = {"attack": "loss threshold", "members": n, "non_members": n}
    if n == 0:
        return {**out, "auc": None, "advantage": None}
    rng = np.random.default_rng(seed)
    losses = []
    for y, proba in ((member_y, member_proba), (non_member_y, non_member_proba)):
        rows = np.sort(rng.choice(len(y), size=n, replace=False)) if len(y) > n else np.arange(n)
        p_true = np.asarray(proba, dtype=np.float64)[rows, np.asarray(y)[rows]]
        losses.append(-np.log(np.clip(p_true, 1e-15, 1.0)))
    is_member = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    score = -np.concatenate(losses)  # a low loss says "member"
    fpr, tpr, _ = skm.roc_curve(is_member, score)
    auc = float(skm.roc_auc_score(is_member, score))
    return {**out, "auc": auc, "advantage": float(np.max(tpr - fpr))}


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

    params = load_params()
    config = section(EvaluateConfig, "evaluate", params)
    schema = load_schema(params)
    policies = column_policies(schema, params["anonymize"]["policies"])
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
    summary.extra.update(_rounded(metrics))
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
