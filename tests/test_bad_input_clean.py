"""Bad input for clean, validate and anonymize (values and params): each ends in the exit code
the contract names, a message naming file/row/column or the params key and what to do, no
traceback, and nothing downstream changed; or, where the right handling is to go on, the bad
rows quarantined with a reason naming their source file, row and column.

Harness of tests/badinput.py: a module-wide project where a good batch went through
ingest, clean, validate and anonymize; each case copies it, swaps in its input or params and
runs the stages from the first one its change concerns, in process through run_stage (the
exit-code wrapper every stage's __main__ uses).
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from stages import clean
from tests.badinput import (
    STAGES,
    accounted_rows,
    assert_stopped_cleanly,
    case_project,
    csv,
    good,
    make_baseline,
    outputs_from,
    run,
)
from tests.badinput import with_values as cells
from tests.conftest import TEST_KEY
from tests.faultlib import tree_hashes

TOMORROW = (datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)).isoformat()


def two_batches(second: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[], dict]:
    """The good batch, then a later batch made from it."""
    return lambda: {"a.csv": csv(good()), "b.csv": csv(second(good()))}


def _updates(f: pd.DataFrame) -> pd.DataFrame:
    later = f.iloc[[1, 2, 3]].copy()
    later.loc[1, "notes"] = "moved to another city"
    later.loc[2, "notes"] = "changed phone number"
    return later  # row 3 unchanged: an exact duplicate


def _unlabelled(f: pd.DataFrame) -> pd.DataFrame:
    later = f.assign(customer_id=[f"D{r:06d}" for r in range(len(f))], income="")
    return later.iloc[:10]


@dataclass(frozen=True)
class Case:
    id: str
    start: str  # the first stage the change concerns
    stage: str  # the stage that stops (or the last one run, for code 0)
    code: int  # exit code: 2 bad input/params, 3 gate, 0 handled (quarantined or fixed)
    message: str = ""  # regex the stderr must match
    files: Callable[[], dict[str, bytes]] | None = None  # None: the good batch as it is
    params: dict[str, Any] = field(default_factory=dict)  # dotted key -> value (None deletes)
    # code 0: quarantine reason (regex) whose rows must name file and row; a check of the result
    reason: str | None = None
    check: Callable[[Path, dict[str, Any]], None] | None = None


def _clean_has(column: str, values: list[str]) -> Callable[[Path, dict], None]:
    def check(project: Path, metrics: dict) -> None:
        got = pd.read_parquet(project / "data/clean", columns=[column])[column]
        assert set(values) <= set(got.astype(str)), set(got)

    return check


def _exact_19_digits(project: Path, metrics: dict) -> None:
    fnlwgt = pd.read_parquet(project / "data/clean", columns=["fnlwgt"])["fnlwgt"]
    assert 1234567890123456789 in fnlwgt.tolist()


def _replaced(project: Path, metrics: dict) -> None:
    c = metrics["clean"]
    assert c["rows_replaced"] == 2 and c["duplicates_by_kind"] == {
        "exact duplicate": 1,
        "replaced": 2,
    }
    notes = pd.read_parquet(project / "data/clean", columns=["notes"])["notes"].tolist()
    assert "moved to another city" in notes and "changed phone number" in notes
    assert len(notes) == 40
    # A rerun reuses the stored deduplication and gives the same outputs, byte for byte.
    before = tree_hashes(project, ["data/clean", "data/quarantine"])
    clean.main()
    assert tree_hashes(project, ["data/clean", "data/quarantine"]) == before
    assert json.loads((project / "metrics/clean.json").read_text())["rows_replaced"] == 2


def _updates_quarantined(project: Path, metrics: dict) -> None:
    c = metrics["clean"]
    assert c["rows_replaced"] == 0
    assert c["duplicates_by_kind"] == {"exact duplicate": 1, "duplicate key": 2}


def _unlabelled_warned(project: Path, metrics: dict) -> None:
    batches = metrics["clean"]["batches_without_labels"]
    assert len(batches) == 1 and batches[0].startswith("b-"), batches
    assert metrics["clean"]["quarantined_by_reason"] == {"missing income": 10}


CASES = [
    # --- numbers an int64 cannot hold: quarantined with the column and the range
    Case("int_1e308", "ingest", "clean", 0, files=cells(age={3: "1e308"}),
         reason=r"^age out of range: 1e308 \(expected 17\.\.100, exactly\)$"),
    Case("int_20_digits", "ingest", "clean", 0, files=cells(fnlwgt={4: "12345678901234567890"}),
         reason=r"^fnlwgt out of range: 12345678901234567890 "
         r"\(expected 1\.\.9223372036854775807, exactly\)$"),
    Case("int_19_digits_above_int64", "ingest", "clean", 0,
         files=cells(fnlwgt={5: "9999999999999999999"}),
         reason=r"^fnlwgt out of range: 9999999999999999999 \(expected 1\.\.9223372036854775807"),
    Case("int_19_digits_kept_exactly", "ingest", "clean", 0,
         files=cells(fnlwgt={6: "1234567890123456789"}), check=_exact_19_digits),
    Case("int_beyond_float_exact", "ingest", "clean", 0, files=cells(capital_gain={7: "1.5e17"}),
         reason=r"^capital_gain out of range: 1\.5e17 "
         r"\(expected 0\.\.9223372036854775807, exactly\)$"),
    Case("unset_upper_bound_not_minus_inf", "ingest", "clean", 0,
         files=cells(capital_loss={8: "-5"}),
         reason=r"^capital_loss out of range: -5 \(expected at least 0\)$"),
    # --- impossible dates of birth
    Case("dob_9999_12_31", "ingest", "clean", 0, files=cells(date_of_birth={2: "9999-12-31"}),
         reason=r"^date_of_birth out of range: 9999-12-31 \(expected 1900-01-01\.\.\d{4}-"),
    Case("dob_0001_01_01", "ingest", "clean", 0, files=cells(date_of_birth={2: "0001-01-01"}),
         reason=r"^date_of_birth out of range: 0001-01-01 \(expected 1900-01-01\.\."),
    Case("dob_in_the_future", "ingest", "clean", 0, files=cells(date_of_birth={2: TOMORROW}),
         reason=rf"^date_of_birth out of range: {TOMORROW} "),
    Case("dob_below_params_min", "ingest", "clean", 0,
         files=cells(date_of_birth={2: "1951-06-01"}),
         params={"schema.columns.date_of_birth.min": "1955-01-01"},
         reason=r"^date_of_birth out of range: 1951-06-01 \(expected 1955-01-01\.\."),
    Case("dob_unparseable_rejected_by_params", "ingest", "clean", 0,
         files=cells(date_of_birth={2: "31/31/1980"}),
         params={"clean.reject_bad_format_in": ["date_of_birth"]},
         reason=r"^unparseable date in date_of_birth$"),
    # --- invisible characters in labels and categories
    Case("label_zero_width_space", "ingest", "clean", 0, files=cells(income={1: ">50K\u200b"}),
         check=_clean_has("income", [">50K"])),
    Case("label_bom", "ingest", "clean", 0, files=cells(income={1: "\ufeff<=50K"}),
         check=_clean_has("income", ["<=50K"])),
    Case("category_nbsp", "ingest", "clean", 0, files=cells(sex={1: "Male\u00a0"}),
         check=_clean_has("sex", ["Male"])),
    Case("label_still_outside_named", "ingest", "validate", 3,
         files=cells(income={4: "maybe\u200b"}),
         message=r"data/in/batch\.csv \(batch batch-\w+\) row 5, column income: 'maybe'.*"
         r"clean\.label_aliases"),
    # --- whole batches and updates
    Case("batch_without_labels", "ingest", "clean", 0, files=two_batches(_unlabelled),
         message=r"WARNING: batch b-\w+: all 10 rows have no 'income'", reason=r"^missing income$",
         check=_unlabelled_warned),
    Case("later_batch_updates_replace", "ingest", "clean", 0, files=two_batches(_updates),
         params={"clean.on_existing_key": "replace"}, reason=r"^replaced by a later row of ",
         check=_replaced),
    Case("later_batch_updates_quarantined", "ingest", "clean", 0, files=two_batches(_updates),
         reason=r"^duplicate key of ", check=_updates_quarantined),
    # --- clean and schema params
    Case("on_existing_key_unknown", "clean", "clean", 2,
         params={"clean.on_existing_key": "overwrite"},
         message=r"clean\.on_existing_key: got 'overwrite'; expected one of \['quarantine'"),
    Case("clean_key_typo", "clean", "clean", 2, params={"clean.on_existing_keys": "replace"},
         message=r"clean\.on_existing_keys: unknown key \(given 'replace'\); allowed keys here"),
    Case("missing_values_not_a_list", "clean", "clean", 2, params={"clean.missing_values": "na"},
         message=r"clean\.missing_values: got 'na'; expected a list"),
    Case("label_without_values", "clean", "clean", 2,
         params={"schema.columns.income.values": None},
         message=r"schema\.columns\.income: the label needs its 'values'.*params\.yaml"),
    Case("date_min_not_iso", "clean", "clean", 2,
         params={"schema.columns.date_of_birth.min": "yesterday"},
         message=r"schema\.columns\.date_of_birth\.min: expected an ISO date \(YYYY-MM-DD\)"),
    Case("date_max_a_number", "clean", "clean", 2,
         params={"schema.columns.date_of_birth.max": 2020},
         message=r"schema\.columns\.date_of_birth\.max: expected an ISO date"),
    Case("int_min_a_date", "clean", "clean", 2, params={"schema.columns.age.min": "1990-01-01"},
         message=r"schema\.columns\.age\.min: expected a number for a int column"),
    Case("min_above_max", "clean", "clean", 2,
         params={"schema.columns.age.min": 100, "schema.columns.age.max": 17},
         message=r"schema\.columns\.age: min 100\.0 is above max 17\.0"),
    Case("unknown_type", "clean", "clean", 2, params={"schema.columns.age.type": "integer"},
         message=r"schema\.columns\.age\.type: got 'integer'; expected one of"),
    # --- validate params
    Case("validate_unknown_severity", "validate", "validate", 2,
         params={"validate.severity.label_spelling": "critical"},
         message=r"validate\.severity: unknown check\(s\) \['label_spelling'\]"),
    Case("validate_null_share_text", "validate", "validate", 2,
         params={"validate.max_null_share": "ten percent"},
         message=r"validate\.max_null_share: got 'ten percent'; expected a number"),
    # --- anonymize params
    Case("k_larger_than_rows", "anonymize", "anonymize", 2, params={"anonymize.k": 1000},
         message=r"anonymize\.k: 1000 is larger than the dataset \(40 rows\).*"
         r"set anonymize\.k to at most 40"),
    Case("k_suppresses_everything", "anonymize", "anonymize", 3, params={"anonymize.k": 39},
         message=r"k=39 would suppress all 40 rows.*lower anonymize\.k"),
    Case("k_negative", "anonymize", "anonymize", 2, params={"anonymize.k": -1},
         message=r"anonymize\.k: expected 1 or more \(or null to only measure\), got -1"),
    Case("k_zero", "anonymize", "anonymize", 2, params={"anonymize.k": 0},
         message=r"anonymize\.k: expected 1 or more"),
    Case("k_text", "anonymize", "anonymize", 2, params={"anonymize.k": "five"},
         message=r"anonymize\.k: got 'five'; expected an integer or null"),
    Case("generalize_date_by_week", "anonymize", "anonymize", 2,
         params={"anonymize.policies.date_of_birth": {"action": "generalize", "date": "week"}},
         message=r"date_of_birth\.date: got 'week'; expected one of \['year', 'month'\]"),
    Case("policy_for_unknown_column", "anonymize", "anonymize", 2,
         params={"anonymize.policies.birthday": "drop"},
         message=r"anonymize\.policies: column\(s\) \['birthday'\] are not in the schema"),
    Case("identifier_kept", "anonymize", "anonymize", 2,
         params={"anonymize.policies.full_name": "keep"},
         message=r"anonymize\.policies\.full_name: 'full_name' is a direct identifier"),
    Case("label_dropped", "anonymize", "anonymize", 2,
         params={"anonymize.policies.income": "drop"},
         message=r"anonymize\.policies\.income: the label must be kept"),
]  # fmt: skip


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where a good batch went through ingest, clean, validate and anonymize."""
    # 40 generated rows form classes of at most 4 over the quasi-identifiers: k=2 releases most.
    return make_baseline(tmp_path_factory.mktemp("baseline"), good(), "anonymize", anonymize__k=2)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_clean(case: Case, baseline: Path, tmp_path: Path, monkeypatch, key, capsys):
    files = case.files() if case.files is not None else None
    project = case_project(baseline, tmp_path / "p", files, case.params, ["data/in"])
    monkeypatch.chdir(project)
    names = list(STAGES)
    kept = outputs_from(case.stage) if case.code else []
    if case.code == 3 and case.stage == "validate":  # its own report explains the failure
        kept = [p for p in kept if not p.startswith(("reports/validation", "metrics/validate"))]
    before = tree_hashes(project, kept)

    code, err = 0, ""
    for name in names[names.index(case.start) : names.index(case.stage) + 1]:
        code, err = run(name, capsys)
        assert "Traceback" not in err, err
        if code:
            break
    assert code == case.code, err
    assert re.search(case.message, err, re.S), err
    assert TEST_KEY not in err
    if case.code:
        assert name == case.stage, f"stopped at {name}: {err}"
        assert_stopped_cleanly(project, kept, before, err)
        return

    c, q = accounted_rows(project)
    metrics = {"clean": c}
    if case.reason:
        hits = q[q["_reason"].str.contains(case.reason, regex=True)]
        assert len(hits), set(q["_reason"])
        # Each names its source: file, row; the reason names the column.
        assert hits["_source_file"].str.startswith("data/in/").all()
        assert hits["_source_row"].notna().all()
    if case.check:
        case.check(project, metrics)


def test_corpus_size() -> None:
    """Issue 14 asks for a corpus; this file's part of it covers clean, validate, anonymize."""
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)
