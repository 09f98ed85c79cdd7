"""End to end: `dvc repro` in a fresh copy of the repository; a second run does nothing."""

from __future__ import annotations

import json
import subprocess
import time

import pandas as pd
import pytest

from stages.lib import summaries as sm
from tests.conftest import project_copy, venv_env
from tests.test_report_browser import CHROMIUM, check, inspect_page


@pytest.mark.slow
def test_dvc_repro_then_noop(tmp_path):
    repo = project_copy(tmp_path / "repo")
    env = venv_env()
    first = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    m = {p.stem: json.loads(p.read_text()) for p in (repo / "metrics").glob("*.json")}
    # Every summary is its stage's model (stages/lib/summaries.py) and re-dumps to the same JSON.
    assert set(m) == set(sm.SUMMARIES)
    for p in sorted((repo / "metrics").glob("*.json")):
        model = sm.read_summary(p)
        assert type(model) is sm.SUMMARIES[p.stem]
        assert json.dumps(sm.dump(model), sort_keys=True) == json.dumps(m[p.stem], sort_keys=True)
    assert m["clean"]["rows_in"] == m["ingest"]["rows_out"] > 0
    for stage in ("clean", "anonymize", "split", "augment"):
        s = m[stage]
        accounted = s["rows_out"] + s["rows_quarantined"] + s["duplicates"] - s["rows_added"]
        assert s["rows_in"] == accounted, stage
    assert m["anonymize"]["rows_in"] == m["clean"]["rows_out"]
    assert m["anonymize"]["scan"]["passed"] and m["anonymize"]["scan"]["findings"] == 0
    assert m["anonymize"]["risk_after_suppression"]["k"] >= 5
    quarantine = pd.read_parquet(repo / "data/quarantine")
    assert len(quarantine) == m["clean"]["rows_quarantined"] + m["clean"]["duplicates"]
    assert quarantine["_reason"].notna().all()
    assert (repo / "reports/validation/docs/index.html").exists()
    assert (repo / "models/model.pt").exists() and m["evaluate"]["gate"]["passed"]
    assert (repo / "reports/report.html").exists() and (repo / "reports/summary.md").exists()

    started = time.perf_counter()
    second = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Running stage" not in second.stdout, second.stdout
    status = subprocess.run(
        ["dvc", "status", "--json"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert json.loads(status.stdout) == {}
    print(f"second dvc repro took {elapsed:.2f} s")

    # The pipeline's own report, in a real browser.
    if CHROMIUM.exists():
        result = inspect_page(repo / "reports/report.html", tmp_path / "screenshot.png")
        check(result, min_images=9)
