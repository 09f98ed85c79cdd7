"""Anonymize: apply column policies, scrub free text, gate on an independent scan, measure k.

Reads data/clean/, writes data/anon/ (same partitions), data/quarantine_anon/ (rows of
equivalence classes smaller than k, with `_reason`), metrics/anonymize.json and
reports/privacy/scan.json. Needs the pseudonymisation key (see stages/lib/keys.py).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib import keys
from stages.lib.errors import GateFailure, InputError, run_stage
from stages.lib.features import Policy, column_policies
from stages.lib.io import AtomicDir, file_hash, partition_names, write_json_atomic, write_parquet
from stages.lib.leakscan import ValueScanner, find_numbers
from stages.lib.params import ParamsError, load_params, section
from stages.lib.partitions import CacheDir, PartitionTask, code_digest, digest, run_tasks
from stages.lib.schema import (
    BATCH,
    LINEAGE_COLUMNS,
    RECORD_ID,
    RELEASED_LINEAGE,
    Schema,
    load_schema,
)
from stages.lib.scrub import (
    DEFAULT_MIN_DIGIT_RUN,
    PII_ENTITY,
    HashedSet,
    as_string_array,
    hash_strings,
    known_name_set,
    known_name_spans,
    scrub_column,
    scrub_known_names,
)
from stages.lib.summary import StageSummary

INPUT = Path("data/clean")
OUTPUT = Path("data/anon")
QUARANTINE = Path("data/quarantine_anon")
SCAN_REPORT = Path("reports/privacy/scan.json")
REASON = "_reason"


@dataclass(frozen=True)
class AnonymizeConfig:
    """The `anonymize` section of params.yaml."""

    policies: dict[str, Any]
    # Rows in equivalence classes (over the quasi-identifiers) smaller than k are suppressed to
    # quarantine; null only measures.
    k: int | None = None
    # Free text: runs of this many digits or more that no pattern classified are masked as
    # <NUMBER> (null: off). See params.yaml for what it costs.
    min_digit_run: int | None = DEFAULT_MIN_DIGIT_RUN

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ParamsError(
                f"anonymize.k: expected 1 or more (or null to only measure), got {self.k}"
            )
        if self.min_digit_run is not None and not 5 <= self.min_digit_run <= 20:
            raise ParamsError(
                f"anonymize.min_digit_run: expected 5..20 (or null to switch the rule off), "
                f"got {self.min_digit_run}"
            )


class ScanFailed(GateFailure):
    """The independent scan found an identifier in the anonymized output."""


# ---------------------------------------------------------------------------------------------
# Policies


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


# ---------------------------------------------------------------------------------------------
# Re-identification risk


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


# ---------------------------------------------------------------------------------------------
# The independent scan. Deliberately not the scrubber: its own regexes (run by Great
# Expectations), its own checksum code and a search for the clean data's identifier values.

SCAN_REGEXES = {
    "EMAIL": r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}",
    "URL": r"(?i)\b(?:(?:https?|ftp)://|www\.)\w",
    "IP_ADDRESS": (
        r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
        # IPv6: eight groups, or compressed with '::' and at least 6 characters (as the scrubber)
        r"|(?i:\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b"
        r"|\b(?=[0-9a-f:]{6})[0-9a-f]{1,4}(?::[0-9a-f]{1,4})*::(?:[0-9a-f]{1,4}:)*[0-9a-f]{1,4}\b)"
    ),
    "US_SSN": r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])",
    "PHONE": (
        r"(?<!\d)1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"  # Chinese mobile
        r"|(?<![\w+])\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,5}(?:[ .-]?\d{2,5}){1,5}(?!\d)"
        r"|(?<![\d-])\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}(?!\d)"
    ),
}
# Candidates for checksummed numbers; the checksum decides (an invalid number is no identifier).
CHECKSUM_CANDIDATES = {
    "CREDIT_CARD": r"(?<![\d+])\d(?:[ -]?\d){12,18}(?!\d)",
    "IBAN": r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
    "CN_RESIDENT_ID": r"(?<!\d)\d{17}[\dXx](?![\w])",
}


def _luhn(number: str) -> bool:
    digits = [int(c) for c in number]
    odd = digits[-1::-2]
    even = [sum(divmod(2 * d, 10)) for d in digits[-2::-2]]
    return (sum(odd) + sum(even)) % 10 == 0


def _mod97(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    remainder = 0
    for ch in rearranged:
        remainder = int(str(remainder) + str(int(ch, 36))) % 97
    return remainder == 1


def _gb11643(value: str) -> bool:
    total = sum(int(value[i]) * (2 ** (17 - i) % 11) for i in range(17))
    return "10X98765432"[total % 11] == value[-1].upper()


def _checksum_ok(entity: str, candidate: str) -> bool:
    compact = re.sub(r"[\s-]", "", candidate)
    if entity == "CREDIT_CARD":
        # Any 13-19 digit window that starts at a group start and passes Luhn counts.
        return (
            any(_luhn(compact[:n]) for n in range(13, min(19, len(compact)) + 1))
            and compact[0] in "23456"
        )
    if entity == "IBAN":
        return any(_mod97(compact[:n]) for n in range(15, min(34, len(compact)) + 1))
    return _gb11643(compact)


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


_ASCII_SPACE = r"[\t\n\x0b\x0c\r\x1c-\x1f ]+"  # what str.split() splits ASCII text on


def norm_array(values: Any) -> pa.Array:
    """`_norm` of every value, vectorised: Arrow for ASCII text (NFKC is the identity there and
    casefold is lower), Python only for the others. Nulls become ''."""
    arr = pc.fill_null(as_string_array(values), "")
    nfkc = pc.utf8_normalize(arr, "NFKC")
    out = pc.ascii_lower(pc.utf8_trim(pc.replace_substring_regex(nfkc, _ASCII_SPACE, " "), " "))
    other = np.flatnonzero(~pc.string_is_ascii(nfkc).to_numpy(zero_copy_only=False))
    if other.size:
        mask = np.zeros(len(arr), dtype=bool)
        mask[other] = True
        fixed = pa.array([_norm(t) for t in arr.take(pa.array(other)).to_pylist()], out.type)
        out = pc.replace_with_mask(out, pa.array(mask), fixed)
    return out


_CJK = "\u3400-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]{{2,}}")
# Everything that is not part of a value's token: punctuation, including '.' (so a customer id
# before a full stop is a token of its own), '/', '-' and apostrophes.
_TOKEN_SEP = "\"',;:!?()\\[\\]<>，。；：！？、./\\-"
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s().-]{5,}\d")
# RE2 (Arrow) forms. Normalised text has no whitespace but ' '. Python's \s is str.isspace():
# the ASCII ones, NEL and Unicode's Z categories; \d is Nd.
_RE2_TOKEN_SPLIT = f"[ {_TOKEN_SEP}]+"
_RE2_TOKEN = f"[^ {_TOKEN_SEP}]+"
_RE2_NOT_CJK = f"[^{_CJK}]+"
_RE2_NOT_DIGIT_RUN = r"[^\p{Nd}\t\n\x0b\x0c\r\x1c-\x1f\x85\p{Z}().\-]+"

# Entity codes of the hashed index (int8).
ENTITIES = tuple(dict.fromkeys([*PII_ENTITY.values(), "IDENTIFIER"]))
_CODE = {e: i for i, e in enumerate(ENTITIES)}


def _strings(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False).astype(object)


@dataclass(frozen=True)
class IdentifierIndex:
    """Values of the clean data's dropped or pseudonymized identifier columns, normalised, as
    64-bit hashes (see HashedSet: memory ~9 bytes a value, whatever the dataset size)."""

    values: HashedSet  # normalised value -> entity code
    phones: HashedSet  # last 9 digits of phone numbers -> entity code
    names: HashedSet  # known full person names (folded), the deny-list of scrub_known_names
    max_tokens: int = 1

    @classmethod
    def empty(cls) -> IdentifierIndex:
        """An index with nothing in it."""
        return cls(HashedSet.empty(), HashedSet.empty(), HashedSet.empty())

    @classmethod
    def merge(cls, parts: Iterable[IdentifierIndex]) -> IdentifierIndex:
        """One index of several partitions' indexes."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(
            HashedSet.merge(p.values for p in parts),
            HashedSet.merge(p.phones for p in parts),
            HashedSet.merge(p.names for p in parts),
            max(p.max_tokens for p in parts),
        )

    def match(self, candidates: Any, phones: bool = False) -> np.ndarray:
        """The entity code of each candidate string (-1: not a known value / phone suffix)."""
        return (self.phones if phones else self.values).lookup(candidates)


def index_part(df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]) -> IdentifierIndex:
    """The identifier index of one clean frame (vectorised; see IdentifierIndex)."""
    hashes, codes, phone_hashes, name_values = [], [], [], []
    max_tokens = 1
    for name in leak_columns(schema, policies):
        if name not in df.columns:
            continue
        col = schema.columns[name]
        entity = PII_ENTITY.get(col.pii or "", "IDENTIFIER")
        arr = as_string_array(df[name].astype("string"))  # a date identifier as its ISO text
        arr = arr.filter(pc.is_valid(arr))
        if col.pii == "phone":
            digits = pc.replace_substring_regex(pc.utf8_normalize(arr, "NFKC"), r"[^\p{Nd}]", "")
            digits = digits.filter(pc.greater_equal(pc.utf8_length(digits), 7))
            suffix = _strings(pc.utf8_slice_codeunits(digits, -9))
            phone_hashes.append(HashedSet.from_hashes(hash_strings(suffix), _codes(entity, suffix)))
            continue
        norm = norm_array(arr)
        cjk = pc.fill_null(pc.match_substring_regex(norm, f"[{_CJK}]{{2,}}"), False)
        min_len = pc.if_else(cjk, 2, 4)
        norm = norm.filter(pc.greater_equal(pc.utf8_length(norm), min_len))
        if not len(norm):
            continue
        tokens = token_form(norm)
        max_tokens = max(max_tokens, pc.max(pc.count_substring_regex(tokens, _RE2_TOKEN)).as_py())
        values = _strings(tokens)
        hashes.append(hash_strings(values))
        codes.append(_codes(entity, values))
        if entity == PII_ENTITY["name"]:
            name_values.append(_strings(norm))
    values_set = (
        HashedSet.from_hashes(np.concatenate(hashes), np.concatenate(codes))
        if hashes
        else HashedSet.empty()
    )
    names = known_name_set(np.concatenate(name_values)) if name_values else HashedSet.empty()
    return IdentifierIndex(values_set, HashedSet.merge(phone_hashes), names, max_tokens)


def token_form(norm: pa.Array) -> pa.Array:
    """Normalised text as its tokens joined by single spaces: the form the index hashes values
    in and the scan looks n-grams up in. A switch between Chinese and other characters splits
    tokens too (a Latin name glued to Chinese text)."""
    for pattern in (f"([{_CJK}])([^{_CJK} ])", f"([^{_CJK} ])([{_CJK}])"):
        norm = pc.replace_substring_regex(norm, pattern, "\\1 \\2")
    tokens = pc.split_pattern_regex(norm, _RE2_TOKEN_SPLIT)
    return pc.utf8_trim(pc.binary_join(tokens, pa.scalar(" ", norm.type)), " ")


def _codes(entity: str, values: np.ndarray) -> np.ndarray:
    return np.full(len(values), _CODE[entity], dtype=np.int8)


def _assign(ent: np.ndarray, rows: np.ndarray, codes: np.ndarray) -> None:
    """Give each row without an entity yet its first hit (in the given order)."""
    hit = codes >= 0
    if not hit.any():
        return
    rows, codes = rows[hit], codes[hit]
    uniq, first = np.unique(rows, return_index=True)
    todo = ent[uniq] < 0
    ent[uniq[todo]] = codes[first[todo]]


def _flat(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    return pc.list_flatten(lists), pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)


def leak_entities(texts: pa.Array, index: IdentifierIndex, whole_cell_only: bool) -> np.ndarray:
    """Entity code of the first known identifier found in each text (-1: none): the whole cell,
    then token n-grams (up to index.max_tokens), Chinese 2-4 character substrings, and phone
    digit runs (by their last 9 digits)."""
    raw = pc.fill_null(as_string_array(texts), "")
    norm = token_form(norm_array(raw))
    ent = index.match(_strings(norm))
    if whole_cell_only:
        return ent
    if len(index.values):
        tok, rows = _flat(pc.split_pattern_regex(norm, _RE2_TOKEN_SPLIT))
        keep = pc.greater(pc.utf8_length(tok), 0)
        tok, rows = tok.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]
        gram, total = tok, len(tok)
        sep = pa.scalar(" ", tok.type)
        for n in range(1, index.max_tokens + 1):
            if total < n:
                break
            if n > 1:
                # n consecutive tokens of one row, joined by one space
                gram = pc.binary_join_element_wise(gram.slice(0, total - n + 1),
                                                   tok.slice(n - 1), sep)  # fmt: skip
            same = rows[: total - n + 1] == rows[n - 1 :]
            _assign(ent, rows[: total - n + 1][same], index.match(_strings(gram.filter(same))))
        other = np.flatnonzero(~pc.string_is_ascii(norm).to_numpy(zero_copy_only=False))
        if other.size:
            runs, parent = _flat(pc.split_pattern_regex(norm.take(pa.array(other)), _RE2_NOT_CJK))
            lens = pc.utf8_length(runs).to_numpy(zero_copy_only=False)
            for n in (2, 3, 4):
                for i in range(max(int(lens.max(initial=0)) - n + 1, 0)):
                    sel = np.flatnonzero(lens >= i + n)
                    subs = pc.utf8_slice_codeunits(runs.take(pa.array(sel)), i, i + n)
                    _assign(ent, other[parent[sel]], index.match(_strings(subs)))
    if len(index.phones):
        # `_DIGIT_RUN`'s matches: a run of digits, spaces and ().- from its first to last digit,
        # 7 characters or more (a '+' can only start one, so it splits runs).
        seg, parent = _flat(pc.split_pattern_regex(raw, _RE2_NOT_DIGIT_RUN))
        seg = pc.replace_substring_regex(seg, r"^[^\p{Nd}]+|[^\p{Nd}]+$", "")
        long = pc.greater_equal(pc.utf8_length(seg), 7)
        seg, parent = seg.filter(long), parent[long.to_numpy(zero_copy_only=False)]
        digits = pc.replace_substring_regex(seg, r"[^\p{Nd}]", "")
        suffix = pc.utf8_slice_codeunits(digits, -9)
        _assign(ent, parent, index.match(_strings(suffix), phones=True))
    return ent


def scan_identifier_leaks(
    df: pd.DataFrame, columns: list[str], index: IdentifierIndex, whole_cell_only: set[str]
) -> list[dict[str, str]]:
    """Rows where a known identifier value appears in any string column (whole cell, token
    n-gram, Chinese substring or phone digits).

    Columns in `whole_cell_only` hold HMAC pseudonyms: random hex, whose digit runs would match
    phone numbers by chance, so only a whole cell equal to a known value counts there. Each
    distinct value is examined once (categorical columns have few).
    """
    findings = []
    record_ids = df[RECORD_ID].astype(str).to_numpy()
    for col in columns:
        enc = pc.dictionary_encode(pc.fill_null(as_string_array(df[col]), ""))
        ent = leak_entities(enc.dictionary, index, col in whole_cell_only)
        if not (ent >= 0).any():
            continue
        row_ent = ent[enc.indices.to_numpy(zero_copy_only=False)]
        for row in np.flatnonzero(row_ent >= 0):
            findings.append(
                {"record_id": record_ids[row], "column": col, "entity": ENTITIES[row_ent[row]],
                 "check": "identifier_value"}
            )  # fmt: skip
    return findings


def _distinct(df: pd.DataFrame, col: str) -> tuple[pa.Array, np.ndarray]:
    """A column's distinct values (nulls dropped) and, per row, its value's position (-1: null)."""
    enc = pc.dictionary_encode(as_string_array(df[col]))
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
    return enc.dictionary, idx


def scan_checksummed(df: pd.DataFrame, columns: list[str]) -> list[dict[str, str]]:
    """Rows holding a card number, IBAN or resident ID that passes its checksum."""
    findings = []
    record_ids = df[RECORD_ID].astype(str).to_numpy()
    for col in columns:
        values, idx = _distinct(df, col)
        s = pd.Series(values.to_pylist(), dtype=object)  # each distinct value once
        for entity, rx in CHECKSUM_CANDIDATES.items():
            cands = s.str.findall(rx).explode().dropna()
            bad = np.array(sorted({u for u, c in cands.items() if _checksum_ok(entity, c)}))
            if not bad.size:
                continue
            rows = np.flatnonzero(np.isin(idx, bad))
            findings += [
                {"record_id": record_ids[r], "column": col, "entity": entity, "check": "checksum"}
                for r in sorted(rows, key=lambda r: record_ids[r])
            ]
    return findings


class GxRegexScan:
    """Great Expectations: expect_column_values_to_not_match_regex per text column and entity.

    GX validates a frame of each column's distinct values (a categorical column has a handful),
    first asking only pass/fail; only when an expectation fails is it run again for the failing
    values' positions (COMPLETE), which are mapped back to the rows (record_ids) holding them.
    """

    def __init__(self, columns: list[str]):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        os.environ.setdefault("TQDM_DISABLE", "1")
        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        import great_expectations as gx

        self.ctx = gx.get_context(mode="ephemeral")
        # Progress bars are cosmetic; a config that refuses the setting is fine.
        with contextlib.suppress(Exception):
            self.ctx.variables.progress_bars = {"globally": False}
        asset = self.ctx.data_sources.add_pandas("anonymize_scan").add_dataframe_asset("anon")
        batch = asset.add_batch_definition_whole_dataframe("partition")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name="anonymize_scan"))
        for col in columns:
            for entity, rx in SCAN_REGEXES.items():
                suite.add_expectation(
                    gx.expectations.ExpectColumnValuesToNotMatchRegex(
                        column=col, regex=rx, meta={"entity": entity}
                    )
                )
        self.validation = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(name="anonymize_scan", data=batch, suite=suite)
        )
        self.columns = columns

    def run(self, df: pd.DataFrame) -> list[dict[str, str]]:
        """Findings (record_id, column, entity), never the matched value."""
        if df.empty or not self.columns:
            return []
        distinct = {c: _distinct(df, c) for c in self.columns}
        size = max(len(v) for v, _ in distinct.values())
        frame = pd.DataFrame({_POS: np.arange(size)})
        for col, (values, _) in distinct.items():
            padded = np.full(size, None, dtype=object)
            padded[: len(values)] = values.to_numpy(zero_copy_only=False)
            frame[col] = padded
        result = self.validation.run(
            batch_parameters={"dataframe": frame}, result_format={"result_format": "BOOLEAN_ONLY"}
        )
        if result.success:
            return []
        result = self.validation.run(
            batch_parameters={"dataframe": frame},
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [_POS],
                "return_unexpected_index_query": False,
            },
        )
        findings = []
        record_ids = df[RECORD_ID].astype(str).to_numpy()
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            col = cfg.kwargs["column"]
            bad = [int(item[_POS]) for item in r.result.get("unexpected_index_list") or []]
            for row in np.flatnonzero(np.isin(distinct[col][1], bad)):
                findings.append(
                    {"record_id": record_ids[row], "column": col, "entity": cfg.meta["entity"],
                     "check": "gx_regex"}
                )  # fmt: skip
        return findings


_POS = "_value_position"
_GX_SCANS: dict[tuple[str, ...], GxRegexScan] = {}


def gx_scan(columns: list[str]) -> GxRegexScan:
    """One GX context and suite per process and column list (building one costs seconds)."""
    key = tuple(columns)
    if key not in _GX_SCANS:
        _GX_SCANS[key] = GxRegexScan(columns)
    return _GX_SCANS[key]


def leak_columns(schema: Schema, policies: dict[str, Policy]) -> list[str]:
    """Identifier (and source key) columns whose values must not appear in the output."""
    return [
        n
        for n, c in schema.columns.items()
        if c.role in ("identifier", "key") and policies[n].action in ("drop", "pseudonymize")
    ]


def build_index(df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]) -> IdentifierIndex:
    """The identifier index of one clean frame."""
    return index_part(df, schema, policies)


_NOT_TEXT = ("date", "datetime", "datetime64", "boolean", "time")


def string_columns(df: pd.DataFrame) -> list[str]:
    """Output columns holding text (lineage ids, numbers, dates and booleans excluded)."""
    return [
        c
        for c in df.columns
        if c not in LINEAGE_COLUMNS
        and (pd.api.types.is_string_dtype(df[c]) or df[c].dtype == object)
        # A kept date or bool column comes to pandas as objects (datetime.date, bool): no text.
        and pd.api.types.infer_dtype(df[c], skipna=True) not in _NOT_TEXT
    ]


# ---------------------------------------------------------------------------------------------


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)


class RecordingSet:
    """A HashedSet (or, with None, an empty one) that keeps every candidate hash looked up.

    What a scan looked up is all its result can depend on, so a stored result stays valid while
    the global sets, restricted to those candidates, are unchanged (see `relevant`)."""

    def __init__(self, target: HashedSet | None = None):
        self.target = target
        self.seen: list[np.ndarray] = []

    def __len__(self) -> int:
        # Never "empty": scans skip an empty set without generating (and recording) candidates.
        return max(1, len(self.target) if self.target is not None else 0)

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The target's codes (-1: absent), recording the hashes."""
        self.seen.append(np.asarray(hashes, dtype=np.uint64))
        if self.target is None:
            return np.full(len(hashes), -1, dtype=np.int8)
        return self.target.lookup_hashes(hashes)

    def hashes(self) -> np.ndarray:
        """Every distinct candidate hash looked up."""
        return np.unique(np.concatenate(self.seen)) if self.seen else np.empty(0, np.uint64)


class RecordingIndex:
    """An IdentifierIndex whose value and phone lookups are recorded (RecordingSet)."""

    def __init__(self, index: IdentifierIndex):
        self.values, self.phones = RecordingSet(index.values), RecordingSet(index.phones)
        self.max_tokens = index.max_tokens

    def match(self, candidates: Any, phones: bool = False) -> np.ndarray:
        """As IdentifierIndex.match."""
        return (self.phones if phones else self.values).lookup_hashes(hash_strings(candidates))


def relevant(found: HashedSet, candidates: np.ndarray) -> str:
    """A digest of the part of a hashed set that a scan with these candidates can see."""
    codes = found.lookup_hashes(candidates)
    hit = codes >= 0
    return _sha(candidates[hit], codes[hit])


def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"\x00")
    return h.hexdigest()


def profile_file(
    path: Path,
    schema: Schema,
    policies: dict[str, Policy],
    key: bytes,
    min_digit_run: int | None,
    out_dir: Path,
) -> dict[str, Any]:
    """Task, pass 1 over one clean partition, needing nothing global: policies applied and text
    scrubbed (policy.parquet), its identifier index (index.npz), its rows' class hashes
    (quasi.npy) and the name candidates of its text (names.npy)."""
    df = _to_pandas(pq.read_table(path))
    anon, counts = apply_policies(df, schema, policies, key, min_digit_run)
    write_parquet(_to_arrow(anon), out_dir / "policy.parquet")
    quasi = quasi_frame(df, schema, policies)
    np.save(out_dir / "quasi.npy", quasi_hashes(quasi))
    index = index_part(df, schema, policies)
    save_index(index, out_dir / "index.npz")
    suspects = mislabelled_columns(anon, schema, policies, index)  # the values as released
    names = RecordingSet()
    for col in schema.with_role("text"):
        if col in anon.columns:
            known_name_spans(as_string_array(anon[col]), names)
    np.save(out_dir / "names.npy", names.hashes())
    return {
        "rows": len(df),
        "counts": counts,
        "quasi_identifiers": [c for c in quasi.columns if c != RECORD_ID],
        "suspects": suspects,
    }


# A released column is taken for a mislabelled identifier when at least this share of its
# values are identifier values of the dataset or identifier patterns, or (categorical columns)
# when this share of them are distinct free strings.
MISLABEL_SHARE = 0.5
NEAR_UNIQUE_SHARE = 0.9
NEAR_UNIQUE_MIN_ROWS = 100
# "Given Surname" (with initials, particles, apostrophes, hyphens) or a 2-4 character Chinese
# name; counted only with this many distinct such values (a column of a few cities is no list of
# people).
_PERSON_NAME = (
    r"^[A-Z][a-z]+(?:-[A-Z][a-z]+)?\.?(?: [A-Z]\.)*"
    r"(?: (?:(?:van|de|von|der|da|di|le|la) )*[A-Z][A-Za-z'-]+){1,2}$"
    r"|^[\x{4e00}-\x{9fff}]{2,4}$"
)
NAME_MIN_DISTINCT = 50


def mislabelled_columns(
    df: pd.DataFrame, schema: Schema, policies: dict[str, Policy], index: IdentifierIndex
) -> dict[str, str]:
    """Released columns that look like direct identifiers: column -> why (empty: none)."""
    suspects = {}
    for name, col in schema.columns.items():
        if (
            col.role in ("key", "identifier", "label")
            or col.not_identifier
            or name not in df.columns
        ):
            continue
        if policies[name].action in ("drop", "pseudonymize"):
            continue
        values = as_string_array(df[name].astype("string")).drop_null()
        if not len(values):
            continue
        enc = pc.dictionary_encode(values)
        distinct = enc.dictionary
        counts = np.bincount(enc.indices.to_numpy(zero_copy_only=False), minlength=len(distinct))
        known = index.match(_strings(token_form(norm_array(distinct)))) >= 0
        share_known = counts[known].sum() / len(values)
        if share_known >= MISLABEL_SHARE:
            suspects[name] = f"{share_known:.0%} of its values are identifier values of the data"
            continue
        if col.role != "numeric":
            scrubbed, _ = scrub_column(distinct, min_digit_run=None)
            whole = pc.match_substring_regex(scrubbed, r"^<[A-Z_]+>$").to_numpy(
                zero_copy_only=False
            )
            share = counts[whole].sum() / len(values)
            if share >= MISLABEL_SHARE:
                suspects[name] = (
                    f"{share:.0%} of its values are e-mails, phones or other identifiers"
                )
                continue
        if col.role in ("text", "numeric") or col.type in ("int", "float", "date", "timestamp"):
            continue  # free text is scrubbed, and measurements are distinct by nature
        if len(values) >= NEAR_UNIQUE_MIN_ROWS and len(distinct) / len(values) >= NEAR_UNIQUE_SHARE:
            suspects[name] = f"{len(distinct) / len(values):.0%} of its values are distinct"
            continue
        named = pc.match_substring_regex(distinct, _PERSON_NAME).to_numpy(zero_copy_only=False)
        share = counts[named].sum() / len(values)
        if share >= MISLABEL_SHARE and named.sum() >= NAME_MIN_DISTINCT:
            suspects[name] = f"{share:.0%} of its values are shaped like personal names"
    return suspects


class MislabelledColumn(InputError):
    """A column about to be released looks like a direct identifier."""


def check_mislabelled(results: Iterable[dict[str, Any]]) -> None:
    """Stop (exit 2) before anything is released when a partition found a mislabelled column."""
    found: dict[str, str] = {}
    for result in results:
        for name, why in result.get("suspects", {}).items():
            found.setdefault(name, why)
    if found:
        first = next(iter(found))
        raise MislabelledColumn(
            "anonymize: column(s) "
            + "; ".join(f"'{n}' ({why})" for n, why in found.items())
            + " would be released but look like direct identifiers. In params.yaml set "
            f"schema.columns.{first}.role: identifier (with its pii kind), or give it a policy "
            f"under anonymize.policies (drop, pseudonymize, generalize or mask)."
        )


def save_index(index: IdentifierIndex, path: Path) -> None:
    """An IdentifierIndex as .npz (hash and code arrays, and max_tokens)."""
    arrays = {
        f"{part}_{what}": getattr(getattr(index, part), what)
        for part in ("values", "phones", "names")
        for what in ("hashes", "codes")
    }
    np.savez(path, max_tokens=np.array(index.max_tokens), **arrays)


def load_index(path: Path) -> IdentifierIndex:
    """An IdentifierIndex saved by save_index."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    sets = {
        part: HashedSet(arrays[f"{part}_hashes"], arrays[f"{part}_codes"])
        for part in ("values", "phones", "names")
    }
    return IdentifierIndex(max_tokens=int(arrays["max_tokens"]), **sets)


def scan_file(
    policy_file: Path,
    index_file: Path,
    clean_file: Path,
    schema: Schema,
    policies: dict[str, Policy],
    min_digit_run: int | None,
    out_dir: Path,
) -> dict[str, Any]:
    """Task, pass 2 over one partition: the dataset's known names scrubbed from its text
    (released.parquet, before k-suppression) and the independent scan of the result, with the
    candidate hashes the identifier-value scan looked up (leak.npz)."""
    anon = _to_pandas(pq.read_table(policy_file))
    index = load_index(index_file)
    anon, named = scrub_names(anon, schema, index.names)
    found = {col: {"KNOWN_PERSON": n} for col, n in named.items()}
    write_parquet(_to_arrow(anon), out_dir / "released.parquet")
    scan_cols = string_columns(anon)
    pattern_cols = [c for c in scan_cols if policies[c].action != "pseudonymize"]
    pseudonymized = {c for c in scan_cols if policies[c].action == "pseudonymize"}
    findings = gx_scan(pattern_cols).run(anon)
    findings += scan_checksummed(anon, pattern_cols)
    recorder = RecordingIndex(index)
    findings += scan_identifier_leaks(anon, scan_cols, recorder, pseudonymized)
    leak_cols = leak_columns(schema, policies)
    clean = pq.read_table(clean_file, columns=leak_cols)
    findings += scan_values_and_numbers(
        anon, pattern_cols, ValueScanner(identifier_values(clean, schema, leak_cols)), min_digit_run
    )
    np.savez(out_dir / "leak.npz", values=recorder.values.hashes(), phones=recorder.phones.hashes())
    # What of the global index this scan could see: a later run reuses it while that is unchanged.
    (out_dir / INDEX_SEEN).write_text(json.dumps(index_seen(index, out_dir)))
    return {"counts": found, "findings": findings}


INDEX_SEEN = "index_seen.json"


def identifier_values(clean: pa.Table, schema: Schema, columns: list[str]) -> list[tuple[str, str]]:
    """(value, entity) of every identifier value in the given clean columns."""
    out = []
    for name in columns:
        if name not in clean.column_names:
            continue
        entity = PII_ENTITY.get(schema.columns[name].pii or "", "IDENTIFIER")
        values = pc.unique(clean.column(name).drop_null()).to_pylist()
        out += [(str(v), entity) for v in values]
    return out


def scan_values_and_numbers(
    anon: pd.DataFrame, columns: list[str], scanner: ValueScanner, min_digit_run: int | None
) -> list[dict[str, str]]:
    """The second method (stages/lib/leakscan.py): identifier values by Aho-Corasick over
    canonical text, numbers by libphonenumber and the digit-run rule; each distinct value once."""
    findings = []
    record_ids = anon[RECORD_ID].astype(str).to_numpy()
    for col in columns:
        values, idx = _distinct(anon, col)
        for position, text in enumerate(values.to_pylist()):
            entity, check = scanner.find(text), "identifier_value_ac"
            if entity is None:
                entity, check = find_numbers(text, min_digit_run), "number"
            if entity is None:
                continue
            findings += [
                {"record_id": record_ids[r], "column": col, "entity": entity, "check": check}
                for r in np.flatnonzero(idx == position)
            ]
    return findings


def index_seen(index: IdentifierIndex, entry: Path) -> list[str]:
    """Digests of the global identifier index restricted to what a stored scan looked up."""
    with np.load(entry / "leak.npz") as leak:
        return [relevant(index.values, leak["values"]), relevant(index.phones, leak["phones"])]


def _merge_counts(into: dict[str, Counter], counts: dict[str, dict[str, int]]) -> None:
    for col, c in counts.items():
        into.setdefault(col, Counter()).update(c)


def run(
    input_dir: Path,
    output_dir: Path,
    quarantine_dir: Path,
    config: AnonymizeConfig,
    schema: Schema,
    key: bytes,
) -> tuple[StageSummary, dict[str, Any]]:
    """The whole stage over partitions, each step reusing what an earlier run stored.

    1. Per partition (tasks): policies and per-row scrubbing, identifier index, class hashes.
    2. The global identifier index and class sizes (k over the whole dataset).
    3. Per partition (tasks): the dataset's known names scrubbed, the independent scan. A stored
       result is reused while the global sets, restricted to the candidates it looked up, are
       unchanged, so a new batch does not redo earlier partitions unless it concerns them.
    4. In order: rows of classes smaller than k to quarantine, the rest to data/anon.
    """
    summary = StageSummary("anonymize")
    policies = column_policies(schema, dict(config.policies))
    params = {
        "schema": str(schema),
        "policies": {n: str(p) for n, p in policies.items()},
        "min_digit_run": config.min_digit_run,
    }
    code = code_digest(__file__)
    files = dict(partition_names(input_dir))
    profile_tasks = [
        PartitionTask(
            name,
            digest(file_hash(file), params, keys.key_id(key), code),
            profile_file,
            (file, schema, policies, key, config.min_digit_run),
        )
        for name, file in files.items()
    ]
    profile_cache = CacheDir("anonymize-profile")
    profiled = list(run_tasks("anonymize (pass 1)", profile_tasks, profile_cache))
    check_mislabelled(d.result for d in profiled)

    # The global identifier index, once on disk for the worker processes.
    index = IdentifierIndex.merge(load_index(d.file("index.npz")) for d in profiled)
    scan_cache = CacheDir("anonymize-scan")
    index_file = scan_cache.path / f".index-{os.getpid()}.npz"
    save_index(index, index_file)
    classes = [np.load(d.file("quasi.npy")) for d in profiled]
    all_classes = np.concatenate(classes) if classes else np.empty(0, np.uint64)
    sizes = sizes_of(all_classes)
    del all_classes
    before = risk_report(pd.Series(sizes, dtype="int64"))
    check_not_all_suppressed(sizes, config.k)

    scan_tasks, stale = [], []
    for d in profiled:
        names_seen = relevant(index.names, np.load(d.file("names.npy")))
        task_key = digest(d.task.key, names_seen, index.max_tokens, code)
        entry = scan_cache.get(task_key)
        if entry is not None:
            if json.loads((entry / INDEX_SEEN).read_text()) != index_seen(index, entry):
                stale.append(entry)  # a new identifier value may occur in it: scan again
        args = (
            d.file("policy.parquet"),
            index_file,
            files[d.task.name],
            schema,
            policies,
            config.min_digit_run,
        )
        scan_tasks.append(PartitionTask(d.task.name, task_key, scan_file, args))
    for entry in stale:
        shutil.rmtree(entry, ignore_errors=True)
    del index  # the workers load it from index_file: one copy fewer while they run
    try:
        scanned = list(run_tasks("anonymize (pass 2)", scan_tasks, scan_cache))
    finally:
        index_file.unlink(missing_ok=True)

    findings: list[dict[str, str]] = []
    counts: dict[str, Counter] = {}
    kept_classes = []
    final_cache = CacheDir("anonymize-final")
    final_keys = []
    offset = 0
    with AtomicDir(output_dir) as out, AtomicDir(quarantine_dir) as quarantine:
        for p, s, part_classes in zip(profiled, scanned, classes, strict=True):
            n = p.result["rows"]
            row_sizes = sizes[offset : offset + n]
            offset += n
            small = row_sizes < config.k if config.k else np.zeros(n, dtype=bool)
            kept_classes.append(part_classes[~small])
            suppressed = np.flatnonzero(small)
            final_key = digest(s.task.key, _sha(suppressed, row_sizes[small]), config.k)
            final_keys.append(final_key)
            entry = final_cache.get(final_key)
            if entry is None:
                staged = final_cache.staging(final_key)
                released = pq.read_table(s.file("released.parquet"))
                mask = pa.array(small)
                write_parquet(released.filter(pc.invert(mask)), staged / "kept.parquet")
                dropped = released.filter(mask).to_pandas()
                dropped[REASON] = [
                    f"k_anonymity: equivalence class of {int(c)} < k={config.k}"
                    for c in row_sizes[small]
                ]
                write_parquet(_to_arrow(dropped), staged / "dropped.parquet")
                entry = final_cache.put(final_key, staged, {"kept": int(n - small.sum())})
            out.link(p.task.name, entry / "kept.parquet")
            quarantine.link(p.task.name, entry / "dropped.parquet")
            summary.rows_in += n
            summary.rows_out += n - int(small.sum())
            summary.quarantined["k_anonymity"] += int(small.sum())
            _merge_counts(counts, p.result["counts"])
            _merge_counts(counts, s.result["counts"])
            findings += s.result["findings"]
        scan = {
            "passed": not findings,
            "findings": len(findings),
            "by_entity": dict(Counter(f["entity"] for f in findings)),
            "checks": ["gx_regex", "checksum", "identifier_value", "identifier_value_ac", "number"],
            "details": findings[:1000],
        }
        write_json_atomic(SCAN_REPORT, scan)
        if findings:
            raise ScanFailed(
                f"anonymize: the independent scan found {len(findings)} identifier(s) in the "
                f"output (see {SCAN_REPORT}); first: "
                + "; ".join(
                    f"record {f['record_id']} column {f['column']} {f['entity']}"
                    for f in findings[:5]
                )
            )
    profile_cache.keep_only(t.key for t in profile_tasks)
    scan_cache.keep_only(t.key for t in scan_tasks)
    final_cache.keep_only(final_keys)
    kept = np.concatenate(kept_classes) if kept_classes else np.empty(0, np.uint64)
    after = risk_report(pd.Series(sizes_of(kept), dtype="int64"))
    summary.extra.update(
        {
            "key_id": keys.key_id(key),
            "policies": {n: describe_policy(p) for n, p in policies.items()},
            "entity_counts": {c: dict(sorted(v.items())) for c, v in counts.items()},
            "scan": {k: v for k, v in scan.items() if k != "details"},
            "quasi_identifiers": profiled[0].result["quasi_identifiers"] if profiled else [],
            "k_threshold": config.k,
            "risk_before_suppression": before,
            "risk_after_suppression": after,
        }
    )
    return summary, scan


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


def batch_digests(path: Path) -> set[str]:
    """The content-hash prefixes in the input's batch ids (`_batch`, ingest's batch_id:
    "<stem>-<sha256[:10]>"): which source files the rows came from."""
    found: set[str] = set()
    for _, file in partition_names(path):
        column = pq.read_table(file, columns=[BATCH]).column(BATCH)
        found.update(b.rsplit("-", 1)[-1] for b in pc.unique(column).to_pylist() if b)
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the stage from params.yaml."""
    parser = argparse.ArgumentParser(prog="python -m stages.anonymize", description=__doc__)
    parser.add_argument(
        "--demo-key",
        action="store_true",
        help=f"create a random local demo key in {keys.DEMO_KEY_FILE} if none exists "
        "(never for real data)",
    )
    args = parser.parse_args(argv)
    params = load_params()
    config = section(AnonymizeConfig, "anonymize", params)
    schema = load_schema(params)
    if args.demo_key and not os.environ.get(keys.KEY_ENV):
        keys.create_demo_key()
    # run_stage turns a missing key into exit 2 with how to set one.
    key = keys.load_key(sample=keys.is_sample(batch_digests(INPUT)))
    # A scan hit raises ScanFailed, a gate failure: run_stage exits 3, never retried.
    summary, _ = run(INPUT, OUTPUT, QUARANTINE, config, schema, key)
    data = summary.write()
    print(
        f"anonymize: {data['rows_in']} in, {data['rows_out']} out, "
        f"{data['rows_quarantined']} suppressed (k={config.k}); key {data['key_id']}; "
        f"scan passed; k before {data['risk_before_suppression']['k']}"
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
