"""Deployments of the pipeline flows, defined in code, served by one command.

    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.deploy --cron "0 3 * * 1"

serves two deployments against the Prefect server at PREFECT_API_URL:
- `dvc-pipeline/scheduled`: the full pipeline on a cron schedule (from --cron, else params.yaml
  `orchestration.cron`, else Mondays 03:00 UTC);
- `dvc-new-data/new-data`: the new-data flow, run on demand with a `batch` parameter, or every
  --inbox-every seconds over --inbox GLOB when given (a batch already added is skipped).

The served process runs one flow run at a time (`limit=1`); the repository's run lock refuses
any other caller (a CLI run, another server) while a run is in progress.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import yaml
from prefect import serve
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.new_data import new_data
from flows.pipeline import pipeline

DEFAULT_CRON = "0 3 * * 1"
SCHEDULED = "scheduled"
NEW_DATA = "new-data"


def cron_from_params(repo_root: str | Path) -> str | None:
    """params.yaml `orchestration.cron`, if the repository sets one."""
    path = Path(repo_root) / "params.yaml"
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    cron = (data.get("orchestration") or {}).get("cron")
    return str(cron) if cron else None


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


def main(argv: Sequence[str] | None = None) -> None:
    """Serve both deployments until interrupted."""
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.split("\n")[0])
    ap.add_argument("--repo", default=".", help="repository root (default: the current directory)")
    ap.add_argument("--cron", help="cron of the full run (default: params.yaml orchestration.cron)")
    ap.add_argument("--inbox", help="path or glob the new-data deployment polls (optional)")
    ap.add_argument("--inbox-every", type=int, default=600, help="inbox polling period, seconds")
    args = ap.parse_args(argv)
    deployments = build_deployments(args.repo, args.cron, args.inbox, args.inbox_every)
    serve(*deployments, limit=1)


if __name__ == "__main__":
    main()
