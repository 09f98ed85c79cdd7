"""Run records (lineage/runs.jsonl, in git): who and what ran the pipeline, one JSON line a run.

A record keeps only what dvc.lock said at the time (digests), never hashes of its own; its git
state, Prefect run and package versions come from the one run identity (stages/lib/runinfo).
"""

from __future__ import annotations

import getpass
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, TypeVar

from stages.lib import runinfo
from stages.lib.dvccli import dvc_json
from stages.lib.dvclock import entry_hash, lock_outputs, lock_stages, read_lock_digest, read_yaml
from stages.lib.paths import METRICS_DIR
from stages.lib.summaries import (
    STAGE_OF,
    IngestBatch,
    IngestSummary,
    Summary,
    TrainSummary,
    load_summary,
)
from stages.lineage.ledger import metrics_files, stage_digests

S = TypeVar("S", bound=Summary)

RECORDS = Path("lineage/runs.jsonl")


def read_records(root: Path | str = ".") -> list[dict]:
    """Every run record, oldest first."""
    path = Path(root) / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_json(path: Path) -> dict:
    """A JSON object from a file ({} when missing or unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def stage_summary(root: Path, model: type[S]) -> S | None:
    """metrics/<stage>.json through the stage's model; None when missing, or invalid (why on
    stderr: lineage answers without it rather than guess at its keys)."""
    path = root / METRICS_DIR / f"{STAGE_OF[model]}.json"
    found, why = load_summary(path, STAGE_OF[model])
    if found is None and path.exists():
        print(f"lineage: WARNING {why}; read as missing", file=sys.stderr)
    return found if isinstance(found, model) else None


def ingest_batches(root: Path) -> list[IngestBatch]:
    """The batch files ingest recorded (metrics/ingest.json); [] when it has none to read."""
    ingest = stage_summary(root, IngestSummary)
    return list(ingest.batches) if ingest else []


def headline_metrics(root: Path, lock: dict) -> dict[str, dict]:
    """The top-level scalar values of every metrics file: the numbers a run is judged by."""
    out: dict[str, dict] = {}
    for rel in metrics_files(lock):
        data = read_json(root / rel)
        scalars = {
            k: v
            for k, v in data.items()
            if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 80)
        }
        if scalars:
            out[rel] = scalars
    return out


def _find_value(sources: list[dict], key: str) -> Any:
    for source in sources:
        if isinstance(source, dict) and source.get(key) is not None:
            return source[key]
    return None


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None


def up_to_date(root: Path) -> bool | str:
    """Whether the workspace matches dvc.lock (`dvc status --json` is empty), or why unknown."""
    status, why = dvc_json(root, "status")
    if status is None:
        return f"unknown: {why}"
    return not status


def make_run_record(
    root: Path | str = ".",
    *,
    trigger: str = "manual",
    flow_run_id: str | None = None,
    check_status: bool = True,
    extra: dict | None = None,
) -> dict:
    """A run record for the project's current state: time, git, packages, device, seed,
    Prefect flow-run id, the dvc.lock digest, each stage's lock-entry digest and outputs,
    the stages whose entries changed since the previous record, and the headline metrics."""
    root = Path(root).resolve()
    lock, lock_sha256 = read_lock_digest(root)
    previous = read_records(root)
    last = (previous[-1].get("stages") or {}) if previous else {}
    digests = stage_digests(lock)
    train, ingest = stage_summary(root, TrainSummary), stage_summary(root, IngestSummary)
    params = read_yaml(root / "params.yaml")
    ident = runinfo.run_identity(root, [*lock_outputs(lock), str(RECORDS)])
    record = {
        "run_id": uuid.uuid4().hex[:16],
        "time": ident["time"],
        "trigger": trigger,
        "user": _user(),
        "prefect_flow_run_id": flow_run_id or ident["prefect_flow_run_id"],
        "git": ident["git"],
        "dvc_lock_sha256": lock_sha256,
        "up_to_date": up_to_date(root) if check_status and lock else None,
        "ran": [n for n, d in digests.items() if last.get(n, {}).get("digest") != d],
        "stages": {
            name: {
                "digest": digests[name],
                "outs": {o["path"]: entry_hash(o) for o in entry.get("outs") or []},
            }
            for name, entry in lock_stages(lock).items()
        },
        "packages": ident["packages"],
        "platform": ident["platform"],
        "device": train.device if train else None,
        "seed": train.seed if train else _find_value([params.get("train") or {}, params], "seed"),
        "key_id": ingest.key_id if ingest else None,
        "batches": [b.batch for b in ingest.batches] if ingest else [],
        "metrics": headline_metrics(root, lock),
    }
    if extra:
        record["extra"] = extra
    return record


def append_run_record(
    root: Path | str = ".",
    *,
    trigger: str = "manual",
    flow_run_id: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Append a run record to lineage/runs.jsonl (call it after a successful run); return it."""
    record = make_run_record(root, trigger=trigger, flow_run_id=flow_run_id, extra=extra)
    path = Path(root) / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    # One line, one write, O_APPEND: concurrent appenders never interleave within a record.
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return record


def run_summary(rec: dict) -> dict:
    """The identity of a run record, for `show` and `trace`."""
    git = rec.get("git") or {}
    return {
        "run_id": rec.get("run_id"),
        "time": rec.get("time"),
        "trigger": rec.get("trigger"),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "prefect_flow_run_id": rec.get("prefect_flow_run_id"),
    }


def repro_and_record(
    targets: list[str] | None = None, force: bool = False, trigger: str = "pipeline repro"
) -> int:
    """Reproduce stage by stage, then a run record: the project's way to run the pipeline.

    Returns the failing stage's own exit code (2 bad input, 3 gate, 74/75 I/O), not DVC's 255,
    after its message and the restore of its previous outputs (see stages/repro.py).
    """
    import typer

    from stages.repro import PipelineBusy, StageFailed, pipeline_lock, repro

    try:
        with pipeline_lock("."):
            repro(".", targets, force)
    except StageFailed as e:
        typer.echo(f"pipeline: stage '{e.stage}' failed (exit {e.code}): {e.message}", err=True)
        typer.echo(f"pipeline: {e.restored}", err=True)
        return e.code
    except (PipelineBusy, ValueError) as e:
        typer.echo(f"pipeline: {e}", err=True)
        return 75 if isinstance(e, PipelineBusy) else 2
    record = append_run_record(".", trigger=trigger)
    typer.echo(f"lineage: run {record['run_id']} recorded in {RECORDS}", err=True)
    return 0
