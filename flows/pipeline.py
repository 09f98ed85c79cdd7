"""The pipeline flow: one Prefect task per DVC stage, each `dvc repro --single-item <stage>`.

The stages come from dvc.yaml, in its order (stages/repro.py checks that the order is a valid
run order). Each task runs its stage through DVC's command line (stages/repro.py `run_stage`),
so the flow and `dvc repro` share one cache and one dvc.lock: after either, the other has nothing
to do. DVC holds its repository lock for the whole of each stage, so the tasks run one after
another, as the chain-shaped pipeline needs anyway.

Failures. A failing task raises `StageFailed` with the stage's own exit code (not DVC's 255) and
the stage's own message, after putting the stage's previous outputs back from DVC's cache.
Retries are decided by the exit code alone: 75 (EX_TEMPFAIL, "try again later") is retried with
exponential backoff; 2 (bad input), 3 (a gate), 74 (a write failed) and anything else are not.
`python -m flows.pipeline` exits with the stage's code.

Parameter overrides. `params=["train.epochs=3"]` runs `dvc exp run --temp -S train.epochs=3`:
DVC reproduces the pipeline with the override in a temporary copy of the workspace and saves the
result as an experiment (`dvc exp show` lists it, `dvc exp apply NAME` brings it back). The
workspace itself, its params, dvc.lock and outputs, is not touched. It is one task: DVC runs the
stages inside the experiment.

One run at a time per repository: `pipeline_lock` refuses a second caller, naming the holder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext
from prefect.tasks import exponential_backoff

from stages.lib.dvclock import param_leaves
from stages.repro import (
    EXIT_TEMPFAIL,
    PipelineBusy,
    StageFailed,
    StageRun,
    changed_stages,
    pipeline_lock,
    stage_failure,
    stage_order,
    stream_command,
    unchanged,
)
from stages.repro import run_stage as repro_stage

__all__ = ["PipelineBusy", "StageFailed", "pipeline", "pipeline_lock", "stage_order"]


def is_transient(exc: BaseException | None) -> bool:
    """True when a retry can help: a stage (or dvc command) that exited 75."""
    return isinstance(exc, StageFailed) and exc.transient


def exception_of(state: Any) -> BaseException | None:
    """The exception a failed task state holds, if any."""
    try:
        value = state.result(raise_on_failure=False)
    except Exception as e:
        return e
    return value if isinstance(value, BaseException) else None


def _retry_condition(task: Any, run: Any, state: Any) -> bool:
    return is_transient(exception_of(state))


def holder() -> str:
    """Who holds the run lock: this flow run (name and id) and process."""
    ctx = FlowRunContext.get()
    who = f"pid {os.getpid()} on {socket.gethostname()}"
    if ctx and ctx.flow_run:
        return f"flow run '{ctx.flow_run.name}' ({ctx.flow_run.id}), {who}"
    return who


def _artifact_key(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:100] or "stage"


def summary_rows(summary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A stage summary as table rows: one a leaf (dotted key, as `param_leaves` flattens), a list
    as JSON or, over 20 items, by its length; an empty mapping has no row."""
    leaves = param_leaves(summary) if summary else {}
    return [{"key": k, "value": _cell(v)} for k, v in leaves.items() if v != {}]


def _cell(value: Any) -> Any:
    if isinstance(value, list):
        return f"[{len(value)} items]" if len(value) > 20 else json.dumps(value)
    return value


@task(
    task_run_name="{stage}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.2,
    retry_condition_fn=_retry_condition,
)
def run_stage(
    repo_root: str, stage: str, force: bool = False, known_unchanged: bool = False
) -> dict[str, Any]:
    """Reproduce one DVC stage; publish its summary as a table artifact; say if it ran."""
    log = get_run_logger()
    result = repro_stage(repo_root, stage, force, log.info, log.warning, known_unchanged)
    rows = [{"key": "status", "value": result.status}, {"key": "seconds", "value": result.seconds}]
    rows += summary_rows(result.summary)
    create_table_artifact(
        rows,
        key=f"stage-{_artifact_key(stage)}",
        description=f"Stage '{stage}': {result.status}"
        + (f" (summary: {result.summary_path})" if result.summary_path else ""),
    )
    log.info("Stage '%s': %s in %.2f s", stage, result.status, result.seconds)
    return asdict(result)


@task(
    task_run_name="dvc-exp-run",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_condition_fn=_retry_condition,
)
def run_experiment(repo_root: str, overrides: list[str], name: str | None) -> str:
    """`dvc exp run --temp -S ...`: the pipeline with overrides, saved as an experiment."""
    log = get_run_logger()
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "--temp"]
    cmd += [a for o in overrides for a in ("-S", o)] + (["-n", name] if name else [])
    lines: list[str] = []
    code, tail = stream_command(
        cmd, repo_root, lambda s: (lines.append(s), log.info(s)), log.warning
    )
    if code:
        code, message = stage_failure("experiment", code, tail)
        raise StageFailed("experiment", code, message, "the workspace was not changed")
    ran = [ln for ln in lines if ln.startswith("Ran experiment(s):")]
    return ran[-1].split(":", 1)[1].strip() if ran else (name or "")


def normalize_overrides(params: Sequence[str] | dict[str, Any] | None) -> list[str]:
    """`--set-param` strings from a list of "key=value" or a {key: value} mapping."""
    if not params:
        return []
    if isinstance(params, dict):
        return [f"{k}={json.dumps(v)}" for k, v in params.items()]
    return [str(p) for p in params]


@flow(name="dvc-pipeline", log_prints=True)
def pipeline(
    repo_root: str = ".",
    params: list[str] | dict[str, Any] | None = None,
    experiment: str | None = None,
    summary_path: str = "reports/summary.md",
    retries: int = 3,
    retry_delay_s: float = 2.0,
    force: bool = False,
) -> list[dict[str, Any]]:
    """Reproduce the DVC pipeline at repo_root, one task per stage (see the module docstring)."""
    root = str(Path(repo_root).resolve())
    overrides = normalize_overrides(params)
    log = get_run_logger()
    delay = exponential_backoff(backoff_factor=retry_delay_s)
    with pipeline_lock(root, holder()):
        if overrides:
            log.info("Parameter overrides for this run: %s", overrides)
            exp_task = run_experiment.with_options(retries=retries, retry_delay_seconds=delay)
            name = exp_task(root, overrides, experiment)
            log.info("Saved DVC experiment '%s' (see `dvc exp show`)", name)
            return [{"stage": "experiment", "status": "ran", "experiment": name}]
        stage_task = run_stage.with_options(retries=retries, retry_delay_seconds=delay)
        changed = None if force else changed_stages(root)
        results: list[dict[str, Any]] = []
        # In order, one at a time: a failure raises StageFailed and later stages never start.
        for stage in stage_order(root):
            done = [StageRun(**r) for r in results]
            results.append(stage_task(root, stage, force, unchanged(stage, changed, done)))
        _publish_summary(root, summary_path, results)
        _record_run(root, log)
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


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m flows.pipeline`: run the flow; exit with the failing stage's own code."""
    ap = argparse.ArgumentParser(
        prog="python -m flows.pipeline", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--repo", default=".", help="repository root (default: current directory)")
    ap.add_argument("-S", "--set-param", action="append", default=[], help="key=value override")
    ap.add_argument("--force", action="store_true", help="rerun every stage")
    args = ap.parse_args(argv)
    try:
        pipeline(repo_root=args.repo, params=args.set_param, force=args.force)
    except StageFailed as e:
        print(f"pipeline: {e}\npipeline: {e.restored}", file=sys.stderr)
        return e.code
    except PipelineBusy as e:
        print(f"pipeline: {e}", file=sys.stderr)
        return EXIT_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
