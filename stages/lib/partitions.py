"""Run one task per partition: in local worker processes or on a Dask cluster, reusing results.

A stage describes its per-partition work to a `PartitionRun`: the stage's name and key parts
(params, plain data or dataclasses), and for each partition a `Partition` (its name, the
arguments of a top-level function, and its own key parts, such as its input file's hash). The
run owns the rest:

- The key of a partition's result: the stage, the run's and the partition's key parts as JSON
  (dataclasses through `dataclasses.asdict`, never `repr`), and the digest of the stage's code:
  the .py files that are its deps in dvc.yaml, so the cache and DVC invalidate on the same files.
- The stored results: each task writes its files into a fresh directory it is given and returns
  a small JSON-able result. The finished directory is stored under
  `.pipeline-cache/partitions/<stage>/<key>/` (git-ignored, local, holds the same personal
  data as the stage's outputs) and hard-linked into the outputs (`Link`), so reuse costs no copy.
  A task whose key is stored is not run again, so a new batch costs work proportional to its rows.
- Where tasks run: `PIPELINE_WORKERS` (default: one per CPU core) local processes, or the Dask
  scheduler named by `DASK_SCHEDULER_ADDRESS` (for example `tcp://10.0.0.5:8786`); its workers
  need the project installed and this directory on a shared file system. Neither changes any
  result, so neither is a DVC param.
- Pruning: after a successful run (the end of its `with` block, or `prune()`) the entries this
  run did not use are forgotten, so the cache never holds more than the last run's partitions.

Steps that must run in order in this process (clean's chained deduplication, anonymize's
release) use `PartitionRun.stored`, which keys, stores, links and prunes the same way.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import functools
import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from stages.lib.digest import canonical_digest
from stages.lib.dvclock import dvc_yaml_stages, yaml_paths
from stages.lib.io import file_hash, writing
from stages.lib.progress import note, steps

CACHE_ENV = "PIPELINE_PARTITION_CACHE"
WORKERS_ENV = "PIPELINE_WORKERS"
DASK_ENV = "DASK_SCHEDULER_ADDRESS"
DEFAULT_CACHE = Path(".pipeline-cache/partitions")
RESULT_FILE = "result.json"
# The project root: where dvc.yaml names the stages' code (its paths are relative to it).
ROOT = Path(__file__).resolve().parents[2]


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


def plain(obj: Any) -> Any:
    """Key parts as JSON data: dataclasses by `dataclasses.asdict`, pydantic models by their
    JSON dump, paths and dates as text; anything else that is not JSON data is refused (no
    `repr`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return plain(dataclasses.asdict(obj))
    if hasattr(obj, "model_dump"):  # a pydantic model
        return plain(obj.model_dump(mode="json"))
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, set | frozenset):
        return sorted(plain(v) for v in obj)
    if isinstance(obj, enum.Enum):
        return plain(obj.value)
    if isinstance(obj, Path):
        return obj.as_posix()
    if isinstance(obj, datetime.date | datetime.time):  # YAML reads dates (schema min/max)
        return obj.isoformat()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if hasattr(obj, "item") and hasattr(obj, "dtype"):  # a NumPy scalar
        return plain(obj.item())
    raise TypeError(f"a cache key part must be plain data or a dataclass, got {type(obj)!r}")


def digest(*parts: Any) -> str:
    """The key of a task: a SHA-256 over the parts as canonical JSON (see `plain`)."""
    return canonical_digest([plain(p) for p in parts])


def _py_deps(stage: str, root: Path) -> tuple[str, ...]:
    """The .py paths among the deps of `stage` in dvc.yaml, sorted, as dvc.yaml writes them."""
    dvc_file = root / "dvc.yaml"
    version = (dvc_file.stat().st_mtime_ns, dvc_file.stat().st_size) if dvc_file.is_file() else None
    return _read_py_deps(stage, root, version)


@functools.lru_cache(maxsize=64)
def _read_py_deps(stage: str, root: Path, version: tuple[int, int] | None) -> tuple[str, ...]:
    """`_py_deps`, parsed once per version of dvc.yaml (a stage keys up to three caches)."""
    spec = dvc_yaml_stages(root).get(stage)
    if spec is None:
        raise ValueError(
            f"{root / 'dvc.yaml'}: no stage {stage!r}; the partition cache keys a stage's "
            "results by the .py files dvc.yaml lists as its deps: add the stage there"
        )
    return tuple(sorted({d for d in yaml_paths(spec.get("deps")) if d.endswith(".py")}))


def code_files(stage: str, root: Path | str = ROOT) -> list[Path]:
    """The .py files dvc.yaml lists as the deps of `stage`: the code its results depend on."""
    return [Path(root) / d for d in _py_deps(stage, Path(root))]


def code_digest(stage: str, root: Path | str = ROOT) -> str:
    """A digest of the stage's code files (`code_files`): what DVC reruns the stage on."""
    files = _py_deps(stage, Path(root))
    return canonical_digest([[d, file_hash(Path(root) / d)] for d in files])


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
    if tasks:
        where = os.environ.get(DASK_ENV) or f"{min(worker_count(), max(len(todo), 1))} process(es)"
        reused = len(tasks) - len(todo)
        note(f"{stage}: {len(tasks)} partition(s): {reused} reused, {len(todo)} to run on {where}")
    staged = {key: cache.staging(key) for key in todo}
    pending = iter(_submit(list(todo.values()), staged))
    try:
        with steps(stage, len(todo)) as advance:
            for t in tasks:
                if t.key not in done:
                    key, result = next(pending)
                    done[key] = cache.put(key, staged[key], result)
                    advance()
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


class Link(NamedTuple):
    """A file a task wrote (`file`) hard-linked into an output directory (`out`, an
    `io.AtomicDir`) as `dest`, where `{name}` stands for the partition's name."""

    out: Any
    dest: str
    file: str


@dataclass(frozen=True)
class Partition:
    """One partition as a stage describes it: its name, the arguments of the stage's
    per-partition function (before the output directory), and its own key parts (what its
    result depends on beyond the run's key parts, e.g. its input file's hash)."""

    name: str
    args: tuple = ()
    key: Any = ()


class PartitionRun:
    """One stage's (or one step's) partition work: keys, stored results, links and pruning.

    `stage` is the stage's name in dvc.yaml (its deps' .py files are the code part of every
    key); `step` names a second cache of the same stage (clean's map and dedup); `key_parts`
    are what every partition's result depends on (params as plain data or dataclasses).
    Used as a context manager, it prunes the cache when its block ends without an error.
    """

    def __init__(self, stage: str, *key_parts: Any, step: str = "", label: str = ""):
        self.name = f"{stage}-{step}" if step else stage
        self.label = label or stage
        self.cache = CacheDir(self.name)
        self._base = digest(self.name, list(key_parts), code_digest(stage))
        self.used: list[str] = []

    def key(self, *parts: Any) -> str:
        """The key of a result that depends on `parts` beyond the run's key parts."""
        return digest(self._base, *parts)

    def lookup(self, parts: Any) -> Path | None:
        """The stored directory of the result keyed by `parts`, or None."""
        return self.cache.get(self.key(parts))

    def forget(self, parts: Any) -> None:
        """Drop a stored result that is stale for a reason its key cannot see: it runs again."""
        entry = self.lookup(parts)
        if entry is not None:
            shutil.rmtree(entry, ignore_errors=True)

    def run(
        self,
        fn: Callable[..., dict[str, Any]],
        partitions: Iterable[Partition],
        links: Sequence[Link] = (),
    ) -> Iterator[TaskResult]:
        """`fn(*args, out_dir)` for each partition whose result is not stored, in worker
        processes; yields every partition's result in order, its files linked per `links`."""
        tasks = [PartitionTask(p.name, self.key(p.key), fn, tuple(p.args)) for p in partitions]
        self.used += [t.key for t in tasks]
        return self._linked(run_tasks(self.label, tasks, self.cache), links)

    def _linked(self, results: Iterator[TaskResult], links: Sequence[Link]) -> Iterator[TaskResult]:
        for done in results:
            self.link(done, links)
            yield done

    def stored(
        self,
        name: str,
        parts: Any,
        fn: Callable[..., dict[str, Any]],
        args: tuple = (),
        links: Sequence[Link] = (),
    ) -> TaskResult:
        """One partition's result computed here and now, unless stored: for steps that run in
        order in this process (a chained key, state carried from one partition to the next)."""
        task = PartitionTask(name, self.key(parts), fn, tuple(args))
        self.used.append(task.key)
        entry = self.cache.get(task.key)
        reused = entry is not None
        if entry is None:
            staged = self.cache.staging(task.key)
            try:
                entry = self.cache.put(task.key, staged, fn(*args, staged))
            finally:
                shutil.rmtree(staged, ignore_errors=True)  # gone already when it was stored
        done = TaskResult(task, entry, json.loads((entry / RESULT_FILE).read_text()), reused)
        self.link(done, links)
        return done

    @staticmethod
    def link(done: TaskResult, links: Sequence[Link]) -> None:
        """Hard-link a result's files into the outputs."""
        for out, dest, file in links:
            out.link(dest.replace("{name}", done.task.name), done.file(file))

    def prune(self) -> None:
        """Forget every stored result this run did not use (call after the run succeeded)."""
        self.cache.keep_only(self.used)

    def __enter__(self) -> PartitionRun:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.prune()
