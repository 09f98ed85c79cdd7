"""verify: re-hash what dvc.lock lists (and the raw batches) and name every missing or altered
file. Hashes are DVC's documented ones, computed with hashlib (see hashing.py).

Why not `dvc data status --granular --json`: it answers for DVC-tracked outputs only (not
git-tracked sources, params or the raw batches' SHA-256), and it trusts DVC's state database
(a file whose size, inode and mtime are unchanged keeps its remembered hash), so an edit made
in place with its mtime put back goes unseen. An audit reads every byte again; `why`, which
asks what DVC itself would rerun, is built on `dvc status --json` instead.
"""

from __future__ import annotations

import time
from pathlib import Path

from stages.lib.dvclock import (
    dvc_yaml_stages,
    hash_name,
    lock_stages,
    params_value,
    read_lock,
    read_yaml,
    under,
)
from stages.lib.summaries import IngestBatch
from stages.lineage.hashing import file_changes, hash_path, recorded_files, sha256
from stages.lineage.ledger import is_code, params_diff, producer_of
from stages.lineage.records import ingest_batches
from stages.lineage.show import short


def _lock_items(entry: dict) -> list[tuple[str, dict]]:
    """(kind, dep/out entry) of a stage: outputs first, then code and inputs."""
    items = [("output", o) for o in entry.get("outs") or []]
    return items + [("code" if is_code(d["path"]) else "input", d) for d in entry.get("deps") or []]


def _file_problem(root: Path, stage: str, kind: str, item: dict, full: bool) -> dict | None:
    """The mismatch of one recorded path with the disk, or None when it matches."""
    now, files = hash_path(root, item["path"], full)
    if now == item["md5"]:
        return None
    problem = {"stage": stage, "kind": kind, "path": item["path"]}
    if now is None:
        problem["change"] = "missing"
        return problem
    problem["change"] = "altered"
    if item["md5"].endswith(".dir"):
        old = recorded_files(root, item["md5"])
        problem["files"] = file_changes(old, files)
        if old is None:
            problem["note"] = "the recorded file list is not in the DVC cache"
    return problem


def _params_problems(root: Path, stage: str, entry: dict, now: dict[str, dict]) -> list[dict]:
    """Params sections whose recorded values differ from the params file's, with each leaf."""
    problems = []
    for file, values in (entry.get("params") or {}).items():
        if file not in now:
            now[file] = read_yaml(root / file)
        for section, value in values.items():
            # dvc.yaml may list a dotted sub-key (anonymize.policies): dvc.lock keys it by that
            # dotted name, so look it up as a path into the nested params.
            diff = params_diff(value, params_value(now[file], section), section)
            if diff:
                problems.append(
                    {
                        "stage": stage,
                        "kind": "params",
                        "path": f"{file}:{section}",
                        "change": "altered",
                        "params": diff,
                    }
                )
    return problems


def _batch_problem(root: Path, batch: IngestBatch, problems: list[dict]) -> dict | None:
    """A raw batch that is missing or whose SHA-256 differs from metrics/ingest.json."""
    rel = batch.file
    path = root / rel
    if not path.exists():
        if any(p["path"] == rel for p in problems):
            return None  # already named as a missing source
        return {"stage": "ingest", "kind": "raw batch", "path": rel, "change": "missing"}
    if sha256(path) == batch.sha256:
        return None
    return {
        "stage": "ingest",
        "kind": "raw batch",
        "path": rel,
        "change": "altered",
        "note": f"SHA-256 differs from batch {batch.batch} in metrics/ingest.json",
    }


def _check_stages(root: Path, lock: dict, full: bool) -> tuple[list[dict], int, set[str]]:
    """(problems, entries checked, paths hashed) over every stage of dvc.lock."""
    problems: list[dict] = []
    checked = 0
    seen: set[str] = set()
    params_now: dict[str, dict] = {}
    for stage, entry in lock_stages(lock).items():
        for kind, item in _lock_items(entry):
            if item["path"] in seen or hash_name(item) != "md5":
                continue
            seen.add(item["path"])
            checked += 1
            if kind == "input" and producer_of(lock, item["path"]):
                continue  # an upstream output: checked as that stage's output
            problem = _file_problem(root, stage, "source" if kind == "input" else kind, item, full)
            problems += [problem] if problem else []
        found = _params_problems(root, stage, entry, params_now)
        checked += sum(len(v) for v in (entry.get("params") or {}).values())
        problems += found
    return problems, checked, seen


def verify(root: Path | str = ".", full: bool = False) -> dict:
    """Re-hash every output and dependency dvc.lock lists (and the raw batch files, whose SHA-256
    ingest recorded) and compare; every missing or altered path, named down to the file."""
    root = Path(root)
    started = time.perf_counter()
    lock = read_lock(root)
    if not lock_stages(lock):
        raise LookupError("dvc.lock has no stages: run the pipeline (dvc repro) first")
    problems, checked, seen = _check_stages(root, lock, full)
    # The raw batch files: ingest recorded their SHA-256; where they were hashed above (MD5
    # against dvc.lock), their SHA-256 is re-checked only in --full mode.
    batches = ingest_batches(root)
    for b in batches:
        if not full and any(under(b.file, s) for s in seen):
            continue  # hashed above (a dependency, or inside one) against dvc.lock
        checked += 1
        problem = _batch_problem(root, b, problems)
        problems += [problem] if problem else []
    return {
        "ok": not problems,
        "mode": "MD5 and raw batches' SHA-256" if full else "MD5 against dvc.lock",
        "checked": checked,
        "raw_batches": len(batches),
        "problems": problems,
        "stages_not_in_lock": [s for s in dvc_yaml_stages(root) if s not in lock_stages(lock)],
        "seconds": round(time.perf_counter() - started, 3),
    }


def format_verify(result: dict) -> str:
    """`verify` as text."""
    lines = []
    for p in result["problems"]:
        lines.append(f"{p['change'].upper():8} {p['kind']:9} {p['path']}  (stage {p['stage']})")
        for f in p.get("files") or []:
            lines.append(f"         {f['change']:8} {p['path'].rstrip('/')}/{f['file']}")
        for d in p.get("params") or []:
            lines.append(f"         {d['key']}: {short(d['old'], 40)} -> {short(d['new'], 40)}")
        if p.get("note"):
            lines.append(f"         {p['note']}")
    for s in result["stages_not_in_lock"]:
        lines.append(f"NOTE     stage {s} is in dvc.yaml but has never run (not in dvc.lock)")
    verdict = (
        "OK: disk matches dvc.lock"
        if result["ok"]
        else (f"FAILED: {len(result['problems'])} mismatch(es) with dvc.lock")
    )
    lines.append(
        f"{verdict}; {result['checked']} entries checked ({result['mode']}) "
        f"in {result['seconds']:.2f} s"
    )
    return "\n".join(lines)
