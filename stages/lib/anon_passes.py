"""The anonymize stage's passes over partitions as stored tasks: pass 1 (policies, scrubbing, the
identifier index, class hashes), pass 2 (known names scrubbed, the independent scan), and the
release of each partition (k-suppression to quarantine). Each reuses what an earlier run stored."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib import keys
from stages.lib.anon_index import (
    IdentifierIndex,
    RecordingIndex,
    RecordingSet,
    array_digest,
    index_part,
    leak_columns,
    load_index,
    relevant,
    save_index,
    scan_identifier_leaks,
)
from stages.lib.anon_policies import apply_policies, scrub_names
from stages.lib.anon_risk import quasi_frame, quasi_hashes, sizes_of
from stages.lib.anon_scan import (
    gx_scan,
    identifier_values,
    mislabelled_columns,
    scan_checksummed,
    scan_values_and_numbers,
    string_columns,
)
from stages.lib.features import Policy
from stages.lib.io import AtomicDir, file_hash, write_parquet
from stages.lib.leakscan import ValueScanner
from stages.lib.partitions import Link, Partition, PartitionRun, TaskResult
from stages.lib.reasons import Reason, kind_text, reason_messages, reasons
from stages.lib.schema import REASON, RECORD_ID, Schema
from stages.lib.scrub import as_string_array, known_name_spans
from stages.lib.summary import StageSummary


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas()


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)


def profile_file(
    path: Path,
    schema: Schema,
    policies: dict[str, Policy],
    key: bytes,
    min_digit_run: int | None,
    out_dir: Path,
) -> dict[str, Any]:
    """Task, pass 1 over one clean partition, needing nothing global: policies applied and text
    scrubbed (policy.parquet), its identifier index (index.npz), its rows' class hashes
    (quasi.npy) and the name candidates of its text (names.npy)."""
    df = _to_pandas(pq.read_table(path))
    anon, counts = apply_policies(df, schema, policies, key, min_digit_run)
    write_parquet(_to_arrow(anon), out_dir / "policy.parquet")
    quasi = quasi_frame(df, schema, policies)
    np.save(out_dir / "quasi.npy", quasi_hashes(quasi))
    index = index_part(df, schema, policies)
    save_index(index, out_dir / "index.npz")
    suspects = mislabelled_columns(anon, schema, policies, index)  # the values as released
    names = RecordingSet()
    for col in schema.with_role("text"):
        if col in anon.columns:
            known_name_spans(as_string_array(anon[col]), names)
    np.save(out_dir / "names.npy", names.hashes())
    return {
        "rows": len(df),
        "counts": counts,
        "quasi_identifiers": [c for c in quasi.columns if c != RECORD_ID],
        "suspects": suspects,
    }


def scan_file(
    policy_file: Path,
    index_file: Path,
    clean_file: Path,
    schema: Schema,
    policies: dict[str, Policy],
    min_digit_run: int | None,
    out_dir: Path,
) -> dict[str, Any]:
    """Task, pass 2 over one partition: the dataset's known names scrubbed from its text
    (released.parquet, before k-suppression) and the independent scan of the result, with the
    candidate hashes the identifier-value scan looked up (leak.npz)."""
    anon = _to_pandas(pq.read_table(policy_file))
    index = load_index(index_file)
    anon, named = scrub_names(anon, schema, index.names)
    found = {col: {"KNOWN_PERSON": n} for col, n in named.items()}
    write_parquet(_to_arrow(anon), out_dir / "released.parquet")
    scan_cols = string_columns(anon)
    pattern_cols = [c for c in scan_cols if policies[c].action != "pseudonymize"]
    pseudonymized = {c for c in scan_cols if policies[c].action == "pseudonymize"}
    findings = gx_scan(pattern_cols).run(anon)
    findings += scan_checksummed(anon, pattern_cols)
    recorder = RecordingIndex(index)
    findings += scan_identifier_leaks(anon, scan_cols, recorder, pseudonymized)
    leak_cols = leak_columns(schema, policies)
    clean = pq.read_table(clean_file, columns=leak_cols)
    findings += scan_values_and_numbers(
        anon, pattern_cols, ValueScanner(identifier_values(clean, schema, leak_cols)), min_digit_run
    )
    np.savez(out_dir / "leak.npz", values=recorder.values.hashes(), phones=recorder.phones.hashes())
    # What of the global index this scan could see: a later run reuses it while that is unchanged.
    (out_dir / INDEX_SEEN).write_text(json.dumps(index_seen(index, out_dir)))
    return {"counts": found, "findings": findings}


INDEX_SEEN = "index_seen.json"


def index_seen(index: IdentifierIndex, entry: Path) -> list[str]:
    """Digests of the global identifier index restricted to what a stored scan looked up."""
    with np.load(entry / "leak.npz") as leak:
        return [relevant(index.values, leak["values"]), relevant(index.phones, leak["phones"])]


def _merge_counts(into: dict[str, Counter], counts: dict[str, dict[str, int]]) -> None:
    for col, c in counts.items():
        into.setdefault(col, Counter()).update(c)


def profile_pass(
    files: dict[str, Path],
    schema: Schema,
    policies: dict[str, Policy],
    key: bytes,
    min_digit_run: int | None,
) -> tuple[PartitionRun, list[TaskResult]]:
    """Pass 1 as tasks (profile_file per partition): the run (to prune) and its results."""
    work = PartitionRun(
        "anonymize",
        schema,
        policies,
        min_digit_run,
        keys.key_id(key),
        step="profile",
        label="anonymize (pass 1)",
    )
    partitions = [
        Partition(name, (file, schema, policies, key, min_digit_run), file_hash(file))
        for name, file in files.items()
    ]
    return work, list(work.run(profile_file, partitions))


def class_sizes_of(profiled: list[TaskResult]) -> tuple[list[np.ndarray], np.ndarray]:
    """Each partition's per-row class hashes, and each row's class size over the whole dataset."""
    classes = [np.load(d.file("quasi.npy")) for d in profiled]
    all_classes = np.concatenate(classes) if classes else np.empty(0, np.uint64)
    return classes, sizes_of(all_classes)


def scan_pass(
    profiled: list[TaskResult],
    files: dict[str, Path],
    schema: Schema,
    policies: dict[str, Policy],
    min_digit_run: int | None,
) -> tuple[PartitionRun, list[TaskResult]]:
    """Pass 2 as tasks (scan_file per partition) against the global identifier index.

    A stored result is reused while the global sets, restricted to the candidates it looked up,
    are unchanged, so a new batch does not redo earlier partitions unless it concerns them."""
    # The global identifier index, once on disk for the worker processes.
    index = IdentifierIndex.merge(load_index(d.file("index.npz")) for d in profiled)
    work = PartitionRun("anonymize", step="scan", label="anonymize (pass 2)")
    index_file = work.cache.path / f".index-{os.getpid()}.npz"
    save_index(index, index_file)
    partitions, stale = [], []
    for d in profiled:
        names_seen = relevant(index.names, np.load(d.file("names.npy")))
        parts = (d.task.key, names_seen, index.max_tokens)
        entry = work.lookup(parts)
        if entry is not None:
            if json.loads((entry / INDEX_SEEN).read_text()) != index_seen(index, entry):
                stale.append(parts)  # a new identifier value may occur in it: scan again
        args = (
            d.file("policy.parquet"),
            index_file,
            files[d.task.name],
            schema,
            policies,
            min_digit_run,
        )
        partitions.append(Partition(d.task.name, args, parts))
    for parts in stale:
        work.forget(parts)
    del index  # the workers load it from index_file: one copy fewer while they run
    try:
        scanned = list(work.run(scan_file, partitions))
    finally:
        index_file.unlink(missing_ok=True)
    return work, scanned


def release_file(
    released_file: Path, row_sizes: np.ndarray, k: int | None, out_dir: Path
) -> dict[str, Any]:
    """One partition's released rows (kept.parquet) and its rows of classes smaller than k with
    their reason (dropped.parquet)."""
    small = row_sizes < k if k else np.zeros(len(row_sizes), dtype=bool)
    released = pq.read_table(released_file)
    mask = pa.array(small)
    write_parquet(released.filter(pc.invert(mask)), out_dir / "kept.parquet")
    dropped = released.filter(mask).to_pandas()
    detail = pa.array([f"equivalence class of {int(c)} < k={k}" for c in row_sizes[small]])
    why = reasons(np.ones(len(detail), dtype=bool), Reason.K_ANONYMITY, value=detail)
    dropped[REASON] = reason_messages(why).to_pylist()
    write_parquet(_to_arrow(dropped), out_dir / "dropped.parquet")
    return {"kept": int(len(row_sizes) - small.sum())}


@dataclass
class Released:
    """What releasing the partitions kept and found: for the summary and the cache's pruning."""

    run: PartitionRun
    findings: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)
    kept_classes: list[np.ndarray] = field(default_factory=list)


def release(
    passes: tuple[list[TaskResult], list[TaskResult]],
    classes: list[np.ndarray],
    sizes: np.ndarray,
    k: int | None,
    dirs: tuple[AtomicDir, AtomicDir],
    summary: StageSummary,
) -> Released:
    """In order, each partition's kept rows to the output and suppressed rows to quarantine
    (dirs), its rows counted in `summary`; the scan's findings and entity counts gathered."""
    (profiled, scanned), (out, quarantine) = passes, dirs
    done = Released(PartitionRun("anonymize", k, step="final"))
    links = [Link(out, "{name}", "kept.parquet"), Link(quarantine, "{name}", "dropped.parquet")]
    offset = 0
    for p, s, part_classes in zip(profiled, scanned, classes, strict=True):
        n = p.result["rows"]
        row_sizes = sizes[offset : offset + n]
        offset += n
        small = row_sizes < k if k else np.zeros(n, dtype=bool)
        # Keyed by the scan's result and the sizes of the classes it suppresses (k is a key part).
        parts = (s.task.key, array_digest(np.flatnonzero(small), row_sizes[small]))
        args = (s.file("released.parquet"), row_sizes, k)
        done.run.stored(p.task.name, parts, release_file, args, links)
        done.kept_classes.append(part_classes[~small])
        summary.rows_in += n
        summary.rows_out += n - int(small.sum())
        summary.quarantined[kind_text(Reason.K_ANONYMITY)] += int(small.sum())
        _merge_counts(done.counts, p.result["counts"])
        _merge_counts(done.counts, s.result["counts"])
        done.findings += s.result["findings"]
    return done
