"""Ingest's parsing: no line merged or dropped unseen, true line numbers, every format's types."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from stages.lib.errors import InputError
from stages.lib.readers import read_batches
from stages.lib.sources import check_content

COLS = ["id", "note", "n"]


def read(path: Path, fmt: str, **kw) -> pa.Table:
    """Every batch of a file as one table."""
    check_content(path, fmt)
    batches = list(read_batches(path, fmt, kw.pop("block_rows", 1000), COLS, **kw))
    return pa.Table.from_batches(batches)


def multiline_csv(rows: int, bad_after: int | None = None) -> tuple[str, int | None]:
    """A CSV whose every third note spans three lines; a short row after `bad_after` rows.
    Returns the text and the bad row's true (1-based) line number."""
    lines, bad_line = ["id,note,n"], None
    for i in range(rows):
        if i == bad_after:
            bad_line = sum(chunk.count("\n") + 1 for chunk in lines) + 1
            lines.append("999999,cut off")
        note = f'"visit {i}: said ""hi"",\nthen left;\nback at {i % 7}"' if i % 3 == 0 else "ok"
        lines.append(f"{i},{note},{i * 3}")
    return "\n".join(lines) + "\n", bad_line


def test_multi_mb_csv_with_quoted_newlines_across_blocks(tmp_path: Path) -> None:
    """Issue 14: a valid multi-MB CSV whose quoted notes span lines, read in small blocks, so
    that records straddle block boundaries; every record comes back whole."""
    text, _ = multiline_csv(80_000)
    path = tmp_path / "notes.csv"
    path.write_text(text)
    assert path.stat().st_size > 2_000_000
    table = read(path, "csv", block_size=1 << 16, block_rows=10_000)
    assert table.num_rows == 80_000
    assert table.column("note")[30_000].as_py() == 'visit 30000: said "hi",\nthen left;\nback at 5'
    # The reader as it was (no newlines_in_values) fails on this very file: the test can fail.
    with pytest.raises(pa.ArrowInvalid):
        pacsv.read_csv(path, read_options=pacsv.ReadOptions(block_size=1 << 16))


def test_malformed_row_names_the_true_line(tmp_path: Path) -> None:
    """The line named is the file's line, not a record count (each 3-line note adds two)."""
    text, bad_line = multiline_csv(30_000, bad_after=25_000)
    path = tmp_path / "notes.csv.gz"
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    with pytest.raises(InputError) as err:
        read(path, "csv", block_size=1 << 16)
    assert f"line {bad_line} has 2 fields, expected 3" in str(err.value)
    assert bad_line > 25_000 + 2 * (25_000 // 3)


def test_tsv_quote_is_data(tmp_path: Path) -> None:
    """Issue 13: an SMS starting with a quote stays one row; the next lines are not swallowed."""
    path = tmp_path / "sms.tsv"
    path.write_text('id\tnote\tn\n1\t"Free entry now\t1\n2\tnormal text\t2\n3\tends "quoted"\t3\n')
    table = read(path, "tsv")
    assert table.column("note").to_pylist() == ['"Free entry now', "normal text", 'ends "quoted"']


def test_unterminated_quote_at_the_end_is_named(tmp_path: Path) -> None:
    """A quote opened on the last line and never closed would swallow it silently in Arrow."""
    path = tmp_path / "b.csv"
    path.write_text('id,note,n\n1,a,1\n2,"never closed,2\n')
    with pytest.raises(InputError, match=r"b\.csv: .*line 3: a quoted value opened there"):
        read(path, "csv")


def test_stray_quote_in_a_big_file_is_named(tmp_path: Path) -> None:
    """A quote never closed swallows the rest of the file into one value: when that is longer
    than a read block, Arrow's own message ("straddling object") is replaced by the line."""
    rows = ["id,note,n", *(f"{i},note {i},{i}" for i in range(5000))]
    rows[11] = '10,"stray quote,10'
    path = tmp_path / "b.csv"
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(InputError, match=r"b\.csv: line 12: a quoted value opened there"):
        read(path, "csv", block_size=1 << 12)


def test_text_after_a_closing_quote_is_named(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_text('id,note,n\n1,a,1\n2,"5 ft"3 in,2\n')
    with pytest.raises(InputError, match=r"b\.csv: line 3: text follows a value's closing quote"):
        read(path, "csv")


def test_headerless_file_takes_the_schema_columns(tmp_path: Path) -> None:
    path = tmp_path / "sms"
    path.write_text("1\thello\t5\n2\tworld\t6\n")
    table = read(path, "tsv", header=False)
    assert table.column_names == COLS and table.num_rows == 2
    path.write_text("1\thello\t5\n2\tworld\n3\tx\t7\n")
    with pytest.raises(InputError, match=r"sms: 1 malformed row\(s\): line 2 has 2 fields"):
        read(path, "tsv", header=False)


def test_excel_sep_line_sets_the_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("sep=;\nid;note;n\n1;a,b;2\n2;c;3\n3;d\n")
    with pytest.raises(InputError, match=r"line 5 has 2 fields, expected 3"):
        read(path, "csv")
    path.write_text("sep=;\r\nid;note;n\r\n1;a,b;2\r\n")
    assert read(path, "csv").to_pylist() == [{"id": "1", "note": "a,b", "n": "2"}]


def test_utf16_inside_gz_is_diagnosed(tmp_path: Path) -> None:
    path = tmp_path / "b.csv.gz"
    path.write_bytes(gzip.compress("id,note,n\n1,a,2\n".encode("utf-16"), mtime=0))
    with pytest.raises(InputError, match=r"b\.csv\.gz: is UTF-16 text; re-save it as UTF-8"):
        check_content(path, "csv")
    path.write_bytes(gzip.compress("id,note,n\n1,a,2\n".encode("utf-16-le"), mtime=0))
    with pytest.raises(InputError, match=r"is UTF-16 text \(no byte-order mark\)"):
        check_content(path, "csv")


def test_jsonl_keys_checked_on_every_line(tmp_path: Path) -> None:
    """Issue 14: a key missing on a late line was a KeyError traceback; an extra key (maybe
    personal data) was dropped silently."""
    good = [{"id": str(i), "note": "x", "n": i} for i in range(2_500)]
    path = tmp_path / "b.jsonl"
    for bad, message in [
        ({"id": "x", "note": "y"}, r"line 2001: missing key\(s\) \['n'\]"),
        ({"id": "x", "note": "y", "n": 1, "ssn": "1"}, r"line 2001: unexpected key\(s\) \['ssn'\]"),
        ({"id": "x", "note": {"a": 1}, "n": 1}, r"line 2001, column note: a nested JSON object"),
        ({"id": "x", "note": [1], "n": 1}, r"line 2001, column note: a nested JSON array"),
    ]:
        rows = [*good[:2000], bad, *good[2000:]]
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        with pytest.raises(InputError, match=re.escape(str(path)) + ": " + message):
            read(path, "jsonl", block_rows=500)


def test_jsonl_scalars_as_text(tmp_path: Path) -> None:
    """Numbers keep their source spelling (20 digits, 1e308, 1.50), booleans are true/false,
    null is null; keys may come in any order."""
    path = tmp_path / "b.jsonl"
    rows = [
        {"id": "1", "note": True, "n": 12345678901234567890},
        {"n": 1e308, "note": None, "id": "2"},
    ]
    path.write_text(
        "\n".join(json.dumps(r) for r in rows) + '\n{"id": 3, "note": 1.50, "n": 1E308}\n\n'
    )
    assert read(path, "jsonl").to_pylist() == [
        {"id": "1", "note": "true", "n": "12345678901234567890"},
        {"id": "2", "note": None, "n": "1e+308"},
        {"id": "3", "note": "1.50", "n": "1E308"},
    ]


def test_huge_numbers_stay_text(tmp_path: Path) -> None:
    """A 20-digit or 1e308 value reaches raw as the source wrote it (clean types it)."""
    path = tmp_path / "b.csv"
    path.write_text("id,note,n\n12345678901234567890,1e308,-0.000\n")
    assert read(path, "csv").to_pylist() == [
        {"id": "12345678901234567890", "note": "1e308", "n": "-0.000"}
    ]


def test_parquet_dates_and_timestamps_keep_their_values(tmp_path: Path) -> None:
    """Issue 14: a Parquet date column became null; raw keeps ISO 8601 strings."""
    path = tmp_path / "b.parquet"
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "note": pa.array([dt.date(1980, 4, 3), None], pa.date32()),
            "n": pa.array([dt.datetime(1990, 1, 2), dt.datetime(2001, 5, 6)], pa.timestamp("ns")),
        }
    )
    pq.write_table(table, path)
    assert read(path, "parquet").to_pylist() == [
        {"id": "1", "note": "1980-04-03", "n": "1990-01-02"},
        {"id": "2", "note": None, "n": "2001-05-06"},
    ]
    timed = table.set_column(
        2, "n", pa.array([dt.datetime(1990, 1, 2, 10, 30), None], pa.timestamp("us", tz="UTC"))
    )
    pq.write_table(timed.set_column(1, "note", pa.array([True, False])), path)
    assert read(path, "parquet").to_pylist() == [
        {"id": "1", "note": "true", "n": "1990-01-02T10:30:00+0000"},
        {"id": "2", "note": "false", "n": None},
    ]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([["a"], ["b", "c"]], pa.list_(pa.string())),
        pa.array([{"x": 1}, {"x": 2}]),
        pa.array([[("k", 1)], []], pa.map_(pa.string(), pa.int64())),
    ],
    ids=["list", "struct", "map"],
)
def test_parquet_nested_column_is_named(tmp_path: Path, column: pa.Array) -> None:
    path = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ["1", "2"], "note": column, "n": ["1", "2"]}), path)
    with pytest.raises(InputError, match=r"b\.parquet: column note has the nested type"):
        read(path, "parquet")
