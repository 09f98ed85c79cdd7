"""Anonymize: apply column policies, scrub free text, gate on an independent scan, measure k.

Reads data/clean/, writes data/anon/ (same partitions), data/quarantine_anon/ (rows of
equivalence classes smaller than k, with `_reason`), metrics/anonymize.json and
reports/privacy/scan.json. Needs the pseudonymisation key (see stages/lib/keys.py).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib import keys
from stages.lib.errors import GateFailure, run_stage
from stages.lib.features import Policy, column_policies
from stages.lib.io import AtomicDir, iter_partitions, write_json_atomic
from stages.lib.params import load_params, section
from stages.lib.schema import LINEAGE_COLUMNS, RECORD_ID, Schema, load_schema
from stages.lib.scrub import PII_ENTITY, known_name_set, scrub_column, scrub_known_names
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
    """The rows' own identifiers by pii kind: {kind: [(column, values)]} (for record-aware)."""
    out: dict[str, list[tuple[str, Any]]] = {}
    for name, col in schema.columns.items():
        if col.pii and name in df.columns:
            out.setdefault(col.pii, []).append((name, df[name].astype("string")))
    return out


def apply_policies(
    df: pd.DataFrame, schema: Schema, policies: dict[str, Policy], key: bytes
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """Anonymize one clean frame: policies per column, text scrubbed; returns entity counts."""
    out = {c: df[c] for c in LINEAGE_COLUMNS if c in df.columns}
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
            scrubbed, found = scrub_column(values.astype("string"), identifiers)
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


def known_names(index: IdentifierIndex) -> set[str]:
    """The person names of an identifier index, as scrub_known_names wants them."""
    return known_name_set(v for v, entity in index.values.items() if entity == PII_ENTITY["name"])


def anonymize_frame(
    df: pd.DataFrame, schema: Schema, policies: dict[str, Policy], key: bytes, names: set[str]
) -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """One clean frame as the stage releases it (before k-suppression): policies applied, then
    the dataset's known person `names` scrubbed from its text columns; returns entity counts."""
    anon, found = apply_policies(df, schema, policies, key)
    for col in schema.with_role("text"):
        if col in anon.columns:
            anon[col], n_names = scrub_known_names(anon[col], names)
            found[col] = {
                **found.get(col, {}),
                "KNOWN_PERSON": found.get(col, {}).get("KNOWN_PERSON", 0) + n_names,
            }
    return anon, found


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


def class_sizes(quasi: pd.DataFrame) -> pd.Series:
    """Equivalence-class size of each row (index: record_id); nulls form their own value."""
    cols = [c for c in quasi.columns if c != RECORD_ID]
    if not cols:
        return pd.Series(len(quasi), index=quasi[RECORD_ID].to_numpy(), dtype="int64")
    keyed = quasi[cols].astype("string").fillna("\x00null")
    sizes = keyed.groupby(cols, dropna=False)[cols[0]].transform("size")
    return pd.Series(sizes.to_numpy(dtype="int64"), index=quasi[RECORD_ID].to_numpy())


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


_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]{2,}")
_TOKEN = re.compile(r"[^\s,;:!?()\[\]<>\"'，。；：！？、]+")
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s().-]{5,}\d")


@dataclass
class IdentifierIndex:
    """Values of the clean data's dropped or pseudonymized identifier columns, normalised."""

    values: dict[str, str]  # normalised value -> entity type
    phones: dict[str, str]  # last 9 digits -> entity type
    max_tokens: int = 1
    _arrays: dict = field(default_factory=dict)  # lookup arrays, built once per table

    @classmethod
    def empty(cls) -> IdentifierIndex:
        """An index with nothing in it."""
        return cls({}, {})

    def match(self, candidates: pd.Series, phones: bool = False) -> pd.Series:
        """The entity of each candidate that is a known value (phone suffix), non-matches dropped.

        One Arrow hash lookup per call: pandas' isin against a large dict is far slower.
        """
        table = self.phones if phones else self.values
        if candidates.empty or not table:
            return pd.Series(dtype=object)
        cached = self._arrays.get(phones)
        if cached is None or len(cached[1]) != len(table):
            cached = (
                pa.array(list(table), pa.string()),
                np.array(list(table.values()), dtype=object),
            )
            self._arrays[phones] = cached
        keys_, entities = cached
        pos = pc.index_in(
            pa.array(candidates.astype(str).to_numpy(dtype=object), pa.string()), value_set=keys_
        )
        pos = pos.to_numpy(zero_copy_only=False)
        found = ~pd.isna(pos)
        return pd.Series(entities[pos[found].astype(np.int64)], index=candidates.index[found])

    def add(self, values: Iterable[Any], entity: str, is_phone: bool) -> None:
        """Add one column's values."""
        for v in values:
            if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
                continue
            text = _norm(str(v))
            if is_phone:
                digits = re.sub(r"\D", "", text)
                if len(digits) >= 7:
                    self.phones[digits[-9:]] = entity
                continue
            cjk = bool(_CJK_RUN.search(text))
            if len(text) >= (2 if cjk else 4):
                self.values[text] = entity
                self.max_tokens = max(self.max_tokens, len(_TOKEN.findall(text)))


def scan_identifier_leaks(
    df: pd.DataFrame, columns: list[str], index: IdentifierIndex, whole_cell_only: set[str]
) -> list[dict[str, str]]:
    """Rows where a known identifier value appears in any string column (whole cell, token
    n-gram, Chinese substring or phone digits).

    Columns in `whole_cell_only` hold HMAC pseudonyms: random hex, whose digit runs would match
    phone numbers by chance, so only a whole cell equal to a known value counts there.
    """
    findings = []
    for col in columns:
        s = df[col].astype("string").fillna("")
        norm = pd.Series([_norm(t) for t in s], index=df.index)
        hits: dict[Any, str] = {}

        def record(rows: pd.Series, col: str = col, hits: dict = hits) -> None:
            for row, entity in rows.items():
                hits.setdefault(row, entity)

        record(index.match(norm))
        if col in whole_cell_only:
            findings += [
                {"record_id": str(df.at[row, RECORD_ID]), "column": col, "entity": entity,
                 "check": "identifier_value"}
                for row, entity in hits.items()
            ]  # fmt: skip
            continue
        tokens = norm.str.findall(_TOKEN).explode().dropna()
        if not tokens.empty:
            pos = tokens.groupby(level=0).cumcount().to_numpy()
            tok = tokens.to_numpy(dtype=object)
            rows = tokens.index.to_numpy()
            for n in range(1, index.max_tokens + 1):
                if n > 1:
                    ok = np.r_[(rows[n - 1 :] == rows[: len(rows) - n + 1]), [False] * (n - 1)]
                    grams = tok[: len(tok) - n + 1].copy()
                    for j in range(1, n):
                        grams = grams + " " + tok[j : len(tok) - n + 1 + j]
                    grams = np.r_[grams, [""] * (n - 1)]
                    cand = pd.Series(grams, index=rows)[ok & (pos >= 0)]
                else:
                    cand = pd.Series(tok, index=rows)
                record(index.match(cand))
        cjk = norm.str.findall(_CJK_RUN).explode().dropna()
        if not cjk.empty and index.values:
            subs = [
                (row, run[i : i + n])
                for row, run in cjk.items()
                for n in (2, 3, 4)
                for i in range(len(run) - n + 1)
            ]
            cand = pd.Series([t for _, t in subs], index=[r for r, _ in subs], dtype=object)
            record(index.match(cand))
        runs = s.str.findall(_DIGIT_RUN).explode().dropna()
        if not runs.empty and index.phones:
            suffix = runs.str.replace(r"\D", "", regex=True).str[-9:]
            record(index.match(suffix, phones=True))
        for row, entity in hits.items():
            findings.append(
                {"record_id": str(df.at[row, RECORD_ID]), "column": col, "entity": entity,
                 "check": "identifier_value"}
            )  # fmt: skip
    return findings


def scan_checksummed(df: pd.DataFrame, columns: list[str]) -> list[dict[str, str]]:
    """Rows holding a card number, IBAN or resident ID that passes its checksum."""
    findings = []
    for col in columns:
        s = df[col].astype("string")
        for entity, rx in CHECKSUM_CANDIDATES.items():
            cands = s.str.findall(rx).explode().dropna()
            bad = {row for row, c in cands.items() if _checksum_ok(entity, c)}
            findings += [
                {"record_id": str(df.at[row, RECORD_ID]), "column": col, "entity": entity,
                 "check": "checksum"}
                for row in sorted(bad, key=str)
            ]  # fmt: skip
    return findings


class GxRegexScan:
    """Great Expectations: expect_column_values_to_not_match_regex per text column and entity."""

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
        frame = df[[RECORD_ID, *self.columns]].copy()
        for col in self.columns:
            frame[col] = frame[col].astype(object).where(frame[col].notna(), None)
        result = self.validation.run(
            batch_parameters={"dataframe": frame.reset_index(drop=True)},
            result_format={
                "result_format": "COMPLETE",
                "unexpected_index_column_names": [RECORD_ID],
                "return_unexpected_index_query": False,
            },
        )
        findings = []
        for r in result.results:
            if r.success:
                continue
            cfg = r.expectation_config
            for item in r.result.get("unexpected_index_list") or []:
                findings.append(
                    {"record_id": str(item[RECORD_ID]), "column": cfg.kwargs["column"],
                     "entity": cfg.meta["entity"], "check": "gx_regex"}
                )  # fmt: skip
        return findings


def leak_columns(schema: Schema, policies: dict[str, Policy]) -> list[str]:
    """Identifier (and source key) columns whose values must not appear in the output."""
    return [
        n
        for n, c in schema.columns.items()
        if c.role in ("identifier", "key") and policies[n].action in ("drop", "pseudonymize")
    ]


def build_index(df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]) -> IdentifierIndex:
    """The identifier index of one clean frame."""
    index = IdentifierIndex.empty()
    extend_index(index, df, schema, policies)
    return index


def extend_index(
    index: IdentifierIndex, df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]
) -> None:
    """Add a clean frame's dropped/pseudonymized identifier values to the index."""
    for name in leak_columns(schema, policies):
        if name in df.columns:
            col = schema.columns[name]
            entity = PII_ENTITY.get(col.pii or "", "IDENTIFIER")
            index.add(df[name].tolist(), entity, col.pii == "phone")


def string_columns(df: pd.DataFrame) -> list[str]:
    """Output columns holding text (lineage ids and numbers excluded)."""
    return [
        c
        for c in df.columns
        if c not in LINEAGE_COLUMNS
        and (pd.api.types.is_string_dtype(df[c]) or df[c].dtype == object)
    ]


# ---------------------------------------------------------------------------------------------


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)


def run(
    input_dir: Path,
    output_dir: Path,
    quarantine_dir: Path,
    config: AnonymizeConfig,
    schema: Schema,
    key: bytes,
) -> tuple[StageSummary, dict[str, Any]]:
    """The whole stage over partitions: two passes (risk and index, then anonymize + scan)."""
    summary = StageSummary("anonymize")
    policies = column_policies(schema, dict(config.policies))
    # Pass 1: released quasi-identifiers (for k over the whole dataset) and identifier values.
    quasi_parts, index = [], IdentifierIndex.empty()
    for _, table in iter_partitions(input_dir):
        df = _to_pandas(table)
        quasi_parts.append(quasi_frame(df, schema, policies))
        extend_index(index, df, schema, policies)
    quasi = pd.concat(quasi_parts, ignore_index=True) if quasi_parts else pd.DataFrame()
    names = known_names(index)
    sizes = class_sizes(quasi) if len(quasi) else pd.Series(dtype="int64")
    before = risk_report(sizes)
    gx_scan = None
    findings: list[dict[str, str]] = []
    counts: dict[str, Counter] = {}
    kept_sizes = []
    out, quarantine = AtomicDir(output_dir), AtomicDir(quarantine_dir)
    try:
        for name, table in iter_partitions(input_dir):
            df = _to_pandas(table)
            summary.rows_in += len(df)
            anon, found = anonymize_frame(df, schema, policies, key, names)
            for col, c in found.items():
                counts.setdefault(col, Counter()).update(c)
            row_sizes = sizes.reindex(anon[RECORD_ID].to_numpy()).to_numpy()
            small = row_sizes < config.k if config.k else np.zeros(len(anon), dtype=bool)
            kept, dropped = anon[~small], anon[small].copy()
            dropped[REASON] = [
                f"k_anonymity: equivalence class of {int(n)} < k={config.k}"
                for n in row_sizes[small]
            ]
            kept_sizes.append(kept[RECORD_ID])
            # The scan: GX regexes on text columns, checksums and identifier values everywhere.
            # Every string column is scanned; pseudonymized ones (HMAC hex) only for known values.
            scan_cols = string_columns(anon)
            pattern_cols = [c for c in scan_cols if policies[c].action != "pseudonymize"]
            if gx_scan is None:
                gx_scan = GxRegexScan(pattern_cols)
            findings += gx_scan.run(anon)
            findings += scan_checksummed(anon, pattern_cols)
            pseudonymized = {c for c in scan_cols if policies[c].action == "pseudonymize"}
            findings += scan_identifier_leaks(anon, scan_cols, index, pseudonymized)
            out.write_table(name, _to_arrow(kept))
            quarantine.write_table(name, _to_arrow(dropped))
            summary.rows_out += len(kept)
            summary.quarantined["k_anonymity"] += len(dropped)
        scan = {
            "passed": not findings,
            "findings": len(findings),
            "by_entity": dict(Counter(f["entity"] for f in findings)),
            "checks": ["gx_regex", "checksum", "identifier_value"],
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
        out.commit()
        quarantine.commit()
    except BaseException:
        out.abort()
        quarantine.abort()
        raise
    kept_ids = pd.concat(kept_sizes) if kept_sizes else pd.Series(dtype="string")
    after_quasi = quasi[quasi[RECORD_ID].isin(kept_ids)] if len(quasi) else quasi
    after = (
        risk_report(class_sizes(after_quasi))
        if len(after_quasi)
        else risk_report(pd.Series(dtype="int64"))
    )
    summary.extra.update(
        {
            "key_id": keys.key_id(key),
            "policies": {n: describe_policy(p) for n, p in policies.items()},
            "entity_counts": {c: dict(sorted(v.items())) for c, v in counts.items()},
            "scan": {k: v for k, v in scan.items() if k != "details"},
            "quasi_identifiers": [c for c in quasi.columns if c != RECORD_ID],
            "k_threshold": config.k,
            "risk_before_suppression": before,
            "risk_after_suppression": after,
        }
    )
    return summary, scan


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
    key = keys.load_key()  # run_stage turns a missing key into exit 2 with how to set one
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
