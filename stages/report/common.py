"""The report's shared vocabulary: stage and plot names, paths, the loaded inputs, and the
small formatting helpers the sections and templates use."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from stages.lib.digest import canonical_digest
from stages.lib.paths import METRICS_DIR as METRICS_DIR  # re-exported: render.py reads both
from stages.lib.paths import PLOTS_DIR as PLOTS_DIR
from stages.lib.summaries import STAGE_OF, ScanReport, Summary, ValidationReport

S = TypeVar("S", bound=Summary)

PIPELINE = ("ingest", "clean", "validate", "anonymize", "split", "augment", "train", "evaluate")
PLOTS = ("train_curve", "confusion", "roc", "pr", "calibration", "slices")
REPORTS_DIR = Path("reports")
VALIDATION_RESULTS = REPORTS_DIR / "validation/results.json"
DATA_DOCS = REPORTS_DIR / "validation/docs/index.html"
PRIVACY_SCAN = REPORTS_DIR / "privacy/scan.json"
OUT_HTML = REPORTS_DIR / "report.html"
OUT_MD = REPORTS_DIR / "summary.md"
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
# Metrics that measure the machine rather than the data or model: shown apart in the deltas.
VOLATILE = ("duration_s", "peak_memory_mb", "train_time_s", "samples_per_s", "wall_s")
RUN_DEFAULTS: dict[str, Any] = {
    "generated_at": "—",
    "commit": None,
    "dirty": False,
    "code_dirty": False,
    "tree": "unknown",
    "dirty_paths": [],
    "baseline_ref": "HEAD",
    "host": "—",
    "prefect_flow_run": None,
    "packages": {},
}
SECTIONS = (
    ("identity", "Run identity"),
    ("accounting", "Data accounting"),
    ("validation", "Validation"),
    ("privacy", "Privacy"),
    ("augmentation", "Augmentation"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("changes", "Change since the previous run"),
    ("lineage", "Lineage"),
)


@dataclass
class Inputs:
    """Everything the report reads, already loaded; a missing input is None or absent."""

    params: dict[str, Any] = field(default_factory=dict)
    # metrics/<stage>.json read through the stage's model (stages/lib/summaries.py).
    metrics: dict[str, Summary] = field(default_factory=dict)
    # A metrics file that exists but does not match its model: stage -> the validation message.
    metrics_errors: dict[str, str] = field(default_factory=dict)
    # `dvc metrics diff --all --json` against the previous run (None: DVC could not say; why).
    metrics_diff: dict[str, dict[str, Any]] | None = None
    metrics_diff_note: str | None = None
    # reports/validation/results.json and reports/privacy/scan.json through their models, and
    # the validation message when the file exists but does not match (None: missing or read).
    validation: ValidationReport | None = None
    validation_error: str | None = None
    privacy_scan: ScanReport | None = None
    privacy_scan_error: str | None = None
    plots: dict[str, pd.DataFrame] = field(default_factory=dict)
    lock: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)
    data_docs: str | None = None

    def summary(self, model: type[S]) -> S | None:
        """The summary of the stage `model` describes, None when it has not been read."""
        found = self.metrics.get(STAGE_OF[model])
        return found if isinstance(found, model) else None


def _num(value: Any) -> float | None:
    """A finite number from a JSON value, else None (bools are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _dict(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty dict."""
    return dict(value) if isinstance(value, Mapping) else {}


def digest(obj: Any, length: int = 12) -> str:
    """A short SHA-256 of a JSON-able value in canonical form."""
    return canonical_digest(obj, length)


def fmt(value: Any, digits: int = 4) -> str:
    """A value for a table: integers with separators, floats to `digits` places, '—' if none."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value
    x = _num(value)
    if x is None:
        return "—"
    if isinstance(value, numbers.Integral):
        return f"{int(x):,}"
    return f"{x:,.{digits}f}"


def pct(value: Any, digits: int = 1) -> str:
    """A share (0..1) as a percentage."""
    x = _num(value)
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def signed(value: Any, digits: int = 4) -> str:
    """A delta with its sign."""
    x = _num(value)
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return f"{x:+,.{digits}f}" if not float(x).is_integer() else f"{int(x):+,}"


def _missing(stage: str, what: str = "", error: str | None = None) -> dict[str, Any]:
    """A section that cannot be shown: its stage has not run, or its summary is invalid."""
    if error:
        return {"available": False, "note": f"Stage '{stage}' has an unreadable summary: {error}."}
    return {"available": False, "note": f"Stage '{stage}' not run yet{what}."}
