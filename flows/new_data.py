"""The new-data flow: bring a batch file under DVC in data/incoming, rerun, push if a remote is set.

Adding the batch is `stages.add_batch.add_batch` (the `pipeline add-batch` command uses it too);
DVC is used through its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from flows.pipeline import holder, pipeline, pipeline_lock
from stages.add_batch import INCOMING, add_batch
from stages.lib.dvccli import dvc


def default_remote(repo_root: str | Path) -> str | None:
    """The repository's default DVC remote (`dvc config core.remote`), or None."""
    done = dvc(repo_root, "config", "core.remote")
    return done.stdout.strip() or None if done.returncode == 0 else None


@task(name="add-batch", task_run_name="add-batch")
def add_batch_task(repo_root: str, batch: str, incoming: str) -> list[str]:
    """Bring the batch under DVC; log what was new."""
    added = add_batch(repo_root, batch, incoming)
    log = get_run_logger()
    if added:
        log.info("Added %d batch file(s): %s", len(added), ", ".join(map(str, added)))
    else:
        log.info("Nothing new: every file of %s is already in %s", batch, incoming)
    return [str(p) for p in added]


@task(
    name="dvc-push",
    retries=4,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.2,
)
def push_task(repo_root: str, remote: str | None = None) -> int:
    """`dvc push` to the remote; a failure (remote storage, network) is retried with backoff."""
    done = dvc(repo_root, "push", *(["-r", remote] if remote else []))
    if done.returncode:
        raise OSError(f"dvc push failed: {done.stderr.strip() or done.stdout.strip()}")
    # "N files pushed" / "Everything is up to date."
    words = done.stdout.strip().split()
    count = int(words[0]) if words and words[0].isdigit() else 0
    get_run_logger().info("Pushed %s file(s) to the DVC remote", count)
    return count


@flow(name="dvc-new-data", log_prints=True)
def new_data(
    batch: str,
    repo_root: str = ".",
    incoming: str = INCOMING,
    push: bool | None = None,
    retries: int = 3,
    retry_delay_s: float = 2.0,
) -> dict[str, Any]:
    """Add a new batch (path or glob) under DVC, reproduce the pipeline, push if a remote is set."""
    root = str(Path(repo_root).resolve())
    # A relative batch path is relative to the caller, not to the repository.
    batch_path = str(Path.cwd() / Path(batch).expanduser())
    with pipeline_lock(root, holder()):
        added = add_batch_task(root, batch_path, incoming)
        stages = pipeline(repo_root=root, retries=retries, retry_delay_s=retry_delay_s)
        remote = default_remote(root)
        pushed = None
        if push or (push is None and remote):
            pushed = push_task(root)
        elif push is None:
            get_run_logger().info("No default DVC remote configured: nothing pushed")
    return {"added": added, "stages": stages, "pushed": pushed}
