"""Column policies (what anonymize does to each column) and the model's features that follow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from stages.lib.params import ParamsError, coerce
from stages.lib.schema import Schema

Action = Literal["drop", "pseudonymize", "generalize", "mask", "keep"]


@dataclass(frozen=True)
class Policy:
    """What anonymize does to one column.

    generalize: `band` (numbers into bands of this width), `date` (truncate to year or month) or
    `truncate` (keep this many leading characters, e.g. postcodes). mask: keep `keep_last`
    characters and replace the rest with '*'.
    """

    action: Action
    band: int | None = None
    date: Literal["year", "month"] | None = None
    truncate: int | None = None
    keep_last: int | None = None


# Direct identifiers never pass as they are; the source key lives on only as record_id.
DEFAULT_BY_ROLE: dict[str, Action] = {
    "key": "drop",
    "identifier": "drop",
    "label": "keep",
    "numeric": "keep",
    "categorical": "keep",
    "text": "keep",  # free text is always scrubbed, whatever its policy
    "attribute": "keep",
}


def column_policies(schema: Schema, overrides: dict[str, Any]) -> dict[str, Policy]:
    """Every schema column's policy: the params override where given, else the role's default."""
    unknown = sorted(set(overrides) - set(schema.columns))
    if unknown:
        raise ParamsError(f"anonymize.policies: column(s) {unknown} are not in the schema")
    policies = {}
    for name, col in schema.columns.items():
        raw = overrides.get(name, DEFAULT_BY_ROLE[col.role])
        policy = coerce(Policy, {"action": raw} if isinstance(raw, str) else raw, name)
        if col.role == "identifier" and policy.action == "keep":
            raise ParamsError(
                f"anonymize.policies.{name}: '{name}' is a direct identifier and cannot be kept; "
                "use drop, pseudonymize, mask or generalize"
            )
        if col.role in ("label",) and policy.action != "keep":
            raise ParamsError(f"anonymize.policies.{name}: the label must be kept")
        policies[name] = policy
    return policies


@dataclass(frozen=True)
class FeatureSpec:
    """Which columns of the anonymized data the model uses, and how."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    text: tuple[str, ...]
    label: str
    classes: tuple[str, ...]


def feature_spec(schema: Schema, policies: dict[str, Policy]) -> FeatureSpec:
    """The features that survive anonymization: generalized numbers become categories."""
    numeric, categorical, text = [], [], []
    for name, col in schema.columns.items():
        action = policies[name].action
        if col.role == "numeric" and action == "keep":
            numeric.append(name)
        elif col.role == "numeric" and action == "generalize":
            categorical.append(name)
        elif col.role == "categorical" and action in ("keep", "generalize"):
            categorical.append(name)
        elif col.role == "text" and action == "keep":
            text.append(name)
    return FeatureSpec(
        tuple(numeric), tuple(categorical), tuple(text), schema.label, tuple(schema.classes)
    )


# ---------------------------------------------------------------------------------------------
# Numeric encoding of a feature column, whatever its schema type


_EPOCH = np.datetime64("1970-01-01", "s")
_SECONDS_PER_DAY = 86400.0


def days_since_epoch(values: pd.Series) -> np.ndarray:
    """Dates and timestamps as days since 1970-01-01 (fractional for a time of day; NaN for
    missing). One number keeps order and distance, which is what a numeric feature needs;
    a cyclic season, if it matters, is better a generalised (month) categorical column."""
    stamps = pd.to_datetime(values, errors="coerce", utc=True).dt.tz_convert(None)
    seconds = (stamps.to_numpy(dtype="datetime64[s]") - _EPOCH).astype("float64")
    seconds[pd.isna(stamps).to_numpy()] = np.nan
    return seconds / _SECONDS_PER_DAY


def numeric_values(values: pd.Series) -> np.ndarray:
    """A numeric feature column as float64, NaN for missing: numbers as they are, booleans as
    0/1, dates and timestamps as days since 1970-01-01 (see days_since_epoch)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype("float64").to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return days_since_epoch(values)
    if values.dtype == object:
        kind = pd.api.types.infer_dtype(values, skipna=True)
        if kind in ("date", "datetime", "datetime64"):
            return days_since_epoch(values)
        if kind == "boolean":
            return values.map({True: 1.0, False: 0.0}).to_numpy(dtype="float64", na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
