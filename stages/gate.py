"""gate: the pipeline's last stage; exits 3 when evaluate's verdict is FAILED.

evaluate writes its verdict (passed, or the failed checks) to metrics/evaluate.json and exits 0,
so that `dvc repro` still builds the report, which then shows FAILED at its top with the reasons.
This stage runs after the report and stops the pipeline (exit 3) on a failed verdict. The
critical gates of validate and anonymize still stop the pipeline early: they protect data.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from stages.lib.errors import GateFailure, InputError, run_stage
from stages.lib.paths import METRICS_DIR
from stages.lib.summaries import Gate

EVALUATE_METRICS = METRICS_DIR / "evaluate.json"


def verdict(metrics: dict[str, Any]) -> Gate:
    """evaluate's gate verdict (passed, failures, skipped checks), through its summary model."""
    try:
        return Gate.model_validate(metrics.get("gate"))
    except ValidationError as e:
        raise InputError(
            f"{EVALUATE_METRICS}: no gate verdict (key gate: {e.errors()[0]['msg']}); "
            "rerun `dvc repro evaluate`"
        ) from None


def main() -> None:
    """Read evaluate's verdict; raise GateFailure (exit 3) with its reasons when it failed."""
    gate = verdict(json.loads(EVALUATE_METRICS.read_text(encoding="utf-8")))
    for s in gate.skipped:
        print(f"gate: skipped {s}")
    if not gate.passed:
        raise GateFailure(
            "evaluate gate failed: " + "; ".join(gate.failures) + " (see reports/report.html)"
        )
    print("gate: evaluate's checks passed")


if __name__ == "__main__":
    run_stage(main)
