"""Augment the training split: class balance by oversampling (or weights) and seeded perturbation.

Only data/split/train/ is read: validation and test data never pass through here. Every added row
is a perturbed copy of one training row, keeps that row's record_id (row-level lineage) and is
flagged `_augmented=True`; the original rows pass through unchanged with `_augmented=False`.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.config import AugmentConfig, TextAugment, pipeline_params
from stages.lib.errors import run_stage
from stages.lib.features import FeatureSpec, column_policies, feature_spec
from stages.lib.io import read_dataset, split_rows, write_dataset
from stages.lib.paths import AUGMENTED_DIR as OUT_DIR
from stages.lib.paths import TRAIN_SPLIT_DIR as TRAIN_DIR
from stages.lib.schema import AUGMENTED, RECORD_ID
from stages.lib.summaries import AugmentFields
from stages.lib.summary import StageSummary

# ---------------------------------------------------------------------------------------------
# Which rows to copy


def class_counts(labels: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict[str, int]:
    """Rows per class, in the classes' order (a class with no rows counts 0)."""
    return {c: int(np.sum(labels == c)) for c in classes}


def oversample_plan(
    labels: np.ndarray,
    classes: list[str] | tuple[str, ...],
    target_ratio: float,
    rng: np.random.Generator,
    max_copies: int | None = None,
) -> np.ndarray:
    """Row indices to copy so that every class reaches ceil(target_ratio * majority count).

    Each row of a short class is copied floor(need / n) times, and a random subset of them once
    more, so that copies spread evenly over the class instead of piling up on a few rows. No row
    is copied more than `max_copies` times: a class too small for that stays short of the target.
    """
    counts = class_counts(labels, classes)
    target = math.ceil(target_ratio * max(counts.values(), default=0))
    picks = []
    for c in classes:
        rows = np.flatnonzero(labels == c)
        need = target - rows.size
        if max_copies is not None:
            need = min(need, max_copies * rows.size)
        if need <= 0 or rows.size == 0:
            continue
        full, rest = divmod(need, rows.size)
        picks.append(np.tile(rows, full))
        picks.append(np.sort(rng.choice(rows, size=rest, replace=False)))
    return np.concatenate(picks) if picks else np.empty(0, dtype=np.int64)


def cap_copies(plan: np.ndarray, max_copies: int) -> np.ndarray:
    """The plan without the occurrences of a row beyond its first `max_copies` (order kept)."""
    if plan.size == 0:
        return plan
    order = np.argsort(plan, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(plan[order])) + 1]
    rank = np.arange(plan.size) - np.repeat(starts, np.diff(np.r_[starts, plan.size]))
    keep = np.empty(plan.size, dtype=bool)
    keep[order] = rank < max_copies
    return plan[keep]


def extra_plan(n_rows: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of round(fraction * n_rows) rows drawn with replacement, for further copies."""
    n = round(fraction * n_rows)
    if n == 0 or n_rows == 0:
        return np.empty(0, dtype=np.int64)
    return np.sort(rng.integers(0, n_rows, size=n))


# ---------------------------------------------------------------------------------------------
# Perturbations

# CJK characters are tokens of their own: Chinese text has no spaces between words.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")
# Placeholders left by the scrubber ([EMAIL], <PHONE>, ...) keep their spelling.
_PLACEHOLDER = re.compile(r"^[\[<{][A-Z_]+[\]>}]$")


def _join(tokens: list[str]) -> str:
    """Tokens back into text: a space between tokens, none between two CJK characters."""
    out: list[str] = []
    prev_cjk = False
    for tok in tokens:
        cjk = bool(_IS_CJK.fullmatch(tok))
        if out and not (cjk and prev_cjk):
            out.append(" ")
        out.append(tok)
        prev_cjk = cjk
    return "".join(out)


def _char_noise(token: str, p: float, rng: np.random.Generator) -> str:
    """Drop, double or transpose each character with probability p (no alphabet needed)."""
    if p == 0.0 or len(token) < 2 or _PLACEHOLDER.match(token):
        return token
    hits = np.flatnonzero(rng.random(len(token)) < p)
    if hits.size == 0:
        return token
    chars = list(token)
    ops = rng.integers(0, 3, size=hits.size)
    for i, op in zip(hits[::-1], ops[::-1], strict=True):  # right to left keeps indices valid
        if op == 0 and len(chars) > 1:
            del chars[i]
        elif op == 1:
            chars.insert(i, chars[i])
        elif i + 1 < len(chars):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


def augment_text(text: str | None, params: TextAugment, rng: np.random.Generator) -> str | None:
    """One perturbed version of `text`: random token deletion, random swaps, character noise."""
    if text is None:
        return None
    tokens = _TOKEN.findall(text)
    if not tokens:
        return text
    keep = rng.random(len(tokens)) >= params.p_delete
    if not keep.any():  # never empty a text: keep one token
        keep[rng.integers(len(tokens))] = True
    tokens = [t for t, k in zip(tokens, keep, strict=True) if k]
    n_swaps = rng.binomial(len(tokens), params.p_swap) if len(tokens) > 1 else 0
    for _ in range(n_swaps):
        i, j = rng.choice(len(tokens), size=2, replace=False)
        tokens[i], tokens[j] = tokens[j], tokens[i]
    tokens = [_char_noise(t, params.p_char_noise, rng) for t in tokens]
    return _join(tokens)


def jitter_numeric(
    column: pa.ChunkedArray | pa.Array,
    scale: float,
    bounds: tuple[float | None, float | None],
    rng: np.random.Generator,
) -> pa.Array:
    """x * (1 + scale * N(0, 1)), rounded for integers and clipped to bounds; nulls stay null."""
    typ = column.type
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    noisy = values * (1.0 + scale * rng.standard_normal(values.size))
    lo, hi = bounds
    noisy = np.clip(noisy, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    mask = np.isnan(values)
    if pa.types.is_integer(typ):
        noisy = np.round(np.nan_to_num(noisy)).astype(np.int64)
    return pa.array(noisy, mask=mask).cast(typ)


# ---------------------------------------------------------------------------------------------
# The stage's pure core


def augment_table(
    table: pa.Table,
    spec: FeatureSpec,
    bounds: dict[str, tuple[float | None, float | None]],
    config: AugmentConfig,
) -> tuple[pa.Table, dict[str, Any]]:
    """Original rows (`_augmented=False`) followed by perturbed copies (`_augmented=True`).

    Copies keep their source row's record_id and every lineage column. Which rows are copied
    depends on the seed and on the record_ids, not on the order the rows arrive in.
    """
    rng = np.random.default_rng(config.seed)
    labels = table[spec.label].to_numpy(zero_copy_only=False)
    # Plan over rows sorted by record_id, so partition layout and row order do not change
    # which records get copied.
    order = np.argsort(table[RECORD_ID].to_numpy(zero_copy_only=False), kind="stable")
    sorted_labels = labels[order]
    plan = np.empty(0, dtype=np.int64)
    if config.balance == "oversample":
        plan = oversample_plan(
            sorted_labels, spec.classes, config.target_ratio, rng, config.max_copies_per_row
        )
    plan = np.concatenate([plan, extra_plan(table.num_rows, config.extra_fraction, rng)])
    plan = cap_copies(plan, config.max_copies_per_row)
    source = order[plan].astype(np.int64)

    copies = table.take(pa.array(source, type=pa.int64()))
    for col in spec.text:
        if col in copies.column_names:
            texts = [augment_text(t, config.text, rng) for t in copies[col].to_pylist()]
            idx = copies.schema.get_field_index(col)
            copies = copies.set_column(idx, col, pa.array(texts, type=copies[col].type))
    if config.numeric_jitter > 0:
        for col in spec.numeric:
            kind = copies.schema.field(col).type if col in copies.column_names else None
            # Numbers only: a date, timestamp or bool feature's copy keeps its value.
            if kind is not None and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
                idx = copies.schema.get_field_index(col)
                jittered = jitter_numeric(
                    copies[col], config.numeric_jitter, bounds.get(col, (None, None)), rng
                )
                copies = copies.set_column(idx, col, jittered)

    flag = pa.field(AUGMENTED, pa.bool_())
    original = table.append_column(flag, pa.array(np.zeros(table.num_rows, dtype=bool)))
    copies = copies.append_column(flag, pa.array(np.ones(copies.num_rows, dtype=bool)))
    out = pa.concat_tables([original, copies])

    before = class_counts(labels, spec.classes)
    after = class_counts(out[spec.label].to_numpy(zero_copy_only=False), spec.classes)
    stats: dict[str, Any] = {
        "balance": config.balance,
        "seed": config.seed,
        "class_counts_before": before,
        "class_counts_after": after,
        "augmented_by_class": {c: after[c] - before[c] for c in spec.classes},
        "distinct_sources": int(np.unique(source).size),
        "max_copies_per_row": config.max_copies_per_row,
        "most_copies_of_one_row": int(np.bincount(source).max()) if source.size else 0,
    }
    if config.balance == "oversample":
        target = math.ceil(config.target_ratio * max(before.values(), default=0))
        short = {c: n for c, n in after.items() if 0 < before[c] and n < target}
        if short:  # held back by max_copies_per_row
            stats["short_of_target"] = {"target": target, "rows": short}
    if config.balance == "weights":
        stats["class_weights"] = class_weights(before)
    empty = [c for c, n in before.items() if n == 0]
    if empty:
        stats["classes_without_rows"] = empty
    return out, stats


def class_weights(counts: dict[str, int]) -> dict[str, float]:
    """Balanced class weights n / (k * n_c), as train applies them with balance: weights."""
    n, k = sum(counts.values()), len(counts)
    return {c: round(n / (k * m), 6) if m else 0.0 for c, m in counts.items()}


def numeric_bounds(schema: Any, columns: tuple[str, ...]) -> dict[str, tuple[Any, Any]]:
    """The schema's min/max of each numeric column (None where unbounded)."""
    return {c: (schema.columns[c].min, schema.columns[c].max) for c in columns}


def main() -> None:
    """Read the training split, balance and augment it, write data/train_aug/ and a summary."""
    p = pipeline_params()
    config, schema, partition_rows = p.augment, p.schema, p.io.partition_rows
    spec = feature_spec(schema, column_policies(schema, p.anonymize.policies))

    summary = StageSummary("augment")
    table = read_dataset(TRAIN_DIR)
    summary.rows_in = table.num_rows
    out, stats = augment_table(table, spec, numeric_bounds(schema, spec.numeric), config)
    parts = (
        (f"part-{i:05d}.parquet", chunk) for i, chunk in enumerate(split_rows(out, partition_rows))
    )
    summary.rows_out = write_dataset(OUT_DIR, parts)
    summary.added = out.num_rows - table.num_rows
    summary.fields = AugmentFields.model_validate(stats)
    summary.write()
    print(
        f"augment: {summary.rows_in} rows in, {summary.added} added ({config.balance}), "
        f"{summary.rows_out} out; classes {stats['class_counts_before']} -> "
        f"{stats['class_counts_after']}"
    )


if __name__ == "__main__":
    run_stage(main)
