"""report: one self-contained HTML page (plots embedded) and a short Markdown summary of a run.

Every section renders from whatever inputs exist: a stage that has not run yet shows so in its
section instead of failing the report. Only aggregates are shown (counts, rates, hashes, names of
columns and entity types): no value of any row ever reaches the page.

I/O lives in `main()` and the small readers beside it; the sections are pure functions over the
loaded dicts and DataFrames, rendered through the Jinja2 templates in stages/templates/.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import numbers
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from stages.lib.io import write_text_atomic

PIPELINE = ("ingest", "clean", "validate", "anonymize", "split", "augment", "train", "evaluate")
PLOTS = ("train_curve", "confusion", "roc", "pr", "calibration", "slices")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")
REPORTS_DIR = Path("reports")
VALIDATION_RESULTS = REPORTS_DIR / "validation/results.json"
DATA_DOCS = REPORTS_DIR / "validation/docs/index.html"
PRIVACY_SCAN = REPORTS_DIR / "privacy/scan.json"
OUT_HTML = REPORTS_DIR / "report.html"
OUT_MD = REPORTS_DIR / "summary.md"
TEMPLATES = Path(__file__).resolve().parent / "templates"
PACKAGES = (
    "privacy-pipeline",
    "pandas",
    "pyarrow",
    "numpy",
    "torch",
    "scikit-learn",
    "great-expectations",
    "dvc",
    "prefect",
    "matplotlib",
    "jinja2",
)
# Metrics that measure the machine rather than the data or model: shown apart in the deltas.
VOLATILE = ("duration_s", "peak_memory_mb", "train_time_s", "samples_per_s", "wall_s")
# Paths a pipeline run itself rewrites: a tree dirty only in these still ran committed code.
RUN_OUTPUTS = ("metrics/", "plots/", "reports/", "dvc.lock", "data/", "models/")
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
COLORS = {
    "kept": "#4C72B0",
    "added": "#55A868",
    "quarantined": "#C44E52",
    "duplicates": "#DD8452",
    "grey": "#8C8C8C",
}


@dataclass
class Inputs:
    """Everything the report reads, already loaded; a missing input is None or absent."""

    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)
    validation: dict[str, Any] | None = None
    privacy_scan: dict[str, Any] | None = None
    plots: dict[str, pd.DataFrame] = field(default_factory=dict)
    lock: dict[str, Any] | None = None
    run: dict[str, Any] = field(default_factory=dict)
    data_docs: str | None = None


# ---------------------------------------------------------------------------------------------
# Small helpers


def _num(value: Any) -> float | None:
    """A finite number from a JSON value, else None (bools are not numbers here)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _first(d: Mapping[str, Any] | None, *keys: str, default: Any = None) -> Any:
    """The value of the first of `keys` present (and not None) in `d`."""
    if not isinstance(d, Mapping):
        return default
    for k in keys:
        if d.get(k) is not None:
            return d[k]
    return default


def _dict(value: Any) -> dict[str, Any]:
    """`value` if it is a mapping, else an empty dict."""
    return dict(value) if isinstance(value, Mapping) else {}


def flatten_numbers(obj: Any, prefix: str = "") -> dict[str, float | int]:
    """Every numeric leaf of nested dicts as {'a.b.c': value}; strings and lists are skipped."""
    out: dict[str, float] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            out.update(flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k)))
    else:
        x = _num(obj)
        if x is not None and prefix:
            out[prefix] = obj if isinstance(obj, numbers.Integral) else x
    return out


def digest(obj: Any, length: int = 12) -> str:
    """A short SHA-256 of a JSON-able value in canonical form."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


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


# ---------------------------------------------------------------------------------------------
# Plots: matplotlib (Agg) figures as base64 PNG data URIs


def _plt() -> Any:
    """pyplot on the Agg backend (no display needed), with the report's style."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {
            "font.size": 10,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "figure.dpi": 100,
            "savefig.dpi": 100,
        }
    )
    return plt


def figure_uri(fig: Any) -> str:
    """Render a figure to a PNG data URI and close it."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def plot_row_flow(rows: list[dict[str, Any]]) -> str:
    """Horizontal stacked bars, one per stage: rows kept, added, quarantined, duplicates."""
    from matplotlib import ticker

    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.4))
    names = [r["stage"] for r in rows][::-1]
    parts = (
        ("kept", lambda r: max((r["rows_out"] or 0) - (r["rows_added"] or 0), 0)),
        ("added", lambda r: r["rows_added"] or 0),
        ("quarantined", lambda r: r["rows_quarantined"] or 0),
        ("duplicates", lambda r: r["duplicates"] or 0),
    )
    left = [0.0] * len(rows)
    for label, get in parts:
        values = [float(get(r)) for r in rows][::-1]
        if not any(values) and label != "kept":
            continue
        ax.barh(names, values, left=left, color=COLORS[label], label=label, height=0.6)
        left = [a + b for a, b in zip(left, values, strict=True)]
    width = max(left) if left and max(left) > 0 else 1.0
    for y, r in enumerate(rows[::-1]):
        note = f"in {r['rows_in'] or 0:,} → out {r['rows_out'] or 0:,}"
        losses = [
            f"−{r[k]:,} {k.replace('rows_', '')}"
            for k in ("rows_quarantined", "duplicates")
            if r[k]
        ]
        if r["rows_added"]:
            losses.append(f"+{r['rows_added']:,} added")
        if losses:
            note += " (" + ", ".join(losses) + ")"
        ax.text(left[y] + width * 0.01, y, note, va="center", fontsize=9)
    ax.set_xlim(0, width * 1.6)
    ax.set_xlabel("rows")
    ax.set_ylabel("stage (top: first)")
    ax.set_title("Flow of rows through the stages")
    ax.grid(axis="y", visible=False)
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{int(x):,}"))
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.5 / fig.get_figheight()), ncols=4, fontsize=9
    )
    return figure_uri(fig)


def plot_grouped_bars(
    groups: list[str],
    series: dict[str, list[float]],
    title: str,
    xlabel: str,
    ylabel: str,
    annotate: bool = True,
    percent: bool = False,
) -> str:
    """Grouped vertical bars: one group per x label, one bar per series."""
    import numpy as np
    from matplotlib import ticker

    plt = _plt()
    fig_width = min(max(5.5, 1.2 * len(groups) * max(len(series), 1) + 2), 11.0)  # fits the page
    fig, ax = plt.subplots(figsize=(fig_width, 3.8))
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(groups))
    palette = ["#4C72B0", "#55A868", "#C44E52", "#8172B3", "#DD8452", "#937860"]
    for i, (name, values) in enumerate(series.items()):
        bars = ax.bar(
            x + (i - (n - 1) / 2) * width, values, width, label=name, color=palette[i % 6]
        )
        if annotate:
            labels = [f"{v:.0%}" if percent else f"{v:,.0f}" for v in values]
            ax.bar_label(bars, labels=labels, fontsize=8, padding=2)
    ax.set_xticks(x, groups, rotation=0 if len(groups) <= 6 else 30, ha="center")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="x", visible=False)
    if percent:
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax.set_ylim(0, 1.1)
    else:
        ax.margins(y=0.15)
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    if len(series) > 1:
        ax.legend(fontsize=9, frameon=False)
    return figure_uri(fig)


def plot_training(curve: pd.DataFrame) -> str:
    """Loss per epoch (train and validation) beside validation accuracy per epoch."""
    from matplotlib import ticker

    plt = _plt()
    has_acc = "val_accuracy" in curve
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 6, 3.8))
    axes = list(axes) if has_acc else [axes]
    x = curve["epoch"] if "epoch" in curve else pd.Series(range(1, len(curve) + 1))
    ax = axes[0]
    for col, label, color in (
        ("train_loss", "training", "#4C72B0"),
        ("val_loss", "validation", "#C44E52"),
    ):
        if col in curve:
            ax.plot(x, curve[col], marker="o", markersize=3, label=label, color=color)
    if "val_loss" in curve and curve["val_loss"].notna().any():
        best = curve["val_loss"].idxmin()
        ax.axvline(x[best], color=COLORS["grey"], linestyle=":", label=f"best (epoch {x[best]})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy, nats)")
    ax.set_title("Loss")
    ax.legend(fontsize=9, frameon=False)
    if has_acc:
        ax = axes[1]
        ax.plot(x, curve["val_accuracy"], marker="o", markersize=3, color="#55A868")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy")
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax.set_title("Validation accuracy")
    fig.tight_layout()
    return figure_uri(fig)


def plot_confusion(matrix: pd.DataFrame) -> str:
    """Confusion matrix heat map, normalised by actual class (each row sums to 100%).

    Up to 6 classes each cell shows its count and share; beyond, only the share, with the font,
    the figure and the label rotation scaled so that 20 classes stay readable.
    """
    plt = _plt()
    values = matrix.to_numpy(dtype=float)
    share = values / values.sum(axis=1, keepdims=True).clip(min=1)
    k = len(matrix)
    side = min(max(4.2, 0.5 * k + 2.5), 13.0)
    font = 9 if k <= 6 else max(5.0, 9 - 0.25 * (k - 6))
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if k > 6 and values[i, j] == 0:
                continue  # empty cells stay blank: the matrix reads at a glance
            text = f"{int(values[i, j]):,}\n{share[i, j]:.1%}" if k <= 6 else f"{share[i, j]:.0%}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=font,
                color="white" if share[i, j] > 0.6 else "black",
            )
    rotate = k > 6 or max((len(str(c)) for c in matrix.columns), default=0) > 8
    ax.set_xticks(
        range(k),
        [str(c) for c in matrix.columns],
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=font + 1,
    )
    ax.set_yticks(range(k), [str(c) for c in matrix.index], fontsize=font + 1)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_title("Confusion matrix (test split), share of each actual class")
    ax.grid(False)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of actual class")
    return figure_uri(fig)


CURVE_AVERAGES = ("micro-average", "macro-average")


def plot_curve(
    frame: pd.DataFrame,
    x: str,
    y: str,
    title: str,
    xlabel: str,
    ylabel: str,
    reference: tuple[tuple[float, float], tuple[float, float]] | None,
    reference_label: str,
    label: str,
) -> str:
    """Curves (ROC, PR) on the unit square with a chance reference line.

    A frame with a `curve` column (evaluate's one-vs-rest curves beyond two classes) draws one
    line per curve, the micro and macro averages dashed and thicker, each with its area.
    """
    plt = _plt()
    many = "curve" in frame.columns
    fig, ax = plt.subplots(figsize=(7.4 if many else 4.8, 4.3))
    if many:
        import numpy as np

        for name, part in frame.groupby("curve", sort=False):
            part = part.sort_values([x, y])
            area = float(np.trapezoid(part[y], part[x]))
            average = name in CURVE_AVERAGES
            ax.plot(
                part[x],
                part[y],
                linewidth=2.2 if average else 1.0,
                linestyle="--" if average else "-",
                color="black" if name == CURVE_AVERAGES[1] else None,
                label=f"{name} ({area:.3f})",
            )
    else:
        ax.plot(frame[x], frame[y], color="#4C72B0", linewidth=2, label=label)
    if reference is not None:
        (x0, x1), (y0, y1) = reference
        ax.plot([x0, x1], [y0, y1], linestyle=":", color=COLORS["grey"], label=reference_label)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_aspect("equal")
    if many:  # up to 12 entries: beside the square, not over the curves
        ax.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.02, 0.5))
    else:
        ax.legend(fontsize=9, frameon=False, loc="lower right" if x == "fpr" else "lower left")
    return figure_uri(fig)


def plot_reliability(curve: pd.DataFrame, ece: float | None) -> str:
    """Reliability diagram: observed frequency against mean predicted probability per bin."""
    plt = _plt()
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(4.8, 5.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot([0, 1], [0, 1], linestyle="--", color=COLORS["grey"], label="perfect calibration")
    label = "model" + (f" (ECE {ece:.3f})" if ece is not None else "")
    ax.plot(
        curve["mean_predicted"],
        curve["fraction_positive"],
        marker="o",
        color="#4C72B0",
        label=label,
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed frequency of the class")
    ax.set_title("Reliability (calibration)")
    ax.legend(fontsize=9, frameon=False, loc="upper left")
    if "count" in curve:
        width = 1 / max(len(curve), 10)
        axc.bar(curve["mean_predicted"], curve["count"], width=width * 0.9, color=COLORS["grey"])
        axc.set_ylabel("rows")
    axc.set_xlabel("mean predicted probability in bin")
    fig.tight_layout()
    return figure_uri(fig)


SLICE_LABELS = {
    "tpr": "true positive rate",
    "fpr": "false positive rate",
    "selection_rate": "selection rate (predicted positive)",
}


def plot_slices(slices: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """Per slice column, a panel of grouped bars: each rate of each group."""
    from matplotlib import ticker

    plt = _plt()
    import numpy as np

    cols = list(dict.fromkeys(slices["column"]))
    fig, axes = plt.subplots(
        len(cols), 1, figsize=(9, 2.9 * len(cols)), squeeze=False, constrained_layout=True
    )
    palette = ["#4C72B0", "#55A868", "#C44E52", "#8172B3"]
    for ax, col in zip(axes[:, 0], cols, strict=True):
        part = slices[slices["column"] == col]
        groups = [str(g) for g in part["group"]]
        x = np.arange(len(groups))
        present = [m for m in metrics if m in part]
        width = 0.8 / max(len(present), 1)
        for i, m in enumerate(present):
            ax.bar(
                x + (i - (len(present) - 1) / 2) * width,
                part[m].astype(float).fillna(0),
                width,
                label=SLICE_LABELS.get(m, m.replace("_", " ")),
                color=palette[i % 4],
            )
        labels = [f"{g}\n(n={int(n):,})" for g, n in zip(groups, part["n"], strict=True)]
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_ylim(0, 1.22)  # headroom for the legend above the bars
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
        ax.yaxis.set_major_formatter(ticker.PercentFormatter(1.0))
        ax.set_ylabel("rate")
        ax.set_title(f"Slices by {col}")
        ax.grid(axis="x", visible=False)
        ax.legend(fontsize=8, frameon=False, ncols=len(present), loc="upper center")
    axes[-1, 0].set_xlabel("group (rows in test split)")
    return figure_uri(fig)


def plot_class_sizes(hist: list[dict[str, Any]], k_threshold: int | None) -> str:
    """Rows by size of their equivalence class over the quasi-identifiers."""
    labels = [str(h.get("size")) for h in hist]
    rows = [float(_num(h.get("rows")) or 0) for h in hist]
    title = "Rows by equivalence-class size over the quasi-identifiers"
    if k_threshold:
        title += f" (k threshold {k_threshold})"
    return plot_grouped_bars(
        labels,
        {"rows": rows},
        title,
        "equivalence class size (rows sharing the same values)",
        "rows",
    )


# ---------------------------------------------------------------------------------------------
# Sections: pure functions of the loaded inputs


def _missing(stage: str, what: str = "") -> dict[str, Any]:
    return {"available": False, "note": f"Stage '{stage}' not run yet{what}."}


def identity_section(inputs: Inputs) -> dict[str, Any]:
    """When, which commit (and whether the tree was dirty), versions, device, seeds, params."""
    run = {**RUN_DEFAULTS, **inputs.run}
    train = inputs.metrics.get("train", {})
    seeds = {k: v for k, v in flatten_numbers(inputs.params).items() if k.endswith("seed")}
    for stage, m in inputs.metrics.items():  # seeds a stage recorded that params do not hold
        if _num(m.get("seed")) is not None and not any(k.startswith(f"{stage}.") for k in seeds):
            seeds[f"{stage}.seed"] = m["seed"]
    device = _device(train) if train else None
    rows = [
        ("Generated", run.get("generated_at", "—")),
        ("Git commit", run.get("commit") or "not a git repository"),
        ("Working tree", run.get("tree", "—")),
        ("Prefect flow run", run.get("prefect_flow_run") or "— (not run by Prefect)"),
        (
            "Training device",
            f"{device} ({train.get('precision', '?')})" if device else "— (train not run yet)",
        ),
        ("Report host", run.get("host", "—")),
        ("Seeds", ", ".join(f"{k} = {int(v)}" for k, v in sorted(seeds.items())) or "—"),
        ("Params digest", f"sha256:{digest(inputs.params, 16)} (params.yaml, canonical JSON)"),
    ]
    anon = inputs.metrics.get("anonymize", {})
    if anon.get("key_id"):
        rows.append(("Pseudonymisation key id", str(anon["key_id"])))
    return {
        "available": True,
        "rows": rows,
        "dirty_paths": run.get("dirty_paths", []),
        "packages": run.get("packages", {}),
    }


def accounting_section(metrics: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows in/out/quarantined/duplicates/added per stage, reasons, and the flow picture."""
    rows = []
    for stage in [s for s in PIPELINE if s in metrics] + sorted(set(metrics) - set(PIPELINE)):
        m = metrics[stage]

        def count(key: str, m: dict[str, Any] = m) -> int | None:
            x = _num(m.get(key))
            return None if x is None else int(x)

        r = {
            "stage": stage,
            "rows_in": count("rows_in"),
            "rows_out": count("rows_out"),
            "rows_quarantined": count("rows_quarantined") or 0,
            "duplicates": count("duplicates") or 0,
            "rows_added": count("rows_added") or 0,
            "duration_s": _num(m.get("duration_s")),
            "peak_memory_mb": _num(m.get("peak_memory_mb")),
            "reasons": {
                str(k): int(_num(v) or 0) for k, v in _dict(m.get("quarantined_by_reason")).items()
            },
        }
        if None not in (r["rows_in"], r["rows_out"]):
            balance = (
                r["rows_out"] + r["rows_quarantined"] + r["duplicates"] - r["rows_added"]
            ) - r["rows_in"]
            r["balanced"] = balance == 0
        else:
            r["balanced"] = None
        rows.append(r)
    missing = [s for s in PIPELINE if s not in metrics]
    if not rows:
        return {"available": False, "note": "No stage has run yet.", "missing": missing}
    drawable = [r for r in rows if r["rows_in"] is not None and r["rows_out"] is not None]
    return {
        "available": True,
        "rows": rows,
        "missing": missing,
        "figure": plot_row_flow(drawable) if drawable else None,
        "total_quarantined": sum(r["rows_quarantined"] for r in rows),
        "total_duplicates": sum(r["duplicates"] for r in rows),
    }


def validation_section(validation: dict[str, Any] | None, docs_link: str | None) -> dict[str, Any]:
    """Every expectation's outcome, grouped by severity, failures first."""
    if not validation or not isinstance(validation.get("results"), list):
        return _missing("validate")
    results = []
    for r in validation["results"]:
        if not isinstance(r, Mapping):
            continue
        observed = r.get("observed")
        results.append(
            {
                "expectation": str(r.get("expectation", "?")),
                "family": str(r.get("family") or ""),
                "severity": str(r.get("severity") or "unknown"),
                "column": str(r.get("column") or "(table)"),
                "success": bool(r.get("success")),
                "unexpected_count": r.get("unexpected_count"),
                "unexpected_percent": r.get("unexpected_percent"),
                "element_count": r.get("element_count"),
                # Aggregates only (GX's observed value is a dtype name, a count or a share).
                "observed": observed if isinstance(observed, int | float | str) else None,
                "args": _describe_args(_dict(r.get("kwargs"))),
            }
        )
    order = {"critical": 0, "warning": 1}
    severities = sorted({r["severity"] for r in results}, key=lambda s: (order.get(s, 2), s))
    groups = []
    for sev in severities:
        items = sorted(
            (r for r in results if r["severity"] == sev),
            key=lambda r: (r["success"], r["family"], r["column"]),
        )
        passed = sum(r["success"] for r in items)
        groups.append(
            {"severity": sev, "items": items, "passed": passed, "failed": len(items) - passed}
        )
    failed_critical = sum(g["failed"] for g in groups if g["severity"] == "critical")
    return {
        "available": True,
        "rows": validation.get("rows"),
        "groups": groups,
        "total": len(results),
        "passed": sum(r["success"] for r in results),
        "failed_critical": failed_critical,
        "docs_link": docs_link,
    }


def _describe_args(kwargs: dict[str, Any]) -> str:
    """The rule an expectation checks, in a few words (value sets are summarised by size)."""
    parts = []
    for k, v in kwargs.items():
        if k in ("result_format", "catch_exceptions", "meta"):
            continue
        if isinstance(v, list | tuple):
            shown = ", ".join(map(str, v[:6])) + (f", … ({len(v)} values)" if len(v) > 6 else "")
            parts.append(f"{k}=[{shown}]")
        elif v is not None:
            parts.append(f"{k}={v}")
    return "; ".join(parts)


def privacy_section(
    anon: dict[str, Any] | None, scan: dict[str, Any] | None, params: dict[str, Any]
) -> dict[str, Any]:
    """Identifier columns and their policies, entities replaced, the scan, k and unique share."""
    columns = _dict(_dict(params.get("schema")).get("columns"))
    configured = _dict(_dict(params.get("anonymize")).get("policies"))
    recorded = _dict((anon or {}).get("policies"))
    quasi_recorded = (anon or {}).get("quasi_identifiers")
    policy_rows = []
    for name, col in columns.items():
        col = _dict(col)
        role = col.get("role")
        if not (role in ("key", "identifier", "text") or col.get("quasi") or col.get("pii")):
            continue
        policy = recorded.get(name, configured.get(name))
        if policy is None:
            policy = "drop (role default)" if role in ("key", "identifier") else "keep"
        if role == "text":
            policy = f"{_policy_text(policy)}; text scrubbed of identifiers"
        policy_rows.append(
            {
                "column": name,
                "role": role,
                "pii": col.get("pii") or "",
                "quasi": bool(col.get("quasi")),
                "policy": _policy_text(policy),
            }
        )
    section: dict[str, Any] = {
        "policies": policy_rows,
        "available": anon is not None,
        "scan": scan_summary(_dict(scan) or _dict((anon or {}).get("scan"))),
    }
    if anon is None:
        section["note"] = (
            "Stage 'anonymize' has no summary: it did not finish (see its scan above)."
            if section["scan"]["available"]
            else "Stage 'anonymize' not run yet: the policies shown are those configured."
        )
        return section
    counts = _dict(_first(anon, "entity_counts", "entities", "entities_replaced"))
    entity_rows, totals = [], {}
    for col, by_type in counts.items():
        if isinstance(by_type, Mapping):
            for etype, n in by_type.items():
                entity_rows.append({"column": col, "entity": etype, "count": int(_num(n) or 0)})
                totals[etype] = totals.get(etype, 0) + int(_num(n) or 0)
        elif _num(by_type) is not None:  # a flat {type: n}
            entity_rows.append({"column": "(all)", "entity": col, "count": int(_num(by_type))})
            totals[col] = totals.get(col, 0) + int(_num(by_type))
    after = _dict(_first(anon, "risk_after_suppression", "risk"))
    before = _dict(anon.get("risk_before_suppression"))
    k_threshold = _num(_first(anon, "k_threshold"))
    hist = after.get("histogram") or before.get("histogram") or anon.get("class_size_histogram")
    hist = [h for h in hist if isinstance(h, Mapping)] if isinstance(hist, list) else []
    risk_rows = []
    for label, risk in (("before suppression", before), ("after suppression", after)):
        if risk:
            risk_rows.append(
                {
                    "when": label,
                    "k": risk.get("k"),
                    "unique_share": risk.get("unique_share"),
                    "classes": risk.get("classes"),
                }
            )
    if not risk_rows and _first(anon, "k") is not None:
        risk_rows.append(
            {
                "when": "output",
                "k": anon.get("k"),
                "unique_share": _first(anon, "unique_share"),
                "classes": None,
            }
        )
    section.update(
        {
            "key_id": anon.get("key_id"),
            "entities": sorted(entity_rows, key=lambda r: (r["column"], r["entity"])),
            "entity_totals": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
            "entity_figure": plot_grouped_bars(
                list(totals),
                {"replaced": [float(v) for v in totals.values()]},
                "Identifiers found and replaced in free text, by type",
                "entity type",
                "occurrences",
            )
            if totals
            else None,
            "quasi_identifiers": [str(q) for q in quasi_recorded]
            if isinstance(quasi_recorded, list)
            else [n for n, c in columns.items() if _dict(c).get("quasi")],
            "k_threshold": int(k_threshold) if k_threshold is not None else None,
            "risk": risk_rows,
            "suppressed": int(_num(anon.get("rows_quarantined")) or 0),
            "class_size_figure": plot_class_sizes(hist, int(k_threshold) if k_threshold else None)
            if hist
            else None,
        }
    )
    return section


def scan_summary(scan: dict[str, Any]) -> dict[str, Any]:
    """The independent scan's verdict and counts by entity type and column (never a value)."""
    findings = scan.get("findings")
    details = scan.get("details") if isinstance(scan.get("details"), list) else []
    if isinstance(findings, list):
        details, findings = findings, len(findings)
    by_column: dict[tuple[str, str], int] = {}
    for d in details:
        if isinstance(d, Mapping):
            key = (str(d.get("column", "?")), str(_first(d, "entity", "type", default="?")))
            by_column[key] = by_column.get(key, 0) + 1
    checks = scan.get("checks")
    return {
        "available": bool(scan),
        "passed": bool(_first(scan, "passed", "ok", default=False)),
        "findings": None if _num(findings) is None else int(_num(findings)),
        "by_entity": {str(k): int(_num(v) or 0) for k, v in _dict(scan.get("by_entity")).items()},
        "by_column": [
            {"column": c, "entity": e, "count": n} for (c, e), n in sorted(by_column.items())
        ],
        "details_listed": len(details),
        "checks": [str(c) for c in checks] if isinstance(checks, list) else [],
    }


def _policy_text(policy: Any) -> str:
    """A policy (a word or a mapping like {action: generalize, band: 10}) in words."""
    if isinstance(policy, Mapping):
        action = policy.get("action", "?")
        rest = ", ".join(f"{k} {v}" for k, v in policy.items() if k != "action" and v is not None)
        return f"{action} ({rest})" if rest else str(action)
    return str(policy)


def split_balance(split: dict[str, Any] | None) -> dict[str, Any]:
    """split's class_balance ({split: {rows, classes: {class: {rows, share}}}}) as one row per
    class and one column per split, so that many classes make the table longer, not wider."""
    per_split = _dict((split or {}).get("class_balance"))
    order = {"train": 0, "val": 1, "test": 2}  # metrics JSON has its keys sorted
    names = sorted(per_split, key=lambda s: (order.get(s, 3), s))
    totals = {s: int(_num(_dict(per_split[s]).get("rows")) or 0) for s in names}
    classes: list[str] = []
    for s in names:
        classes += [c for c in _dict(_dict(per_split[s]).get("classes")) if c not in classes]
    rows = []
    for c in classes:
        cells = []
        for s in names:
            n = int(_num(_dict(_dict(_dict(per_split[s]).get("classes")).get(c)).get("rows")) or 0)
            cells.append({"rows": n, "share": n / totals[s] if totals[s] else None})
        rows.append({"class": c, "cells": cells})
    found = _dict((split or {}).get("feature_duplicates"))
    duplicates = {s: found[s] for s in sorted(found, key=lambda s: (order.get(s, 3), s))}
    return {"names": names, "totals": totals, "rows": rows, "feature_duplicates": duplicates}


def augmentation_section(
    augment: dict[str, Any] | None, split: dict[str, Any] | None
) -> dict[str, Any]:
    """Class balance per split, and before and after augmentation (the keys the stages write)."""
    balance = split_balance(split)
    section: dict[str, Any] = {
        "available": augment is not None,
        "split": balance,
        "split_available": split is not None and bool(balance["rows"]),
    }
    if augment is None:
        section["note"] = "Stage 'augment' not run yet."
        return section
    before = _dict(augment.get("class_counts_before"))
    after = _dict(augment.get("class_counts_after"))
    classes = list(dict.fromkeys([*before, *after]))
    tb = sum(int(_num(v) or 0) for v in before.values())
    ta = sum(int(_num(v) or 0) for v in after.values())
    rows = []
    for c in classes:
        b, a = int(_num(before.get(c)) or 0), int(_num(after.get(c)) or 0)
        rows.append(
            {
                "class": c,
                "before": b,
                "after": a,
                "added": a - b,
                "share_before": b / tb if tb else None,
                "share_after": a / ta if ta else None,
            }
        )
    short = _dict(augment.get("short_of_target"))
    section.update(
        {
            "rows": rows,
            "method": augment.get("balance", "—"),
            "seed": augment.get("seed"),
            "rows_added": int(_num(augment.get("rows_added")) or 0),
            "weights": _dict(augment.get("class_weights")),
            "max_copies_per_row": augment.get("max_copies_per_row"),
            "most_copies_of_one_row": augment.get("most_copies_of_one_row"),
            "short_of_target": {"target": short.get("target"), "rows": _dict(short.get("rows"))},
            "figure": plot_grouped_bars(
                [str(c) for c in classes],
                {
                    "before": [float(r["before"]) for r in rows],
                    "after": [float(r["after"]) for r in rows],
                },
                "Training rows per class, before and after augmentation",
                "class",
                "rows",
                annotate=len(classes) <= 8,
            )
            if classes
            else None,
        }
    )
    return section


def _dp_text(train: dict[str, Any]) -> str:
    """train's differential-privacy record (metrics/train.json `dp`) in a few words."""
    dp = _dict(train.get("dp"))
    if not dp.get("enabled"):
        return "DP off"
    return (
        f"DP-SGD: ε = {fmt(dp.get('epsilon'), 2)} spent, δ = {dp.get('delta')}, "
        f"clipping norm {fmt(dp.get('max_grad_norm'), 2)}, "
        f"noise multiplier {fmt(dp.get('noise_multiplier'), 3)}"
    )


def training_section(train: dict[str, Any] | None, curve: pd.DataFrame | None) -> dict[str, Any]:
    """Device, time, throughput, differential privacy and the loss/accuracy curves."""
    if train is None and curve is None:
        return _missing("train")
    train = train or {}
    facts = [
        ("Device", _device(train)),
        ("Precision", train.get("precision", "—")),
        ("Epochs run", fmt(train.get("epochs_run"))),
        ("Optimizer steps", fmt(train.get("steps"))),
        ("Batch size", fmt(train.get("batch_size"))),
        ("Learning rate", fmt(train.get("lr"), 5)),
        ("Best validation loss", fmt(train.get("best_val_loss"))),
        ("Best validation accuracy", pct(train.get("best_val_accuracy"), 2)),
        ("Training time", f"{fmt(train.get('train_time_s'), 1)} s"),
        ("Throughput", f"{fmt(train.get('samples_per_s'), 0)} samples/s"),
        ("Rows trained on", fmt(train.get("rows_in"))),
        ("Seed", str(train["seed"]) if train.get("seed") is not None else "—"),
        ("Differential privacy", _dp_text(train) if train else "—"),
    ]
    figure = None
    if curve is not None and len(curve) and {"train_loss", "val_loss"} & set(curve.columns):
        figure = plot_training(curve)
    return {
        "available": True,
        "facts": [(k, v) for k, v in facts if v not in ("—", "— s", "— samples/s")],
        "figure": figure,
        "curve_note": None if figure else "No training curve (plots/train_curve.csv) yet.",
    }


def _device(train: dict[str, Any]) -> str:
    """The device trained on: its name, and its type where the name does not say it."""
    name, kind = train.get("device_name"), train.get("device")
    if name and kind and str(kind) not in str(name):
        return f"{name} ({kind})"
    return str(name or kind or "—")


HEADLINE = (
    ("accuracy", "Accuracy", True),
    ("macro_precision", "Macro precision", True),
    ("macro_recall", "Macro recall", True),
    ("macro_f1", "Macro F1", True),
    ("roc_auc", "ROC AUC", True),
    ("roc_auc_micro", "ROC AUC (micro average)", True),
    ("pr_auc", "PR AUC (average precision)", True),
    ("pr_auc_micro", "PR AUC (micro average)", True),
    ("log_loss", "Log loss", False),
    ("ece", "Expected calibration error", False),
)


def _metric_table(ev: dict[str, Any], baselines: dict[str, dict[str, Any]]) -> list[dict]:
    """One row per headline metric the model or a baseline has."""
    table = []
    for key, label, higher in HEADLINE:
        if ev.get(key) is None and not any(b.get(key) is not None for b in baselines.values()):
            continue
        table.append(
            {
                "label": label,
                "model": ev.get(key),
                "baselines": [b.get(key) for b in baselines.values()],
                "higher_is_better": higher,
            }
        )
    return table


def _evaluation_figures(ev: dict[str, Any], plots: dict[str, pd.DataFrame]) -> dict[str, str]:
    """Confusion matrix, ROC, PR and reliability figures from evaluate's plot tables."""
    figures: dict[str, str] = {}
    conf = plots.get("confusion")
    if conf is not None and {"actual", "predicted"} <= set(conf.columns) and len(conf):
        order = list(_dict(ev.get("per_class")))  # the schema's class order where known
        seen = set(conf["actual"].astype(str)) | set(conf["predicted"].astype(str))
        labels = [c for c in order if c in seen] + sorted(seen - set(order))
        matrix = pd.crosstab(conf["actual"].astype(str), conf["predicted"].astype(str)).reindex(
            index=labels, columns=labels, fill_value=0
        )
        figures["confusion"] = plot_confusion(matrix)
    several = "curve" in getattr(plots.get("roc"), "columns", ())
    roc = plots.get("roc")
    if roc is not None and {"fpr", "tpr"} <= set(roc.columns) and len(roc):
        auc = _num(ev.get("roc_auc"))
        figures["roc"] = plot_curve(
            roc,
            "fpr",
            "tpr",
            "ROC curves, one class against the rest" if several else "ROC curve",
            "false positive rate",
            "true positive rate (recall)",
            ((0, 1), (0, 1)),
            "chance",
            "model" + (f" (AUC {auc:.3f})" if auc is not None else ""),
        )
    pr = plots.get("pr")
    if pr is not None and {"recall", "precision"} <= set(pr.columns) and len(pr):
        ap = _num(ev.get("pr_auc"))
        prevalence = None if several else _prevalence(ev)
        figures["pr"] = plot_curve(
            pr,
            "recall",
            "precision",
            "Precision-recall curves, one class against the rest"
            if several
            else "Precision-recall curve",
            "recall (true positive rate)",
            "precision",
            ((0, 1), (prevalence, prevalence)) if prevalence is not None else None,
            f"chance (prevalence {prevalence:.2f})" if prevalence is not None else "",
            "model" + (f" (AP {ap:.3f})" if ap is not None else ""),
        )
    cal = plots.get("calibration")
    if cal is not None and {"mean_predicted", "fraction_positive"} <= set(cal.columns) and len(cal):
        figures["calibration"] = plot_reliability(cal, _num(ev.get("ece")))
    return figures


def _slice_block(slices: pd.DataFrame | None) -> tuple[list[dict], str | None]:
    """The per-group table and figure from plots/slices.csv."""
    if slices is None or not {"column", "group"} <= set(slices.columns) or not len(slices):
        return [], None
    metrics = tuple(m for m in ("accuracy", "selection_rate", "tpr", "fpr") if m in slices.columns)
    figure = plot_slices(slices, metrics) if "n" in slices.columns and metrics else None
    keep = [
        c
        for c in ("column", "group", "n", "share", "base_rate", *metrics, "roc_auc")
        if c in slices.columns
    ]
    return slices[keep].to_dict("records"), figure


def _gap_rows(fairness: dict[str, Any], thresholds: dict[str, Any]) -> list[dict[str, Any]]:
    """Each fairness gap as evaluate wrote it ({value, groups, reason}) beside its limit; a gap
    of fewer than two groups reads "not measured" with the reason, never "within limit"."""
    rows = []
    for gap, by_col in fairness.items():
        limit = thresholds.get(f"max_{gap}")
        for col, g in _dict(by_col).items():
            g = _dict(g)
            x = _num(g.get("value"))
            rows.append(
                {
                    "gap": gap.replace("_", " "),
                    "column": col,
                    "value": x,
                    "groups": g.get("groups"),
                    "reason": g.get("reason"),
                    "limit": limit,
                    "ok": None if limit is None or x is None else x <= float(limit),
                }
            )
    return rows


def model_privacy(ev: dict[str, Any], train: dict[str, Any] | None) -> dict[str, Any]:
    """The membership-inference audit of the model (and of the logistic baseline) beside the
    differential-privacy budget train spent (metrics/train.json `dp`), or "DP off"."""
    audit = _dict(ev.get("membership"))
    lr_audit = _dict(_dict(_dict(ev.get("baselines")).get("logistic_regression")).get("membership"))
    dp = _dict((train or {}).get("dp"))
    return {
        "audited": bool(audit),
        "auc": _num(audit.get("auc")),
        "advantage": _num(audit.get("advantage")),
        "members": audit.get("members"),
        "non_members": audit.get("non_members"),
        "attack": audit.get("attack"),
        "baseline_auc": _num(lr_audit.get("auc")),
        "limit": _dict(_dict(ev.get("gate")).get("thresholds")).get("max_membership_auc"),
        "dp_enabled": bool(dp.get("enabled")),
        "dp": {k: dp.get(k) for k in ("epsilon", "delta", "max_grad_norm", "noise_multiplier")},
        "train_known": train is not None,
    }


def evaluation_section(
    ev: dict[str, Any] | None,
    plots: dict[str, pd.DataFrame],
    train: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics beside the baselines, per-class scores, curves, slices, fairness gaps, the
    membership audit beside ε, and the gate."""
    if ev is None and not any(p in plots for p in ("confusion", "roc", "pr", "calibration")):
        return _missing("evaluate")
    ev = ev or {}
    baselines = {k: _dict(v) for k, v in _dict(ev.get("baselines")).items()}
    per_class = [
        {"class": c, **{k: _dict(v).get(k) for k in ("precision", "recall", "f1", "support")}}
        for c, v in _dict(ev.get("per_class")).items()
    ]
    slice_rows, slice_figure = _slice_block(plots.get("slices"))
    gate = _dict(ev.get("gate"))
    thresholds = _dict(gate.get("thresholds"))
    lift = _dict(ev.get("lift_over_logistic_regression"))
    return {
        "available": True,
        "n": ev.get("n"),
        "positive_class": ev.get("positive_class"),
        "macro_classes": _dict(ev.get("macro_classes")),
        "lift_points": _num(lift.get("accuracy_points")),
        "baseline_names": [n.replace("_", " ") for n in baselines],
        "table": _metric_table(ev, baselines),
        "per_class": per_class,
        "figures": _evaluation_figures(ev, plots),
        "slices": slice_rows,
        "slice_columns": list(slice_rows[0]) if slice_rows else [],
        "slice_figure": slice_figure,
        "gaps": _gap_rows(_dict(ev.get("fairness")), thresholds),
        "model_privacy": model_privacy(ev, train),
        "gate": {
            "known": "passed" in gate,
            "passed": bool(gate.get("passed")),
            "failures": [str(f) for f in gate.get("failures") or []],
            "skipped": [str(f) for f in gate.get("skipped") or []],
            "thresholds": thresholds,
        },
    }


def _prevalence(ev: dict[str, Any]) -> float | None:
    """Share of the positive class in the test split, from the per-class supports."""
    per_class = _dict(ev.get("per_class"))
    positive = ev.get("positive_class") or (list(per_class)[-1] if per_class else None)
    supports = {c: _num(_dict(v).get("support")) for c, v in per_class.items()}
    total = sum(v for v in supports.values() if v)
    if not total or supports.get(positive) is None:
        return None
    return supports[positive] / total


def changes_section(
    current: dict[str, dict[str, Any]], previous: dict[str, dict[str, Any]], baseline_ref: str
) -> dict[str, Any]:
    """Numeric metric deltas against the last committed metrics, as `dvc metrics diff` sees them."""
    if not previous:
        return {
            "available": False,
            "note": f"No committed metrics at {baseline_ref} to compare with (first run?).",
        }
    rows = []
    for stage in [s for s in PIPELINE if s in current or s in previous] + sorted(
        (set(current) | set(previous)) - set(PIPELINE)
    ):
        new = flatten_numbers(current.get(stage, {}))
        old = flatten_numbers(previous.get(stage, {}))
        for key in sorted(set(new) | set(old)):
            a, b = old.get(key), new.get(key)
            delta = None if a is None or b is None else b - a
            rows.append(
                {
                    "stage": stage,
                    "metric": key,
                    "old": a,
                    "new": b,
                    "delta": delta,
                    "relative": delta / abs(a) if delta is not None and a else None,
                    "changed": a != b,
                    "volatile": key.split(".")[-1] in VOLATILE,
                }
            )
    rank = {key: i for i, (key, _, _) in enumerate(HEADLINE)}
    stage_order = {s: i for i, s in enumerate(("evaluate", "train", *PIPELINE))}
    rows.sort(key=lambda r: (stage_order.get(r["stage"], 99), rank.get(r["metric"], len(rank))))
    changed = [r for r in rows if r["changed"] and not r["volatile"]]
    volatile = [r for r in rows if r["changed"] and r["volatile"]]
    return {
        "available": True,
        "baseline": baseline_ref,
        "changed": changed,
        "volatile": volatile,
        "unchanged": sum(not r["changed"] for r in rows),
        "stages_compared": sorted(set(current) & set(previous)),
        "new_stages": sorted(set(current) - set(previous)),
    }


def lineage_section(lock: dict[str, Any] | None) -> dict[str, Any]:
    """Every stage of dvc.lock with its command, input and output hashes and params."""
    stages = _dict((lock or {}).get("stages"))
    if not stages:
        return {"available": False, "note": "No dvc.lock yet: run `dvc repro` to record lineage."}
    order = [s for s in PIPELINE if s in stages] + [s for s in stages if s not in PIPELINE]
    out = []
    for name in order:
        st = _dict(stages[name])
        params = []
        for file, values in _dict(st.get("params")).items():
            for key, value in _dict(values).items():
                leaves = _param_leaves(value, key)
                if len(leaves) <= MAX_PARAM_LEAVES:  # small sections: every value, readable
                    params += [{"file": file, "key": k, "value": v} for k, v in leaves]
                else:  # big ones (the schema): a digest that changes when any value does
                    shown = f"{len(leaves)} values, sha256:{digest(value)}"
                    params.append({"file": file, "key": key, "value": shown})
        out.append(
            {
                "stage": name,
                "cmd": " && ".join(st["cmd"]) if isinstance(st.get("cmd"), list) else st.get("cmd"),
                "deps": [_lock_entry(d) for d in st.get("deps") or [] if isinstance(d, Mapping)],
                "outs": [_lock_entry(d) for d in st.get("outs") or [] if isinstance(d, Mapping)],
                "params": params,
            }
        )
    return {"available": True, "stages": out}


MAX_PARAM_LEAVES = 8


def _param_leaves(value: Any, prefix: str) -> list[tuple[str, str]]:
    """(dotted key, JSON value) for each leaf of a params value; lists count as one leaf."""
    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            out += _param_leaves(v, f"{prefix}.{k}")
        return out
    return [(prefix, json.dumps(value, default=str, ensure_ascii=False))]


def _lock_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """Path, content hash, size and file count of one dvc.lock dep/out."""
    algo = entry.get("hash") or ("md5" if "md5" in entry else None)
    value = entry.get(algo) if algo else None
    if value is None:
        value = _first(entry, "md5", "etag", "checksum", default="—")
    return {
        "path": entry.get("path"),
        "hash": str(value),
        "algo": algo or "",
        "size": entry.get("size"),
        "nfiles": entry.get("nfiles"),
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


if __name__ == "__main__":
    from stages.lib.errors import run_stage

    run_stage(main)
