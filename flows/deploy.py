"""Deployments of the pipeline flows, defined in code, served by one command.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy --cron "0 3 * * 1"

serves two deployments against the Prefect server at PREFECT_API_URL:
- `dvc-pipeline/scheduled`: the full pipeline on a cron schedule (from --cron, else params.yaml
  `orchestration.cron`, else Mondays 03:00 UTC);
- `dvc-new-data/new-data`: the new-data flow, run on demand with a `batch` parameter, or every
  --inbox-every seconds over --inbox GLOB when given (a batch already added is skipped).

The served process runs one flow run at a time (`limit=1`); the repository's run lock refuses
any other caller (a CLI run, another server) while a run is in progress.

SIGTERM or Ctrl-C stops serving within SHUTDOWN_GRACE_S seconds, even when the Prefect server has
gone away: the runner's graceful shutdown (pausing the schedules, cancelling runs) talks to the
server, and with the server gone it would retry for minutes, so it gets a bounded grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.runner import Runner

from flows.new_data import new_data
from flows.pipeline import pipeline

DEFAULT_CRON = "0 3 * * 1"
SHUTDOWN_GRACE_S = 5.0
EXIT_TEMPFAIL = 75  # the server cannot be reached: try again later
SCHEDULED = "scheduled"
NEW_DATA = "new-data"


def cron_from_params(repo_root: str | Path) -> str | None:
    """params.yaml `orchestration.cron`, if the repository sets one."""
    path = Path(repo_root) / "params.yaml"
    if not path.is_file():
        return None
    from stages.lib.config import pipeline_params  # lazy: deploy --help stays light

    return pipeline_params(path).orchestration.cron


def build_deployments(
    repo_root: str | Path,
    cron: str | None = None,
    inbox: str | None = None,
    inbox_every_s: int = 600,
) -> list[RunnerDeployment]:
    """The scheduled full run and the new-data run, both bound to `repo_root`."""
    root = str(Path(repo_root).resolve())
    cron = cron or cron_from_params(root) or DEFAULT_CRON
    # Module entrypoints: the served process imports `flows` by name, wherever it runs from.
    common = {"entrypoint_type": EntrypointType.MODULE_PATH, "tags": ["dvc"]}
    scheduled = pipeline.to_deployment(
        name=SCHEDULED,
        cron=cron,
        parameters={"repo_root": root},
        description=f"Reproduce the DVC pipeline in {root} on the schedule '{cron}'.",
        **common,
    )
    new = new_data.to_deployment(
        name=NEW_DATA,
        interval=inbox_every_s if inbox else None,
        parameters={"repo_root": root, **({"batch": inbox} if inbox else {})},
        description=f"Add a batch under DVC in {root}, reproduce, push if a remote is set.",
        **common,
    )
    return [scheduled, new]


def serve_until_stopped(
    deployments: list[RunnerDeployment], grace_s: float = SHUTDOWN_GRACE_S
) -> None:
    """Serve the deployments (one run at a time) until SIGTERM or SIGINT, then stop in grace_s.

    The runner works in a thread of its own with its own event loop, so that the signals reach
    this (main) thread's handler, which asks the runner to stop and waits at most grace_s.
    """
    runner = Runner(limit=1)
    for deployment in deployments:
        runner.add_deployment(deployment)  # registers it with the server: fails fast without one
    loop = asyncio.new_event_loop()
    failed: list[BaseException] = []

    def work() -> None:
        try:
            loop.run_until_complete(runner.start())
        except BaseException as e:  # reported by the main thread
            failed.append(e)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    thread = threading.Thread(target=work, name="prefect-runner", daemon=True)
    thread.start()
    print(f"Serving {', '.join(d.name for d in deployments)}; SIGTERM or Ctrl-C stops.", flush=True)
    while thread.is_alive() and not stop.wait(0.5):
        pass
    if stop.is_set():
        print("Stopping: signal received.", flush=True)
        _request_stop(runner, loop)
        thread.join(grace_s)
    if thread.is_alive():  # shutdown stuck on an unreachable server: leave without it
        print(f"Runner did not stop within {grace_s:g} s (server gone?): exiting.", flush=True)
        sys.stderr.flush()
        os._exit(0)
    if failed and not stop.is_set():
        raise failed[0]


def _request_stop(runner: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Ask the runner, in its own loop, to stop polling and cancel its runs."""
    if loop.is_running():
        asyncio.run_coroutine_threadsafe(runner.astop(), loop)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve both deployments until stopped; 75 when the Prefect server cannot be reached."""
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=".", help="repository root (default: the current directory)")
    ap.add_argument("--cron", help="cron of the full run (default: params.yaml orchestration.cron)")
    ap.add_argument("--inbox", help="path or glob the new-data deployment polls (optional)")
    ap.add_argument("--inbox-every", type=int, default=600, help="inbox polling period, seconds")
    args = ap.parse_args(argv)
    deployments = build_deployments(args.repo, args.cron, args.inbox, args.inbox_every)
    try:
        serve_until_stopped(deployments)
    except httpx.ConnectError as e:
        url = os.environ.get("PREFECT_API_URL") or "the configured PREFECT_API_URL"
        print(
            f"ERROR: cannot reach the Prefect server at {url} ({e}). Start it "
            f"(`prefect server start`) or set PREFECT_API_URL, then serve again.",
            file=sys.stderr,
        )
        return EXIT_TEMPFAIL
    return 0


if __name__ == "__main__":
    sys.exit(main())
