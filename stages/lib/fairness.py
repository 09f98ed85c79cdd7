"""Fairness: metrics per slice of a sensitive column and the gaps between its groups."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from stages.lib.eval_metrics import MISSING


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
