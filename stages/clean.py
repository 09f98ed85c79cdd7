"""clean: typed, normalised, deduplicated records; each rejected row goes to quarantine, with why.

Rows in = rows out + rows quarantined + duplicates removed, checked before anything is written.

The pure functions live in stages/lib: normalise.py (text), coerce.py (types, one function per
type), clean_rows.py (the map and dedup steps, the replace rule); here: files, caches, the summary.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.lib.clean_rows import (
    DUPLICATE_KINDS,
    REPLACED,
    MappedPartition,
    dedup_partition,
    map_partition,
    quarantine_arrow,
    replaced_rows,
    superseded,
    unlabelled_batches,
)
from stages.lib.config import CleanConfig, pipeline_params
from stages.lib.dedup import DedupIndex
from stages.lib.errors import run_stage
from stages.lib.io import AtomicDir, file_hash, partition_names, write_parquet
from stages.lib.params import ParamsError
from stages.lib.partitions import Link, Partition, PartitionRun, TaskResult
from stages.lib.paths import CLEAN_DIR as OUT_DIR
from stages.lib.paths import RAW_DIR
from stages.lib.progress import note
from stages.lib.schema import REASON, Schema
from stages.lib.summaries import CleanFields
from stages.lib.summary import StageSummary

QUARANTINE_DIR = Path("data/quarantine")
# The map step's stored columns beside the typed ones.
MAPPED_EXTRA = (REASON, "_record_hash", "_content_hash")


def map_file(path: Path, schema: Schema, cfg: CleanConfig, out_dir: Path) -> dict[str, Any]:
    """Task: map one raw partition file; typed rows, reasons, hashes to out_dir/mapped.parquet."""
    mapped = map_partition(pq.read_table(path), schema, cfg)
    table = mapped.typed.append_column(REASON, mapped.reason)
    table = table.append_column("_record_hash", pa.array(mapped.record_hash, pa.uint64()))
    table = table.append_column("_content_hash", pa.array(mapped.content_hash, pa.uint64()))
    write_parquet(table, out_dir / "mapped.parquet")
    return {"nulled": dict(mapped.nulled), "labels_missing": mapped.labels_missing}


def load_mapped(raw_file: Path, done: TaskResult) -> MappedPartition:
    """A map task's stored output, with its raw partition, as the dedup step's input."""
    table = pq.read_table(done.file("mapped.parquet"))
    return MappedPartition(
        raw=pq.read_table(raw_file),
        typed=table.drop_columns(list(MAPPED_EXTRA)),
        reason=table.column(REASON).combine_chunks(),
        record_hash=table.column("_record_hash").to_numpy(),
        content_hash=table.column("_content_hash").to_numpy(),
        nulled=Counter(done.result["nulled"]),
    )


def dedup_stored(
    raw_file: Path, mapped_done: TaskResult, index: DedupIndex, replace: bool, out_dir: Path
) -> dict[str, Any]:
    """Dedup one mapped partition; clean, quarantine and kept-row hashes go to out_dir."""
    mapped = load_mapped(raw_file, mapped_done)
    result = dedup_partition(mapped, index, replace)
    write_parquet(result.clean_table, out_dir / "clean.parquet")
    write_parquet(quarantine_arrow(result.quarantine_table), out_dir / "quarantine.parquet")
    keep = result.kept
    np.savez(
        out_dir / "kept.npz", record=mapped.record_hash[keep], content=mapped.content_hash[keep]
    )
    return {
        "rows_in": mapped.raw.num_rows,
        "rows_out": result.clean_table.num_rows,
        "reasons": dict(result.reasons),
        "nulled": dict(result.nulled),
    }


def link_outputs(
    out: AtomicDir, quarantine: AtomicDir, entries: list[TaskResult], replace: bool
) -> int:
    """Put each partition's clean and quarantine files in place; with replace, rows a later
    partition updated move from clean to quarantine. Returns the number of rows replaced."""
    masks: list[np.ndarray | None] = [None] * len(entries)
    if replace:
        kept = []
        for done in entries:
            with np.load(done.file("kept.npz")) as z:
                kept.append(z["record"])
        masks = list(superseded(kept))
    replaced = 0
    links = [Link(out, "{name}", "clean.parquet"), Link(quarantine, "{name}", "quarantine.parquet")]
    for done, mask in zip(entries, masks, strict=True):
        if mask is None or not mask.any():
            PartitionRun.link(done, links)
            continue
        name = done.task.name
        clean = pq.read_table(done.file("clean.parquet"))
        q = pq.read_table(done.file("quarantine.parquet"))
        out.write_table(name, clean.filter(pa.array(~mask)))
        quarantine.write_table(name, pa.concat_tables([q, replaced_rows(clean, mask, q)]))
        replaced += int(mask.sum())
    return replaced


def tally(summary: StageSummary, result: dict[str, Any], by_kind: Counter) -> None:
    """Add one partition's dedup result to the stage's row accounting (`by_kind`: duplicates
    by kind)."""
    summary.rows_in += result["rows_in"]
    summary.rows_out += result["rows_out"]
    for kind, n in result["reasons"].items():
        if kind in DUPLICATE_KINDS:
            summary.duplicates += n
            by_kind[kind] += n
        else:
            summary.quarantined[kind] += n


def warn_unlabelled(counts: dict[str, list[int]], label: str) -> list[str]:
    """A loud warning for each batch none of whose rows has a label; those batches (metrics)."""
    batches = unlabelled_batches(counts)
    for batch in batches:
        print(
            f"clean: WARNING: batch {batch}: all {counts[batch][0]:,} rows have no '{label}' "
            "(the label) and were quarantined; was the label column left empty in the export?",
            file=sys.stderr,
        )
    return batches


def replaces(cfg: CleanConfig, schema: Schema) -> bool:
    """Whether a later row with a kept key replaces it; refuses replace without a key column."""
    if cfg.on_existing_key == "replace" and not schema.with_role("key"):
        raise ParamsError(
            "clean.on_existing_key: replace needs a key column (role: key) to tell an update "
            "from a new record; without one a row's identity is its content. Set it to "
            "quarantine or give the schema a key column."
        )
    return cfg.on_existing_key == "replace"


def main() -> None:
    """Clean every raw partition into data/clean and data/quarantine.

    The map step runs per partition as tasks (worker processes, reused when the raw partition,
    params and code are unchanged). Deduplication runs in order against a compact index; its
    result for a partition is reused when that partition and every one before it are unchanged
    (a chained key), so a new batch after the earlier ones costs only its own rows.
    """
    p = pipeline_params()
    cfg, schema = p.clean, p.schema
    replace = replaces(cfg, schema)
    summary = StageSummary("clean")
    files = dict(partition_names(RAW_DIR))
    partitions = [Partition(n, (f, schema, cfg), file_hash(f)) for n, f in files.items()]
    index = DedupIndex()
    nulled: Counter = Counter()
    by_kind: Counter = Counter()  # duplicates by kind
    by_batch: dict[str, list[int]] = {}
    maps = PartitionRun("clean", schema, cfg, step="map")
    dedup = PartitionRun("clean", step="dedup")
    chain = ""  # the previous partition's dedup key
    entries: list[TaskResult] = []
    reused = 0
    with maps, dedup, AtomicDir(OUT_DIR) as out, AtomicDir(QUARANTINE_DIR) as quarantine:
        for done in maps.run(map_file, partitions):
            name = done.task.name
            # A chained key: a partition's dedup result depends on every partition before it.
            args = (files[name], done, index, replace)
            deduped = dedup.stored(name, (chain, done.task.key), dedup_stored, args)
            chain = deduped.task.key
            if deduped.reused:
                reused += 1
                with np.load(deduped.file("kept.npz")) as kept:
                    index.upsert(kept["record"], kept["content"])
            entries.append(deduped)
            tally(summary, deduped.result, by_kind)
            nulled.update(done.result["nulled"])
            for batch, (rows, missing) in done.result["labels_missing"].items():
                counts = by_batch.setdefault(batch, [0, 0])
                counts[0], counts[1] = counts[0] + rows, counts[1] + missing
        replaced = link_outputs(out, quarantine, entries, replace)
        summary.rows_out -= replaced
        summary.duplicates += replaced
        if replace:
            by_kind[REPLACED] += replaced
        summary.fields = CleanFields(
            duplicates_by_kind=dict(by_kind) if by_kind else None,  # written only when any
            rows_replaced=replaced,
            values_nulled=dict(sorted(nulled.items())),
            batches_without_labels=warn_unlabelled(by_batch, schema.label),
        )
        summary.check()  # before the outputs are committed: a leak of rows must not land
    note(f"clean: deduplication reused for {reused} of {len(partitions)} partition(s)")
    data = summary.write()
    print(
        f"clean: {data.rows_in:,} rows in -> {data.rows_out:,} clean, "
        f"{data.rows_quarantined:,} quarantined, {data.duplicates:,} duplicates removed"
        + (f" ({replaced:,} replaced by a later version)" if replaced else "")
    )


if __name__ == "__main__":
    run_stage(main)
