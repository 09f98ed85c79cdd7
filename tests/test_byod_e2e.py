"""Bring your own data, end to end: in a fresh project copy, `pipeline init FIXTURE` and then
`dvc repro` (what `make run` runs) go from the raw file to a finished report (issue 13).

Needs keyless record ids, header-less TSV (ingest), every type through every stage, and the gate
stage after the report (evaluate/report); each case prints its timings, metrics and verdict."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import project_copy, run_module

ROOT = Path(__file__).resolve().parents[1]
BYOD = ROOT / "tests/fixtures/byod"
CASES = {
    "sms": ["sms.tsv", "--columns", "label,text"],
    "customers": ["customers.csv"],
    "reviews_zh": ["reviews_zh.csv.gz"],
    "titanic": ["titanic.csv", "--label", "survived"],
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_init_then_repro_builds_the_report(tmp_path: Path, case: str) -> None:
    root = project_copy(tmp_path / "p")
    name, *args = CASES[case]
    (root / "data/mine").mkdir(parents=True)
    shutil.copy(BYOD / name, root / "data/mine" / name)
    start = time.monotonic()
    done = run_module(root, "stages.cli", "init", f"data/mine/{name}", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    init_s = time.monotonic() - start
    done = run_module(root, "dvc", "repro")
    repro_s = time.monotonic() - start - init_s
    print(f"\n{case}: init {init_s:.1f} s, dvc repro {repro_s:.1f} s, exit {done.returncode}")
    out = done.stdout + done.stderr
    # Every stage runs; only the final quality gate may stop (exit 3), after the report is built
    # and marked FAILED: a model's verdict on the data, not a failure of init or a stage.
    assert done.returncode == 0 or "failed to reproduce 'gate'" in out, out[-6000:]
    assert (root / "reports/report.html").is_file()
    metrics = json.loads((root / "metrics/evaluate.json").read_text())
    assert "accuracy" in json.dumps(metrics)
    found = {k: metrics[k] for k in ("accuracy", "roc_auc", "macro_f1") if k in metrics}
    print(f"{case}: {found}; gate {metrics.get('gate', metrics.get('verdict'))}")
