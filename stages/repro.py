"""Reproduce the pipeline stage by stage through DVC's command line, keeping each stage's word.

Each stage runs as `dvc repro --single-item <stage>`, in dvc.yaml order, so DVC alone decides
whether a stage changed, runs it, caches its outputs and writes dvc.lock. Two things DVC does not
do are added here, both through DVC's public commands and files:

- The stage's own exit code and message. DVC reports any failing command as exit 255 and says
  "failed to reproduce 'X': failed to run: CMD, exited with N": N (2 bad input, 3 gate, 74/75
  I/O) becomes the exit code, and the stage's last stderr lines (its message) the error text.
- Previous outputs survive a failure. DVC deletes a stage's outputs before it runs it. The cached
  ones are still in DVC's cache under the hashes dvc.lock recorded (a failed run leaves dvc.lock
  alone), so `dvc checkout --force <stage>` brings them back; the outputs DVC does not cache
  (`cache: false` files: metrics, plots, the report) are copied aside before the run and back.

Used by `pipeline repro` (stages/lineage/records.py) and by the Prefect flow
(flows/pipeline.py), which wraps `run_stage` in one task per stage.
"""

from __future__ import annotations

import contextlib
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
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from stages.lib.dvccli import dvc, dvc_json, stage_name
from stages.lib.dvclock import dvc_yaml_stages, lock_entry, under, yaml_paths
from stages.lib.env import interpreter_env

EXIT_TEMPFAIL = 75  # sysexits EX_TEMPFAIL: the one failure worth an automatic retry
DVC_ERROR = 255  # DVC's own exit code for any error, a failing stage command included
LOCK_NAME = "pipeline-run.lock"
MODEL_DIR = "models/"
# DVC's line for a failing stage command (dvc/stage/exceptions.py StageCmdFailedError).
_DVC_FAILED = re.compile(r"failed to reproduce '(?P<stage>[^']+)':.* exited with (?P<code>-?\d+)")
_HELD: ContextVar[frozenset[str]] = ContextVar("pipeline_locks_held", default=frozenset())

Emit = Callable[[str], None]


class StageFailed(RuntimeError):
    """A stage failed: its own exit code and message, and whether its old outputs are back."""

    def __init__(self, stage: str, code: int, message: str, restored: str = ""):
        super().__init__(f"stage '{stage}' failed (exit {code}): {message}")
        self.stage, self.code, self.message, self.restored = stage, code, message, restored

    def __reduce__(self) -> tuple[Any, ...]:  # picklable, for Prefect's result store
        return (type(self), (self.stage, self.code, self.message, self.restored))

    @property
    def transient(self) -> bool:
        """True only for exit 75 (try again later); 2, 3, 74 and bugs are not retried."""
        return self.code == EXIT_TEMPFAIL


class PipelineBusy(RuntimeError):
    """Another pipeline run holds this repository's run lock."""


@dataclass
class StageRun:
    """What one stage did: "ran" (its dvc.lock entry changed or it was forced) or "up-to-date"."""

    stage: str
    status: str
    seconds: float
    summary: dict[str, Any] | None = None
    summary_path: str | None = None
    outputs: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------ dvc.yaml and dvc.lock


def dvc_stages(root: str | Path) -> dict[str, dict[str, Any]]:
    """The stages of dvc.yaml, in file order (plain stages; foreach/matrix are not used here)."""
    if not (Path(root) / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{Path(root) / 'dvc.yaml'}: no dvc.yaml in this project")
    stages = dvc_yaml_stages(root)
    templated = [n for n, s in stages.items() if "foreach" in s or "matrix" in s]
    if templated:
        raise ValueError(f"dvc.yaml: foreach/matrix stages {templated} are not supported here")
    return stages


def stage_outs(stage: dict[str, Any], cached: bool | None = None) -> list[str]:
    """A stage's outputs (outs, metrics, plots); only the cached or uncached ones when asked."""
    found = []
    for kind in ("outs", "metrics", "plots"):
        for item in stage.get(kind) or []:
            path, opts = next(iter(item.items())) if isinstance(item, dict) else (item, None)
            use_cache = (opts or {}).get("cache", True)
            if cached is None or use_cache == cached:
                found.append(str(path))
    return found


def stage_order(root: str | Path, targets: list[str] | None = None) -> list[str]:
    """Stages to reproduce, in dvc.yaml order: all, or the targets and every stage upstream."""
    stages = dvc_stages(root)
    names = list(stages)
    unknown = [t for t in targets or [] if t not in stages]
    if unknown:
        raise ValueError(f"no stage named {unknown} in dvc.yaml (stages: {', '.join(names)})")
    producer = {out: n for n, s in stages.items() for out in stage_outs(s)}
    for i, name in enumerate(names):  # dvc.yaml order must be a valid run order
        for dep in yaml_paths(stages[name].get("deps")):
            later = [p for o, p in producer.items() if under(dep, o) and names.index(p) > i]
            if later:
                raise ValueError(f"dvc.yaml: stage {name!r} needs {dep} from the later {later}")
    if not targets:
        return names
    wanted, todo = set(), list(targets)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            deps = yaml_paths(stages[name].get("deps"))
            todo += [p for o, p in producer.items() if any(under(d, o) for d in deps)]
    return [n for n in names if n in wanted]


# ------------------------------------------------------------------------------ running DVC


def stream_command(cmd: list[str], root: str | Path, out: Emit, err: Emit) -> tuple[int, list[str]]:
    """Run cmd, passing its stdout and stderr lines on as they come; (exit code, stderr tail)."""
    proc = subprocess.Popen(
        cmd,
        cwd=root,
        env=interpreter_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    tail: deque[str] = deque(maxlen=60)
    pump = threading.Thread(target=_pump, args=(proc.stdout, out, None), daemon=True)
    pump.start()
    _pump(proc.stderr, err, tail)
    pump.join()
    return proc.wait(), list(tail)


def _pump(stream: IO[str] | None, emit: Emit, keep: deque[str] | None) -> None:
    for line in stream or []:
        line = line.rstrip("\n")
        emit(line)
        if keep is not None:
            keep.append(line)


def stage_failure(stage: str, returncode: int, stderr_tail: list[str]) -> tuple[int, str]:
    """(the stage's own exit code, its message) from DVC's exit code and stderr.

    DVC exits 255 for any failure and names the command's code in its "failed to reproduce"
    line; the stage's message is what the stage printed last before that line. Without that
    line the failure is DVC's own (a lock, a missing dependency): its code and ERROR lines.
    """
    lines = [ln.strip() for ln in stderr_tail if ln.strip()]
    for i in range(len(lines) - 1, -1, -1):
        m = _DVC_FAILED.search(lines[i])
        if m:
            code = int(m["code"])
            code = 128 - code if code < 0 else code  # killed by signal N: the shell's 128+N
            own = [ln for ln in lines[:i] if not _DVC_FAILED.search(ln)][-3:]
            return code, " | ".join(own) or f"exit code {code}, no message"
    dvc_lines = [ln for ln in lines if ln.startswith("ERROR")] or lines[-3:]
    return returncode, " | ".join(dvc_lines) or f"dvc exited with {returncode}, no message"


# ------------------------------------------------------------------ keeping previous outputs


@contextlib.contextmanager
def kept_uncached(root: str | Path, stage: dict[str, Any]) -> Iterator[Path]:
    """Copy the stage's uncached output files aside for the block (DVC deletes them before a run).

    Files only (metrics, plots, the report): an uncached directory is a stage's working state,
    such as train's models/checkpoint, and what a failed run left there is what a resume needs.
    """
    with tempfile.TemporaryDirectory(prefix="previous-outputs-", dir=_tmp_dir(root)) as tmp:
        for rel in stage_outs(stage, cached=False):
            if (Path(root) / rel).is_file():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(root) / rel, Path(tmp) / rel)
        yield Path(tmp)


def _tmp_dir(root: str | Path) -> Path:
    path = Path(root) / ".dvc" / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def restore_previous(root: str | Path, name: str, stage: dict[str, Any], kept: Path) -> str:
    """Put back the outputs of the stage's last good run; return the sentence that says so."""
    if lock_entry(root, name) is None:
        return f"{name} had no previous outputs to restore (it has never completed)"
    cached = stage_outs(stage, cached=True)
    # dvc.lock still holds the last good run's hashes: checkout takes them from the cache.
    done = dvc(root, "checkout", "--force", name) if cached else None
    for rel in stage_outs(stage, cached=False):
        saved, dest = kept / rel, Path(root) / rel
        if saved.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(saved, dest)
    if done is not None and done.returncode:
        why = (done.stderr.strip().splitlines() or ["no message"])[-1]
        return f"could not restore the previous outputs of {name} from the DVC cache: {why}"
    note = f"restored the previous outputs of {name} from the DVC cache"
    if any(under(o, MODEL_DIR.rstrip("/")) for o in cached):
        note += "; predict keeps serving the last good model"
    return note


# ------------------------------------------------------------------------------- one stage


def changed_stages(root: str | Path) -> set[str] | None:
    """The stages `dvc status --json` says would rerun now; None when DVC cannot tell."""
    status, _ = dvc_json(root, "status")
    # Keys are stage names, "dvc.yaml:<name>" away from the root, or .dvc files.
    return None if not isinstance(status, dict) else {stage_name(key) for key in status}


def run_stage(
    root: str | Path,
    name: str,
    force: bool = False,
    out: Emit = print,
    err: Emit | None = None,
    known_unchanged: bool = False,
) -> StageRun:
    """`dvc repro --single-item <name>`; on failure restore its outputs and raise StageFailed.

    known_unchanged: `dvc status` already said the stage and everything upstream is up to date,
    so there is nothing to run (saves a dvc start-up per stage on a cached pipeline).
    """
    err = err or (lambda line: print(line, file=sys.stderr))
    stage = dvc_stages(root)[name]
    start = time.perf_counter()
    if known_unchanged and not force:
        return _stage_run(root, name, stage, "up-to-date", start)
    before = lock_entry(root, name)
    cmd = [sys.executable, "-m", "dvc", "repro", "--single-item", *(["--force"] * force), name]
    with kept_uncached(root, stage) as kept:
        code, tail = stream_command(cmd, root, out, err)
        if code:
            code, message = stage_failure(name, code, tail)
            restored = restore_previous(root, name, stage, kept)
            err(restored)
            raise StageFailed(name, code, message, restored)
    ran = force or lock_entry(root, name) != before
    return _stage_run(root, name, stage, "ran" if ran else "up-to-date", start)


def _stage_run(root: str | Path, name: str, stage: dict, status: str, start: float) -> StageRun:
    summary, summary_path = _summary(root, name, stage)
    return StageRun(
        stage=name,
        status=status,
        seconds=round(time.perf_counter() - start, 3),
        summary=summary,
        summary_path=summary_path,
        outputs=stage_outs(stage),
    )


def _summary(root: str | Path, name: str, stage: dict[str, Any]) -> tuple[dict | None, str | None]:
    """The stage summary: its metrics/<name>.json, else its first JSON metrics file."""
    metrics = [yaml_paths([m])[0] for m in stage.get("metrics") or []]
    json_metrics = [m for m in metrics if m.endswith(".json")]
    preferred = [m for m in json_metrics if Path(m).stem == name] + json_metrics
    for rel in [*preferred, f"metrics/{name}.json"]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads((Path(root) / rel).read_text(encoding="utf-8")), rel
    return None, None


def repro(
    root: str | Path = ".",
    targets: list[str] | None = None,
    force: bool = False,
    out: Emit = print,
    err: Emit | None = None,
) -> list[StageRun]:
    """Every stage (or the targets and their upstream stages) in order; stop at a failure."""
    changed = None if force else changed_stages(root)
    runs: list[StageRun] = []
    for name in stage_order(root, targets):
        runs.append(run_stage(root, name, force, out, err, unchanged(name, changed, runs)))
    return runs


def unchanged(name: str, changed: set[str] | None, so_far: list[StageRun]) -> bool:
    """True when `dvc status` (taken before the run) says the stage is up to date and no stage
    before it ran in this run (which could have changed its inputs)."""
    return changed is not None and name not in changed and all(r.status != "ran" for r in so_far)


# ----------------------------------------------------------------------------- the run lock


@contextlib.contextmanager
def pipeline_lock(repo_root: str | Path, holder: str | None = None) -> Iterator[None]:
    """Hold this repository's pipeline-run lock, or raise PipelineBusy naming who holds it.

    DVC locks the repository for each `dvc repro --single-item` only; this lock keeps a second
    run from slipping its stages in between the first run's.
    """
    root = str(Path(repo_root).resolve())
    if root in _HELD.get():  # a subflow of the run that holds it
        yield
        return
    fd = os.open(_tmp_dir(root) / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
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
        token = _HELD.set(_HELD.get() | {root})
        try:
            yield
        finally:
            _HELD.reset(token)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
