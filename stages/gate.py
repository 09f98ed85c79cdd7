"""gate: the pipeline's last stage; exits 3 when evaluate's verdict is FAILED.

evaluate writes its verdict (passed, or the failed checks) to metrics/evaluate.json and exits 0,
so that `dvc repro` still builds the report, which then shows FAILED at its top with the reasons.
This stage runs after the report and stops the pipeline (exit 3) on a failed verdict. The
critical gates of validate and anonymize still stop the pipeline early: they protect data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.lib.errors import GateFailure, InputError, run_stage

EVALUATE_METRICS = Path("metrics/evaluate.json")


def verdict(metrics: dict[str, Any]) -> tuple[bool, list[str], list[str]]:
    """(passed, failures, skipped checks) of evaluate's gate, as evaluate wrote it."""
    gate = metrics.get("gate")
    if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
        raise InputError(
            f"{EVALUATE_METRICS}: no gate verdict (key gate.passed); rerun `dvc repro evaluate`"
        )
    return gate["passed"], list(gate.get("failures", [])), list(gate.get("skipped", []))


def main() -> None:
    """Read evaluate's verdict; raise GateFailure (exit 3) with its reasons when it failed."""
    passed, failures, skipped = verdict(json.loads(EVALUATE_METRICS.read_text(encoding="utf-8")))
    for s in skipped:
        print(f"gate: skipped {s}")
    if not passed:
        raise GateFailure(
            "evaluate gate failed: " + "; ".join(failures) + " (see reports/report.html)"
        )
    print("gate: evaluate's checks passed")


if __name__ == "__main__":
    run_stage(main)
