"""Column policies (what anonymize does to each column) and the model's features that follow."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from stages.lib.params import ParamsError
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


def column_policies(schema: Schema, overrides: Mapping[str, Policy]) -> dict[str, Policy]:
    """Every schema column's policy: params.yaml's (anonymize.policies) where given, else the
    role's default."""
    unknown = sorted(set(overrides) - set(schema.columns))
    if unknown:
        raise ParamsError(f"anonymize.policies: column(s) {unknown} are not in the schema")
    policies = {}
    for name, col in schema.columns.items():
        policy = overrides.get(name) or Policy(DEFAULT_BY_ROLE[col.role])
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


# ---------------------------------------------------------------- text: hashed word n-grams

_WORD = re.compile(r"\w+", re.UNICODE)
_WORD_SALT = np.uint64(0x9E3779B97F4A7C15)  # keeps word ids apart from character n-gram ids
_MIX = np.uint64(0x100000001B3)


def hash_word_ngrams(texts: list[str], buckets: int, n_max: int) -> tuple[np.ndarray, np.ndarray]:
    """Word 1..n_max-grams of each text hashed into `buckets` ids: (flat ids, offsets [n + 1]).

    Words are runs of Unicode word characters (a run of Chinese characters is one word; the
    character n-grams cover its parts). crc32 of each distinct word, combined with FNV-style
    mixing for longer n-grams: stable across processes, unlike Python's salted hash().
    """
    tokens = [_WORD.findall(t) for t in texts]
    counts = np.fromiter((len(t) for t in tokens), dtype=np.int64, count=len(tokens))
    flat_words = [w for ts in tokens for w in ts]
    uniq, inverse = np.unique(np.asarray(flat_words, dtype=object), return_inverse=True)
    word_hash = np.fromiter(
        (zlib.crc32(w.encode()) for w in uniq), dtype=np.uint64, count=len(uniq)
    )
    h1 = word_hash[inverse] ^ _WORD_SALT if len(flat_words) else np.zeros(0, dtype=np.uint64)
    row_of = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
    ids, rows = [h1], [row_of]
    h = h1
    with np.errstate(over="ignore"):
        for n in range(2, n_max + 1):
            same_row = row_of[n - 1 :] == row_of[: row_of.size - n + 1]
            h = (h[:-1] * _MIX) ^ h1[n - 1 :]
            ids.append(h[same_row[: h.size]])
            rows.append(row_of[: h.size][same_row[: h.size]])
    flat = mix64(np.concatenate(ids)) % np.uint64(buckets)
    return _bags(flat.astype(np.int64), np.concatenate(rows), len(texts))


def mix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser: every input bit reaches every output bit, so any bucket
    count (its low bits) spreads ids evenly. Without it, FNV-1a's multiply only carries upward:
    4,505 Chinese characters shared 92 of 2^18 buckets, 182,936 character bigrams 22,693."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
        h = (h ^ (h >> np.uint64(33))) * np.uint64(0xC4CEB9FE1A85EC53)
        return h ^ (h >> np.uint64(33))


def _bags(ids: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids grouped by row (stable within a row) and the offsets [n + 1] of each row's bag."""
    order = np.argsort(rows, kind="stable")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=offsets[1:])
    return ids[order], offsets


def merge_bags(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Two bag sets over the same rows as one: each row's ids from `a`, then those from `b`."""
    (fa, oa), (fb, ob) = a, b
    n = len(oa) - 1
    rows = np.concatenate(
        [np.repeat(np.arange(n), np.diff(oa)), np.repeat(np.arange(n), np.diff(ob))]
    )
    return _bags(np.concatenate([fa, fb]), rows, n)


def unique_bags(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each bag's distinct ids, sorted (a binary bag of n-grams: fewer ids to look up and update,
    and a character repeated through a text does not outweigh the rest)."""
    n = len(offsets) - 1
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(offsets))
    keys = np.unique(rows * (int(flat.max(initial=0)) + 1) + flat)
    width = int(flat.max(initial=0)) + 1
    return _bags(keys % width, keys // width, n)
