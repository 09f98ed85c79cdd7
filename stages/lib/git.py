"""The one git helper: run git, and the working tree's state with one meaning of "dirty"."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from pathlib import Path

from stages.lib.dvclock import under

# Paths a pipeline run itself writes (DVC outputs, metrics, the report, the run records).
RUN_OUTPUTS = ("metrics/", "plots/", "reports/", "data/", "models/", "lineage/runs.jsonl")
DVC_FILES = ("dvc.lock",)


def git(root: Path | str, *args: str) -> str | None:
    """Stdout of `git <args>` in root, or None when git is missing or fails."""
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def is_run_output(path: str, outputs: Iterable[str] = ()) -> bool:
    """Whether a changed path is the pipeline's own writing, not code: dvc.lock, an output
    dvc.lock lists, the run-output folders, or DVC's .gitignore and .dvc pointer files."""
    if path.endswith((".gitignore", ".dvc")) or path in DVC_FILES:
        return True
    return any(under(path, p) for p in (*RUN_OUTPUTS, *outputs))


def git_state(root: Path | str = ".", outputs: Iterable[str] = ()) -> dict:
    """Commit, branch, every changed path, and `dirty`: whether code changed, i.e. a path
    outside the run's own outputs (see is_run_output) differs from the commit."""
    commit = (git(root, "rev-parse", "HEAD") or "").strip() or None
    branch = (git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    status = git(root, "status", "--porcelain", "--untracked-files=all") or ""
    changed = [line[3:].split(" -> ")[-1].strip('"') for line in status.splitlines() if line]
    outputs = list(outputs)
    code = [p for p in changed if not is_run_output(p, outputs)]
    return {
        "commit": commit,
        "branch": branch,
        "dirty": bool(code),
        "dirty_files": code[:50],
        "changed_files": len(changed),
    }


def tree_text(state: dict) -> str:
    """The working tree in words, for a report or a log line."""
    if state.get("commit") is None:
        return "unknown (not a git repository)"
    if state["dirty"]:
        return f"DIRTY: {len(state['dirty_files'])} uncommitted change(s) outside run outputs"
    if state.get("changed_files"):
        return f"dirty: only run outputs changed ({state['changed_files']} path(s))"
    return "clean"
