"""CSV and TSV batch files read by Arrow, every record count checked against Python's csv module.

CSV values may span lines and read blocks; in TSV a quote is data. No line is merged or dropped
unseen, and every error names the file's true line.
"""

from __future__ import annotations

import csv
import gzip
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from stages.lib.errors import InputError
from stages.lib.sources import check_names, gzipped, open_binary, short_error

# Bytes per CSV read block; quoted values may span lines and blocks (newlines_in_values).
CSV_BLOCK_BYTES = 1 << 24
# A single CSV value may be as long as the file (the 10 MB notes case): lift Python's 128 KiB cap.
csv.field_size_limit(2**31 - 1)
_EXCEL_SEP = re.compile(rb"^(?:\xef\xbb\xbf)?sep=(.)\r?\n")


@dataclass(frozen=True)
class Dialect:
    """How a delimited file is split: its delimiter, quoting, and lines before the header."""

    delimiter: str
    quoted: bool
    skip: int = 0


def dialect(path: Path, fmt: str) -> Dialect:
    """CSV: comma, quotes; TSV: tab, a quote is data. An Excel `sep=X` first line sets X."""
    with open_binary(path) as f:
        head = f.read(64)
    m = _EXCEL_SEP.match(head)
    quoted = fmt == "csv"
    if m:
        return Dialect(m.group(1).decode("latin-1"), quoted, skip=1)
    return Dialect("," if fmt == "csv" else "\t", quoted)


def read_delimited(
    path: Path,
    fmt: str,
    header: bool,
    columns: list[str] | None,
    block_size: int,
    max_rows: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """CSV/TSV by Arrow as string columns, checked against an independent count of records.

    `max_rows`: stop after the read block that reaches it (a sample, as `pipeline init` reads);
    the rows read are checked for malformed ones, the rest of the file is left unread.
    """
    d = dialect(path, fmt)
    invalid: list[tuple[int | None, int, int]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # Never keep the row's text: it may hold personal data.
        number = row.number if row.number is not None and row.number >= 0 else None
        invalid.append((number, row.actual_columns, row.expected_columns))
        return "skip"

    parse = pacsv.ParseOptions(
        delimiter=d.delimiter,
        quote_char='"' if d.quoted else False,
        # Quoted values may hold line breaks; without this Arrow's block reader splits a record
        # that spans a block boundary and reports valid rows as malformed.
        newlines_in_values=d.quoted,
        invalid_row_handler=on_invalid,
    )
    names = _header_names(path, fmt, d) if header else list(columns or [])
    check_names(path, names)  # before the rows: an empty name makes every row look malformed
    rows = 0
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(
                block_size=block_size,
                use_threads=False,
                skip_rows=d.skip,
                column_names=None if header else names,
            ),
            parse_options=parse,
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.string()),
                strings_can_be_null=False,
                null_values=[],
                quoted_strings_can_be_null=False,
            ),
        )
        for rb in reader:
            rows += rb.num_rows
            yield rb
            if max_rows is not None and rows >= max_rows:
                break
    except pa.ArrowInvalid as e:
        if "straddling object" in str(e):
            raise _straddling(path, d, block_size) from e
        m = re.search(r"column #(\d+): Row #(\d+): .*invalid UTF8", str(e))
        if m is None:
            raise
        col, record = int(m.group(1)), int(m.group(2))
        name = names[col] if col < len(names) else f"#{col + 1}"
        where = _where(record, scan_records(path, d, {record}).lines)
        raise InputError(
            f"{path}: {where}, column {name}: not valid UTF-8 text; re-save the file as UTF-8"
        ) from e
    if max_rows is not None and rows >= max_rows:
        if invalid:  # in the sample (the record count needs the whole file: not checked)
            raise _malformed(path, _scan_for(path, d, invalid), invalid)
        return
    _check_records(path, d, header, rows, invalid)


def _scan_for(path: Path, d: Dialect, invalid: list[tuple[int | None, int, int]]) -> RecordScan:
    """The file's records as Python's csv reads them, with the lines of the first bad rows."""
    return scan_records(path, d, {n for n, _, _ in invalid[:5] if n is not None})


def _malformed(
    path: Path, scan: RecordScan, invalid: list[tuple[int | None, int, int]]
) -> InputError:
    """The error for malformed rows, naming the true lines of the first five."""
    shown = [f"{_where(n, scan.lines)} has {a} fields, expected {x}" for n, a, x in invalid[:5]]
    hint = f"; {scan.problem}" if scan.problem else ""
    return InputError(
        f"{path}: {len(invalid)} malformed row(s): {'; '.join(shown)} "
        f"(a truncated last line or an unquoted delimiter?){hint}; fix or remove them"
    )


def _check_records(
    path: Path, d: Dialect, header: bool, rows: int, invalid: list[tuple[int | None, int, int]]
) -> None:
    """Fail on malformed rows (naming their true lines) and when Arrow's record count differs
    from an independent reading of the file: no line is merged or dropped unseen."""
    scan = _scan_for(path, d, invalid)
    if invalid:
        raise _malformed(path, scan, invalid)
    if scan.problem:
        raise InputError(f"{path}: {scan.problem}")
    expected = scan.records - d.skip - (1 if header else 0)
    if rows != expected:
        raise InputError(
            f"{path}: the CSV parser returned {rows:,} rows but the file holds {expected:,} "
            f"records in {scan.last_line:,} lines; a record was merged or dropped: check the "
            "quoting, or report this file's shape as a bug"
        )


def _straddling(path: Path, d: Dialect, block_size: int) -> InputError:
    """Arrow met a record longer than its read block: a quote never closed, or a huge value."""
    scan = scan_records(path, d)
    if scan.problem:
        return InputError(f"{path}: {scan.problem}")
    return InputError(
        f"{path}: a record is longer than the {block_size / (1 << 20):g} MiB read block (a "
        "value of many MB?); split the value, or store the data as Parquet"
    )


def _where(record: int | None, lines: dict[int, int]) -> str:
    """`line N` for a record whose line the scan found, else `record N` (never a wrong line)."""
    if record is None:
        return "a row"
    return f"line {lines[record]}" if record in lines else f"record {record}"


@dataclass(frozen=True)
class RecordScan:
    """The records of a delimited file as Python's csv module reads them."""

    records: int  # non-empty records, a header and an Excel sep= line included
    lines: dict[int, int]  # record number (1-based) -> the physical line it starts on
    last_line: int
    problem: str | None  # an unterminated quote or text after a closing quote, with its line


def scan_records(path: Path, d: Dialect, wanted: set[int] | frozenset = frozenset()) -> RecordScan:
    """Count a delimited file's records and find the lines the `wanted` records start on."""
    opener = gzip.open if gzipped(path) else open
    records, last, lines, problem = 0, 0, {}, None
    with opener(path, "rt", encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.reader(
            f,
            delimiter=d.delimiter,
            quotechar='"' if d.quoted else None,
            quoting=csv.QUOTE_MINIMAL if d.quoted else csv.QUOTE_NONE,
            strict=d.quoted,
        )
        try:
            for record in reader:
                start, last = last + 1, reader.line_num
                if not record:  # an empty line: Arrow skips it too
                    continue
                records += 1
                if records in wanted:
                    lines[records] = start
        except csv.Error as e:
            if "unexpected end of data" in str(e):
                if records + 1 in wanted:  # the record the quote swallowed, as Arrow counts it
                    lines[records + 1] = last + 1
                problem = (
                    f"line {last + 1}: a quoted value opened there is never closed (a stray "
                    "'\"'?); close the quote, or double a quote that is part of the text"
                )
            else:
                problem = (
                    f"line {reader.line_num}: text follows a value's closing quote; quote the "
                    'whole value and double each quote inside it ("" for ")'
                )
    return RecordScan(records, lines, last, problem)


def first_record(path: Path, fmt: str) -> list[str]:
    """The first record's fields (a header's names), split as read_delimited splits the file."""
    return _header_names(path, fmt, dialect(path, fmt))


def _header_names(path: Path, fmt: str, d: Dialect) -> list[str]:
    """The header's column names."""
    # Only the header matters here: skip bad rows silently, the full read reports them (once).
    header_only = pacsv.ParseOptions(
        delimiter=d.delimiter,
        quote_char='"' if d.quoted else False,
        newlines_in_values=d.quoted,
        invalid_row_handler=_skip,
    )
    try:
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(block_size=1 << 16, skip_rows=d.skip),
            parse_options=header_only,
        )
        return reader.schema.names
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise InputError(f"{path}: file is empty; expected a header and data rows") from e
        raise InputError(f"{path}: cannot be read as {fmt.upper()}: {short_error(e)}") from e


def _skip(row: pacsv.InvalidRow) -> str:
    return "skip"
