"""Read a batch file (CSV, TSV, JSON Lines, Parquet) as record batches of string columns.

Every value is kept as the source wrote it; errors name the file's true line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib.delimited import CSV_BLOCK_BYTES, read_delimited
from stages.lib.errors import InputError
from stages.lib.sources import norm_name, open_binary, short_error


def read_batches(
    path: Path,
    fmt: str,
    block_rows: int,
    columns: list[str] | None = None,
    header: bool = True,
    block_size: int = CSV_BLOCK_BYTES,
    max_rows: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Stream a batch file as record batches of string columns, as the source wrote them.

    `columns`: the schema's columns (the names of a header-less file; JSON Lines keys are
    checked against them on every line). Errors name the file's true line numbers.
    `max_rows`: stop once that many rows are read (`pipeline init`'s sample); rows past the
    block that reaches it are not read, nor checked.
    """
    if not header and not columns:
        raise ValueError("read_batches: a header-less file needs its column names")
    try:
        if fmt in ("csv", "tsv"):
            yield from read_delimited(path, fmt, header, columns, block_size, max_rows)
        elif fmt == "jsonl":
            yield from _read_jsonl(path, block_rows, columns, max_rows)
        else:
            yield from _read_parquet(path, block_rows, max_rows)
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        why = f"cannot be read as {fmt.upper()}: {short_error(e)}"
        if isinstance(e, UnicodeDecodeError):
            why = "is not valid UTF-8 text; re-save it as UTF-8"
        raise InputError(f"{path}: {why}") from e
    except (OSError, EOFError) as e:
        # Raised while reading the input (the caller's write errors never reach this generator).
        raise InputError(
            f"{path}: cannot be read as {fmt.upper()}: {short_error(e)} "
            "(a truncated or corrupt compressed file?)"
        ) from e


def _read_jsonl(
    path: Path, block_rows: int, columns: list[str] | None, max_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """JSON Lines, one object a line; every line must have the same keys (the schema's)."""
    order: list[str] | None = None
    exact: set[str] = set()
    target: set[str] = set(columns or [])
    rows: list[list[str | None]] = []
    done = 0
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            if max_rows is not None and done + len(rows) >= max_rows:
                break
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
                target = target or {norm_name(k) for k in order}
            if obj.keys() != exact:
                obj = _aligned(path, lineno, obj, order, target)
            rows.append([_json_value(path, lineno, k, obj[k]) for k in order])
            if len(rows) >= block_rows:
                yield _batch(order, rows)
                done, rows = done + len(rows), []
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
    by_norm = {norm_name(k): v for k, v in obj.items()}
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
    return {k: by_norm[norm_name(k)] for k in order}


def _json_value(path: Path, lineno: int, key: str, value: object) -> str | None:
    """A JSON scalar as the text a CSV would hold; nested values are an InputError."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = "object" if isinstance(value, dict) else "array"
    raise InputError(
        f"{path}: line {lineno}, column {norm_name(key)}: a nested JSON {kind}; expected a single "
        "value (string, number, true/false or null): flatten it into schema columns"
    )


def _batch(names: list[str], rows: list[list[str | None]]) -> pa.RecordBatch:
    cols = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays([pa.array(c, pa.string()) for c in cols], names=names)


def _read_parquet(
    path: Path, block_rows: int, max_rows: int | None = None
) -> Iterator[pa.RecordBatch]:
    """Parquet columns of any scalar type as strings (dates ISO 8601); nested types refused."""
    pf = pq.ParquetFile(path)
    for f in pf.schema_arrow:
        if pa.types.is_nested(f.type):
            raise InputError(
                f"{path}: column {f.name} has the nested type {f.type}; expected one value a "
                "cell (string, number, boolean, date): flatten it into schema columns"
            )
    done = 0
    for batch in pf.iter_batches(batch_size=block_rows):
        if max_rows is not None and done >= max_rows:
            break
        done += batch.num_rows
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
        why = (
            "not valid UTF-8 text"
            if "UTF8" in str(e)
            else f"cannot be read as text: {short_error(e)}"
        )
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
