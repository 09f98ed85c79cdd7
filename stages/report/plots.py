"""The report's figures: matplotlib (Agg) plots rendered as base64 PNG data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any

import pandas as pd

from stages.lib.summaries import SizeBin

COLORS = {
    "kept": "#4C72B0",
    "added": "#55A868",
    "quarantined": "#C44E52",
    "duplicates": "#DD8452",
    "grey": "#8C8C8C",
}


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


def plot_class_sizes(hist: list[SizeBin], k_threshold: int | None) -> str:
    """Rows by size of their equivalence class over the quasi-identifiers."""
    labels = [h.size for h in hist]
    rows = [float(h.rows) for h in hist]
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
