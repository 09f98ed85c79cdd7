"""show: the chain of stages that produced an artefact, back to the raw batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from stages.lib.dvclock import lock_outputs, lock_stages, read_lock_digest, shown_params
from stages.lib.paths import METRICS_DIR
from stages.lineage.ledger import (
    default_target,
    producing_record,
    side_checks,
    stage_chain,
    stage_entry,
)
from stages.lineage.records import ingest_batches, read_records, run_summary


def _with_runs(stages: list[dict], records: list[dict]) -> list[dict]:
    for stage in stages:
        rec = producing_record(records, stage["stage"], stage["digest"])
        stage["run"] = run_summary(rec) if rec else None
    return stages


def describe(root: Path | str = ".", target: str | None = None) -> dict:
    """What produced `target`: its stage chain, each stage's producing run, the raw batches."""
    root = Path(root)
    lock, lock_sha256 = read_lock_digest(root)
    target = target or default_target(lock)
    if not lock or target is None:
        raise LookupError("dvc.lock has no stages: run the pipeline (dvc repro) first")
    chain = stage_chain(lock, target)
    if not chain:
        raise LookupError(
            f"{target}: no stage in dvc.lock produces it; outputs are: "
            + ", ".join(lock_outputs(lock))
        )
    records = read_records(root)
    _with_runs(chain, records)
    ingest_json = (METRICS_DIR / "ingest.json").as_posix()
    in_chain = any(out["path"] == ingest_json for stage in chain for out in stage["outputs"])
    batches = [b.model_dump() for b in ingest_batches(root)] if in_chain else []
    checks = [
        stage_entry(n, lock_stages(lock)[n], lock)
        for n in side_checks(lock, [s["stage"] for s in chain])
    ]
    return {
        "target": target,
        "dvc_lock_sha256": lock_sha256,
        "checks": _with_runs(checks, records),
        "raw_batches": batches,
        "sources": [i for s in chain for i in s["inputs"] if i.get("produced_by") is None],
        "stages": chain,
    }


def short(value: Any, width: int = 90) -> str:
    """A value as one line of at most `width` characters."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def _size(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def _made_by(run: dict | None) -> str:
    if not run:
        return "no run record matches this entry (record one: `pipeline lineage record`)"
    flow = run["prefect_flow_run_id"]
    return (
        f"run {run['run_id']} at {run['time']} ({run['trigger']}), commit "
        f"{(run['commit'] or '?')[:10]}{' dirty' if run['dirty'] else ''}"
        + (f", Prefect flow run {flow}" if flow else "")
    )


def _params_lines(params: dict) -> list[str]:
    lines = []
    for file, values in params.items():
        for section, value in values.items():
            leaves, summary = shown_params(section, value)
            if summary:
                lines.append(f"    params  {file}:{section}  ({summary}; --json lists them)")
            lines += [f"    params  {file}:{k} = {short(v)}" for k, v in leaves.items()]
    return lines


def _stage_lines(i: int, s: dict) -> list[str]:
    lines = [f"[{i}] {s['stage']}  made by {_made_by(s.get('run'))}", f"    cmd     {s['cmd']}"]
    lines += [f"    code    {c['path']}  {c['md5']}" for c in s["code"]]
    lines += _params_lines(s["params"])
    for d in s["inputs"]:
        by = f"  <- {d['produced_by']}" if d.get("produced_by") else "  (source)"
        lines.append(f"    in      {d['path']}  {d['md5']}{by}")
    for o in s["outputs"]:
        files = f", {o['nfiles']} files" if o.get("nfiles") is not None else ""
        lines.append(f"    out     {o['path']}  {o['md5']}  ({_size(o.get('size'))}{files})")
    return lines


def format_show(info: dict) -> str:
    """`describe` as text."""
    lines = [f"Lineage of {info['target']}  (dvc.lock sha256 {info['dvc_lock_sha256'][:12]})", ""]
    lines.append("Raw batches:")
    for b in info["raw_batches"] or []:
        lines.append(f"  {b['batch']}  {b['file']}  sha256 {b['sha256'][:12]}  {b['rows']} rows")
    if not info["raw_batches"]:
        lines.append("  (no batch list in the chain's metrics)")
    for i, s in enumerate(info["stages"] + info.get("checks", []), 1):
        lines.append("")
        if i == len(info["stages"]) + 1:
            lines += ["Checks on the chain's data (stages that read it without feeding it):", ""]
        lines += _stage_lines(i, s)
    return "\n".join(lines)
