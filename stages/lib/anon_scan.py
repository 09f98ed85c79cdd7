"""The independent scan of the released data, deliberately not the scrubber: its own regexes
(run by Great Expectations), its own checksum code, a search for the clean data's identifier
values (the identifier index, and Aho-Corasick in stages/lib/leakscan.py), and the guard against
a released column that looks like a mislabelled identifier."""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.anon_index import IdentifierIndex, norm_array, object_strings, token_form
from stages.lib.errors import InputError
from stages.lib.features import Policy

# Imports no GX yet; sets GX's environment (analytics off) before GX is first imported.
from stages.lib.gx import context as gx_context
from stages.lib.leakscan import ValueScanner, find_numbers
from stages.lib.schema import LINEAGE_COLUMNS, RECORD_ID, Schema
from stages.lib.scrub import PII_ENTITY, as_string_array, scrub_column
from stages.lib.summaries import ScanFinding, ScanReport

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
        import great_expectations as gx

        # The process's one GX context (stages.lib.gx), shared with validate; names are per
        # column list, since a process may scan more than one.
        self.ctx = gx_context()
        name = f"anonymize_scan_{next(_SCAN_NAMES)}"
        asset = self.ctx.data_sources.add_pandas(name).add_dataframe_asset("anon")
        batch = asset.add_batch_definition_whole_dataframe("partition")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name))
        for col in columns:
            for entity, rx in SCAN_REGEXES.items():
                suite.add_expectation(
                    gx.expectations.ExpectColumnValuesToNotMatchRegex(
                        column=col, regex=rx, meta={"entity": entity}
                    )
                )
        self.validation = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
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
_SCAN_NAMES = itertools.count()


def gx_scan(columns: list[str]) -> GxRegexScan:
    """One GX context and suite per process and column list (building one costs seconds)."""
    key = tuple(columns)
    if key not in _GX_SCANS:
        _GX_SCANS[key] = GxRegexScan(columns)
    return _GX_SCANS[key]


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
        known = index.match(object_strings(token_form(norm_array(distinct)))) >= 0
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


def scan_report(findings: list[dict[str, str]]) -> ScanReport:
    """The scan's report (reports/privacy/scan.json): passed, counts by entity, the first
    1,000 findings (record, column, entity, check; never a value)."""
    return ScanReport(
        passed=not findings,
        findings=len(findings),
        by_entity=dict(Counter(f["entity"] for f in findings)),
        checks=["gx_regex", "checksum", "identifier_value", "identifier_value_ac", "number"],
        details=[ScanFinding.model_validate(f) for f in findings[:1000]],
    )
