"""Shared fixtures: a test key, tiny source tables, and throwaway copies of the project."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "test-key-0123456789abcdef"
OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
os.environ.update(OFFLINE_ENV)
# One torch thread per test process (and the stage subprocesses they start): on the 2-core CI
# machines torch's default of one thread per core made the training tests 4x slower (measured:
# tests/test_train.py 52 s with two threads, 14 s with one), as processes fight for the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Untracked files that a project copy takes (source, not data: a user's batch stays out).
SOURCE_SUFFIXES = (".py", ".j2", ".md", ".toml", ".yaml", ".yml", ".cfg", ".ini", ".sh")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Fast tests run partition tasks in this process (PIPELINE_WORKERS=1), and so do the
    stage subprocesses they start: a forkserver pool re-imports the stage's libraries in every
    worker, which cost 5-10 s per stage call on 2 cores and is not what these tests test. The
    pool itself is tested where a test sets PIPELINE_WORKERS (test_partitions, test_data_path)
    and in the slow lane, which runs as the user does; a value set outside pytest is kept."""
    if item.get_closest_marker("slow") or "PIPELINE_WORKERS" in os.environ:
        return (yield)
    os.environ["PIPELINE_WORKERS"] = "1"
    try:
        return (yield)
    finally:
        os.environ.pop("PIPELINE_WORKERS", None)


@pytest.fixture(autouse=True)
def partition_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's stored partition results in its own directory, never the repository's."""
    path = tmp_path / "partition-cache"
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(path))
    return path


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A pseudonymisation key in the environment, as production provides it."""
    monkeypatch.setenv("PIPELINE_HMAC_KEY", TEST_KEY)
    return TEST_KEY


def params() -> dict:
    """The project's params.yaml as a dict."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def source_frame(n: int = 40) -> pd.DataFrame:
    """A small, valid source table in the schema's columns (all strings, as exported)."""
    cols = params()["schema"]["columns"]
    rows: dict[str, list[str]] = {}
    for name, col in cols.items():
        if col.get("values"):
            values = col["values"]
            rows[name] = [values[r % len(values)] for r in range(n)]
        elif col["type"] in ("int", "float"):
            lo, hi = col.get("min", 0), col.get("max", 1000)
            rows[name] = [str(int(lo + (r * 7) % (hi - lo + 1))) for r in range(n)]
        elif col["type"] == "date":
            rows[name] = [f"19{50 + r % 40}-0{1 + r % 9}-1{r % 10}" for r in range(n)]
        elif col["type"] == "category":
            rows[name] = [f"kind-{'abc'[r % 3]}" for r in range(n)]
        else:
            rows[name] = [f"{name} {r}" for r in range(n)]
    key = next(n for n, c in cols.items() if c["role"] == "key")
    rows[key] = [f"C{r:06d}" for r in range(n)]
    for name, col in cols.items():
        if col.get("pii") == "email" or col.get("format") == "email":
            rows[name] = [f"person{r}@example.com" for r in range(n)]
        elif col.get("pii") == "phone":
            rows[name] = [f"415-555-{r:04d}" for r in range(n)]
    return pd.DataFrame(rows)


def write_project(
    tmp: Path, frame: pd.DataFrame | None = None, name: str = "batch.csv", **overrides
) -> Path:
    """A minimal project directory (params.yaml + one batch file) to run stages in."""
    p = params()
    p["ingest"]["sources"] = [f"data/in/{name}"]
    for dotted, value in overrides.items():
        node = p
        *path, last = dotted.split("__")
        for part in path:
            node = node[part]
        node[last] = value
    (tmp / "data/in").mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    if frame is not None:
        frame.to_csv(tmp / "data/in" / name, index=False)
    return tmp / "data/in" / name


def produced_paths(root: Path = ROOT) -> set[str]:
    """What running the pipeline writes: dvc.lock, the run log, every stage's outs, metrics
    and plots in dvc.yaml."""
    produced = {"dvc.lock", "lineage/runs.jsonl"}
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    for stage in stages.values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind) or []:
                produced.add(entry if isinstance(entry, str) else next(iter(entry)))
    return produced


def copied_files(root: Path = ROOT) -> list[str]:
    """The project's files a copy holds: git's tracked files and its untracked-not-ignored
    source files (new modules and tests not committed yet), less anything a run produced or
    DVC tracks (a user's dvc.lock, outputs, .dvc files of batches), even when committed: tests
    must not depend on what the user's runs left behind, nor copy a user's data files."""

    def ls(*args: str) -> list[str]:
        done = subprocess.run(
            ["git", "ls-files", *args], cwd=root, capture_output=True, text=True, check=True
        )
        return done.stdout.splitlines()

    untracked = [f for f in ls("--others", "--exclude-standard") if f.endswith(SOURCE_SUFFIXES)]
    produced = produced_paths(root)
    return [
        f
        for f in ls("--cached") + untracked
        if not f.endswith(".dvc")
        and not any(f == p or f.startswith(p.rstrip("/") + "/") for p in produced)
        and (root / f).is_file()
    ]


def project_copy(dest: Path) -> Path:
    """A fresh git repository holding the project's source files (copied_files), no run's."""
    for f in copied_files():
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def venv_env(**extra: str) -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin first, offline, with the test key."""
    # A dict merge, not keywords: `extra` may override an OFFLINE_ENV setting.
    env = {**os.environ, **OFFLINE_ENV, "PIPELINE_HMAC_KEY": TEST_KEY, **extra}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def run_module(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """`python -m ARGS` in `cwd`, output captured, in venv_env() unless `env` is given."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=venv_env() if env is None else env,
        capture_output=True,
        text=True,
    )


def anon_config(policies: Any, k: int | None = None, min_digit_run: int | None = 7) -> Any:
    """An AnonymizeConfig as params.yaml's anonymize section gives it, `policies` as written
    there (`drop`, {action: generalize, ...}), validated by the same code."""
    from stages.lib.config import AnonymizeConfig
    from stages.lib.params import coerce

    section = {"policies": dict(policies), "k": k, "min_digit_run": min_digit_run}
    return coerce(AnonymizeConfig, section, "anonymize")
