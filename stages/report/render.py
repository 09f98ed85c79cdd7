"""Build the report's context from its inputs, render it through the Jinja2 templates, and the
I/O: reading metrics, plots, dvc.lock, `dvc metrics diff` and the run's identity (stages/lib/
runinfo.py), writing the two pages."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from stages.lib import runinfo
from stages.lib.dvccli import dvc_json
from stages.lib.dvclock import lock_outputs, read_lock, read_yaml
from stages.lib.io import write_text_atomic
from stages.lib.summaries import (
    AnonymizeSummary,
    AugmentSummary,
    EvaluateSummary,
    M,
    ScanReport,
    SplitSummary,
    TrainSummary,
    ValidationReport,
    load_model,
    load_summary,
)
from stages.report.common import (
    DATA_DOCS,
    METRICS_DIR,
    OUT_HTML,
    OUT_MD,
    PIPELINE,
    PLOTS,
    PLOTS_DIR,
    PRIVACY_SCAN,
    RUN_DEFAULTS,
    SECTIONS,
    TEMPLATES,
    VALIDATION_RESULTS,
    Inputs,
    _missing,
    fmt,
    pct,
    signed,
)
from stages.report.evaluation import evaluation_section
from stages.report.sections import (
    accounting_section,
    augmentation_section,
    changes_section,
    identity_section,
    lineage_section,
    privacy_section,
    training_section,
    validation_section,
)

# The sections that show one stage's summary, and that stage.
SECTION_STAGE = {
    "privacy": "anonymize",
    "augmentation": "augment",
    "training": "train",
    "evaluation": "evaluate",
}


def _guard(name: str, build: Callable[[], dict[str, Any]], errors: list[str]) -> dict[str, Any]:
    """Build one section; an unexpected input shape costs that section, never the report."""
    try:
        return build()
    except Exception as e:  # one malformed input must not hide the other eight sections
        errors.append(f"{name}: {type(e).__name__}: {e}")
        return {
            "available": False,
            "note": f"Section could not be rendered: {type(e).__name__}: {e}",
        }


def build_context(inputs: Inputs) -> dict[str, Any]:
    """Every section of the report, ready for the templates."""
    # A summary, validation result or scan report that does not match its model.
    errors = list(inputs.metrics_errors.values())
    errors += [e for e in (inputs.validation_error, inputs.privacy_scan_error) if e]
    m = inputs.metrics
    anon, train = inputs.summary(AnonymizeSummary), inputs.summary(TrainSummary)
    sections = {
        "identity": _guard("identity", lambda: identity_section(inputs), errors),
        "accounting": _guard("accounting", lambda: accounting_section(m), errors),
        "validation": _guard(
            "validation",
            lambda: validation_section(
                inputs.validation, inputs.data_docs, inputs.validation_error
            ),
            errors,
        ),
        "privacy": _guard(
            "privacy",
            lambda: privacy_section(anon, inputs.privacy_scan, inputs.params),
            errors,
        ),
        "augmentation": _guard(
            "augmentation",
            lambda: augmentation_section(
                inputs.summary(AugmentSummary), inputs.summary(SplitSummary)
            ),
            errors,
        ),
        "training": _guard(
            "training",
            lambda: training_section(train, inputs.plots.get("train_curve")),
            errors,
        ),
        "evaluation": _guard(
            "evaluation",
            lambda: evaluation_section(inputs.summary(EvaluateSummary), inputs.plots, train),
            errors,
        ),
        "changes": _guard(
            "changes",
            lambda: changes_section(
                inputs.metrics_diff,
                inputs.run.get("baseline_ref", "HEAD"),
                inputs.metrics_diff_note,
            ),
            errors,
        ),
        "lineage": _guard("lineage", lambda: lineage_section(inputs.lock), errors),
    }
    for name, stage in SECTION_STAGE.items():  # an invalid summary: why, where it would be
        if stage in inputs.metrics_errors and not sections[name].get("available"):
            why = inputs.metrics_errors[stage]
            sections[name] = {**sections[name], **_missing(stage, error=why)}
    return {
        "title": "Pipeline run report",
        "toc": SECTIONS,
        "run": {**RUN_DEFAULTS, **inputs.run},
        "stages_run": [s for s in PIPELINE if s in m],
        "errors": errors,
        **sections,
    }


def _environment(autoescape: bool) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(fmt=fmt, pct=pct, signed=signed)
    return env


def render_html(context: dict[str, Any]) -> str:
    """The report page."""
    return _environment(autoescape=True).get_template("report.html.j2").render(**context)


def render_summary(context: dict[str, Any]) -> str:
    """The Markdown summary (a Prefect artifact or a pull-request comment)."""
    return _environment(autoescape=False).get_template("summary.md.j2").render(**context)


# ---------------------------------------------------------------------------------------------
# I/O


def read_report(path: Path, model: type[M]) -> tuple[M | None, str | None]:
    """A report file through its model: (None, None) when missing, (None, why) when it does not
    match (and a warning on stderr)."""
    if not path.exists():
        return None, None
    found, why = load_model(path, model)
    if why:
        print(f"report: WARNING {why}; treated as missing", file=sys.stderr)
    return found, why


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV plot table, or None when missing or empty."""
    try:
        frame = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame.columns) else None


def metrics_diff(ref: str = "HEAD") -> tuple[dict[str, Any] | None, str | None]:
    """`dvc metrics diff <ref> --all --json`: every metric DVC tracks, old (at ref) and new
    (workspace); (None, why) when DVC cannot answer (no git, no DVC project, no commit)."""
    diff, why = dvc_json(".", "metrics", "diff", ref, "--all")
    if diff is None:
        return None, why
    return (diff if isinstance(diff, dict) else {}), None


def run_identity(now: datetime | None = None) -> dict[str, Any]:
    """When, git commit, dirty flag (and which paths), host, Prefect run id, versions."""
    ident = runinfo.run_identity(".", lock_outputs(read_lock(".")), now)
    state = ident["git"]
    return {
        "generated_at": ident["time"],
        "commit": state["commit"],
        "dirty": bool(state["changed_files"]),
        "code_dirty": state["dirty"],
        "tree": ident["tree"],
        "dirty_paths": state["dirty_files"][:30],
        "baseline_ref": "HEAD",
        "host": ident["host"],
        "prefect_flow_run": ident["prefect_flow_run_id"],
        "packages": {k: v or "not installed" for k, v in ident["packages"].items()},
    }


def load_inputs() -> Inputs:
    """Read every input of the report that exists, relative to the current directory."""
    params = read_yaml(Path("params.yaml"))
    metrics, metrics_errors = {}, {}
    for path in sorted(METRICS_DIR.glob("*.json")) if METRICS_DIR.is_dir() else []:
        if path.stem == "report":
            continue
        summary, why = load_summary(path)
        if summary is None:
            print(f"report: WARNING {why}; treated as missing", file=sys.stderr)
            metrics_errors[path.stem] = why or "unreadable"
        else:
            metrics[path.stem] = summary
    lock = read_lock(".") or None
    validation, validation_error = read_report(VALIDATION_RESULTS, ValidationReport)
    scan, scan_error = read_report(PRIVACY_SCAN, ScanReport)
    diff, why = metrics_diff("HEAD")
    plots = {}
    for name in PLOTS:
        frame = read_csv(PLOTS_DIR / f"{name}.csv")
        if frame is not None:
            plots[name] = frame
    return Inputs(
        params=params,
        metrics=metrics,
        metrics_errors=metrics_errors,
        metrics_diff=diff,
        metrics_diff_note=why,
        validation=validation,
        validation_error=validation_error,
        privacy_scan=scan,
        privacy_scan_error=scan_error,
        plots=plots,
        lock=lock if isinstance(lock, dict) else None,
        run=run_identity(),
        # Relative to the report, so the link works wherever the reports folder is opened.
        data_docs=os.path.relpath(DATA_DOCS, OUT_HTML.parent) if DATA_DOCS.exists() else None,
    )


def main() -> None:
    """Write reports/report.html and reports/summary.md from whatever the pipeline produced."""
    inputs = load_inputs()
    context = build_context(inputs)
    write_text_atomic(OUT_HTML, render_html(context))
    write_text_atomic(OUT_MD, render_summary(context))
    for error in context["errors"]:
        print(f"report: WARNING section {error}", file=sys.stderr)
    ran = ", ".join(context["stages_run"]) or "none"
    print(f"report: wrote {OUT_HTML} and {OUT_MD} (stages with metrics: {ran})")
