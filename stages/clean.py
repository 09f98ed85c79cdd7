"""clean: typed, normalised, deduplicated records; each rejected row goes to quarantine, with why.

Rows in = rows out + rows quarantined + duplicates removed, checked before anything is written.

The pure functions live in stages/lib: normalise.py (text), coerce.py (types, one function per
type), clean_rows.py (the map and dedup steps, the replace rule); here: files, caches, the summary.
"""

from __future__ import annotations

import json
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
from stages.lib.coerce import CleanConfig
from stages.lib.dedup import DedupIndex
from stages.lib.errors import run_stage
from stages.lib.io import AtomicDir, file_hash, partition_names, write_parquet
from stages.lib.params import ParamsError, load_params, section
from stages.lib.partitions import (
    RESULT_FILE,
    CacheDir,
    PartitionTask,
    TaskResult,
    code_digest,
    digest,
    run_tasks,
)
from stages.lib.paths import CLEAN_DIR as OUT_DIR
from stages.lib.paths import RAW_DIR
from stages.lib.schema import REASON, Schema, load_schema
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
    mapped: MappedPartition, index: DedupIndex, out_dir: Path, replace: bool = False
) -> dict[str, Any]:
    """Dedup one mapped partition; clean, quarantine and kept-row hashes go to out_dir."""
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
    out: AtomicDir, quarantine: AtomicDir, entries: list[tuple[str, Path]], replace: bool
) -> int:
    """Put each partition's clean and quarantine files in place; with replace, rows a later
    partition updated move from clean to quarantine. Returns the number of rows replaced."""
    masks: list[np.ndarray | None] = [None] * len(entries)
    if replace:
        kept = []
        for _, entry in entries:
            with np.load(entry / "kept.npz") as z:
                kept.append(z["record"])
        masks = list(superseded(kept))
    replaced = 0
    for (name, entry), mask in zip(entries, masks, strict=True):
        if mask is None or not mask.any():
            out.link(name, entry / "clean.parquet")
            quarantine.link(name, entry / "quarantine.parquet")
            continue
        clean = pq.read_table(entry / "clean.parquet")
        q = pq.read_table(entry / "quarantine.parquet")
        out.write_table(name, clean.filter(pa.array(~mask)))
        quarantine.write_table(name, pa.concat_tables([q, replaced_rows(clean, mask, q)]))
        replaced += int(mask.sum())
    return replaced


def tally(summary: StageSummary, result: dict[str, Any]) -> None:
    """Add one partition's dedup result to the stage's row accounting."""
    summary.rows_in += result["rows_in"]
    summary.rows_out += result["rows_out"]
    for kind, n in result["reasons"].items():
        if kind in DUPLICATE_KINDS:
            summary.duplicates += n
            summary.extra.setdefault("duplicates_by_kind", Counter())[kind] += n
        else:
            summary.quarantined[kind] += n


def warn_unlabelled(summary: StageSummary, counts: dict[str, list[int]], label: str) -> None:
    """A loud warning (and metrics) for each batch none of whose rows has a label."""
    batches = unlabelled_batches(counts)
    summary.extra["batches_without_labels"] = batches
    for batch in batches:
        print(
            f"clean: WARNING: batch {batch}: all {counts[batch][0]:,} rows have no '{label}' "
            "(the label) and were quarantined; was the label column left empty in the export?",
            file=sys.stderr,
        )


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
    params = load_params()
    cfg = section(CleanConfig, "clean", params)
    schema = load_schema(params)
    replace = replaces(cfg, schema)
    summary = StageSummary("clean")
    code = code_digest(__file__)
    files = dict(partition_names(RAW_DIR))
    tasks = [
        PartitionTask(
            name,
            digest(file_hash(file), params["schema"], params["clean"], code),
            map_file,
            (file, schema, cfg),
        )
        for name, file in files.items()
    ]
    index = DedupIndex()
    nulled: Counter = Counter()
    by_batch: dict[str, list[int]] = {}
    dedup_cache, chain, chain_keys = CacheDir("clean-dedup"), digest("dedup", code), []
    map_cache = CacheDir("clean-map")
    entries: list[tuple[str, Path]] = []
    reused = 0
    with AtomicDir(OUT_DIR) as out, AtomicDir(QUARANTINE_DIR) as quarantine:
        for done in run_tasks("clean", tasks, map_cache):
            name = done.task.name
            chain = digest(chain, done.task.key)
            chain_keys.append(chain)
            entry = dedup_cache.get(chain)
            if entry is None:
                staged = dedup_cache.staging(chain)
                mapped = load_mapped(files[name], done)
                result = dedup_stored(mapped, index, staged, replace)
                entry = dedup_cache.put(chain, staged, result)
            else:
                reused += 1
                with np.load(entry / "kept.npz") as kept:
                    index.upsert(kept["record"], kept["content"])
            entries.append((name, entry))
            tally(summary, json.loads((entry / RESULT_FILE).read_text()))
            nulled.update(done.result["nulled"])
            for batch, (rows, missing) in done.result["labels_missing"].items():
                counts = by_batch.setdefault(batch, [0, 0])
                counts[0], counts[1] = counts[0] + rows, counts[1] + missing
        replaced = link_outputs(out, quarantine, entries, replace)
        summary.rows_out -= replaced
        summary.duplicates += replaced
        if replace:
            summary.extra.setdefault("duplicates_by_kind", Counter())[REPLACED] += replaced
        summary.extra["rows_replaced"] = replaced
        summary.extra["values_nulled"] = dict(sorted(nulled.items()))
        warn_unlabelled(summary, by_batch, schema.label)
        summary.check()  # before the outputs are committed: a leak of rows must not land
    map_cache.keep_only(t.key for t in tasks)
    dedup_cache.keep_only(chain_keys)
    print(f"clean: deduplication reused for {reused} of {len(tasks)} partition(s)", file=sys.stderr)
    data = summary.write()
    print(
        f"clean: {data['rows_in']:,} rows in -> {data['rows_out']:,} clean, "
        f"{data['rows_quarantined']:,} quarantined, {data['duplicates']:,} duplicates removed"
        + (f" ({replaced:,} replaced by a later version)" if replaced else "")
    )


if __name__ == "__main__":
    run_stage(main)
