"""Parquet datasets as directories of partition files, written atomically."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Write failures that the environment causes and the user fixes: named, not shown as a traceback.
_WRITE_FAULTS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class WriteError(OSError):
    """An output could not be written (disk full, read-only, no permission); says where and why."""

    def __str__(self) -> str:
        return str(self.strerror)


def describe_write_error(e: OSError, target: Path | str, verb: str = "write") -> OSError:
    """A WriteError naming `target`, the cause and the fix, for environment faults; else `e`."""
    why = _WRITE_FAULTS.get(e.errno or 0)
    if why is None:
        return e
    # Name the output, not the temporary it was being written to (.raw.tmp-<pid>-<x> -> raw).
    target = Path(*(re.sub(r"^\.(.+)\.tmp-\d+-[^/]*$", r"\1", part) for part in Path(target).parts))
    where = target.parent.resolve()
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        probe = where
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 1e6
        fix = f"{free:.1f} MB free on the device holding {where}; free some space and rerun"
    else:
        fix = f"make {where} writable for user id {os.geteuid()} and rerun"
    return WriteError(
        e.errno,
        f"cannot {verb} {target}: {why} ({fix}); the previous outputs are left as they were",
    )


@contextlib.contextmanager
def writing(target: Path | str) -> Iterator[None]:
    """Turn an environment write fault under this block into a WriteError naming `target`."""
    try:
        yield
    except WriteError:
        raise
    except OSError as e:
        raise describe_write_error(e, target) from e


def remove_stale_temporaries(path: Path) -> None:
    """Remove temporary siblings of `path` left by a killed process (its pid no longer runs).

    They may hold personal data and, being untracked, could otherwise end up in git.
    """
    for stale in path.parent.glob(f".{path.name}.*-*"):
        kind, _, rest = stale.name[len(path.name) + 2 :].partition("-")
        pid = rest.split("-", 1)[0]
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def partition_files(path: Path | str) -> list[Path]:
    """The Parquet files of a dataset directory (recursively, sorted), or the file itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such dataset; run the stage that produces it first")
    return sorted(p for p in path.rglob("*.parquet") if not p.name.startswith("."))


def partition_names(path: Path | str) -> list[tuple[str, Path]]:
    """(relative name, file) for each partition of a dataset."""
    root = Path(path)
    return [
        (file.name if root.is_file() else file.relative_to(root).as_posix(), file)
        for file in partition_files(root)
    ]


def iter_partitions(path: Path | str) -> Iterator[tuple[str, pa.Table]]:
    """Yield (relative name, table) for each partition of a dataset, one at a time."""
    for name, file in partition_names(path):
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


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write one partition file with the project's settings (zstd, 128K-row row groups)."""
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, compression="zstd", row_group_size=1 << 17)


class AtomicDir:
    """A directory output that appears complete or not at all.

    Files go to a hidden sibling directory; on success it replaces the target in one rename,
    so a killed stage never leaves a half-written dataset under the real name. Temporaries are
    named after the writing process, so the next run removes those a killed process left.
    Disk-full and permission faults raise WriteError naming the output.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.path)
            self.tmp = Path(
                tempfile.mkdtemp(
                    prefix=f".{self.path.name}.tmp-{os.getpid()}-", dir=self.path.parent
                )
            )

    def write_table(self, name: str, table: pa.Table) -> Path:
        """Write one partition file under the temporary directory."""
        target = self.tmp / name
        with writing(self.path / name):
            write_parquet(table, target)
        return target

    def link(self, name: str, src: Path) -> Path:
        """Add a finished partition file by hard link (a copy across file systems)."""
        target = self.tmp / name
        with writing(self.path / name):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, target)
            except OSError:
                shutil.copy2(src, target)
        return target

    def commit(self) -> None:
        """Replace the target directory with the finished one."""
        with writing(self.path):
            if self.path.exists():
                old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
                os.replace(self.path, old)
                try:
                    os.replace(self.tmp, self.path)
                except OSError:
                    os.replace(old, self.path)  # put the previous output back
                    raise
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
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent)
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


def file_hash(path: Path | str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (md5 is what DVC records)."""
    h = hashlib.new(algorithm)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
