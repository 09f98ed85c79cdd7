"""Column policies (drop, pseudonymize, generalize, mask) and the scrubbing of free text: one
clean frame as anonymize releases it, before k-suppression."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from stages.lib import keys
from stages.lib.features import Policy
from stages.lib.schema import RELEASED_LINEAGE, Schema
from stages.lib.scrub import DEFAULT_MIN_DIGIT_RUN, HashedSet, scrub_column, scrub_known_names


def _normalize_for_pseudonym(values: pd.Series, pii: str | None) -> pd.Series:
    """Canonical spelling before HMAC, so one person gets one pseudonym across batches."""
    s = values.astype("string").str.strip()
    if pii == "email":
        return s.str.lower()
    if pii == "phone":
        return s.str.replace(r"\D", "", regex=True)
    return s


def generalize(values: pd.Series, policy: Policy) -> pd.Series:
    """Bands for numbers, year or month for dates, a prefix for strings (as strings)."""
    if policy.band:
        num = pd.to_numeric(values, errors="coerce")
        low = (np.floor(num / policy.band) * policy.band).astype("Int64")
        high = low + (policy.band - 1)
        out = low.astype("string") + "-" + high.astype("string")
        return out.where(num.notna(), pd.NA).astype("string")
    if policy.date:
        dates = pd.to_datetime(values, errors="coerce")
        fmt = "%Y" if policy.date == "year" else "%Y-%m"
        return dates.dt.strftime(fmt).astype("string")
    if policy.truncate is not None:
        return values.astype("string").str.slice(0, policy.truncate)
    raise ValueError("generalize needs band, date or truncate")


def mask(values: pd.Series, policy: Policy) -> pd.Series:
    """Replace all but the last `keep_last` characters with '*'."""
    s = values.astype("string")
    keep = policy.keep_last or 0
    hidden = (s.str.len() - keep).clip(lower=0)
    stars = pd.Series(["*" * n if pd.notna(n) else None for n in hidden], index=s.index)
    tail = s.str.slice(-keep) if keep else ""
    return (stars.astype("string") + tail).where(s.notna(), pd.NA)


def own_identifiers(df: pd.DataFrame, schema: Schema) -> dict[str, list[tuple[str, Any]]]:
    """The rows' own identifiers by pii kind: {kind: [(column, values)]} (for record-aware);
    the source key counts as kind 'key'."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for name, col in schema.columns.items():
        kind = "key" if col.role == "key" else col.pii
        if kind and name in df.columns:
            out.setdefault(kind, []).append((name, df[name].astype("string")))
    return out


def apply_policies(
    df: pd.DataFrame,
    schema: Schema,
    policies: dict[str, Policy],
    key: bytes,
    min_digit_run: int | None = DEFAULT_MIN_DIGIT_RUN,
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Anonymize one clean frame: policies per column, text scrubbed; returns entity counts.

    Source positions (_source_file, _source_row) stay behind: on a public table the row number
    is often the dropped id itself, which would rejoin each released row to its name."""
    out = {c: df[c] for c in RELEASED_LINEAGE if c in df.columns}
    counts: dict[str, dict[str, int]] = {}
    identifiers = own_identifiers(df, schema)
    for name, col in schema.columns.items():
        if name not in df.columns:
            continue
        policy = policies[name]
        values = df[name]
        if policy.action == "drop":
            continue
        if col.role == "text":
            # Free text is always scrubbed, whatever the policy says on top.
            scrubbed, found = scrub_column(values.astype("string"), identifiers, min_digit_run)
            values = pd.Series(scrubbed.to_pylist(), index=df.index, dtype="string")
            counts[name] = dict(sorted(found.items()))
        if policy.action == "pseudonymize":
            norm = _normalize_for_pseudonym(values, col.pii)
            pseudo = keys.pseudonymize(
                key, (None if pd.isna(v) else v for v in norm), domain=f"column:{name}"
            )
            values = pd.Series(pseudo, index=df.index, dtype="string")
        elif policy.action == "generalize":
            values = generalize(values, policy)
        elif policy.action == "mask":
            values = mask(values, policy)
        out[name] = values
    return pd.DataFrame(out, index=df.index), counts


def anonymize_frame(
    df: pd.DataFrame,
    schema: Schema,
    policies: dict[str, Policy],
    key: bytes,
    names: HashedSet,
    min_digit_run: int | None = DEFAULT_MIN_DIGIT_RUN,
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """One clean frame as the stage releases it (before k-suppression): policies applied, then
    the dataset's known person `names` scrubbed from its text columns; returns entity counts."""
    anon, found = apply_policies(df, schema, policies, key, min_digit_run)
    anon, named = scrub_names(anon, schema, names)
    for col, n_names in named.items():
        found[col] = {
            **found.get(col, {}),
            "KNOWN_PERSON": found.get(col, {}).get("KNOWN_PERSON", 0) + n_names,
        }
    return anon, found


def scrub_names(
    anon: pd.DataFrame, schema: Schema, names: HashedSet
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The dataset's known person names scrubbed from the text columns; names found per column."""
    scrubbed, counts = {}, {}
    for col in schema.with_role("text"):
        if col in anon.columns:
            scrubbed[col], counts[col] = scrub_known_names(anon[col], names)
    return anon.assign(**scrubbed), counts


def describe_policy(policy: Policy) -> str:
    """A short human form of a policy for the summary."""
    details = [
        f"{k}={v}"
        for k, v in (("band", policy.band), ("date", policy.date), ("truncate", policy.truncate),
                     ("keep_last", policy.keep_last))
        if v is not None
    ]  # fmt: skip
    return policy.action + (f"({', '.join(details)})" if details else "")
