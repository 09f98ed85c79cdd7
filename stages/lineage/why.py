"""why: for every stage that would rerun now, the input, params key or code file that changed.

Which stages and which of their deps, outs and params keys changed is `dvc status --json`'s
answer (DVC's public interface); this module makes it specific: params keys old -> new (from
dvc.lock and params.yaml), and directories down to the file (from DVC's .dir manifests, or for a
source directory, from ingest's batch list).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.lib.dvccli import dvc_json, stage_name
from stages.lib.dvclock import (
    dotted,
    dvc_yaml_stages,
    lock_stages,
    read_lock,
    read_yaml,
    under,
    yaml_paths,
)
from stages.lineage.hashing import file_changes, hash_path, recorded_files, sha256
from stages.lineage.ledger import downstream, is_code, params_diff, producer_of
from stages.lineage.records import ingest_batches
from stages.lineage.show import short


def pipeline_status(root: Path) -> dict[str, list]:
    """`dvc status --json` for the pipeline's stages, keyed by stage name (.dvc files of added
    data have no stage and never run); LookupError when DVC cannot answer."""
    status, why = dvc_json(root, "status")
    if status is None:
        raise LookupError(f"dvc status failed: {why}")
    names = set(dvc_yaml_stages(root))
    return {
        stage_name(key): changes
        for key, changes in status.items()
        if not key.endswith(".dvc") and stage_name(key) in names
    }


def _params_causes(root: Path, entry: dict, path: str, state: dict, now: dict) -> list[dict]:
    """One cause per changed params leaf: {key: 'modified' | 'new' | 'deleted'} made old -> new."""
    if path not in now:
        now[path] = read_yaml(root / path)
    old_all = (entry.get("params") or {}).get(path, {})
    out = []
    for key in state:
        old, new = dotted(old_all, key), dotted(now[path], key)
        diff = params_diff(old, new, key) or [
            {"key": key, "old": old, "new": new, "change": state[key]}
        ]
        out += [
            {
                "kind": "params",
                "path": path,
                "key": d["key"],
                "old": d["old"],
                "new": d["new"],
                "detail": f"{path}:{d['key']}: {short(d['old'], 60)} -> {short(d['new'], 60)}",
            }
            for d in diff
        ]
    return out


def _path_cause(root: Path, entry: dict, what: str, path: str, state: str) -> dict:
    """The cause for one changed dep or out, down to the file for a directory."""
    kind = "output" if what == "changed outs" else ("code" if is_code(path) else "input")
    cause: dict[str, Any] = {"kind": kind, "path": path, "change": state}
    listed = entry.get("outs" if kind == "output" else "deps") or []
    recorded = next((d for d in listed if d["path"] == path), None)
    detail = {
        "output": f"output {path} {state} on disk (tampered or deleted since the run)",
        "code": f"code file {path} {state}",
    }.get(kind, f"{path} {state}")
    if recorded and str(recorded.get("md5", "")).endswith(".dir") and state == "modified":
        _, files = hash_path(root, path)
        old = recorded_files(root, recorded["md5"])
        # DVC keeps no file list of a source directory (a dependency): ingest's batch list is it.
        cause["files"] = file_changes(old, files) if old else _batch_dir_changes(root, path)
        if cause["files"]:
            shown = ", ".join(f"{f['change']} {f['file']}" for f in cause["files"][:5])
            more = len(cause["files"]) - 5
            detail += f": {shown}" + (f" and {more} more" if more > 0 else "")
    cause["detail"] = detail
    return cause


def _batch_dir_changes(root: Path, path: str) -> list[dict]:
    """New, missing or altered batch files under a source directory, against metrics/ingest.json."""
    recorded = {b.file: b.sha256 for b in ingest_batches(root) if under(b.file, path)}
    base = root / path
    current = {
        p.relative_to(root).as_posix(): p
        for p in (sorted(base.rglob("*")) if base.is_dir() else [])
        if p.is_file()
        and not p.name.startswith(".")
        and not p.name.endswith((".dvc", ".md", ".txt"))
    }
    changes = [{"file": f, "change": "missing"} for f in recorded if f not in current]
    for f, p in current.items():
        if f not in recorded:
            changes.append({"file": f, "change": "new batch"})
        elif sha256(p) != recorded[f]:
            changes.append({"file": f, "change": "altered"})
    return sorted(changes, key=lambda c: c["file"])


def _stage_causes(root: Path, entry: dict, changes: list, params_now: dict) -> list[dict]:
    """The causes of one stage's `dvc status` entry."""
    if not entry:
        return [{"kind": "new stage", "detail": "not in dvc.lock: it has never run"}]
    causes: list[dict] = []
    for change in changes:
        if isinstance(change, str):  # "changed command", "always changed"
            causes.append({"kind": change.replace("changed ", ""), "detail": change})
            continue
        for what, paths in change.items():
            for path, state in paths.items():
                if isinstance(state, dict):  # a params file
                    causes += _params_causes(root, entry, path, state, params_now)
                else:
                    causes.append(_path_cause(root, entry, what, path, state))
    return causes


def why(root: Path | str = ".") -> list[dict]:
    """Each stage that would rerun now, with its causes (from `dvc status --json`, made
    specific: params keys old -> new, code files, inputs down to the file); then the stages
    downstream of them."""
    root = Path(root)
    lock = read_lock(root)
    status = pipeline_status(root)
    params_now: dict[str, dict] = {}
    result = [
        {"stage": s, "causes": _stage_causes(root, lock_stages(lock).get(s) or {}, c, params_now)}
        for s, c in status.items()
    ]
    graph = {
        name: {
            made[0]
            for dep in yaml_paths(stage.get("deps"))
            if (made := producer_of(lock, dep)) and made[0] != name
        }
        for name, stage in dvc_yaml_stages(root).items()
    }
    direct = [r["stage"] for r in result]
    after = downstream(graph, direct)
    for stage in after:
        ups = sorted(u for u in graph.get(stage, ()) if u in direct or u in after)
        detail = f"reruns if {', '.join(ups)} changes its outputs"
        result.append({"stage": stage, "causes": [{"kind": "upstream", "detail": detail}]})
    return result


def format_why(result: list[dict]) -> str:
    """`why` as text."""
    if not result:
        return "Nothing would rerun: every stage matches dvc.lock."
    lines = []
    for r in result:
        lines.append(f"{r['stage']} would rerun:")
        for c in r["causes"]:
            lines.append(f"  {c['kind']:8} {c['detail']}")
    return "\n".join(lines)
