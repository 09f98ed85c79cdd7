"""A corpus of bad ingest inputs (issue 14): each one exits 2 with one message that names the file
(or the params key) and the line, record or column, prints no traceback, and leaves data/raw as
the last good run wrote it.

The stage runs in-process through run_stage, the wrapper `python -m stages.ingest` uses, so the
exit code and stderr are the user's; a project copy per case (the harness of tests/badinput.py).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import badinput
from tests.badinput import assert_stopped_cleanly, case_project, gz, make_baseline, run
from tests.faultlib import tree_hashes

N = 30  # fewer rows than tests/test_bad_input.py: the messages below name lines of this batch


def good() -> pd.DataFrame:
    return badinput.good(N)


def csv_text(frame: pd.DataFrame | None = None, **kw) -> str:
    return (good() if frame is None else frame).to_csv(index=False, **kw)


def csv_bytes(frame: pd.DataFrame | None = None) -> bytes:
    return csv_text(frame).encode()


def multiline() -> pd.DataFrame:
    """The good batch with notes that span three lines in every other row."""
    f = good()
    f["notes"] = [f'note {i}\nsecond line, "quoted"\nthird' if i % 2 else "x" for i in range(N)]
    return f


def multiline_line(data_row: int) -> int:
    """The true line of the `data_row`-th (0-based) data row of multiline()'s CSV."""
    return 2 + sum(2 if i % 2 else 0 for i in range(data_row)) + data_row


def with_line(text: str, data_row: int, line: str) -> str:
    """A CSV text with `line` inserted before data row `data_row` of multiline()."""
    lines = text.split("\n")
    at = multiline_line(data_row) - 1
    return "\n".join([*lines[:at], line, *lines[at:]])


def jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def good_rows() -> list[dict]:
    return good().to_dict(orient="records")


def at(rows: list[dict], i: int, change: Callable[[dict], dict]) -> list[dict]:
    rows = [dict(r) for r in rows]
    rows[i] = change(rows[i])
    return rows


def parquet(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def good_table() -> pa.Table:
    return pa.Table.from_pandas(good(), preserve_index=False)


def replaced(table: pa.Table, name: str, column: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, column)


def without(rows: list[dict], key: str) -> Callable[[dict], dict]:
    return lambda r: {k: v for k, v in r.items() if k != key}


@dataclass(frozen=True)
class Bad:
    id: str
    files: Callable[[], dict[str, bytes]]
    message: str  # a regex the one ERROR line must match: it names file/key and line/column
    params: dict = field(default_factory=dict)  # dotted params.yaml keys to set
    sources: tuple[str, ...] = ("data/in",)


def nested(column: pa.Array) -> Callable[[], dict[str, bytes]]:
    return lambda: {"b.parquet": parquet(replaced(good_table(), "notes", column))}


ML = multiline
CASES = [
    # --- CSV: malformed records, with the file's true line numbers
    Bad(
        "short_row_after_multiline_notes",
        lambda: {"b.csv": with_line(csv_text(ML()), 21, "C9,cut").encode()},
        rf"data/in/b\.csv: 1 malformed row\(s\): line {multiline_line(21)} has 2 fields",
    ),
    Bad(
        "long_row_after_multiline_notes",
        lambda: {"b.csv": with_line(csv_text(ML()), 9, "x," * 30).encode()},
        rf"b\.csv: 1 malformed row\(s\): line {multiline_line(9)} has 31 fields, expected 24",
    ),
    Bad(
        "truncated_last_line_gz",
        lambda: {"b.csv.gz": gz(csv_bytes(ML()) + b"C1,Cut")},
        rf"b\.csv\.gz: 1 malformed row\(s\): line {multiline_line(N)} has 2 fields",
    ),
    Bad(
        "unterminated_quote_last_line",
        lambda: {"b.csv": csv_bytes(ML()) + b'C1,"never closed\n'},
        rf"b\.csv: 1 malformed row\(s\): line {multiline_line(N)} has 2 fields.*"
        rf"line {multiline_line(N)}: a quoted value opened there is never closed",
    ),
    Bad(
        "text_after_closing_quote",
        lambda: {"b.csv": csv_text(ML()).replace(",x,", ',"5 ft"11,', 1).encode()},
        r"b\.csv: line 2: text follows a value's closing quote",
    ),
    Bad(
        "non_utf8_after_multiline_notes",
        lambda: {"b.csv": csv_bytes(ML()).replace(b"person20@", b"p\xe9rson20@")},
        rf"b\.csv: line {multiline_line(20)}, column email: not valid UTF-8",
    ),
    Bad(
        "tsv_short_row",
        lambda: {"b.tsv": csv_text(sep="\t").replace("\tperson4@example.com", "").encode()},
        r"b\.tsv: 1 malformed row\(s\): line 6 has 23 fields, expected 24",
    ),
    Bad(
        "tsv_quote_then_short_row",
        lambda: {"b.tsv": (csv_text(sep="\t") + '"C1\tonly two\n').encode()},
        rf"b\.tsv: 1 malformed row\(s\): line {N + 2} has 2 fields",
    ),
    Bad(
        "headerless_wrong_field_count",
        lambda: {"b.csv": "\n".join([*csv_text().split("\n")[1:5], "a,b,c"]).encode()},
        r"b\.csv: 1 malformed row\(s\): line 5 has 3 fields, expected 24",
        params={"ingest.header": False},
    ),
    Bad(
        "excel_sep_line_short_row",
        lambda: {"b.csv": ("sep=;\n" + csv_text(sep=";") + "a;b\n").encode()},
        rf"b\.csv: 1 malformed row\(s\): line {N + 3} has 2 fields",
    ),
    # --- CSV: headers
    Bad(
        "trailing_empty_header_columns",
        lambda: {"b.csv": csv_text().replace("\n", ",,\n", 1).encode()},
        r"b\.csv: header column\(s\) \[25, 26\] have no name \(trailing delimiters",
    ),
    Bad(
        "empty_header_column_inside",
        lambda: {"b.csv": csv_text().replace("full_name", "", 1).encode()},
        r"b\.csv: header column\(s\) \[2\] have no name: name them",
    ),
    Bad(
        "header_missing_column",
        lambda: {"b.csv": csv_bytes(good().drop(columns=["age"]))},
        r"b\.csv: missing column\(s\) \['age'\]",
    ),
    Bad(
        "header_extra_column",
        lambda: {"b.csv": csv_bytes(good().assign(ssn="1"))},
        r"b\.csv: unexpected column\(s\) \['ssn'\]",
    ),
    # --- encodings and containers
    Bad(
        "utf16_inside_gz",
        lambda: {"b.csv.gz": gz(csv_text().encode("utf-16"))},
        r"b\.csv\.gz: is UTF-16 text; re-save it as UTF-8",
    ),
    Bad(
        "utf16_without_bom",
        lambda: {"b.csv": csv_text().encode("utf-16-le")},
        r"b\.csv: is UTF-16 text \(no byte-order mark\)",
    ),
    Bad(
        "jsonl_utf16_gz",
        lambda: {"b.jsonl.gz": gz(jsonl(good_rows()).decode().encode("utf-16"))},
        r"b\.jsonl\.gz: is UTF-16 text",
    ),
    Bad(
        "xlsx_inside_gz",
        lambda: {"b.csv.gz": gz(b"PK\x03\x04" + b"\x00" * 100)},
        r"b\.csv\.gz: is a ZIP archive",
    ),
    Bad(
        "binary_inside_gz",
        lambda: {"b.csv.gz": gz(bytes(range(256)) * 4)},
        r"b\.csv\.gz: holds binary data \(NUL bytes\)",
    ),
    Bad(
        "empty_inside_gz",
        lambda: {"b.csv.gz": gz(b"")},
        r"b\.csv\.gz: file is empty",
    ),
    Bad(
        "truncated_jsonl_gz",
        lambda: {"b.jsonl.gz": gz(jsonl(good_rows()))[:-100]},
        r"b\.jsonl\.gz: cannot be read as JSONL: .*truncated or corrupt",
    ),
    Bad(
        "parquet_gzipped",
        lambda: {"b.parquet.gz": gz(parquet(good_table()))},
        r"b\.parquet\.gz: a gzip-compressed Parquet file; decompress it",
    ),
    Bad(
        "extensionless_without_format",
        lambda: {"b": csv_bytes()},
        r"data/in/b: unsupported file type; .*or set ingest\.format",
        sources=("data/in/b",),
    ),
    # --- JSON Lines: every line checked
    Bad(
        "jsonl_key_missing_on_a_late_line",
        lambda: {"b.jsonl": jsonl(at(good_rows() * 20, 517, without(good_rows(), "age")))},
        r"b\.jsonl: line 518: missing key\(s\) \['age'\]",
    ),
    Bad(
        "jsonl_extra_key_on_a_late_line",
        lambda: {"b.jsonl": jsonl(at(good_rows() * 20, 300, lambda r: {**r, "ssn": "1"}))},
        r"b\.jsonl: line 301: unexpected key\(s\) \['ssn'\] \(an unknown field could carry",
    ),
    Bad(
        "jsonl_nested_object",
        lambda: {"b.jsonl": jsonl(at(good_rows(), 4, lambda r: {**r, "notes": {"a": 1}}))},
        r"b\.jsonl: line 5, column notes: a nested JSON object",
    ),
    Bad(
        "jsonl_nested_array",
        lambda: {"b.jsonl": jsonl(at(good_rows(), 0, lambda r: {**r, "age": [1, 2]}))},
        r"b\.jsonl: line 1, column age: a nested JSON array",
    ),
    Bad(
        "jsonl_invalid_late_line",
        lambda: {"b.jsonl": jsonl(good_rows()) + b'{"customer_id": \n'},
        rf"b\.jsonl: line {N + 1} is not valid JSON",
    ),
    Bad(
        "jsonl_array_line",
        lambda: {"b.jsonl": jsonl(good_rows()) + b"[1, 2]\n"},
        rf"b\.jsonl: line {N + 1} is not a JSON object",
    ),
    Bad(
        "jsonl_non_utf8_line",
        lambda: {"b.jsonl": jsonl(good_rows()).replace(b"person7@", b"p\xe9rson7@")},
        r"b\.jsonl: line 8 is not valid UTF-8",
    ),
    Bad(
        "jsonl_first_line_missing_key",
        lambda: {"b.jsonl": jsonl(at(good_rows(), 0, without(good_rows(), "income")))},
        r"b\.jsonl: missing column\(s\) \['income'\]",
    ),
    # --- Parquet
    Bad(
        "parquet_list_column",
        nested(pa.array([["a", "b"]] * N, pa.list_(pa.string()))),
        r"b\.parquet: column notes has the nested type list<",
    ),
    Bad(
        "parquet_struct_column",
        nested(pa.array([{"x": 1}] * N)),
        r"b\.parquet: column notes has the nested type struct<",
    ),
    Bad(
        "parquet_map_column",
        nested(pa.array([[("k", 1)]] * N, pa.map_(pa.string(), pa.int64()))),
        r"b\.parquet: column notes has the nested type map<",
    ),
    Bad(
        "parquet_binary_not_utf8",
        lambda: {"b.parquet": parquet(replaced(good_table(), "notes", pa.array([b"\xff"] * N)))},
        r"b\.parquet: column notes \(binary\): not valid UTF-8 text",
    ),
    Bad(
        "parquet_missing_column",
        lambda: {"b.parquet": parquet(good_table().drop_columns(["sex"]))},
        r"b\.parquet: missing column\(s\) \['sex'\]",
    ),
    # --- params
    Bad(
        "partition_rows_zero",
        lambda: {"b.csv": csv_bytes()},
        r"io\.partition_rows: 0 is not a row count; expected a whole number >= 1",
        params={"io.partition_rows": 0},
    ),
    Bad(
        "partition_rows_negative",
        lambda: {"b.csv": csv_bytes()},
        r"io\.partition_rows: -5 is not a row count",
        params={"io.partition_rows": -5},
    ),
    Bad(
        "two_key_columns",
        lambda: {"b.csv": csv_bytes()},
        r"schema: 2 columns have role 'key' \(\['customer_id', 'email'\]\)",
        params={"schema.columns.email.role": "key"},
    ),
    Bad(
        "unknown_format",
        lambda: {"b.csv": csv_bytes()},
        r"ingest\.format: got 'xlsx'; expected one of",
        params={"ingest.format": "xlsx"},
    ),
    Bad(
        "header_not_a_boolean",
        lambda: {"b.csv": csv_bytes()},
        r"ingest\.header: got 'no'; expected true or false",
        params={"ingest.header": "no"},
    ),
    # --- sources
    Bad(
        "folder_of_files_ingest_cannot_read",
        lambda: {"b.xlsx": b"PK", "notes.md": b"# x", ".DS_Store": b"\x00"},
        r"ingest\.sources \['data/in'\]: no data files found .*not read: "
        r"data/in/\.DS_Store \(a hidden file\); data/in/b\.xlsx \(unsupported type \(\.xlsx\)",
    ),
]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project where a good batch went through ingest."""
    return make_baseline(tmp_path_factory.mktemp("baseline"), good(), "ingest")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_ingest_input(case: Bad, baseline: Path, tmp_path: Path, monkeypatch, capsys, key):
    project = case_project(baseline, tmp_path / "p", case.files(), case.params, case.sources)
    monkeypatch.chdir(project)
    kept = ["data/raw", "metrics/ingest.json"]
    before = tree_hashes(project, kept)
    capsys.readouterr()

    code, err = run("ingest", capsys)

    assert code == 2, err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("ERROR: ")]
    assert re.search(case.message, line), line
    assert_stopped_cleanly(project, kept, before, err)


def test_corpus_size() -> None:
    assert len(CASES) >= 35 and len({c.id for c in CASES}) == len(CASES)
