"""End to end: `dvc repro` in a fresh copy of the repository; a second run does nothing."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import project_copy, venv_env


@pytest.mark.slow
def test_dvc_repro_then_noop(tmp_path):
    repo = project_copy(tmp_path / "repo")
    env = venv_env()
    first = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    clean = json.loads((repo / "metrics/clean.json").read_text())
    ingest = json.loads((repo / "metrics/ingest.json").read_text())
    assert clean["rows_in"] == ingest["rows_out"] > 0
    assert clean["rows_in"] == clean["rows_out"] + clean["rows_quarantined"] + clean["duplicates"]
    assert (repo / "reports/validation/docs/index.html").exists()

    started = time.perf_counter()
    second = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert second.returncode == 0, second.stderr[-3000:]
    assert "didn't change, skipping" in second.stdout or "up to date" in second.stdout
    assert "Running stage" not in second.stdout
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert json.loads(status.stdout) == {}
    print(f"second dvc repro took {elapsed:.2f} s")
