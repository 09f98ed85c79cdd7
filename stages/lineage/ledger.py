"""Pure functions over dvc.lock (the ledger, a dict as loaded from YAML) and run records."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stages.lib.digest import canonical_digest
from stages.lib.dvclock import entry_hash, lock_stages, under
from stages.lib.paths import MODEL_PATH

# The artefact `lineage show` describes by default: the model train writes (dvc.lock's spelling).
DEFAULT_TARGET = MODEL_PATH.as_posix()
CODE_SUFFIXES = (".py", ".sh", ".sql", ".ipynb", ".r", ".jl")


def stage_digests(lock: dict) -> dict[str, str]:
    """Each stage's lock-entry digest: equal digests mean the same command, deps, params, outs."""
    return {name: canonical_digest(entry) for name, entry in lock_stages(lock).items()}


def is_code(path: str) -> bool:
    """Whether a dependency is code (its changes are reported as code, not data)."""
    return path.lower().endswith(CODE_SUFFIXES)


def producer_of(lock: dict, path: str) -> tuple[str, str] | None:
    """(stage, output path) of the stage whose output is `path` or a directory holding it."""
    path = path.rstrip("/")
    for name, entry in lock_stages(lock).items():
        for out in entry.get("outs") or []:
            if under(path, out["path"]):
                return name, out["path"]
    return None


def params_diff(old: Any, new: Any, prefix: str = "") -> list[dict]:
    """Leaf-level differences between two params values: [{key, old, new}] (missing = None)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[dict] = []
        for k in list(old) + [k for k in new if k not in old]:
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in new:
                out.append({"key": key, "old": old[k], "new": None, "change": "removed"})
            elif k not in old:
                out.append({"key": key, "old": None, "new": new[k], "change": "added"})
            else:
                out.extend(params_diff(old[k], new[k], key))
        return out
    if old != new:
        return [{"key": prefix, "old": old, "new": new, "change": "modified"}]
    return []


def _file_item(entry: dict) -> dict:
    item = {"path": entry["path"], "md5": entry_hash(entry), "size": entry.get("size")}
    if entry.get("nfiles") is not None:
        item["nfiles"] = entry["nfiles"]
    return item


def stage_entry(name: str, entry: dict, lock: dict) -> dict:
    """One stage of the ledger, described: command, code, params, inputs and outputs by hash."""
    code, inputs = [], []
    for dep in entry.get("deps") or []:
        if is_code(dep["path"]):
            code.append({"path": dep["path"], "md5": entry_hash(dep), "size": dep.get("size")})
            continue
        made = producer_of(lock, dep["path"])
        inputs.append({**_file_item(dep), "produced_by": made[0] if made else None})
    return {
        "stage": name,
        "cmd": entry.get("cmd"),
        "digest": canonical_digest(entry),
        "code": code,
        "params": dict(entry.get("params") or {}),
        "inputs": inputs,
        "outputs": [_file_item(out) for out in entry.get("outs") or []],
    }


def upstream_graph(lock: dict) -> dict[str, set[str]]:
    """{stage: the stages whose outputs it reads}, from dvc.lock."""
    return {
        name: {
            made[0]
            for d in e.get("deps") or []
            if (made := producer_of(lock, d["path"])) and made[0] != name
        }
        for name, e in lock_stages(lock).items()
    }


def stage_chain(lock: dict, target: str) -> list[dict]:
    """The stages that produced `target` (an output path, a file inside one, or a stage name),
    upstream first, each as `stage_entry` describes it; [] when no stage produces it."""
    stages = lock_stages(lock)
    made = (target, "") if target in stages else producer_of(lock, target)
    if made is None:
        return []
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:  # depth first, in each stage's dependency order
        if name in order or name in visiting:
            return
        visiting.add(name)
        for dep in stages[name].get("deps") or []:
            up = producer_of(lock, dep["path"])
            if up and up[0] != name:
                visit(up[0])
        order.append(name)

    visit(made[0])
    return [stage_entry(name, stages[name], lock) for name in order]


def default_target(lock: dict) -> str | None:
    """The model when the ledger has one, else the first output of the last sink stage."""
    stages = lock_stages(lock)
    if producer_of(lock, DEFAULT_TARGET):
        return DEFAULT_TARGET
    used = {d["path"] for e in stages.values() for d in e.get("deps") or []}
    sinks = [
        n for n, e in stages.items() if not any(o["path"] in used for o in e.get("outs") or [])
    ]
    for name in reversed(sinks or list(stages)):
        outs = stages[name].get("outs") or []
        # A dataset or model over a metrics summary.
        outs = sorted(outs, key=lambda o: o["path"].startswith("metrics/"))
        if outs:
            return outs[0]["path"]
    return None


def side_checks(lock: dict, chain: list[str]) -> list[str]:
    """Stages outside a chain that read its data without feeding it (validation): not upstream
    of the target, not downstream of the target's stage, but reading a chain stage's output."""
    if not chain:
        return []
    ups = upstream_graph(lock)
    after_target = set(downstream(ups, [chain[-1]]))
    return [
        name
        for name in lock_stages(lock)
        if name not in chain and name not in after_target and ups[name] & set(chain)
    ]


def producing_record(records: list[dict], stage: str, digest: str) -> dict | None:
    """The earliest run record whose ledger held this exact stage entry: the run that made it."""
    for record in records:
        if (record.get("stages") or {}).get(stage, {}).get("digest") == digest:
            return record
    return None


def downstream(graph: dict[str, set[str]], roots: Iterable[str]) -> list[str]:
    """Stages reachable from `roots` in a {stage: {stages it depends on}} graph, roots excluded."""
    roots = list(roots)
    seen: list[str] = []
    frontier = list(roots)
    while frontier:
        cur = frontier.pop(0)
        for name, ups in graph.items():
            if cur in ups and name not in seen and name not in roots:
                seen.append(name)
                frontier.append(name)
    return seen


def metrics_files(lock: dict) -> list[str]:
    """Metrics JSON files listed in dvc.lock (outputs under metrics/ ending in .json)."""
    return [
        o["path"]
        for e in lock_stages(lock).values()
        for o in e.get("outs") or []
        if o["path"].endswith(".json") and o["path"].startswith("metrics/")
    ]
