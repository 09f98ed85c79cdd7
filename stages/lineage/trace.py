"""trace: where one record_id came from and where it went, without printing identifiers.

Reads only the lineage columns of the datasets dvc.lock lists (no source value, so no
identifier), and finds the runs whose model trained on the record through DVC's cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from stages.lib.dvclock import entry_hash, lock_stages, read_lock, under
from stages.lib.schema import (
    AUGMENTED,
    BATCH,
    LINEAGE_COLUMNS,
    REASON,
    REASON_KIND,
    RECORD_ID,
    SOURCE_FILE,
    SOURCE_ROW,
)
from stages.lineage.hashing import cached_object, recorded_files
from stages.lineage.ledger import is_code, producer_of
from stages.lineage.records import read_records, run_summary

# Lineage columns trace may read; source columns (identifiers among them) are never read.
TRACE_COLUMNS = (*LINEAGE_COLUMNS, REASON_KIND, REASON)


def _record_dataset_outs(lock: dict, root: Path) -> list[tuple[str, str]]:
    """(stage, directory output) pairs in DAG (lock) order: where rows may be."""
    return [
        (name, o["path"])
        for name, e in lock_stages(lock).items()
        for o in e.get("outs") or []
        if str(o.get("md5", "")).endswith(".dir") and (root / o["path"]).is_dir()
    ]


def _read_matches(file: Path | str, record_id: str) -> list[dict] | None:
    """Rows of one Parquet file with this record_id, lineage columns only (None: no record_id)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(file)
    except Exception:  # not a Parquet file (Data Docs, plots): no rows here
        return None
    names = set(schema.names)
    if RECORD_ID not in names:
        return None
    cols = [c for c in (*TRACE_COLUMNS, AUGMENTED) if c in names]
    table = pq.read_table(file, columns=cols, filters=[(RECORD_ID, "==", record_id)])
    return table.to_pylist()


def _split_name(out: str, rel: str) -> str | None:
    parts = [*out.split("/"), *rel.split("/")]
    for i, part in enumerate(parts[:-1]):
        if part == "split" and i + 1 < len(parts) - 1:
            return parts[i + 1]
    return None


def _occurrences(root: Path, lock: dict, record_id: str) -> list[dict]:
    """Every row holding the record, in every dataset dvc.lock lists (lineage columns only)."""
    found: list[dict] = []
    for stage, out in _record_dataset_outs(lock, root):
        base = root / out
        for file in sorted(base.rglob("*.parquet")):
            rows = [] if file.name.startswith(".") else _read_matches(file, record_id)
            rel = file.relative_to(base).as_posix()
            for row in rows or []:
                row.pop(RECORD_ID, None)
                found.append({"stage": stage, "dataset": out, "file": rel, **row})
    return found


def _sources(found: list[dict]) -> list[dict]:
    return _unique(
        [
            {
                "batch": r.get(BATCH),
                "source_file": r.get(SOURCE_FILE),
                "source_row": r.get(SOURCE_ROW),
            }
            for r in found
            if r["stage"] == "ingest" or r["dataset"] == "data/raw"
        ]
    )


def _quarantined(found: list[dict]) -> list[dict]:
    return [
        {
            "dataset": r["dataset"],
            "reason_kind": r.get(REASON_KIND),
            "reason": r.get(REASON),
            "batch": r.get(BATCH),
            "source_row": r.get(SOURCE_ROW),
        }
        for r in found
        if r.get(REASON) is not None or r.get(REASON_KIND) is not None
    ]


def trace(root: Path | str, record_id: str) -> dict:
    """Where a record came from (raw batch, source file, row), where it went (clean or quarantine
    and why, its split, its augmented copies) and which runs' models trained on it.
    Reads only the lineage columns: no source value (no identifier) is read or returned."""
    root = Path(root)
    lock = read_lock(root)
    found = _occurrences(root, lock, record_id)
    by_dataset: dict[str, int] = {}
    for r in found:
        by_dataset[r["dataset"]] = by_dataset.get(r["dataset"], 0) + 1
    return {
        "record_id": record_id,
        "found": bool(found),
        "sources": _sources(found),
        "datasets": by_dataset,
        "quarantined": _quarantined(found),
        "split": sorted({s for r in found if (s := _split_name(r["dataset"], r["file"]))}),
        "augmented_rows": sum(r.get(AUGMENTED) is True for r in found),
        "augmented_from_training_rows": sum(r.get(AUGMENTED) is False for r in found),
        "occurrences": found,
        "trained_on_by": _training_runs(root, lock, record_id),
    }


def _unique(items: list[dict]) -> list[dict]:
    out: list[dict] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _train_stage(lock: dict) -> str | None:
    for name, entry in lock_stages(lock).items():
        for out in entry.get("outs") or []:
            if out["path"].startswith("models/") or out["path"].endswith((".pt", ".pth")):
                return name
    return None


def _training_inputs(lock: dict, train: str) -> list[tuple[str, str, str]]:
    """The training data: the train stage's inputs that other stages produce, each as (its
    path, the producing stage, that stage's output holding it)."""
    # A dependency may be a sub-path of a directory output (train reads data/split/val, split
    # outputs data/split): DVC caches only the output's .dir manifest, never one for the
    # dependency's own hash, and run records keep output hashes only; so the data is found
    # through the output's manifest, narrowed to the dependency's files.
    return [
        (d["path"].rstrip("/"), *made)
        for d in lock_stages(lock)[train].get("deps") or []
        if not is_code(d["path"]) and (made := producer_of(lock, d["path"]))
    ]


def _verdict(root: Path, hashes: dict, record_id: str, memo: dict) -> tuple[bool | None, list]:
    """(whether the run's training data held the record, None: unknown; the inputs that did)."""
    verdict: bool | None = False
    via: list[str] = []
    for path, (oid, sub) in hashes.items():
        if oid and (oid, sub) not in memo:
            memo[oid, sub] = _in_cached_dataset(root, oid, record_id, sub)
        found = memo[oid, sub] if oid else None
        if found:
            verdict = True
            via.append(path)
        elif found is None and verdict is False:
            verdict = None
    return verdict, via


def _training_runs(root: Path, lock: dict, record_id: str) -> list[dict]:
    """The runs (current ledger and every run record) whose model trained on the record: the
    training inputs each run's ledger names are read back from DVC's cache by content hash."""
    train = _train_stage(lock)
    if train is None:
        return []
    inputs = _training_inputs(lock, train)
    runs = [("current dvc.lock", _input_hashes(lock_stages(lock), inputs, lock=True), {})]
    for rec in read_records(root):
        stages = rec.get("stages") or {}
        if train in stages:
            runs.append(
                (f"run {rec.get('run_id')}", _input_hashes(stages, inputs), run_summary(rec))
            )
    memo: dict[tuple[str, str], bool | None] = {}
    out = []
    for label, hashes, summary in runs:
        verdict, via = _verdict(root, hashes, record_id, memo)
        out.append({"run": label, "trained_on": verdict, "via": via, **summary})
    return out


def _input_hashes(
    stages: dict, inputs: list[tuple[str, str, str]], lock: bool = False
) -> dict[str, tuple[str | None, str]]:
    """{input path: (hash of the output holding it, the input's path inside that output)}, from
    dvc.lock stages (lock=True) or a run record's stages ({stage: {outs: {path: hash}}})."""
    hashes = {}
    for path, producer, out_path in inputs:
        outs = (stages.get(producer) or {}).get("outs") or ({} if not lock else [])
        if lock:
            oid = next((entry_hash(o) for o in outs if o["path"] == out_path), None)
        else:
            oid = outs.get(out_path)
        hashes[path] = (oid, path[len(out_path) :].strip("/"))
    return hashes


def _in_cached_dataset(root: Path, oid: str, record_id: str, sub: str = "") -> bool | None:
    """Whether a dataset version in DVC's cache holds the record (None: unknown). oid is an
    output's hash (a .dir manifest for a directory); sub narrows it to a path inside it."""
    if oid.endswith(".dir"):
        files = recorded_files(root, oid)
        if files is None:
            return None
        oids = [o for rel, o in files.items() if not sub or under(rel, sub)]
    else:
        oids = [oid]
    for file_oid in oids:
        path = cached_object(root, file_oid)
        if not os.path.exists(path):
            return None
        rows = _read_matches(path, record_id)
        if rows:
            return True
    return False


def format_trace(t: dict) -> str:
    """`trace` as text (no identifier, no source value)."""
    if not t["found"]:
        return "No dataset in dvc.lock holds this record_id (wrong id, or a different key?)."
    lines = ["Came from:"]
    for s in t["sources"]:
        lines.append(f"  batch {s['batch']}  file {s['source_file']}  row {s['source_row']}")
    lines.append("Went through:")
    for dataset, n in t["datasets"].items():
        lines.append(f"  {dataset}: {n} row(s)")
    if t["quarantined"]:
        for q in t["quarantined"]:
            lines.append(f"Quarantined in {q['dataset']}: {q['reason_kind']} ({q['reason']})")
    else:
        lines.append("Quarantined: no")
    lines.append(f"Split: {', '.join(t['split']) or 'none (not in a split dataset)'}")
    lines.append(f"Augmented rows made from it: {t['augmented_rows']}")
    lines.append("Models trained on it:")
    if not t["trained_on_by"]:
        lines.append("  (no train stage in dvc.lock)")
    for r in t["trained_on_by"]:
        verdict = {True: "yes", False: "no", None: "unknown (data not in the DVC cache)"}[
            r["trained_on"]
        ]
        if r.get("via"):
            verdict += f" (in {', '.join(r['via'])})"

        when = f" at {r['time']}, commit {(r.get('commit') or '?')[:10]}" if r.get("time") else ""
        lines.append(f"  {r['run']}{when}: {verdict}")
    return "\n".join(lines)
