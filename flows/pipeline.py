"""The pipeline flow: one Prefect task per DVC stage, reproduced through DVC's own Python API.

The stage graph comes from dvc.yaml through DVC (`Repo.index.graph`), so the flow follows
whatever dvc.yaml holds. Each task reproduces exactly its stage the way `dvc repro` does
(changed? -> remove outputs -> run cache or command -> save, commit, write dvc.lock), so the
flow and `dvc repro` share one cache and one dvc.lock: after either, the other has nothing to do.

Concurrency. DVC holds its repository lock while it checks and records a stage, but releases it
while the stage's command runs (`dvc.stage.decorators.unlocked_repo`), guarding the stage's
paths with its read/write path lock instead. A task does the same: the short bookkeeping steps
run under DVC's repository lock (and a process lock, so the flow's own threads queue instead of
failing on it), the command runs without it. Independent stages therefore run their commands
concurrently, and a stage starts as soon as the stages it depends on have finished.

Failures. A stage exits with
  3  a gate failed (validation, privacy scan, evaluation): the flow fails at once, no retry;
  2  bad input or configuration: no retry, the fix is in the data or params.yaml;
  75 (EX_TEMPFAIL) or an OSError-family exception: transient, retried with exponential backoff.
Any other failure (a bug) is not retried. DVC's lock contention and remote-storage errors are
transient. The task's error message is the stage's own stderr message.

Parameter overrides. `params=["train.epochs=3"]` (the syntax of `dvc exp run --set-param`) are
applied to params.yaml with DVC's own override code, the stages run, and the workspace is saved
as a DVC experiment (`dvc exp save`): `dvc exp show` lists the run with the params it used, and
`dvc exp apply <name>` brings its results back. The workspace then returns to the committed
params and dvc.lock, so the override holds for that one run.

One run at a time per repository: `pipeline_lock` (an flock on .dvc/tmp/pipeline-run.lock)
refuses a second caller with a message naming the holder.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff

EXIT_BAD_INPUT = 2
EXIT_GATE_FAILED = 3
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: "try again later"

LOCK_NAME = "pipeline-run.lock"

# Exceptions whose name at the end of a stage's traceback marks a failure that can pass.
_TRANSIENT_NAMES = re.compile(
    r"^(?:[\w.]+\.)?(OSError|IOError|EnvironmentError|ConnectionError|ConnectionResetError|"
    r"ConnectionRefusedError|ConnectionAbortedError|BrokenPipeError|TimeoutError|"
    r"BlockingIOError|InterruptedError|timeout)\b"
)
# Process-wide: serialises this process's threads on DVC's repository lock, which would
# otherwise make a concurrent task fail after DVC's 3 s retry window instead of waiting.
_DVC_LOCK = threading.Lock()
_HELD_LOCKS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "pipeline_locks_held", default=frozenset()
)


class StageError(RuntimeError):
    """A stage failed; `message` is the stage's own account of why."""

    transient = False

    def __init__(self, stage: str, message: str, returncode: int | None = None):
        super().__init__(f"stage '{stage}' failed: {message}")
        self.stage = stage
        self.message = message
        self.returncode = returncode


class GateFailed(StageError):
    """A quality or privacy gate failed (exit 3): never retried, fails the flow at once."""


class BadInput(StageError):
    """Bad input data or configuration (exit 2): retrying cannot help."""


class TransientStageError(StageError):
    """A failure that can pass (I/O, lock contention, remote storage): retried with backoff."""

    transient = True


class PipelineBusy(RuntimeError):
    """Another pipeline run holds this repository's run lock."""


@dataclass
class StageResult:
    """What one stage task did: ran its command, restored from DVC's run cache, or nothing."""

    stage: str
    status: str  # "ran" | "restored" | "up-to-date"
    seconds: float
    summary: dict[str, Any] | None = None
    summary_path: str | None = None
    outputs: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        """True when the stage's command or run cache changed the workspace."""
        return self.status != "up-to-date"


def is_transient(exc: BaseException | None) -> bool:
    """True for failures worth a retry: I/O, DVC lock contention, remote storage errors."""
    if exc is None:
        return False
    if isinstance(exc, StageError):
        return exc.transient
    from dvc.exceptions import DownloadError, UploadError
    from dvc.lock import LockError

    return isinstance(exc, OSError | LockError | UploadError | DownloadError | TimeoutError)


# ----------------------------------------------------------------------------- the stage graph


@contextlib.contextmanager
def working_dir(repo_root: str | Path) -> Iterator[None]:
    """Run inside the repository root, as DVC expects (stage names and run cache are cwd-relative).

    The working directory belongs to the whole process: the flow enters it once, before its
    task threads start; a call that finds it already there changes nothing.
    """
    root = Path(repo_root).resolve()
    before = Path.cwd()
    if before == root:
        yield
        return
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(before)


def stage_plan(repo_root: str | Path) -> list[tuple[str, list[str]]]:
    """Every stage of the repository in dependency order, each with the stages it depends on."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.repo.reproduce import get_active_graph

    with working_dir(repo_root), Repo(str(repo_root)) as repo:
        # Edges point from a stage to the stage it depends on; frozen stages lose theirs.
        graph = get_active_graph(repo.index.graph)
        order = list(nx.lexicographical_topological_sort(graph.reverse(), key=_addressing))
        return [(s.addressing, sorted(d.addressing for d in graph.successors(s))) for s in order]


def _addressing(stage: Any) -> str:
    return stage.addressing


# ----------------------------------------------------------------------- reproducing one stage


def reproduce_stage(repo_root: str | Path, addressing: str, log: Any = None) -> StageResult:
    """Reproduce exactly one stage as `dvc repro --single-item` would; return what happened."""
    from dvc.repo import Repo, lock_repo

    log = log or _NullLog()
    start = time.perf_counter()
    with working_dir(repo_root), Repo(str(repo_root)) as repo:
        with _repo_locked(repo, lock_repo):
            stage = _collect_one(repo, addressing)
            if not (stage.cmd and not stage.frozen and not getattr(stage, "is_import", False)):
                # Data sources (.dvc files), imports, frozen stages: DVC's own path.
                ran = repo.reproduce(addressing, single_item=True)
                status = "ran" if ran else "up-to-date"
                return _result(repo, stage, status, start)
            if not stage.changed():
                log.info("Stage '%s' didn't change, skipping", addressing)
                return _result(repo, stage, "up-to-date", start)
            restored = _prepare_run(repo, stage)
            if restored:
                log.info("Stage '%s' restored from DVC's run cache", addressing)
                _record(repo, stage)
                return _result(repo, stage, "restored", start)
        # The command runs without DVC's repository lock, as in `dvc repro`: the path lock held
        # around it keeps other DVC processes off this stage's outputs.
        with _path_lock(repo, stage):
            _run_commands(stage, log)
        with _repo_locked(repo, lock_repo):
            _record(repo, stage)
        return _result(repo, stage, "ran", start)


class _NullLog:
    def info(self, *args: Any) -> None:
        pass

    warning = info


@contextlib.contextmanager
def _repo_locked(repo: Any, lock_repo: Any) -> Iterator[None]:
    with _DVC_LOCK, lock_repo(repo), repo.scm_context(quiet=True):
        yield


def _collect_one(repo: Any, addressing: str) -> Any:
    stages = repo.stage.collect(addressing)
    if len(stages) != 1:
        raise ValueError(f"'{addressing}' names {len(stages)} stages, expected one")
    return stages[0]


def _prepare_run(repo: Any, stage: Any) -> bool:
    """Remove the stage's outputs and try DVC's run cache; True if the cache restored them."""
    from dvc.stage.cache import RunCacheNotFoundError

    stage.remove_outs(ignore_remove=False, force=False)
    try:
        repo.stage_cache.restore(stage)
        return True
    except RunCacheNotFoundError:
        stage.save_deps()
        return False


def _record(repo: Any, stage: Any) -> None:
    """Hash the outputs into the cache and write the stage's entry in dvc.lock (as dvc repro)."""
    no_cache_outs = any(not o.use_cache for o in stage.outs if not (o.is_metric or o.is_plot))
    stage.save(run_cache=not no_cache_outs)
    stage.commit()
    stage.dump(update_pipeline=False)


@contextlib.contextmanager
def _path_lock(repo: Any, stage: Any) -> Iterator[None]:
    from dvc.rwlock import rwlock

    def paths(items: Sequence[Any]) -> list[str]:
        return [i.fs_path for i in items if hasattr(i, "fs_path") and i.fs_path]

    # DVC's own stage methods lock with this same holder id (pid + argv), so they do not block
    # themselves while it is held.
    cmd = " ".join(sys.argv)
    hardlink = repo.config["core"].get("hardlink_lock", False)
    with rwlock(repo.tmp_dir, repo.fs, cmd, paths(stage.deps), paths(stage.outs), hardlink):
        yield


def _run_commands(stage: Any, log: Any) -> None:
    """Run the stage's command(s) exactly as DVC would, streaming and keeping stderr's tail."""
    from dvc.stage.run import _enforce_cmd_list, _make_cmd, get_executable, prepare_kwargs

    from stages.lib.env import interpreter_env

    kwargs = prepare_kwargs(stage)
    # `python` in a stage command must be this environment's, activated or not.
    kwargs["env"] = interpreter_env(kwargs.get("env"))
    executable = get_executable()
    for cmd in _enforce_cmd_list(stage.cmd):
        log.info("Running stage '%s': %s", stage.addressing, cmd)
        proc = subprocess.Popen(
            _make_cmd(executable, cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            **kwargs,
        )
        tail: deque[str] = deque(maxlen=60)
        out = threading.Thread(target=_pump, args=(proc.stdout, log.info, None), daemon=True)
        out.start()
        _pump(proc.stderr, log.warning, tail)
        out.join()
        code = proc.wait()
        if code:
            raise classify_failure(stage.addressing, code, list(tail))


def _pump(stream: Any, emit: Any, keep: deque[str] | None) -> None:
    for line in stream:
        line = line.rstrip("\n")
        emit("%s", line)
        if keep is not None:
            keep.append(line)


def classify_failure(stage: str, code: int, stderr_tail: list[str]) -> StageError:
    """Turn a stage's exit code and stderr into a gate, bad-input, transient or plain failure."""
    lines = [ln.strip() for ln in stderr_tail if ln.strip()]
    flagged = [ln for ln in lines if ln.startswith(("GATE FAILED", "ERROR:"))]
    last = lines[-1] if lines else ""
    message = "; ".join(flagged) if flagged else (last or f"exit code {code}, no message")
    if code == EXIT_GATE_FAILED:
        return GateFailed(stage, message, code)
    if code == EXIT_BAD_INPUT:
        return BadInput(stage, message, code)
    if code == EXIT_TEMPFAIL or _TRANSIENT_NAMES.match(last):
        return TransientStageError(stage, message, code)
    return StageError(stage, f"{message} (exit code {code})", code)


def _result(repo: Any, stage: Any, status: str, start: float) -> StageResult:
    path = _summary_file(repo, stage)
    summary = None
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            summary = json.loads(path.read_text(encoding="utf-8"))
    root = Path(repo.root_dir)
    return StageResult(
        stage=stage.addressing,
        status=status,
        seconds=round(time.perf_counter() - start, 3),
        summary=summary,
        summary_path=str(path.relative_to(root)) if path else None,
        outputs=[str(o.def_path) for o in stage.outs],
    )


def _summary_file(repo: Any, stage: Any) -> Path | None:
    """The stage summary: its metrics/<name>.json, else its first JSON metrics output."""
    metrics = [Path(o.fs_path) for o in stage.outs if o.is_metric and o.fs_path.endswith(".json")]
    name = getattr(stage, "name", None) or Path(stage.addressing).stem
    preferred = [p for p in metrics if p.stem == name] + metrics
    fallback = Path(repo.root_dir) / "metrics" / f"{name}.json"
    for p in [*preferred, fallback]:
        if p.is_file():
            return p
    return None


# --------------------------------------------------------------------------- the run lock


@contextlib.contextmanager
def pipeline_lock(repo_root: str | Path, holder: str | None = None) -> Iterator[None]:
    """Hold this repository's pipeline-run lock, or raise PipelineBusy naming who holds it."""
    root = str(Path(repo_root).resolve())
    if root in _HELD_LOCKS.get():  # a subflow of the run that holds it
        yield
        return
    path = Path(root) / ".dvc" / "tmp" / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown holder"
            raise PipelineBusy(
                f"A pipeline run is already in progress in {root} ({info}). Only one run at a "
                f"time per repository: wait for it to finish and try again."
            ) from None
        me = holder or f"pid {os.getpid()} on {socket.gethostname()}"
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"held by {me} since {since}".encode(), 0)
        token = _HELD_LOCKS.set(_HELD_LOCKS.get() | {root})
        try:
            yield
        finally:
            _HELD_LOCKS.reset(token)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder() -> str:
    ctx = FlowRunContext.get()
    who = f"pid {os.getpid()} on {socket.gethostname()}"
    if ctx and ctx.flow_run:
        return f"flow run '{ctx.flow_run.name}' ({ctx.flow_run.id}), {who}"
    return who


# ------------------------------------------------------------------- parameter overrides


def normalize_overrides(params: Sequence[str] | dict[str, Any] | None) -> list[str]:
    """`--set-param` strings from a list of "key=value" or a {key: value} mapping."""
    if not params:
        return []
    if isinstance(params, dict):
        return [f"{k}={json.dumps(v)}" for k, v in params.items()]
    return [str(p) for p in params]


@contextlib.contextmanager
def overridden_params(repo_root: str | Path, overrides: list[str]) -> Iterator[None]:
    """Apply overrides to the params file(s) with DVC's code; put everything back afterwards.

    Back means: the params files and dvc.lock as they were, the outputs DVC does not cache
    (metrics, usually git's) copied back, and the cached outputs checked out from DVC's cache.
    """
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    root = Path(repo_root)
    by_file = to_path_overrides(overrides)
    keep = [*by_file, "dvc.lock", *uncached_outputs(root)]
    with tempfile.TemporaryDirectory(prefix="pipeline-overrides-") as tmp:
        saved = [p for p in keep if (root / p).exists()]
        for p in saved:
            _copy(root / p, Path(tmp) / p)
        try:
            for path, items in by_file.items():
                apply_overrides(root / path, items)
            yield
        finally:
            for p in set(keep) - set(saved):
                _remove(root / p)
            for p in saved:
                _copy(Path(tmp) / p, root / p)
            _checkout(root)


def uncached_outputs(repo_root: str | Path) -> list[str]:
    """Outputs DVC does not keep in its cache (cache: false), relative to the root."""
    from dvc.repo import Repo

    with working_dir(repo_root), Repo(str(repo_root)) as repo:
        root = Path(repo.root_dir)
        return sorted(
            str(Path(o.fs_path).relative_to(root))
            for st in repo.index.stages
            for o in st.outs
            if not o.use_cache
        )


def _copy(src: Path, dest: Path) -> None:
    _remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copy2(src, dest)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _checkout(root: Path) -> None:
    """Bring outputs back in line with the restored dvc.lock, from the cache."""
    from dvc.repo import Repo

    with _DVC_LOCK, Repo(str(root)) as repo:
        try:
            repo.checkout(force=True)
        except Exception as e:
            print(f"warning: outputs not fully restored ({e}); the next run reproduces them")


def save_experiment(repo_root: str | Path, name: str | None, message: str) -> str | None:
    """Record the workspace as a DVC experiment (`dvc exp save`); return its name."""
    from dvc.repo import Repo

    with _DVC_LOCK, Repo(str(repo_root)) as repo:
        # Outputs DVC does not cache (metrics) go into the experiment commit even when git
        # does not track them yet, so the experiment shows what the run measured.
        untracked = set(repo.scm.untracked_files())
        include = [p for p in uncached_outputs(repo_root) if p in untracked]
        rev = repo.experiments.save(
            name=name, force=True, message=message, include_untracked=include or None
        )
        names = repo.experiments.get_exact_name([rev]) if rev else {}
        return names.get(rev) or rev


# ----------------------------------------------------------------------------- Prefect parts


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100] or "stage"


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(data, dict):
        rows: list[tuple[str, Any]] = []
        for k, v in data.items():
            rows += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return rows
    if isinstance(data, list) and len(data) > 20:
        return [(prefix, f"[{len(data)} items]")]
    return [(prefix, json.dumps(data) if isinstance(data, list) else data)]


@task(
    task_run_name="{addressing}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.2,
    retry_condition_fn=lambda task, run, state: is_transient(_exception_of(state)),
)
def run_stage(repo_root: str, addressing: str) -> dict[str, Any]:
    """Reproduce one DVC stage; publish its summary as a table artifact; say if it ran."""
    log = get_run_logger()
    result = reproduce_stage(repo_root, addressing, log)
    rows = [
        {"key": "status", "value": result.status},
        {"key": "seconds", "value": result.seconds},
    ]
    rows += [{"key": k, "value": v} for k, v in _flatten(result.summary or {})]
    create_table_artifact(
        rows,
        key=f"stage-{_artifact_key(addressing)}",
        description=f"Stage '{addressing}': {result.status}"
        + (f" (summary: {result.summary_path})" if result.summary_path else ""),
    )
    log.info("Stage '%s': %s in %.2f s", addressing, result.status, result.seconds)
    return asdict(result)


def _exception_of(state: Any) -> BaseException | None:
    try:
        value = state.result(raise_on_failure=False)
    except Exception as e:
        return e
    return value if isinstance(value, BaseException) else None


def run_stages(
    repo_root: str,
    retries: int = 3,
    retry_delay_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Submit one task per stage, each waiting for its upstream stages; fail at the first error."""
    plan = stage_plan(repo_root)
    stage_task = run_stage.with_options(
        retries=retries, retry_delay_seconds=exponential_backoff(backoff_factor=retry_delay_s)
    )
    futures: dict[str, Any] = {}
    for addressing, upstream in plan:
        futures[addressing] = stage_task.submit(
            repo_root, addressing, wait_for=[futures[u] for u in upstream if u in futures]
        )
    for fut in as_completed(list(futures.values())):
        # The first failure ends the flow with that stage's own message; stages that depend on
        # it never start (Prefect leaves them NotReady).
        fut.result()
    return [futures[addressing].result() for addressing, _ in plan]


@flow(name="dvc-pipeline", log_prints=True)
def pipeline(
    repo_root: str = ".",
    params: list[str] | dict[str, Any] | None = None,
    experiment: str | None = None,
    summary_path: str = "reports/summary.md",
    retries: int = 3,
    retry_delay_s: float = 2.0,
) -> list[dict[str, Any]]:
    """Reproduce the DVC pipeline at repo_root, one task per stage (see the module docstring)."""
    root = str(Path(repo_root).resolve())
    overrides = normalize_overrides(params)
    log = get_run_logger()
    with pipeline_lock(root, _holder()), working_dir(root):
        if not overrides:
            results = run_stages(root, retries, retry_delay_s)
            _publish_summary(root, summary_path, results)
            _record_run(root, log)
            return results
        with overridden_params(root, overrides):
            log.info("Parameter overrides for this run: %s", overrides)
            results = run_stages(root, retries, retry_delay_s)
            _publish_summary(root, summary_path, results)
            ctx = FlowRunContext.get()
            run_name = ctx.flow_run.name if ctx and ctx.flow_run else "flow"
            name = save_experiment(
                root, experiment, f"Prefect run {run_name}: {' '.join(overrides)}"
            )
            log.info("Saved DVC experiment '%s' (see `dvc exp show`)", name)
            for r in results:
                r["experiment"] = name
        return results


def _record_run(root: str, log: Any) -> None:
    """Append the lineage run record (with this flow run's id) after a successful run."""
    from stages.lineage import append_run_record

    try:
        record = append_run_record(root, trigger="prefect")
        log.info("Run record %s appended to the lineage log", record.get("run_id"))
    except Exception as e:  # the run itself succeeded; a missing record must not undo it
        log.warning(
            "Could not append the lineage run record: %s (run `pipeline lineage record`)", e
        )


def _publish_summary(root: str, summary_path: str, results: list[dict[str, Any]]) -> None:
    lines = [
        "| stage | status | seconds |",
        "|---|---|---|",
        *[f"| {r['stage']} | {r['status']} | {r['seconds']} |" for r in results],
    ]
    body = "## Stages\n\n" + "\n".join(lines) + "\n"
    report = Path(root) / summary_path
    if report.is_file():
        body = report.read_text(encoding="utf-8") + "\n\n" + body
    create_markdown_artifact(
        body, key="pipeline-summary", description=f"{summary_path} and what each stage did"
    )
