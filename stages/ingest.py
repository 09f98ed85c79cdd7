"""ingest: read batch files (CSV, TSV, JSON Lines, Parquet) into partitioned Parquet under data/raw.

Every value is kept as the source wrote it (strings); each row gains its batch, source file,
source row and a stable record_id (keyed HMAC of the source key), its row-level lineage.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml

from stages.lib.errors import InputError, run_stage
from stages.lib.io import AtomicDir, file_hash, write_parquet
from stages.lib.keys import is_sample, key_id, load_key, pseudonymize
from stages.lib.params import load_params, section
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


@dataclass(frozen=True)
class IngestConfig:
    """The `ingest` section of params.yaml."""

    sources: tuple[str, ...]


@dataclass(frozen=True)
class IoConfig:
    """The `io` section of params.yaml."""

    partition_rows: int = 100_000


def file_format(path: Path) -> str:
    """The format of a batch file from its extension (a trailing .gz allowed)."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise InputError(
            f"{path}: unsupported file type; expected one of {', '.join(sorted(FORMATS))} "
            "(optionally .gz)"
        )
    return fmt


def find_batch_files(sources: tuple[str, ...]) -> list[Path]:
    """Expand files and directories of batch files into a sorted list of data files."""
    files: list[Path] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file() and not p.name.startswith(".") and _looks_like_data(p)
            )
        else:
            raise InputError(f"ingest.sources: {source} does not exist")
    if not files:
        raise InputError(
            f"ingest.sources {list(sources)}: no data files found "
            f"(looked for {', '.join(sorted(FORMATS))}, optionally .gz)"
        )
    return files


def _looks_like_data(path: Path) -> bool:
    try:
        file_format(path)
        return True
    except InputError:
        return False


def batch_id(path: Path, digest: str) -> str:
    """A batch's identifier: the file's stem and the start of its content hash."""
    stem = path.name.split(".")[0]
    return f"{stem}-{digest[:10]}"


def check_content(path: Path, fmt: str) -> None:
    """Fail early when a file is empty or is not what its extension says."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise InputError(f"{path}: file is empty; expected a header and data rows")
    gz = path.suffix.lower() == ".gz"
    if gz and head[:2] != GZIP_MAGIC:
        raise InputError(f"{path}: named .gz but is not gzip-compressed")
    if not gz and head[:2] == GZIP_MAGIC:
        raise InputError(f"{path}: is gzip-compressed but not named .gz; rename it to {path}.gz")
    if fmt == "parquet" and head[:4] != PARQUET_MAGIC:
        raise InputError(f"{path}: named .parquet but is not a Parquet file")
    if fmt != "parquet" and head[:4] == PARQUET_MAGIC:
        raise InputError(f"{path}: is a Parquet file; rename it to .parquet")
    if gz or fmt == "parquet":
        return
    # Text formats: catch the usual exports that are not UTF-8 text before the parser does.
    if head[:4] == ZIP_MAGIC:
        raise InputError(
            f"{path}: is a ZIP archive (an Excel .xlsx workbook?), not {fmt.upper()} text; "
            f"export it as UTF-8 {fmt.upper()}"
        )
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"{path}: is UTF-16 text; re-save it as UTF-8")
    if b"\x00" in head:
        raise InputError(
            f"{path}: holds binary data (NUL bytes), not {fmt.upper()} text; expected UTF-8 text"
        )


def read_batches(path: Path, fmt: str, block_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream a batch file as record batches of string columns, as the source wrote them."""
    bad_rows: list[str] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        # Never echo the row's text: it may hold personal data.
        where = f"line {row.number}" if row.number is not None else "a row"
        bad_rows.append(f"{where} has {row.actual_columns} fields, expected {row.expected_columns}")
        return "skip"

    parse = pacsv.ParseOptions(
        delimiter="," if fmt == "csv" else "\t", invalid_row_handler=on_invalid
    )
    names: list[str] = []
    try:
        if fmt in ("csv", "tsv"):
            types = _all_strings(path, fmt, parse)
            names = list(types)
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=1 << 24, use_threads=False),
                parse_options=parse,
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    strings_can_be_null=False,
                    null_values=[],
                    quoted_strings_can_be_null=False,
                ),
            )
            yield from reader
            if bad_rows:
                raise InputError(
                    f"{path}: {len(bad_rows)} malformed row(s): {'; '.join(bad_rows[:5])} "
                    "(a truncated last line or an unquoted delimiter?); fix or remove them"
                )
        elif fmt == "jsonl":
            opener = gzip.open if path.suffix.lower() == ".gz" else open
            rows: list[dict] = []
            with opener(path, "rt", encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise InputError(f"{path}: line {lineno} is not valid JSON: {e.msg}") from e
                    if not isinstance(obj, dict):
                        raise InputError(f"{path}: line {lineno} is not a JSON object")
                    rows.append({k: None if v is None else str(v) for k, v in obj.items()})
                    if len(rows) >= block_rows:
                        yield pa.RecordBatch.from_pylist(rows)
                        rows = []
            if rows:
                yield pa.RecordBatch.from_pylist(rows)
        else:
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=block_rows):
                yield pa.RecordBatch.from_arrays(
                    [pc.cast(c, pa.string()) for c in batch.columns], names=batch.schema.names
                )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        why = _not_utf8(e, names) or f"cannot be read as {fmt.upper()}: {_short(e)}"
        raise InputError(f"{path}: {why}") from e
    except (OSError, EOFError) as e:
        # Raised while reading the input (the caller's write errors never reach this generator).
        raise InputError(
            f"{path}: cannot be read as {fmt.upper()}: {_short(e)} "
            "(a truncated or corrupt compressed file?)"
        ) from e


def _not_utf8(e: Exception, names: list[str]) -> str | None:
    """A message naming column and line for a value that is not UTF-8, else None."""
    if isinstance(e, UnicodeDecodeError):
        return "is not valid UTF-8 text; re-save it as UTF-8"
    m = re.search(r"column #(\d+): Row #(\d+): .*invalid UTF8", str(e))
    if m is None:
        return None
    col = int(m.group(1))
    name = names[col] if col < len(names) else f"#{col + 1}"
    return f"line {m.group(2)}, column {name}: not valid UTF-8 text; re-save the file as UTF-8"


def _all_strings(path: Path, fmt: str, parse: pacsv.ParseOptions) -> dict[str, pa.DataType]:
    """Column types for the CSV reader: every header column as string."""
    # Only the header matters here: skip bad rows silently, the full read reports them (once).
    header_only = pacsv.ParseOptions(delimiter=parse.delimiter, invalid_row_handler=_skip)
    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=1 << 16), parse_options=header_only
        )
        names = reader.schema.names
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise InputError(f"{path}: file is empty; expected a header and data rows") from e
        raise InputError(f"{path}: cannot be read as {fmt.upper()}: {_short(e)}") from e
    return dict.fromkeys(names, pa.string())


def _skip(row: pacsv.InvalidRow) -> str:
    return "skip"


def _short(e: Exception) -> str:
    # Arrow quotes the offending row after "got N:"; that text may hold personal data.
    first = str(e).strip().splitlines()[0]
    return re.sub(r"(got \d+)\s*:.*$", r"\1", first)[:300]


def check_columns(path: Path, names: list[str], schema: Schema) -> None:
    """Fail when the file's columns differ from the schema's: missing or unexpected columns."""
    cleaned = [unicodedata.normalize("NFKC", n).strip() for n in names]
    repeated = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: duplicate column name(s) {repeated} in the header")
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
    table: pa.Table, key: bytes, key_column: str, batch: str, source: str, first_row: int
) -> pa.Table:
    """Prepend record_id, batch, source file and source row (1-based data row) to a table."""
    n = table.num_rows
    keys = [
        None if k is None or not k.strip() else unicodedata.normalize("NFKC", k).strip()
        for k in table.column(key_column).to_pylist()
    ]
    rows = range(first_row, first_row + n)
    by_key = pseudonymize(key, keys, "record")
    # A row without a source key still needs a stable id: its place in its batch.
    by_row = pseudonymize(
        key, (f"{batch}:{r}" if k is None else None for k, r in zip(keys, rows, strict=True)), "row"
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


def ingest_file(
    path: Path, fmt: str, batch: str, key: bytes, schema: Schema, partition_rows: int, out_dir: Path
) -> dict[str, int]:
    """Task: one batch file into out_dir/part-NNNNN.parquet with lineage columns; rows written."""
    rows, part, buffer, buffered = 0, 0, [], 0

    def flush(table: pa.Table) -> None:
        nonlocal rows, part
        lineage = add_lineage(table, key, schema.key, batch, str(path), rows + 1)
        write_parquet(lineage, out_dir / f"part-{part:05d}.parquet")
        rows += table.num_rows
        part += 1

    for rb in read_batches(path, fmt, partition_rows):
        if rows == 0 and not buffer:
            check_columns(path, rb.schema.names, schema)
        rb = rb.rename_columns([unicodedata.normalize("NFKC", n).strip() for n in rb.schema.names])
        buffer.append(rb.select(list(schema.columns)))
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


def main() -> None:
    """Ingest every batch file named by params into data/raw/<batch>/part-NNNNN.parquet.

    A batch file already ingested with the same content, key and params is reused, not re-read.
    """
    params = load_params()
    cfg = section(IngestConfig, "ingest", params)
    io_cfg = section(IoConfig, "io", params)
    schema = load_schema(params)
    check_sources_are_deps(cfg.sources)
    summary = StageSummary("ingest")
    code = code_digest(__file__)
    found, seen_digests = [], {}
    for path in find_batch_files(cfg.sources):
        fmt = file_format(path)
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
            digest_, str(path), key_id(key), params["schema"], io_cfg.partition_rows, code
        )
        args = (path, fmt, batch, key, schema, io_cfg.partition_rows)
        tasks.append(PartitionTask(batch, task_key, ingest_file, args))

    batches: list[dict] = []
    cache = CacheDir("ingest")
    with AtomicDir(OUT_DIR) as out:
        for done in run_tasks("ingest", tasks, cache):
            batch, path = done.task.name, done.task.args[0]
            for i in range(done.result["partitions"]):
                name = f"part-{i:05d}.parquet"
                out.link(f"{batch}/{name}", done.file(name))
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
    summary.extra.update(batches=batches, key_id=key_id(key))
    summary.write()


if __name__ == "__main__":
    run_stage(main)
