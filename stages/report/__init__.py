"""report: one self-contained HTML page (plots embedded) and a short Markdown summary of a run.

Every section renders from whatever inputs exist: a stage that has not run yet shows so in its
section instead of failing the report. Only aggregates are shown (counts, rates, hashes, names of
columns and entity types): no value of any row ever reaches the page.

The package, along its concerns:
- common: stage and plot names, paths, `Inputs` (everything the report reads), formatting;
- plots: the matplotlib figures as PNG data URIs;
- sections: run identity, accounting, validation, privacy, augmentation, training, changes,
  lineage; evaluation: the evaluation section (metrics, curves, gaps, membership audit, gate);
- render: `build_context`, the Jinja2 rendering (templates in stages/templates/), the I/O and
  `main()` (`python -m stages.report`).
"""

from __future__ import annotations

from stages.report import plots
from stages.report.common import PIPELINE, PLOTS, SECTIONS, Inputs, digest, fmt, pct, signed
from stages.report.evaluation import evaluation_section, model_privacy
from stages.report.plots import figure_uri
from stages.report.render import (
    build_context,
    load_inputs,
    main,
    metrics_diff,
    read_report,
    render_html,
    render_summary,
    run_identity,
)
from stages.report.sections import (
    accounting_section,
    augmentation_section,
    changes_section,
    identity_section,
    lineage_section,
    privacy_section,
    scan_summary,
    split_balance,
    training_section,
    validation_section,
)

__all__ = [
    "PIPELINE",
    "PLOTS",
    "SECTIONS",
    "Inputs",
    "accounting_section",
    "augmentation_section",
    "build_context",
    "changes_section",
    "digest",
    "evaluation_section",
    "figure_uri",
    "fmt",
    "identity_section",
    "lineage_section",
    "load_inputs",
    "main",
    "metrics_diff",
    "model_privacy",
    "pct",
    "plots",
    "privacy_section",
    "read_report",
    "render_html",
    "render_summary",
    "run_identity",
    "scan_summary",
    "signed",
    "split_balance",
    "training_section",
    "validation_section",
]
