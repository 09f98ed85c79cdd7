"""Re-identification risk: equivalence classes over the released quasi-identifiers, their sizes
(k) and the check that k-suppression leaves rows to release."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stages.lib.anon_policies import generalize, mask
from stages.lib.errors import GateFailure
from stages.lib.features import Policy
from stages.lib.params import ParamsError
from stages.lib.schema import RECORD_ID, Schema


def quasi_frame(df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]) -> pd.DataFrame:
    """The quasi-identifiers as released (after their policies), keyed by record_id."""
    cols = {RECORD_ID: df[RECORD_ID]}
    for name in schema.quasi_identifiers:
        policy = policies[name]
        if name not in df.columns or policy.action in ("drop", "pseudonymize"):
            continue  # dropped: not released; pseudonymized: still linkable, but not a QI value
        if policy.action == "generalize":
            cols[name] = generalize(df[name], policy)
        elif policy.action == "mask":
            cols[name] = mask(df[name], policy)
        else:
            cols[name] = df[name].astype("string")
    return pd.DataFrame(cols)


_BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, 19), (20, 49), (50, 99), (100, None))


def quasi_hashes(quasi: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of its released quasi-identifier values (its class)."""
    cols = [c for c in quasi.columns if c != RECORD_ID]
    if not cols:
        return np.zeros(len(quasi), dtype=np.uint64)
    keyed = quasi[cols].astype("string").fillna("\x00null")
    return pd.util.hash_pandas_object(keyed, index=False).to_numpy(dtype=np.uint64)


def class_sizes(quasi: pd.DataFrame) -> pd.Series:
    """Equivalence-class size of each row (index: record_id); nulls form their own value."""
    sizes = sizes_of(quasi_hashes(quasi))
    return pd.Series(sizes, index=quasi[RECORD_ID].to_numpy(), dtype="int64")


def sizes_of(classes: np.ndarray) -> np.ndarray:
    """The size of each row's class, from per-row class hashes (see quasi_hashes)."""
    _, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def risk_report(sizes: pd.Series) -> dict[str, Any]:
    """Smallest class (k), share of unique rows and a class-size histogram."""
    if sizes.empty:
        return {"k": None, "unique_share": 0.0, "classes": 0, "histogram": []}
    per_class = sizes.value_counts()  # size -> rows in classes of that size
    hist = []
    for lo, hi in _BUCKETS:
        sel = per_class[(per_class.index >= lo) & ((per_class.index <= hi) if hi else True)]
        rows = int(sel.sum())
        label = str(lo) if lo == hi else f"{lo}-{hi}" if hi else f"{lo}+"
        hist.append({"size": label, "classes": int((sel / sel.index).sum()), "rows": rows})
    return {
        "k": int(sizes.min()),
        "unique_share": round(float((sizes == 1).mean()), 6),
        "classes": int(sum(h["classes"] for h in hist)),
        "histogram": hist,
    }


def check_not_all_suppressed(sizes: np.ndarray, k: int | None) -> None:
    """Stop before anything is written when k would suppress every row (train would get none)."""
    if not k or not len(sizes) or (sizes >= k).any():
        return
    if len(sizes) < k:
        raise ParamsError(
            f"anonymize.k: {k} is larger than the dataset ({len(sizes):,} rows), so every row "
            f"would be suppressed; set anonymize.k to at most {len(sizes):,} in params.yaml "
            "(5 is common), or null to only measure the risk"
        )
    raise GateFailure(
        f"anonymize: k={k} would suppress all {len(sizes):,} rows (largest equivalence class "
        f"{int(sizes.max())} rows over the quasi-identifiers); generalise them further under "
        "anonymize.policies (e.g. {action: generalize, band: 10} or {action: generalize, "
        "date: year}), drop one, or lower anonymize.k"
    )
