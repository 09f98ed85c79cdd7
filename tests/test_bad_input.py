"""The bad-input corpus: each kind of broken input and the outcome a user should get.

Every case starts from a project where a good batch already went through ingest, clean and
validate, swaps in the broken input and runs the stages in order. A case either
- stops at a stage with an error that names the file, column or line and what was expected,
  and leaves that stage's outputs and everything downstream byte-for-byte as they were
  (validate's own report may change: it explains the failure), with no temporary left over; or
- goes through, with the bad rows quarantined or the bad values nulled for a stated reason,
  and every row accounted for.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest

from stages.lib.errors import GateFailure, InputError
from tests.badinput import (
    STAGES,
    N,
    accounted_rows,
    assert_stopped_cleanly,
    case_project,
    csv,
    good,
    gz,
    make_baseline,
    outputs_from,
    stage_main,
    with_values,
)
from tests.conftest import venv_env, write_project
from tests.faultlib import dvc_stages, stage_outputs, tree_hashes

DATA_STAGES = STAGES[:3]  # ingest, clean, validate


def parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


@dataclass(frozen=True)
class Fails:
    """The run stops at `stage` with `error` matching `message`."""

    stage: str
    error: type[Exception]
    message: str


@dataclass(frozen=True)
class Passes:
    """The run goes through; clean's summary shows these quarantine reasons, duplicates, nulls."""

    quarantined: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    nulled: dict[str, int] = field(default_factory=dict)
    reason: str | None = None  # a full quarantine reason that must appear (value shown)
    check: Callable[[Path], None] | None = None
    # Also run validate (about 4 s a run): for cases whose clean output could trip a check.
    validate: bool = False


@dataclass(frozen=True)
class Case:
    id: str
    files: Callable[[], dict[str, bytes]]
    outcome: Fails | Passes
    sources: tuple[str, ...] = ("data/in",)


def _bom_same_ids(tmp: Path) -> None:
    raw = pd.read_parquet(tmp / "data/raw")
    assert list(raw.columns[4:]) == list(good().columns), "the BOM is not part of a column name"
    assert raw["customer_id"].tolist() == good()["customer_id"].tolist()


def _huge_field_kept(tmp: Path) -> None:
    notes = pd.read_parquet(tmp / "data/clean", columns=["notes"])["notes"]
    assert notes.str.len().max() == 10 << 20


def _typed_parquet(tmp: Path) -> None:
    c = pd.read_parquet(tmp / "data/clean")
    assert c["age"].dtype == "Int64" and c["age"].tolist() == good()["age"].astype(int).tolist()


def _dates(tmp: Path) -> None:
    c = pd.read_parquet(tmp / "data/clean").set_index("customer_id")["date_of_birth"]
    assert str(c["C000001"]) == "1980-04-03" and str(c["C000002"]) == "1980-12-31"
    assert pd.isna(c["C000003"]) and pd.isna(c["C000004"])


def _nan_is_missing(tmp: Path) -> None:
    c = pd.read_parquet(tmp / "data/clean").set_index("customer_id")
    assert pd.isna(c.loc["C000001", "age"]) and pd.isna(c.loc["C000004", "capital_gain"])


def _normalised(tmp: Path) -> None:
    c = pd.read_parquet(tmp / "data/clean")
    assert set(c["sex"]) == {"Female", "Male"} and set(c["income"]) == {"<=50K", ">50K"}


def _crlf(tmp: Path) -> None:
    c = pd.read_parquet(tmp / "data/clean")
    assert not c["income"].str.contains("\r").any()


def _xlsx_like() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml", "<Types/>")
    return buf.getvalue()


CASES = [
    # --- files that cannot be read as a table
    Case(
        "empty_file",
        lambda: {"batch.csv": b""},
        Fails("ingest", InputError, r"data/in/batch\.csv: file is empty"),
    ),
    Case(
        "header_only",
        lambda: {"batch.csv": csv(good()).split(b"\n")[0] + b"\n"},
        Fails("ingest", InputError, r"data/in/batch\.csv: has a header but no data rows"),
    ),
    Case(
        "wrong_delimiter",
        lambda: {"batch.csv": good().to_csv(index=False, sep=";").encode()},
        Fails(
            "ingest",
            InputError,
            r"batch\.csv: found a single column .*wrong delimiter\? "
            r"CSV files must be comma-separated",
        ),
    ),
    Case(
        "non_utf8_bytes",
        lambda: {"batch.csv": csv(good()).replace(b"person1@", "pérson1@".encode("latin-1"))},
        Fails(
            "ingest",
            InputError,
            r"batch\.csv: line 3, column email: not valid UTF-8 text; re-save the file as UTF-8",
        ),
    ),
    Case(
        "utf16_export",
        lambda: {"batch.csv": good().to_csv(index=False).encode("utf-16")},
        Fails("ingest", InputError, r"batch\.csv: is UTF-16 text; re-save it as UTF-8"),
    ),
    Case("bom", lambda: {"batch.csv": b"\xef\xbb\xbf" + csv(good())}, Passes(check=_bom_same_ids)),
    Case(
        "crlf_line_endings",
        lambda: {"batch.csv": csv(good()).replace(b"\n", b"\r\n")},
        Passes(check=_crlf),
    ),
    Case(
        "truncated_last_line",
        lambda: {"batch.csv": csv(good()) + b"C999999,Cut Off"},
        Fails(
            "ingest",
            InputError,
            rf"batch\.csv: 1 malformed row\(s\): line {N + 2} has 2 fields, expected 24 "
            r"\(a truncated last line",
        ),
    ),
    Case(
        "unbalanced_quote",
        lambda: {"batch.csv": csv(good()).replace(b"\nC000003,", b'\nC000003,"never closed', 1)},
        Fails("ingest", InputError, r"batch\.csv: \d+ malformed row\(s\).* fields, expected 24"),
    ),
    # --- columns
    Case(
        "missing_required_column",
        lambda: {"batch.csv": csv(good().drop(columns=["income"]))},
        Fails("ingest", InputError, r"batch\.csv: missing column\(s\) \['income'\]"),
    ),
    Case(
        "unexpected_extra_column",
        lambda: {"batch.csv": csv(good().assign(mother_maiden_name="x"))},
        Fails(
            "ingest",
            InputError,
            r"batch\.csv: unexpected column\(s\) \['mother_maiden_name'\] "
            r"\(an unknown column could carry personal data",
        ),
    ),
    Case(
        "duplicate_header",
        lambda: {"batch.csv": csv(good()).replace(b"full_name", b"customer_id", 1)},
        Fails(
            "ingest",
            InputError,
            r"batch\.csv: duplicate column name\(s\) \['customer_id'\] in the header",
        ),
    ),
    # --- values
    Case(
        "wrong_type_in_column",
        with_values(age={3: "abc", 7: "forty"}),
        Passes(
            quarantined={"age is not a number": 2}, reason="age is not a number: abc", validate=True
        ),
    ),
    Case(
        "fraction_in_int_column",
        with_values(hours_per_week={5: "39.5"}),
        Passes(
            quarantined={"hours_per_week is not an integer": 1},
            reason="hours_per_week is not an integer: 39.5",
        ),
    ),
    Case(
        "out_of_range",
        with_values(age={2: "430"}),
        Passes(
            quarantined={"age out of range": 1}, reason="age out of range: 430 (expected 17..100)"
        ),
    ),
    Case(
        "nan_and_infinity",
        with_values(age={1: "NaN", 2: "inf"}, fnlwgt={3: "-Infinity"}, capital_gain={4: "nan"}),
        Passes(
            quarantined={"age is not a finite number": 1, "fnlwgt is not a finite number": 1},
            check=_nan_is_missing,
            validate=True,
        ),
    ),
    Case(
        "mixed_date_formats",
        with_values(
            date_of_birth={1: "03/04/1980", 2: "1980/12/31", 3: "April 3 1980", 4: "1980.13.45"}
        ),
        Passes(nulled={"unparseable date in date_of_birth": 2}, check=_dates),
    ),
    Case(
        "case_and_space_variants",
        with_values(sex={1: " male ", 2: "FEMALE"}, income={3: "<=50K."}),
        Passes(check=_normalised),
    ),
    Case(
        "huge_text_field_10mb",
        with_values(notes={3: "x" * (10 << 20)}),
        Passes(check=_huge_field_kept),
    ),
    Case(
        "missing_record_key",
        with_values(customer_id={6: ""}),
        Passes(quarantined={"missing customer_id": 1}),
    ),
    # --- labels
    Case(
        "null_labels",
        with_values(income={1: "", 2: "null"}),
        Passes(quarantined={"missing income": 2}),
    ),
    Case(
        "label_outside_classes",
        with_values(income={2: "maybe", 5: "unknown-class"}),
        Fails(
            "validate",
            GateFailure,
            rf"expect_column_values_to_be_in_set on column 'income'.*2 of {N} rows",
        ),
    ),
    Case(
        "single_class",
        lambda: {"batch.csv": csv(good().assign(income=">50K"))},
        Fails(
            "validate",
            GateFailure,
            r"class_share_between on column 'income'.*"
            r"observed <=50K: 0\.000, >50K: 1\.000 \[critical\]",
        ),
    ),
    Case(
        "every_row_rejected",
        lambda: {"batch.csv": csv(good().assign(age="abc"))},
        Fails("validate", GateFailure, r"data/clean has no rows: every source row was quarantined"),
    ),
    # --- duplicates
    Case(
        "duplicate_record_keys",
        lambda: {
            "batch.csv": csv(
                pd.concat(
                    [good(), good().iloc[[4]], good().iloc[[5]].assign(age="55")], ignore_index=True
                )
            )
        },
        Passes(duplicates=2, validate=True),
    ),
    Case(
        "batch_identical_to_earlier",
        lambda: {"a.csv": csv(good()), "b.csv": csv(good())},
        Fails(
            "ingest", InputError, r"data/in/b\.csv: identical to the earlier batch data/in/a\.csv"
        ),
    ),
    # --- files that are not what their name says
    Case(
        "parquet_with_other_schema",
        lambda: {"batch.parquet": parquet(good().rename(columns={"age": "Age"}))},
        Fails(
            "ingest",
            InputError,
            r"batch\.parquet: missing column\(s\) \['age'\]; unexpected column\(s\) \['Age'\]",
        ),
    ),
    Case(
        "parquet_with_typed_columns",
        lambda: {"batch.parquet": parquet(good().assign(age=lambda d: d["age"].astype(int)))},
        Passes(check=_typed_parquet),
    ),
    Case(
        "parquet_named_csv",
        lambda: {"batch.csv": parquet(good())},
        Fails("ingest", InputError, r"batch\.csv: is a Parquet file; rename it to \.parquet"),
    ),
    Case(
        "csv_named_parquet",
        lambda: {"batch.parquet": csv(good())},
        Fails("ingest", InputError, r"batch\.parquet: named \.parquet but is not a Parquet file"),
    ),
    Case(
        "xlsx_named_csv",
        lambda: {"batch.csv": _xlsx_like()},
        Fails("ingest", InputError, r"batch\.csv: is a ZIP archive \(an Excel \.xlsx workbook\?\)"),
    ),
    Case(
        "binary_named_csv",
        lambda: {"batch.csv": bytes(range(256)) * 8},
        Fails("ingest", InputError, r"batch\.csv: holds binary data \(NUL bytes\), not CSV text"),
    ),
    Case(
        "plain_named_gz",
        lambda: {"batch.csv.gz": csv(good())},
        Fails("ingest", InputError, r"batch\.csv\.gz: named \.gz but is not gzip-compressed"),
    ),
    Case(
        "gzip_not_named_gz",
        lambda: {"batch.csv": gz(csv(good()))},
        Fails("ingest", InputError, r"batch\.csv: is gzip-compressed but not named \.gz"),
    ),
    Case(
        "truncated_gzip",
        lambda: {"batch.csv.gz": gz(csv(good()))[:-200]},
        Fails(
            "ingest",
            InputError,
            r"batch\.csv\.gz: cannot be read as CSV: .*truncated or corrupt compressed file",
        ),
    ),
    Case(
        "jsonl_invalid_line",
        lambda: {"batch.jsonl": b'{"a": "1"}\n{oops\n'},
        Fails("ingest", InputError, r"batch\.jsonl: line 2 is not valid JSON"),
    ),
    Case(
        "jsonl_not_objects",
        lambda: {"batch.jsonl": b"[1, 2]\n"},
        Fails("ingest", InputError, r"batch\.jsonl: line 1 is not a JSON object"),
    ),
    Case(
        "unsupported_extension",
        lambda: {"batch.xlsx": b"whatever"},
        Fails(
            "ingest",
            InputError,
            r"data/in/batch\.xlsx: unsupported file type; expected one of \.csv",
        ),
        sources=("data/in/batch.xlsx",),
    ),
    # --- sources
    Case(
        "directory_without_data_files",
        lambda: {"README.md": b"nothing here"},
        Fails("ingest", InputError, r"ingest\.sources \['data/in'\]: no data files found"),
    ),
    Case(
        "missing_source",
        lambda: {},
        Fails("ingest", InputError, r"ingest\.sources: data/elsewhere does not exist"),
        sources=("data/elsewhere",),
    ),
]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where a good batch went through ingest, clean and validate."""
    return make_baseline(tmp_path_factory.mktemp("baseline"), good(), DATA_STAGES[-1])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, baseline: Path, tmp_path: Path, monkeypatch, key) -> None:
    project = case_project(baseline, tmp_path / "p", case.files(), {}, case.sources)
    monkeypatch.chdir(project)

    outcome = case.outcome
    if isinstance(outcome, Fails):
        kept = outputs_from(outcome.stage)
        if outcome.error is GateFailure:  # the failing check's own report explains the failure
            kept = [p for p in kept if p not in stage_outputs(dvc_stages()[outcome.stage])]
        before = tree_hashes(project, kept)
        for name in DATA_STAGES:
            if name == outcome.stage:
                with pytest.raises(outcome.error) as err:
                    stage_main(name)()
                break
            stage_main(name)()
        message = str(err.value)
        assert re.search(outcome.message, message, re.S), message
        assert_stopped_cleanly(project, kept, before, message)
        return

    stage_main("ingest")()
    stage_main("clean")()
    if outcome.validate:
        stage_main("validate")()
        summary = json.loads((project / "metrics/validate.json").read_text())
        assert summary["failed_critical"] == 0
    c, q = accounted_rows(project)
    assert c["rows_in"] == json.loads((project / "metrics/ingest.json").read_text())["rows_out"]
    assert c["quarantined_by_reason"] == outcome.quarantined
    assert c["duplicates"] == outcome.duplicates
    assert c["values_nulled"] == outcome.nulled
    assert q["_reason"].notna().all()
    assert len(pd.read_parquet(project / "data/clean")) == c["rows_out"]
    if outcome.reason:
        assert outcome.reason in set(q["_reason"]), set(q["_reason"])
    if outcome.check:
        outcome.check(project)


def test_every_kind_of_the_issue_is_in_the_corpus() -> None:
    """The issue's list of broken inputs, each mapped to its case here."""
    required = {
        "empty_file", "header_only", "wrong_delimiter", "non_utf8_bytes", "bom",
        "missing_required_column", "unexpected_extra_column", "wrong_type_in_column",
        "null_labels", "label_outside_classes", "single_class", "duplicate_record_keys",
        "huge_text_field_10mb", "nan_and_infinity", "mixed_date_formats", "truncated_last_line",
        "parquet_with_other_schema", "parquet_named_csv", "directory_without_data_files",
        "batch_identical_to_earlier",
    }  # fmt: skip
    assert required <= {c.id for c in CASES} and len(CASES) >= 20


def test_user_sees_one_line_and_an_exit_code(tmp_path: Path) -> None:
    """Run as the pipeline runs it: one ERROR line naming the file, exit code 2, no traceback."""
    write_project(tmp_path, None)
    (tmp_path / "data/in/batch.csv").write_bytes(b"")
    r = subprocess.run(
        [sys.executable, "-m", "stages.ingest"],
        cwd=tmp_path,
        env=venv_env(PYTHONPATH=str(Path(__file__).resolve().parents[1])),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip() == (
        "ERROR: data/in/batch.csv: file is empty; expected a header and data rows"
    )


def test_huge_text_field_stays_within_memory(tmp_path: Path) -> None:
    """A 10 MB free-text value streams through ingest and clean in bounded memory."""
    frame = good()
    frame.loc[3, "notes"] = "y" * (10 << 20)
    write_project(tmp_path, frame)
    env = venv_env(PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for stage in ("ingest", "clean"):
        r = subprocess.run(
            [sys.executable, "-m", f"stages.{stage}"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
        peak = json.loads((tmp_path / f"metrics/{stage}.json").read_text())["peak_memory_mb"]
        # Measured 0.5-0.8 GB, depending on the machine's allocator: Arrow holds a few copies of
        # the 16 MB read block. A copy per row or per character would be many GB.
        assert peak < 1024, f"{stage} peaked at {peak} MB"
    assert os.path.getsize(tmp_path / "data/in/batch.csv") > 10 << 20


def test_the_shared_checks_catch_a_changed_output_a_temporary_and_a_lost_row(tmp_path) -> None:
    """The harness's own checks fail where they should (every case above relies on them)."""
    out = tmp_path / "data/clean/part-0.parquet"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"before")
    before = tree_hashes(tmp_path, ["data/clean"])
    assert_stopped_cleanly(tmp_path, ["data/clean"], before, "a message")
    out.write_bytes(b"after")
    with pytest.raises(AssertionError, match="outputs changed"):
        assert_stopped_cleanly(tmp_path, ["data/clean"], before, "a message")
    (tmp_path / "data/.clean.tmp-1").mkdir()
    with pytest.raises(AssertionError):
        assert_stopped_cleanly(tmp_path, [], {}, "a message")
    (tmp_path / "metrics").mkdir()
    lost = {"rows_in": 10, "rows_out": 8, "rows_quarantined": 1, "duplicates": 0}
    (tmp_path / "metrics/clean.json").write_text(json.dumps(lost))
    with pytest.raises(AssertionError):
        accounted_rows(tmp_path)
