"""Build the report's context from its inputs, render it through the Jinja2 templates, and the
I/O: reading metrics, plots, dvc.lock and the run's identity, writing the two pages."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from stages.lib.io import write_text_atomic
from stages.report.common import (
    DATA_DOCS,
    METRICS_DIR,
    OUT_HTML,
    OUT_MD,
    PACKAGES,
    PIPELINE,
    PLOTS,
    PLOTS_DIR,
    PRIVACY_SCAN,
    RUN_DEFAULTS,
    RUN_OUTPUTS,
    SECTIONS,
    TEMPLATES,
    VALIDATION_RESULTS,
    Inputs,
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
    errors: list[str] = []
    m = inputs.metrics
    sections = {
        "identity": _guard("identity", lambda: identity_section(inputs), errors),
        "accounting": _guard("accounting", lambda: accounting_section(m), errors),
        "validation": _guard(
            "validation", lambda: validation_section(inputs.validation, inputs.data_docs), errors
        ),
        "privacy": _guard(
            "privacy",
            lambda: privacy_section(m.get("anonymize"), inputs.privacy_scan, inputs.params),
            errors,
        ),
        "augmentation": _guard(
            "augmentation", lambda: augmentation_section(m.get("augment"), m.get("split")), errors
        ),
        "training": _guard(
            "training",
            lambda: training_section(m.get("train"), inputs.plots.get("train_curve")),
            errors,
        ),
        "evaluation": _guard(
            "evaluation",
            lambda: evaluation_section(m.get("evaluate"), inputs.plots, m.get("train")),
            errors,
        ),
        "changes": _guard(
            "changes",
            lambda: changes_section(m, inputs.previous, inputs.run.get("baseline_ref", "HEAD")),
            errors,
        ),
        "lineage": _guard("lineage", lambda: lineage_section(inputs.lock), errors),
    }
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


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when the file is missing or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        print(
            f"report: WARNING {path} is not valid JSON ({e}); treated as missing", file=sys.stderr
        )
        return None
    return data if isinstance(data, dict) else None


def read_csv(path: Path) -> pd.DataFrame | None:
    """A CSV plot table, or None when missing or empty."""
    try:
        frame = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return frame if len(frame.columns) else None


def git(*args: str) -> str | None:
    """Output of a git command in the current directory, or None when git fails."""
    try:
        done = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def committed_metrics(ref: str, stages: Iterable[str]) -> dict[str, dict[str, Any]]:
    """metrics/<stage>.json as committed at `ref` (what `dvc metrics diff` compares against)."""
    out = {}
    for stage in stages:
        text = git("show", f"{ref}:{(METRICS_DIR / f'{stage}.json').as_posix()}")
        if text:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                out[stage] = data
    return out


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that shape the results."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def run_identity(now: datetime | None = None) -> dict[str, Any]:
    """When, git commit, dirty flag (and which paths), host, Prefect run id, versions."""
    commit = (git("rev-parse", "HEAD") or "").strip() or None
    status = git("status", "--porcelain")
    dirty_paths = [line[3:] for line in (status or "").splitlines() if line.strip()]
    code_dirty = [p for p in dirty_paths if not p.startswith(RUN_OUTPUTS)]
    if commit is None:
        tree = "unknown (not a git repository)"
    elif not dirty_paths:
        tree = "clean"
    elif not code_dirty:
        tree = f"dirty: only run outputs changed ({len(dirty_paths)} path(s))"
    else:
        tree = f"DIRTY: {len(code_dirty)} uncommitted change(s) outside run outputs"
    return {
        "generated_at": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "commit": commit,
        "dirty": bool(dirty_paths),
        "code_dirty": bool(code_dirty),
        "tree": tree,
        "dirty_paths": dirty_paths[:30],
        "baseline_ref": "HEAD",
        "host": f"{platform.node() or '?'}: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "prefect_flow_run": os.environ.get("PREFECT__FLOW_RUN_ID")
        or os.environ.get("PREFECT_FLOW_RUN_ID"),
        "packages": package_versions(),
    }


def load_inputs() -> Inputs:
    """Read every input of the report that exists, relative to the current directory."""
    params = {}
    if Path("params.yaml").exists():
        params = yaml.safe_load(Path("params.yaml").read_text(encoding="utf-8")) or {}
    metrics = {}
    for path in sorted(METRICS_DIR.glob("*.json")) if METRICS_DIR.is_dir() else []:
        data = read_json(path)
        if data is not None and path.stem != "report":
            metrics[path.stem] = data
    lock = None
    if Path("dvc.lock").exists():
        lock = yaml.safe_load(Path("dvc.lock").read_text(encoding="utf-8"))
    plots = {}
    for name in PLOTS:
        frame = read_csv(PLOTS_DIR / f"{name}.csv")
        if frame is not None:
            plots[name] = frame
    return Inputs(
        params=params if isinstance(params, dict) else {},
        metrics=metrics,
        previous=committed_metrics("HEAD", metrics),
        validation=read_json(VALIDATION_RESULTS),
        privacy_scan=read_json(PRIVACY_SCAN),
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
