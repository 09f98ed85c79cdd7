"""The one way to ask DVC: its command line, with --json where the answer is data.

DVC's public interface is its CLI and its documented JSON; nothing here imports a DVC name,
so a DVC upgrade that keeps its commands keeps this working.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from stages.lib.env import interpreter_env


def dvc(root: str | Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a dvc command in root and capture its output (no exception on failure)."""
    cmd = [sys.executable, "-m", "dvc", *args]
    return subprocess.run(
        cmd, cwd=root, env=interpreter_env(), capture_output=True, text=True, check=False
    )


def dvc_json(root: str | Path, *args: str) -> tuple[Any, str | None]:
    """(the parsed JSON of `dvc <args> --json`, None), or (None, why DVC gave no answer)."""
    done = dvc(root, *args, "--json")
    if done.returncode != 0:
        lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        return None, (lines[-1] if lines else f"dvc exited {done.returncode}")
    try:
        return json.loads(done.stdout or "{}"), None
    except ValueError as e:
        return None, f"dvc {args[0]} printed no JSON ({e})"


def stage_name(address: str) -> str:
    """A stage's name from a `dvc status` key ("train", or "dvc.yaml:train" away from root)."""
    return address.rsplit(":", 1)[-1]


def cache_dir(root: str | Path) -> Path:
    """DVC's cache directory for the project at root (`dvc cache dir`; .dvc/cache by default)."""
    done = dvc(root, "cache", "dir")
    found = done.stdout.strip() if done.returncode == 0 else ""
    return Path(root, found or ".dvc/cache")
