"""Run one task per partition: in local worker processes or on a Dask cluster, reusing results.

A stage describes its per-partition work as `PartitionTask`s: a top-level function, its
arguments, and a key, the digest of everything the result depends on (input file hashes,
params, code, key id). `run_tasks` runs the tasks whose key has no stored result and reuses
the others, so a new batch costs work proportional to its own rows:

- Each task writes its files into a fresh directory it is given and returns a small
  JSON-able result. The finished directory is stored under
  `.pipeline-cache/partitions/<stage>/<key>/` (git-ignored, local, holds the same personal
  data as the stage's outputs) and hard-linked into the outputs, so reuse costs no copy.
- Where tasks run: `PIPELINE_WORKERS` (default: one per CPU core) local processes, or the Dask
  scheduler named by `DASK_SCHEDULER_ADDRESS` (for example `tcp://10.0.0.5:8786`); its workers
  need the project installed and this directory on a shared file system. Neither changes any
  result, so neither is a DVC param.
- After a successful run `CacheDir.keep_only` forgets the entries this run did not use, so the
  cache never holds more than the last run's partitions.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.lib.io import writing

CACHE_ENV = "PIPELINE_PARTITION_CACHE"
WORKERS_ENV = "PIPELINE_WORKERS"
DASK_ENV = "DASK_SCHEDULER_ADDRESS"
DEFAULT_CACHE = Path(".pipeline-cache/partitions")
RESULT_FILE = "result.json"
LIB_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class PartitionTask:
    """One unit of per-partition work: `fn(*args, out_dir)` writes files and returns a result."""

    name: str
    key: str
    fn: Callable[..., dict[str, Any]]
    args: tuple = field(default=())


@dataclass(frozen=True)
class TaskResult:
    """A finished task: its stored files and the result it returned."""

    task: PartitionTask
    dir: Path
    result: dict[str, Any]
    reused: bool

    def file(self, name: str) -> Path:
        """A file the task wrote."""
        return self.dir / name


def digest(*parts: Any) -> str:
    """A SHA-256 over JSON-serialised parts: the key of a task."""
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\x00")
    return h.hexdigest()


def code_digest(*modules: str | Path) -> str:
    """A digest of the given source files and every shared helper under stages/lib."""
    files = sorted({Path(m).resolve() for m in modules} | set(LIB_DIR.glob("*.py")))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


class CacheDir:
    """Stored task results of one stage, one directory per key."""

    def __init__(self, stage: str, root: Path | str | None = None):
        root = Path(root or os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
        self.path = root / stage
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)

    def get(self, key: str) -> Path | None:
        """The directory stored under `key`, or None."""
        entry = self.path / key
        return entry if (entry / RESULT_FILE).is_file() else None

    def staging(self, key: str) -> Path:
        """A fresh directory for a task to write into, under this cache (same file system)."""
        return Path(tempfile.mkdtemp(prefix=f".{key[:16]}.tmp-{os.getpid()}-", dir=self.path))

    def put(self, key: str, staged: Path, result: dict[str, Any]) -> Path:
        """Store a finished task's directory under its key."""
        (staged / RESULT_FILE).write_text(json.dumps(result, sort_keys=True, default=str))
        entry = self.path / key
        if entry.exists():  # the same key finished twice: keep the first, they are equal
            shutil.rmtree(staged, ignore_errors=True)
            return entry
        os.replace(staged, entry)
        return entry

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget every entry (and leftover temporary) whose key is not in `keys`."""
        keep = set(keys)
        for entry in self.path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def worker_count() -> int:
    """Local worker processes: PIPELINE_WORKERS, else one per CPU core available."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"{WORKERS_ENV}={value!r}: expected a whole number >= 1")
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _call(fn: Callable[..., dict[str, Any]], args: tuple, out_dir: str) -> dict[str, Any]:
    return fn(*args, Path(out_dir))


def _executor(todo: list[PartitionTask]) -> Any:
    """A Dask client when a scheduler is configured, a process pool when it pays, else None."""
    address = os.environ.get(DASK_ENV, "").strip()
    if address:
        try:
            from distributed import Client
        except ImportError as e:
            raise RuntimeError(
                f"{DASK_ENV}={address} is set but Dask is not installed: "
                "pip install 'pipeline[dask]' or unset the variable"
            ) from e
        return Client(address, set_as_default=False)
    workers = min(worker_count(), len(todo))
    if workers <= 1:
        return None
    # forkserver, not fork: the parent holds Arrow's thread pools, which do not survive a fork.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(sorted({t.fn.__module__ for t in todo}))
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def run_tasks(
    stage: str, tasks: list[PartitionTask], cache: CacheDir | None = None
) -> Iterator[TaskResult]:
    """Run or reuse every task; yield results in task order as they become available."""
    cache = cache or CacheDir(stage)
    done: dict[str, Path] = {}
    todo: dict[str, PartitionTask] = {}  # by key: equal keys run once
    for t in tasks:
        hit = cache.get(t.key)
        if hit is not None:
            done[t.key] = hit
        else:
            todo.setdefault(t.key, t)
    reused = len(tasks) - len(todo)
    start = time.monotonic()
    if tasks:
        where = os.environ.get(DASK_ENV) or f"{min(worker_count(), max(len(todo), 1))} process(es)"
        print(
            f"{stage}: {len(tasks)} partition(s): {reused} reused, {len(todo)} to run on {where}",
            file=sys.stderr,
        )
    staged = {key: cache.staging(key) for key in todo}
    pending = iter(_submit(list(todo.values()), staged))
    finished = 0
    try:
        for t in tasks:
            if t.key not in done:
                key, result = next(pending)
                done[key] = cache.put(key, staged[key], result)
                finished += 1
                print(
                    f"{stage}: {finished}/{len(todo)} partition(s) done "
                    f"({time.monotonic() - start:.1f} s)",
                    file=sys.stderr,
                )
            entry = done[t.key]
            result = json.loads((entry / RESULT_FILE).read_text())
            yield TaskResult(t, entry, result, reused=t.key not in staged)
    finally:
        for path in staged.values():
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)


def _submit(
    todo: list[PartitionTask], staged: dict[str, Path]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Results of the tasks to run, in order, from wherever they run."""
    executor = _executor(todo)
    if executor is None:
        for t in todo:
            yield t.key, t.fn(*t.args, staged[t.key])
        return
    try:
        if hasattr(executor, "gather"):  # a Dask client
            futures = [
                executor.submit(_call, t.fn, t.args, str(staged[t.key]), pure=False) for t in todo
            ]
        else:
            futures = [executor.submit(_call, t.fn, t.args, str(staged[t.key])) for t in todo]
        for t, f in zip(todo, futures, strict=True):
            yield t.key, f.result()
    finally:
        if hasattr(executor, "gather"):
            executor.close()
        else:
            executor.shutdown(cancel_futures=True)
