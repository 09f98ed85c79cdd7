"""Classification metrics of predicted probabilities: headline scores, confusion, ROC/PR curves
(binary and one-vs-rest) and calibration."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

# How a missing value of a categorical column is shown (slices, baseline features).
MISSING = "(missing)"
# Curves are thinned to at most this many points: enough for a plot, small in git.
MAX_CURVE_POINTS = 500
# Beyond two classes, one-vs-rest curves are drawn for at most this many classes (the most
# frequent), beside the micro and macro averages over all of them.
MAX_CURVE_CLASSES = 10
MICRO, MACRO = "micro-average", "macro-average"


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
