"""Parquet datasets as directories of partition files, written atomically."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def partition_files(path: Path | str) -> list[Path]:
    """The Parquet files of a dataset directory (recursively, sorted), or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such dataset; run the stage that produces it first")
    return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))


def iter_partitions(path: Path | str) -> Iterator[tuple[str, pa.Table]]:
    """Yield (relative name, table) for each partition of a dataset, one at a time."""
    root = Path(path)
    for file in partition_files(root):
        name = file.name if root.is_file() else file.relative_to(root).as_posix()
        yield name, pq.read_table(file)


def read_dataset(path: Path | str, columns: list[str] | None = None) -> pa.Table:
    """Read every partition of a dataset into one table (for small, per-split data)."""
    files = partition_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: dataset has no Parquet partitions")
    tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="default")


def split_rows(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    """Slice a table into chunks of at most `rows` rows (at least one, possibly empty, chunk)."""
    if table.num_rows == 0:
        yield table
        return
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


class AtomicDir:
    """A directory output that appears complete or not at all.

    Files go to a hidden sibling directory; on success it replaces the target in one rename,
    so a killed stage never leaves a half-written dataset under the real name.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.tmp-", dir=self.path.parent))

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write one partition file under the temporary directory."""
        target = self.tmp / name
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target, compression="zstd", row_group_size=1 << 17)
        return target

    def commit(self) -> None:
        """Replace the target directory with the finished one."""
        if self.path.exists():
            old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
            os.replace(self.path, old)
            os.replace(self.tmp, self.path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Drop the temporary directory."""
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> AtomicDir:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def write_dataset(path: Path | str, parts: Iterable[tuple[str, pa.Table]]) -> int:
    """Write (name, table) partitions as a dataset directory, atomically; return rows written."""
    rows = 0
    with AtomicDir(path) as out:
        for name, table in parts:
            out.write_table(name, table)
            rows += table.num_rows
    return rows


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    """Write a file through a temporary sibling and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path | str, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, obj: Any) -> None:
    """Write JSON (sorted keys, indented) atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
