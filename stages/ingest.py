"""ingest: read batch files (CSV, TSV, JSON Lines, Parquet) into partitioned Parquet under data/raw.

Every value is kept as the source wrote it (strings); each row gains its batch, source file,
source row and a stable record_id, its row-level lineage: the keyed HMAC of the source key, or,
for data without a key column, of the row's content and its occurrence number (identical rows
numbered 1, 2, ... in file and row order over the whole dataset).

Parsing never merges or drops a line unseen: CSV values may span lines and read blocks; in TSV
a quote is data; Arrow's record count is checked against an independent reading of the file
(Python's csv module), and every error names the file's true line.
"""

from __future__ import annotations

import csv
import gzip
import json
import posixpath
import re
import sys
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from stages.lib.errors import InputError, run_stage
from stages.lib.io import AtomicDir, file_hash, write_parquet
from stages.lib.keys import is_sample, key_id, load_key, pseudonymize
from stages.lib.params import ParamsError, load_params, section
from stages.lib.partitions import CacheDir, PartitionTask, code_digest, digest, run_tasks
from stages.lib.schema import BATCH, RECORD_ID, SOURCE_FILE, SOURCE_ROW, Schema, load_schema
from stages.lib.summary import StageSummary

OUT_DIR = Path("data/raw")
DVC_FILE = Path("dvc.yaml")
FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


Format = Literal["csv", "tsv", "jsonl", "parquet"]
# What a source folder holds besides data that is DVC's or git's bookkeeping, or its README:
# never reported.
BOOKKEEPING_SUFFIXES = (".dvc",)
BOOKKEEPING_NAMES = (".gitignore", ".dvcignore")
# Bytes per CSV read block; quoted values may span lines and blocks (newlines_in_values).
CSV_BLOCK_BYTES = 1 << 24
# A single CSV value may be as long as the file (the 10 MB notes case): lift Python's 128 KiB cap.
csv.field_size_limit(2**31 - 1)
_EXCEL_SEP = re.compile(rb"^(?:\xef\xbb\xbf)?sep=(.)\r?\n")


@dataclass(frozen=True)
class IngestConfig:
    """The `ingest` section of params.yaml."""

    sources: tuple[str, ...]
    format: Format | None = None
    header: bool = True


@dataclass(frozen=True)
class IoConfig:
    """The `io` section of params.yaml."""

    partition_rows: int = 100_000

    def __post_init__(self) -> None:
        if self.partition_rows < 1:
            raise ParamsError(
                f"io.partition_rows: {self.partition_rows} is not a row count; expected a whole "
                "number >= 1 (rows per Parquet partition file; 100000 is the default)"
            )


def file_format(path: Path, override: str | None = None) -> str:
    """The format of a batch file: `override` (ingest.format), else its extension (.gz allowed)."""
    if override is not None:
        return override
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise InputError(
            f"{path}: unsupported file type; expected one of {', '.join(sorted(FORMATS))} "
            "(optionally .gz), or set ingest.format in params.yaml for files without one"
        )
    return fmt


def list_sources(
    sources: tuple[str, ...], fmt: str | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The data files the sources name (sorted), and each other file of a source folder with
    why it is not read (hidden, unsupported type). DVC's .dvc and .gitignore files are left out."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file() or _bookkeeping(p):
                    continue
                why = not_data(p.relative_to(path), fmt)
                if why is None:
                    files.append(p)
                else:
                    skipped.append((p, why))
        else:
            raise InputError(f"ingest.sources: {source} does not exist")
    if not files:
        seen = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        raise InputError(
            f"ingest.sources {list(sources)}: no data files found "
            f"(looked for {', '.join(sorted(FORMATS))}, optionally .gz)"
            + (f"; not read: {seen}" if seen else "")
        )
    return files, skipped


def find_batch_files(sources: tuple[str, ...], fmt: str | None = None) -> list[Path]:
    """Expand files and directories of batch files into a sorted list of data files."""
    return list_sources(sources, fmt)[0]


def _bookkeeping(path: Path) -> bool:
    # A folder's README documents it (data/incoming has one): not data, and no news.
    return (
        path.name in BOOKKEEPING_NAMES
        or path.suffix in BOOKKEEPING_SUFFIXES
        or path.name in ("README", "README.md", "README.txt")
    )


def not_data(relative: Path, fmt: str | None) -> str | None:
    """Why a file (its path inside a source folder) is not read as data, or None when it is."""
    if any(part.startswith(".") for part in relative.parts):
        return "a hidden file"
    try:
        file_format(relative, fmt)
    except InputError:
        kind = "".join(relative.suffixes[-2:]) or "no extension"
        return f"unsupported type ({kind}); expected {', '.join(sorted(FORMATS))} or ingest.format"
    return None


def batch_id(path: Path, digest: str) -> str:
    """A batch's identifier: the file's stem and the start of its content hash."""
    stem = path.name.split(".")[0]
    return f"{stem}-{digest[:10]}"


def _gzipped(path: Path) -> bool:
    return path.suffix.lower() == ".gz"


def _open_binary(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if _gzipped(path) else path.open("rb")


def check_content(path: Path, fmt: str) -> None:
    """Fail early when a file is empty or is not what its extension says."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise InputError(f"{path}: file is empty; expected a header and data rows")
    gz = _gzipped(path)
    if gz and head[:2] != GZIP_MAGIC:
        raise InputError(f"{path}: named .gz but is not gzip-compressed")
    if not gz and head[:2] == GZIP_MAGIC:
        raise InputError(f"{path}: is gzip-compressed but not named .gz; rename it to {path}.gz")
    if fmt == "parquet" and gz:
        raise InputError(
            f"{path}: a gzip-compressed Parquet file; decompress it (gunzip): Parquet compresses "
            "its own data"
        )
    if fmt == "parquet" and head[:4] != PARQUET_MAGIC:
        raise InputError(f"{path}: named .parquet but is not a Parquet file")
    if fmt == "parquet":
        return
    if gz:  # the checks below are about the text inside
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(4096)
        except (OSError, EOFError) as e:
            raise InputError(
                f"{path}: cannot be read as {fmt.upper()}: {_short(e)} "
                "(a truncated or corrupt compressed file?)"
            ) from e
        if not head:
            raise InputError(f"{path}: file is empty; expected a header and data rows")
    _check_text_head(path, fmt, head)


def _check_text_head(path: Path, fmt: str, head: bytes) -> None:
    """Catch the usual exports that are not UTF-8 text before the parser does."""
    if head[:4] == PARQUET_MAGIC:
        raise InputError(f"{path}: is a Parquet file; rename it to .parquet")
    if head[:4] == ZIP_MAGIC:
        raise InputError(
            f"{path}: is a ZIP archive (an Excel .xlsx workbook?), not {fmt.upper()} text; "
            f"export it as UTF-8 {fmt.upper()}"
        )
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"{path}: is UTF-16 text; re-save it as UTF-8")
    if b"\x00" in head:
        # UTF-16 without a byte-order mark: every other byte of ASCII text is NUL.
        pairs = head[: len(head) // 2 * 2]
        if pairs and max(pairs[0::2].count(0), pairs[1::2].count(0)) > 0.4 * len(pairs) / 2:
            raise InputError(f"{path}: is UTF-16 text (no byte-order mark); re-save it as UTF-8")
        raise InputError(
            f"{path}: holds binary data (NUL bytes), not {fmt.upper()} text; expected UTF-8 text"
        )


def read_batches(
    path: Path,
    fmt: str,
    block_rows: int,
    columns: list[str] | None = None,
    header: bool = True,
    block_size: int = CSV_BLOCK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Stream a batch file as record batches of string columns, as the source wrote them.

    `columns`: the schema's columns (the names of a header-less file; JSON Lines keys are
    checked against them on every line). Errors name the file's true line numbers.
    """
    if not header and not columns:
        raise ValueError("read_batches: a header-less file needs its column names")
    try:
        if fmt in ("csv", "tsv"):
            yield from _read_delimited(path, fmt, header, columns, block_size)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, block_rows, columns)
        else:
            yield from _read_parquet(path, block_rows)
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        why = f"cannot be read as {fmt.upper()}: {_short(e)}"
        if isinstance(e, UnicodeDecodeError):
            why = "is not valid UTF-8 text; re-save it as UTF-8"
        raise InputError(f"{path}: {why}") from e
    except (OSError, EOFError) as e:
        # Raised while reading the input (the caller's write errors never reach this generator).
        raise InputError(
            f"{path}: cannot be read as {fmt.upper()}: {_short(e)} "
            "(a truncated or corrupt compressed file?)"
        ) from e


@dataclass(frozen=True)
class Dialect:
    """How a delimited file is split: its delimiter, quoting, and lines before the header."""

    delimiter: str
    quoted: bool
    skip: int = 0


def dialect(path: Path, fmt: str) -> Dialect:
    """CSV: comma, quotes; TSV: tab, a quote is data. An Excel `sep=X` first line sets X."""
    with _open_binary(path) as f:
        head = f.read(64)
    m = _EXCEL_SEP.match(head)
    quoted = fmt == "csv"
    if m:
        return Dialect(m.group(1).decode("latin-1"), quoted, skip=1)
    return Dialect("," if fmt == "csv" else "\t", quoted)


def _read_delimited(
    path: Path, fmt: str, header: bool, columns: list[str] | None, block_size: int
) -> Iterator[pa.RecordBatch]:
    """CSV/TSV by Arrow, checked against an independent count of the file's records."""
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
    _check_records(path, d, header, rows, invalid)


def _check_records(
    path: Path, d: Dialect, header: bool, rows: int, invalid: list[tuple[int | None, int, int]]
) -> None:
    """Fail on malformed rows (naming their true lines) and when Arrow's record count differs
    from an independent reading of the file: no line is merged or dropped unseen."""
    scan = scan_records(path, d, {n for n, _, _ in invalid[:5] if n is not None})
    if invalid:
        shown = [f"{_where(n, scan.lines)} has {a} fields, expected {x}" for n, a, x in invalid[:5]]
        hint = f"; {scan.problem}" if scan.problem else ""
        raise InputError(
            f"{path}: {len(invalid)} malformed row(s): {'; '.join(shown)} "
            f"(a truncated last line or an unquoted delimiter?){hint}; fix or remove them"
        )
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
    opener = gzip.open if _gzipped(path) else open
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
        raise InputError(f"{path}: cannot be read as {fmt.upper()}: {_short(e)}") from e


def _skip(row: pacsv.InvalidRow) -> str:
    return "skip"


def _short(e: Exception) -> str:
    # Arrow quotes the offending row after "got N:"; that text may hold personal data.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"(got \d+)\s*:.*$", r"\1", first)[:300]


def _norm(name: str) -> str:
    return unicodedata.normalize("NFKC", name).strip()


def _read_jsonl(path: Path, block_rows: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """JSON Lines, one object a line; every line must have the same keys (the schema's)."""
    order: list[str] | None = None
    exact: set[str] = set()
    target: set[str] = set(columns or [])
    rows: list[list[str | None]] = []
    with _open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(
                    f"{path}: line {lineno} is not valid UTF-8; re-save as UTF-8"
                ) from e
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                continue
            obj = _json_object(path, lineno, line)
            if order is None:
                order, exact = list(obj), set(obj)
                target = target or {_norm(k) for k in order}
            if obj.keys() != exact:
                obj = _aligned(path, lineno, obj, order, target)
            rows.append([_json_value(path, lineno, k, obj[k]) for k in order])
            if len(rows) >= block_rows:
                yield _batch(order, rows)
                rows = []
    if rows and order is not None:
        yield _batch(order, rows)


def _json_object(path: Path, lineno: int, line: str) -> dict:
    try:
        # Numbers keep their source spelling (a 20-digit id, 1e308): raw holds text, clean types.
        obj = json.loads(line, parse_int=str, parse_float=str, parse_constant=str)
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: line {lineno} is not valid JSON: {e.msg}") from e
    if not isinstance(obj, dict):
        raise InputError(f"{path}: line {lineno} is not a JSON object")
    return obj


def _aligned(path: Path, lineno: int, obj: dict, order: list[str], target: set[str]) -> dict:
    """`obj` keyed like the first line, or an InputError naming the line's missing/extra keys."""
    by_norm = {_norm(k): v for k, v in obj.items()}
    missing = sorted(target - by_norm.keys())
    extra = sorted(by_norm.keys() - target)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing key(s) {missing} (write null for a missing value)")
        if extra:
            parts.append(
                f"unexpected key(s) {extra} (an unknown field could carry personal data: add it "
                "to schema in params.yaml with a role, or remove it)"
            )
        raise InputError(f"{path}: line {lineno}: {'; '.join(parts)}")
    return {k: by_norm[_norm(k)] for k in order}


def _json_value(path: Path, lineno: int, key: str, value: object) -> str | None:
    """A JSON scalar as the text a CSV would hold; nested values are an InputError."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = "object" if isinstance(value, dict) else "array"
    raise InputError(
        f"{path}: line {lineno}, column {_norm(key)}: a nested JSON {kind}; expected a single "
        "value (string, number, true/false or null): flatten it into schema columns"
    )


def _batch(names: list[str], rows: list[list[str | None]]) -> pa.RecordBatch:
    cols = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in cols], names=names)


def _read_parquet(path: Path, block_rows: int) -> Iterator[pa.RecordBatch]:
    """Parquet columns of any scalar type as strings (dates ISO 8601); nested types refused."""
    pf = pq.ParquetFile(path)
    for f in pf.schema_arrow:
        if pa.types.is_nested(f.type):
            raise InputError(
                f"{path}: column {f.name} has the nested type {f.type}; expected one value a "
                "cell (string, number, boolean, date): flatten it into schema columns"
            )
    for batch in pf.iter_batches(batch_size=block_rows):
        yield pa.RecordBatch.from_arrays(
            [
                _column_strings(path, n, c)
                for n, c in zip(batch.schema.names, batch.columns, strict=True)
            ],
            names=batch.schema.names,
        )


def _column_strings(path: Path, name: str, col: pa.Array) -> pa.Array:
    try:
        return as_strings(col)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        why = "not valid UTF-8 text" if "UTF8" in str(e) else f"cannot be read as text: {_short(e)}"
        raise InputError(
            f"{path}: column {name} ({col.type}): {why}; store it as UTF-8 strings"
        ) from e


def as_strings(col: pa.Array) -> pa.Array:
    """A column's values as text: dates and timestamps in ISO 8601, booleans true/false."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_boolean(t):
        return pc.if_else(col, "true", "false")
    if pa.types.is_timestamp(t):
        return _timestamp_strings(col)
    return pc.cast(col, pa.string())


def _timestamp_strings(col: pa.Array) -> pa.Array:
    """Timestamps as YYYY-MM-DD when all are midnight (dates stored as timestamps), else
    YYYY-MM-DDTHH:MM:SS[.fff][+zone]."""
    t = col.type
    seconds = pc.cast(col, pa.timestamp("s", tz=t.tz), safe=False)
    whole = pc.all(pc.equal(pc.cast(seconds, t), col)).as_py() is not False
    if t.tz is None and whole:
        days = pc.cast(pc.cast(seconds, pa.date32()), pa.timestamp("s"))
        if pc.all(pc.equal(days, seconds)).as_py() is not False:
            return pc.cast(pc.cast(seconds, pa.date32()), pa.string())
    fmt = "%Y-%m-%dT%H:%M:%S" + ("%z" if t.tz is not None else "")
    return pc.strftime(seconds if whole else col, format=fmt)


def check_names(path: Path, names: list[str]) -> list[str]:
    """The header's names, normalised; InputError on an empty or repeated name."""
    cleaned = [_norm(n) for n in names]
    empty = [i + 1 for i, n in enumerate(cleaned) if not n]
    if empty:
        trailing = empty == list(range(len(cleaned) - len(empty) + 1, len(cleaned) + 1))
        raise InputError(
            f"{path}: header column(s) {empty} have no name"
            + (
                " (trailing delimiters at the end of the header, as some spreadsheet exports "
                "write): delete the empty columns and save again"
                if trailing
                else ": name them as in the schema of params.yaml"
            )
        )
    repeated = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: duplicate column name(s) {repeated} in the header")
    return cleaned


def check_columns(path: Path, names: list[str], schema: Schema) -> None:
    """Fail when the file's columns differ from the schema's: missing or unexpected columns."""
    cleaned = check_names(path, names)
    expected = list(schema.columns)
    missing = [c for c in expected if c not in cleaned]
    extra = [c for c in cleaned if c not in expected]
    if len(cleaned) == 1 and len(expected) > 1 and ("\t" in cleaned[0] or ";" in cleaned[0]):
        raise InputError(
            f"{path}: found a single column {cleaned[0][:60]!r}: wrong delimiter? "
            "CSV files must be comma-separated, .tsv files tab-separated"
        )
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(
                f"unexpected column(s) {extra} (an unknown column could carry personal data past "
                "the privacy policy: add it to schema in params.yaml with a role, or remove it)"
            )
        raise InputError(f"{path}: {'; '.join(parts)}")


def add_lineage(
    table: pa.Table,
    key: bytes,
    key_column: str | None,
    batch: str,
    source: str,
    first_row: int,
    seen: Occurrences | None = None,
) -> pa.Table:
    """Prepend record_id, batch, source file and source row (1-based data row) to a table.

    record_id is the keyed pseudonym of the key column; without one (`key_column` None), of the
    row's content and its occurrence number (`seen` counts the rows before this table).
    """
    n = table.num_rows
    rows = range(first_row, first_row + n)
    if key_column is None:
        seen = seen if seen is not None else Occurrences()
        record_ids = content_record_ids(key, content_digests(table, key), seen)
    else:
        keys = [
            None if k is None or not k.strip() else unicodedata.normalize("NFKC", k).strip()
            for k in table.column(key_column).to_pylist()
        ]
        by_key = pseudonymize(key, keys, "record")
        # A row without a source key still needs a stable id: its place in its batch.
        by_row = pseudonymize(
            key,
            (f"{batch}:{r}" if k is None else None for k, r in zip(keys, rows, strict=True)),
            "row",
        )
        record_ids = [a if a is not None else b for a, b in zip(by_key, by_row, strict=True)]
    lineage = pa.table(
        {
            RECORD_ID: pa.array(record_ids, pa.string()),
            BATCH: pa.array([batch] * n, pa.string()),
            SOURCE_FILE: pa.array([source] * n, pa.string()),
            SOURCE_ROW: pa.array(rows, pa.int64()),
        }
    )
    for name in table.column_names:
        lineage = lineage.append_column(name, table.column(name))
    return lineage


def content_digests(table: pa.Table, key: bytes) -> np.ndarray:
    """A keyed 64-bit digest of each row's content: every column's raw value, in column order.

    Each value is written as `<length>:<value>` (a null as `~`), so no two different rows
    share an encoding whatever their values hold.
    """
    if table.num_rows == 0:
        return np.empty(0, np.uint64)
    parts = []
    for name in table.column_names:
        col = table.column(name).cast(pa.string())
        length = pc.cast(pc.utf8_length(col), pa.string())
        parts.append(pc.fill_null(pc.binary_join_element_wise(length, col, ":"), "~"))
    canonical = pc.binary_join_element_wise(*parts, "").to_pylist()
    hexes = pseudonymize(key, canonical, "content")
    return np.array([int(h[:16], 16) for h in hexes], dtype=np.uint64)


class Occurrences:
    """How many rows of each content digest were seen so far (sorted arrays, 16 bytes a row)."""

    def __init__(self) -> None:
        self.digests = np.empty(0, np.uint64)
        self.counts = np.empty(0, np.int64)
        self.history: list[np.ndarray] = []  # every digest numbered, in order

    def number(self, digests: np.ndarray) -> np.ndarray:
        """The 1-based occurrence number of each digest, counting earlier calls; records them."""
        self.history.append(digests)
        if len(digests) == 0:
            return np.empty(0, np.int64)
        base = np.zeros(len(digests), np.int64)
        if len(self.digests):
            at = np.minimum(np.searchsorted(self.digests, digests), len(self.digests) - 1)
            hit = self.digests[at] == digests
            base[hit] = self.counts[at[hit]]
        order = np.argsort(digests, kind="stable")
        ordered = digests[order]
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(ordered)), 0))
        within = np.empty(len(digests), np.int64)
        within[order] = np.arange(len(ordered)) - group_start
        merged, inverse = np.unique(
            np.concatenate([self.digests, ordered[first]]), return_inverse=True
        )
        _, counts = np.unique(ordered, return_counts=True)
        self.counts = np.bincount(
            inverse, weights=np.concatenate([self.counts, counts]), minlength=len(merged)
        ).astype(np.int64)
        self.digests = merged
        return base + within + 1


def content_record_ids(key: bytes, digests: np.ndarray, seen: Occurrences) -> list[str]:
    """record_ids of keyless rows: the keyed pseudonym of content digest and occurrence number,
    so identical rows get distinct, stable ids (1st, 2nd, ... in file and row order)."""
    return occurrence_ids(key, digests, seen.number(digests))


def occurrence_ids(key: bytes, digests: np.ndarray, numbers: np.ndarray) -> list[str]:
    """The keyed pseudonym of each (content digest, occurrence number)."""
    pairs = zip(digests.tolist(), numbers.tolist(), strict=True)
    return pseudonymize(key, (f"{d:016x}#{n}" for d, n in pairs), "content-record")


def ingest_file(
    path: Path,
    fmt: str,
    batch: str,
    key: bytes,
    schema: Schema,
    partition_rows: int,
    header: bool,
    out_dir: Path,
) -> dict[str, int]:
    """Task: one batch file into out_dir/part-NNNNN.parquet with lineage columns; rows written.

    Without a key column it also writes out_dir/content.npy, the rows' content digests, from
    which main numbers identical rows across files.
    """
    rows, part, buffer, buffered = 0, 0, [], 0
    seen = Occurrences()

    def flush(table: pa.Table) -> None:
        nonlocal rows, part
        lineage = add_lineage(table, key, schema.key, batch, str(path), rows + 1, seen)
        write_parquet(lineage, out_dir / f"part-{part:05d}.parquet")
        rows += table.num_rows
        part += 1

    columns = list(schema.columns)
    for rb in read_batches(path, fmt, partition_rows, columns, header):
        if rows == 0 and not buffer:
            check_columns(path, rb.schema.names, schema)
        rb = rb.rename_columns([unicodedata.normalize("NFKC", n).strip() for n in rb.schema.names])
        buffer.append(rb.select(columns))
        buffered += rb.num_rows
        while buffered >= partition_rows:
            table = pa.Table.from_batches(buffer)
            flush(table.slice(0, partition_rows))
            rest = table.slice(partition_rows)
            buffer, buffered = rest.to_batches(), rest.num_rows
    if buffered:
        flush(pa.Table.from_batches(buffer))
    if rows == 0:
        raise InputError(f"{path}: has a header but no data rows")
    if schema.key is None:
        np.save(out_dir / "content.npy", np.concatenate(seen.history))
    return {"rows": rows, "partitions": part}


def check_sources_are_deps(sources: tuple[str, ...], dvc_file: Path = DVC_FILE) -> None:
    """Fail when a source in params.yaml is not a dep of the ingest stage in dvc.yaml.

    DVC cannot expand a list from params.yaml into a stage's deps (treeverse/dvc#8171), so
    dvc.yaml lists the sources itself; a source it does not list is data DVC cannot see change
    (`dvc status` would say up to date after an edit). Outside a DVC project: nothing to check.
    """
    if not dvc_file.exists():
        return
    stages = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("stages") or {}
    deps = [
        d if isinstance(d, str) else next(iter(d))
        for d in stages.get("ingest", {}).get("deps") or []
    ]
    deps = [posixpath.normpath(d) for d in deps]
    missing = [
        s
        for s in sources
        if not any(
            (n := posixpath.normpath(Path(s).as_posix())) == d or n.startswith(d + "/")
            for d in deps
        )
    ]
    if missing:
        raise InputError(
            f"ingest.sources in params.yaml names {missing}, which {dvc_file} does not list as "
            "deps of the ingest stage, so DVC could not see them change: add each to "
            f"stages.ingest.deps in {dvc_file} (DVC cannot take that list from params.yaml)"
        )


def renumbered(part: pa.Table, digests: np.ndarray, numbers: np.ndarray, key: bytes) -> pa.Table:
    """A keyless partition with record_ids from the dataset-wide occurrence numbers."""
    ids = occurrence_ids(key, digests, numbers)
    return part.set_column(
        part.schema.get_field_index(RECORD_ID), RECORD_ID, pa.array(ids, pa.string())
    )


def warn_skipped(skipped: list[tuple[Path, str]]) -> list[dict[str, str]]:
    """Print each file of a source folder that is not read, with why; return them for metrics."""
    for p, why in skipped:
        print(f"WARNING: ingest: {p} is not read: {why}", file=sys.stderr)
    return [{"file": str(p), "reason": why} for p, why in skipped]


def main() -> None:
    """Ingest every batch file named by params into data/raw/<batch>/part-NNNNN.parquet.

    A batch file already ingested with the same content, key and params is reused, not re-read.
    Files of a source folder that are not data (hidden, unsupported type) are not read: each is
    named in a warning and in metrics/ingest.json (`skipped_files`).
    """
    params = load_params()
    cfg = section(IngestConfig, "ingest", params)
    io_cfg = section(IoConfig, "io", params)
    schema = load_schema(params)
    check_sources_are_deps(cfg.sources)
    summary = StageSummary("ingest")
    code = code_digest(__file__)
    files, skipped = list_sources(cfg.sources, cfg.format)
    found, seen_digests = [], {}
    for path in files:
        fmt = file_format(path, cfg.format)
        check_content(path, fmt)
        digest_ = file_hash(path)
        if digest_ in seen_digests:
            raise InputError(
                f"{path}: identical to the earlier batch {seen_digests[digest_]}; "
                "remove the copy (a batch is ingested once)"
            )
        seen_digests[digest_] = str(path)
        found.append((path, fmt, digest_))
    # The published demo key serves only when every batch is the bundled sample.
    key = load_key(sample=is_sample(d for _, _, d in found))
    tasks, digests = [], {}
    for path, fmt, digest_ in found:
        batch = batch_id(path, digest_)
        digests[batch] = digest_
        task_key = digest(
            digest_,
            str(path),
            key_id(key),
            params["schema"],
            io_cfg.partition_rows,
            fmt,
            cfg.header,
            code,
        )
        args = (path, fmt, batch, key, schema, io_cfg.partition_rows, cfg.header)
        tasks.append(PartitionTask(batch, task_key, ingest_file, args))

    batches: list[dict] = []
    cache = CacheDir("ingest")
    # Without a key column, identical rows are numbered across files in file and row order.
    occurrences = Occurrences() if schema.key is None else None
    with AtomicDir(OUT_DIR) as out:
        for done in run_tasks("ingest", tasks, cache):
            batch, path = done.task.name, done.task.args[0]
            _collect(done, batch, out, occurrences, key)
            rows = done.result["rows"]
            batches.append(
                {
                    "batch": batch,
                    "file": str(path),
                    "sha256": digests[batch],
                    "rows": rows,
                    "partitions": done.result["partitions"],
                    "reused": done.reused,
                }
            )
            summary.rows_in += rows
            summary.rows_out += rows
            how = "reused" if done.reused else "read"
            print(f"ingest: {path} -> {rows:,} rows as batch {batch} ({how})")
    cache.keep_only(t.key for t in tasks)
    summary.extra.update(
        batches=batches,
        key_id=key_id(key),
        record_id="key column" if schema.key else "row content and occurrence number (no key)",
        skipped_files=warn_skipped(skipped),
    )
    summary.write()


def _collect(done, batch: str, out: AtomicDir, occurrences: Occurrences | None, key: bytes) -> None:
    """Put a finished file's partitions into the output, renumbering identical keyless rows
    when an earlier file held the same content (the task numbered its own file only)."""
    names = [f"part-{i:05d}.parquet" for i in range(done.result["partitions"])]
    if occurrences is not None:
        file_digests = np.load(done.file("content.npy"))
        numbers = occurrences.number(file_digests)
        if not np.array_equal(numbers, Occurrences().number(file_digests)):
            start = 0
            for name in names:
                part = pq.read_table(done.file(name))
                end = start + part.num_rows
                fixed = renumbered(part, file_digests[start:end], numbers[start:end], key)
                out.write_table(f"{batch}/{name}", fixed)
                start = end
            return
    for name in names:
        out.link(f"{batch}/{name}", done.file(name))


if __name__ == "__main__":
    run_stage(main)
