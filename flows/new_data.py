"""The new-data flow: bring a batch file under DVC in data/incoming, rerun, push if a remote is set.

`add_batch` is a plain function (the CLI reuses it). A batch whose content (MD5, DVC's own file
hash) is already in data/incoming is skipped, so giving the same batch twice adds nothing.
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from flows.pipeline import (
    _exception_of,
    _holder,
    is_transient,
    pipeline,
    pipeline_lock,
    working_dir,
)
from stages.lib.errors import InputError
from stages.lib.io import file_hash, writing
from stages.lib.sources import not_data

INCOMING = "data/incoming"
_SKIP_SUFFIXES = (".dvc",)
_SKIP_NAMES = (".gitignore",)


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records for a file in its .dvc file."""
    return file_hash(path, "md5")


def expand_batch(path_or_glob: str | Path) -> list[Path]:
    """The files a path, directory or glob names (sorted); InputError if none."""
    text = str(path_or_glob)
    p = Path(text)
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file()]
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in sorted(glob.glob(text, recursive=True)) if Path(f).is_file()]
    if not files:
        what = "is an empty folder" if p.is_dir() else "does not exist and matches no file"
        raise InputError(f"add-batch: {text} {what}; give a batch file, a folder or a glob")
    return [f.resolve() for f in files]


def batch_files(
    path_or_glob: str | Path, fmt: str | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The data files a path, directory or glob names, and the others with why they are not
    data (hidden, unsupported type: ingest would not read them); InputError if none is data."""
    text = str(path_or_glob)
    base = Path(text).resolve() if Path(text).is_dir() else None
    files, skipped = [], []
    for f in expand_batch(text):
        why = not_data(f.relative_to(base) if base else Path(f.name), fmt)
        if why is None and f.suffix in (*_SKIP_SUFFIXES, ".tmp"):
            why = "DVC's or a temporary file, not data"
        if why is None:
            files.append(f)
        else:
            skipped.append((f, why))
    if not files:
        shown = "; ".join(f"{f.name}: {why}" for f, why in skipped[:10])
        raise InputError(f"add-batch: nothing to add from {text}: no data file ({shown})")
    return files, skipped


def ingest_format(root: Path) -> str | None:
    """params.yaml's ingest.format (files of any name read as that format), else None."""
    params = root / "params.yaml"
    if not params.is_file():
        return None
    data = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
    return (data.get("ingest") or {}).get("format")


def _is_batch_file(p: Path) -> bool:
    return p.is_file() and p.suffix not in _SKIP_SUFFIXES and p.name not in _SKIP_NAMES


def known_hashes(incoming: Path) -> set[str]:
    """Content hashes of the batches already in `incoming` (from their .dvc files when present)."""
    hashes: set[str] = set()
    if not incoming.is_dir():
        return hashes
    for p in incoming.iterdir():
        if not _is_batch_file(p):
            continue
        dvcfile = p.with_name(p.name + ".dvc")
        md5 = None
        if dvcfile.is_file():
            outs = (yaml.safe_load(dvcfile.read_text(encoding="utf-8")) or {}).get("outs") or []
            md5 = outs[0].get("md5") if outs else None
        hashes.add(md5 or file_md5(p))
    return hashes


def add_batch(
    repo_root: str | Path, path_or_glob: str | Path, incoming: str = INCOMING
) -> list[Path]:
    """Copy new batch files into `incoming` and `dvc add` them; return the paths added.

    Files that are not data (hidden, an unsupported type) are skipped with a warning naming
    each; InputError when none is data or the path names nothing; WriteError when `incoming`
    cannot be written. A file whose content is already there is skipped. A different file
    with a taken name gets its hash prefix appended. If `incoming` is tracked as a whole
    directory (`<incoming>.dvc`), the directory is re-added instead of each file.
    """
    from dvc.repo import Repo

    root = Path(repo_root).resolve()
    files, skipped = batch_files(path_or_glob, ingest_format(root))
    for f, why in skipped:
        print(f"WARNING: add-batch: {f} skipped: {why}", file=sys.stderr)
    target_dir = root / incoming
    seen = known_hashes(target_dir)
    added: list[Path] = []
    with writing(target_dir):  # a read-only folder or a full disk: a message, not a traceback
        target_dir.mkdir(parents=True, exist_ok=True)
        for src in files:
            md5 = file_md5(src)
            if md5 in seen:
                continue
            dest = target_dir / src.name
            if dest.exists():
                stem, dot, rest = src.name.partition(".")
                dest = target_dir / f"{stem}-{md5[:8]}{dot}{rest}"
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # atomic: a reader never sees half a batch
            seen.add(md5)
            added.append(dest)
    if added:
        whole_dir = target_dir.with_name(target_dir.name + ".dvc").is_file()
        targets = [str(target_dir)] if whole_dir else [str(p) for p in added]
        with working_dir(root), Repo(str(root)) as repo:
            repo.add(targets)
    return [p.relative_to(root) for p in added]


def default_remote(repo_root: str | Path) -> str | None:
    """The repository's default DVC remote, or None."""
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        return repo.config["core"].get("remote")


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
    retry_condition_fn=lambda task, run, state: is_transient(_exception_of(state)),
)
def push_task(repo_root: str, remote: str | None = None) -> int:
    """`dvc push` to the remote; remote-storage errors are retried with backoff."""
    from dvc.repo import Repo

    with working_dir(repo_root), Repo(repo_root) as repo:
        count = repo.push(remote=remote)
    get_run_logger().info("Pushed %s file(s) to the DVC remote", count)
    return int(count or 0)


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
    with pipeline_lock(root, _holder()):
        added = add_batch_task(root, batch_path, incoming)
        stages = pipeline(repo_root=root, retries=retries, retry_delay_s=retry_delay_s)
        remote = default_remote(root)
        pushed = None
        if push or (push is None and remote):
            pushed = push_task(root)
        elif push is None:
            get_run_logger().info("No default DVC remote configured: nothing pushed")
    return {"added": added, "stages": stages, "pushed": pushed}
