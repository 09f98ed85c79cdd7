"""The one reader of dvc.lock and params: stages, entry hashes, params leaves and look-ups.

dvc.lock is DVC's ledger (documented YAML: `stages: {name: {cmd, deps, params, outs}}`); it is
read as data, never through DVC's internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stages.lib.digest import canonical_digest, text_sha256

LOCK = Path("dvc.lock")
# A params section with more leaves than this (the schema) is shown as a count and a digest.
MAX_SHOWN_PARAM_LEAVES = 20


def under(path: str, parent: str) -> bool:
    """Whether a path is `parent` or inside it (how a file belongs to a directory output)."""
    path, parent = path.rstrip("/"), parent.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def read_yaml(path: Path) -> dict:
    """A YAML mapping from a file ({} when the file is missing or not a mapping)."""
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def read_lock(root: Path | str = ".") -> dict:
    """dvc.lock as a dict ({} when the pipeline never ran)."""
    return read_yaml(Path(root) / LOCK)


def read_lock_digest(root: Path | str = ".") -> tuple[dict, str | None]:
    """dvc.lock as a dict and the SHA-256 of its text, from one read (so the two agree);
    ({}, None) when the pipeline never ran."""
    path = Path(root) / LOCK
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    data = yaml.safe_load(text) if text else None
    return (data if isinstance(data, dict) else {}), (text_sha256(text) if text else None)


def lock_stages(lock: Mapping | None) -> dict[str, dict]:
    """The `stages` mapping of a dvc.lock, in file order."""
    stages = (lock or {}).get("stages") if isinstance(lock, Mapping) else None
    return dict(stages) if isinstance(stages, Mapping) else {}


def dvc_yaml_stages(root: Path | str = ".") -> dict[str, dict]:
    """The stages of dvc.yaml as written, in file order ({} without a dvc.yaml)."""
    stages = read_yaml(Path(root) / "dvc.yaml").get("stages")
    return dict(stages) if isinstance(stages, Mapping) else {}


def yaml_paths(items: list[Any] | None) -> list[str]:
    """Paths of a dvc.yaml deps/outs list (entries are "path" or {"path": {options}})."""
    return [str(next(iter(i))) if isinstance(i, dict) else str(i) for i in items or []]


def lock_entry(root: Path | str, stage: str) -> dict | None:
    """One stage's entry in dvc.lock, or None before its first run."""
    return lock_stages(read_lock(root)).get(stage)


def lock_outputs(lock: Mapping | None) -> list[str]:
    """Every output path dvc.lock lists."""
    return [
        o["path"]
        for e in lock_stages(lock).values()
        for o in (e or {}).get("outs") or []
        if isinstance(o, Mapping) and "path" in o
    ]


def hash_name(entry: Mapping) -> str | None:
    """The hash algorithm of a dep/out entry (DVC 3 writes `hash: md5`; DVC 2 only `md5`)."""
    return entry.get("hash") or ("md5" if "md5" in entry else None)


def entry_hash(entry: Mapping) -> str | None:
    """The content hash of a dep/out entry (md5, or a remote's etag/checksum)."""
    return entry.get("md5") or entry.get("etag") or entry.get("checksum")


def param_leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    """The one params flattener: {dotted key: value} of every leaf; a list or an empty mapping
    is one leaf (as dvc.lock and `dvc params diff` key them)."""
    if isinstance(value, Mapping) and value:
        leaves: dict[str, Any] = {}
        for k, v in value.items():
            leaves.update(param_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return leaves
    return {prefix: value}


def shown_params(section: str, value: Any) -> tuple[dict[str, Any], str | None]:
    """How a params section is shown: (its leaves, None), or ({}, "N values, sha256:...")
    when it has more than MAX_SHOWN_PARAM_LEAVES leaves (a digest that changes with any)."""
    leaves = param_leaves(value, section)
    if len(leaves) <= MAX_SHOWN_PARAM_LEAVES:
        return leaves, None
    return {}, f"{len(leaves)} values, sha256:{canonical_digest(value, 12)}"


def dotted(obj: Any, key: str) -> Any:
    """The value at a dotted key in nested mappings (None when absent)."""
    for part in key.split("."):
        if not isinstance(obj, Mapping) or part not in obj:
            return None
        obj = obj[part]
    return obj


def params_value(params: Mapping, key: str) -> Any:
    """A params key as dvc.lock names it: a top-level key or a dotted sub-key."""
    return params[key] if key in params else dotted(params, key)
