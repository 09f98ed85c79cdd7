"""Quarantine reasons as typed values (issue 15): every kind a stage emits is a `Reason`, the
`_reason` message and the `_reason_kind` are composed from (kind, column, value, expected) in
stages/lib/reasons.py, and no module recovers a kind from a message with a regex."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stages.lib.anon_passes import release_file
from stages.lib.clean_rows import (
    dedup_partition,
    map_partition,
    quarantine_arrow,
    replaced_rows,
    superseded,
)
from stages.lib.dedup import DedupIndex
from stages.lib.reasons import (
    REASON_TYPE,
    Reason,
    kind_text,
    no_reasons,
    reason_kinds,
    reason_messages,
    reasons,
)
from stages.lib.schema import (
    BATCH,
    REASON,
    REASON_KIND,
    RECORD_ID,
    SOURCE_FILE,
    SOURCE_ROW,
    Column,
    Schema,
)
from tests.badinput import assert_typed_reasons
from tests.test_clean_properties import CFG

ROOT = Path(__file__).resolve().parents[1]

SCHEMA = Schema(
    {
        "id": Column(type="string", role="key"),
        "email": Column(type="string", role="attribute", format="email"),
        "born": Column(type="date", role="attribute", format="date"),
        "seen": Column(type="timestamp", role="numeric"),
        "member": Column(type="bool", role="categorical"),
        "visits": Column(type="int", role="numeric", min=0),
        "label": Column(type="category", role="label", values=("no", "yes")),
    }
)
STRICT = dataclasses.replace(CFG, reject_bad_format_in=("email", "born", "seen"))
GOOD = {
    "email": "a@b.no",
    "born": "1980-01-01",
    "seen": "2020-01-01T00:00:00",
    "member": "yes",
    "visits": "3",
    "label": "yes",
}
# One row per kind clean can reject a row for (the first check a row fails is its reason).
BAD = [
    {"id": None},
    {"email": "not-an-email"},
    {"born": "31/02/1980"},
    {"born": "1800-01-01"},
    {"seen": "garbage"},
    {"member": "maybe"},
    {"visits": "abc"},
    {"visits": "inf"},
    {"visits": "1.5"},
    {"visits": "-1"},
    {"label": None},
]


def raw_partition(rows: list[dict], batch: str) -> pa.Table:
    """A raw partition as ingest writes it: lineage + source strings."""
    ids = [r.get("id") for r in rows]
    cols = {
        RECORD_ID: [f"rid-{k}" if k else f"{batch}-{i}" for i, k in enumerate(ids)],
        BATCH: [batch] * len(rows),
        SOURCE_FILE: [f"data/in/{batch}.csv"] * len(rows),
        SOURCE_ROW: list(range(len(rows))),
    }
    for name in SCHEMA.columns:
        cols[name] = [r.get(name) for r in rows]
    return pa.table(
        {k: pa.array(v, pa.int64() if k == SOURCE_ROW else pa.string()) for k, v in cols.items()}
    )


def every_kind_quarantine() -> pa.Table:
    """Two partitions (on_existing_key: replace) whose quarantine holds every kind clean has."""
    first = [{**GOOD, "id": f"K{i}", **bad} for i, bad in enumerate(BAD)]
    first += [{**GOOD, "id": "K20"}, {**GOOD, "id": "K20"}]  # exact duplicate
    first += [{**GOOD, "id": "K21"}, {**GOOD, "id": "K21", "visits": "4"}]  # duplicate key
    first += [{**GOOD, "id": "K30"}]
    second = [{**GOOD, "id": "K30", "visits": "5"}]  # an update: K30 of `first` is replaced
    index, results, kept = DedupIndex(), [], []
    for batch, rows in (("b0", first), ("b1", second)):
        mapped = map_partition(raw_partition(rows, batch), SCHEMA, STRICT)
        result = dedup_partition(mapped, index, replace=True)
        results.append(result)
        kept.append(mapped.record_hash[result.kept])
    tables = []
    for result, mask in zip(results, superseded(kept), strict=True):
        q = quarantine_arrow(result.quarantine_table)
        tables += [q, replaced_rows(result.clean_table, mask, q)]
    return pa.concat_tables(tables)


def test_every_kind_clean_emits_is_a_reason_composed_with_a_column():
    q = every_kind_quarantine().to_pandas()
    assert_typed_reasons(q, SCHEMA.columns)
    composed = {kind_text(k, c): k for k in Reason for c in SCHEMA.columns}
    reached = {composed[k] for k in q[REASON_KIND]}
    # Every kind of the enum but anonymize's own is one clean can reach: none is dead.
    assert reached == set(Reason) - {Reason.K_ANONYMITY}
    assert "visits out of range: -1 (expected at least 0)" in set(q[REASON])
    assert "replaced by a later row of rid-K30" in set(q[REASON])


def test_messages_and_kinds_are_composed_from_kind_column_value_expected():
    n = 6
    value = pa.array(["430", "x", None, "R7", "R8", "equivalence class of 2 < k=5"])
    why = reasons(np.arange(n) == 0, Reason.OUT_OF_RANGE, "age", value, "17..100")
    parts = [
        why,
        reasons(np.arange(n) == 1, Reason.MISSING, "income"),  # value not shown
        no_reasons(n),
        reasons(np.arange(n) == 3, Reason.EXACT_DUPLICATE, value=value),
        reasons(np.arange(n) == 4, Reason.REPLACED, value=value),
        reasons(np.arange(n) == 5, Reason.K_ANONYMITY, value=value),
    ]
    typed = pc.coalesce(*parts)
    assert typed.type == REASON_TYPE
    assert reason_messages(typed).to_pylist() == [
        "age out of range: 430 (expected 17..100)",
        "missing income",
        None,
        "exact duplicate of R7",
        "replaced by a later row of R8",
        "k_anonymity: equivalence class of 2 < k=5",
    ]
    assert reason_kinds(typed).to_pylist() == [
        "age out of range",
        "missing income",
        None,
        "exact duplicate",
        "replaced",
        "k_anonymity",
    ]


def test_an_identifier_value_never_enters_a_reason():
    schema = Schema({**SCHEMA.columns, "visits": Column(type="int", role="identifier", min=0)})
    rows = [{**GOOD, "id": "K1", "visits": "-17"}, {**GOOD, "id": "K2", "visits": "abc"}]
    mapped = map_partition(raw_partition(rows, "b0"), schema, STRICT)
    q = dedup_partition(mapped, DedupIndex()).quarantine
    assert list(q[REASON]) == [
        "visits out of range (expected at least 0)",
        "visits is not a number",
    ]
    assert list(q[REASON_KIND]) == ["visits out of range", "visits is not a number"]


def test_k_anonymity_rows_carry_the_composed_reason(tmp_path: Path):
    released = tmp_path / "released.parquet"
    pq.write_table(pa.table({RECORD_ID: ["a", "b", "c"], "age": [30, 40, 50]}), released)
    release_file(released, np.array([1, 5, 2]), 3, tmp_path)
    dropped = pq.read_table(tmp_path / "dropped.parquet").to_pandas()
    assert list(dropped[RECORD_ID]) == ["a", "c"]
    assert list(dropped[REASON]) == [
        "k_anonymity: equivalence class of 1 < k=3",
        "k_anonymity: equivalence class of 2 < k=3",
    ]


def test_an_unknown_kind_is_refused():
    with pytest.raises(ValueError):
        kind_text("age is weird", "age")


# ----- no module recovers a reason's kind from its text -----

REGEX_CALLS = {"extract", "extractall"}  # pandas' .str.extract; Arrow's *_regex; module re


def _regex_subjects(node: ast.AST) -> list[ast.AST]:
    """What each regex call in `node` applies its pattern to: its arguments, and the object of
    a method (`q["_reason"].str.extract`), not a module such as `re` or `pc`."""
    subjects: list[ast.AST] = []
    for call in ast.walk(node):
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Attribute):
            continue
        attr, owner = call.func.attr, call.func.value
        module = isinstance(owner, ast.Name) and owner.id in ("re", "pc")
        if attr.endswith("_regex") or attr in REGEX_CALLS or (module and owner.id == "re"):
            subjects += [*call.args, *(k.value for k in call.keywords)]
            subjects += [] if module else [owner]
    return subjects


def _mentions_reason(node: ast.AST) -> bool:
    for n in ast.walk(node):
        words = []
        if isinstance(n, ast.Name):
            words.append(n.id)
        elif isinstance(n, ast.Attribute):
            words.append(n.attr)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            words.append(n.value)
        if any("reason" in w.lower() for w in words):
            return True
    return False


def reason_regexes(source: str, name: str = "<src>") -> list[str]:
    """Functions of a module that apply a regex to a reason (a value named or spelt `reason`):
    'name:line function'."""
    bad = []
    for node in ast.walk(ast.parse(source, name)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if any(_mentions_reason(s) for s in _regex_subjects(node)):
            bad.append(f"{name}:{node.lineno} {node.name}")
    return bad


OLD_REASON_KIND = """
def reason_kind(reason):
    kind = pc.replace_substring_regex(reason, "(?s):.*", "", max_replacements=1)
    return pc.replace_substring_regex(kind, r"(?s) \\(expected.*", "", max_replacements=1)
"""


def test_the_regex_check_finds_a_kind_parsed_from_a_message():
    assert reason_regexes(OLD_REASON_KIND) == ["<src>:2 reason_kind"]
    assert reason_regexes("def f(q):\n    return q['_reason'].str.extract('(.*):')\n")
    assert reason_regexes("def f(reason):\n    return re.sub(':.*', '', reason)\n")
    # A regex on data values beside a reason is no parse of the reason.
    assert (
        reason_regexes("def f(s, why):\n    return pc.match_substring_regex(s, 'x'), why\n") == []
    )


def test_no_module_parses_a_reason_with_a_regex():
    bad = []
    for path in sorted((ROOT / "stages").rglob("*.py")):
        bad += reason_regexes(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert bad == [], "compose reasons in stages/lib/reasons.py instead: " + ", ".join(bad)
