"""The gate stage: exit 3 with evaluate's reasons after the report, exit 0 when it passed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_gate(tmp_path: Path, metrics: dict | None) -> subprocess.CompletedProcess:
    if metrics is not None:
        (tmp_path / "metrics").mkdir()
        (tmp_path / "metrics/evaluate.json").write_text(json.dumps(metrics))
    return subprocess.run(
        [sys.executable, "-m", "stages.gate"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("passed", [True, False])
def test_gate_exits_3_with_the_reasons_when_evaluate_failed(tmp_path, passed):
    failures = [] if passed else ["accuracy 0.700 < min_accuracy 0.830"]
    skipped = ["equal_opportunity_diff[race] not measured: 1 group(s) of race ..."]
    gate = {"passed": passed, "failures": failures, "skipped": skipped, "thresholds": {}}
    done = run_gate(tmp_path, {"gate": gate})
    assert done.returncode == (0 if passed else 3), done.stderr
    assert "skipped equal_opportunity_diff[race] not measured" in done.stdout
    if not passed:
        assert "GATE FAILED: evaluate gate failed: accuracy 0.700 < min_accuracy 0.830" in (
            done.stderr
        )


def test_gate_without_a_verdict_is_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    assert run_gate(tmp_path / "empty", None).returncode == 2  # evaluate has not run
    done = run_gate(tmp_path, {"accuracy": 0.9})
    assert done.returncode == 2 and "no gate verdict" in done.stderr
