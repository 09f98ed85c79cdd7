"""export: one archive for an auditor, with a manifest of SHA-256 digests."""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import sys
import tarfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stages.lib.dvclock import lock_outputs, lock_stages, read_lock
from stages.lib.git import git_state
from stages.lib.runinfo import pinned_environment
from stages.lineage.records import RECORDS
from stages.lineage.show import describe
from stages.lineage.verify import verify

EXPORT_FILES = (
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    str(RECORDS),
    "pyproject.toml",
    "reports/validation/results.json",
    "reports/report.html",
    "reports/summary.md",
)
# Privacy scan and k-anonymity results: wherever the anonymize stage writes them.
EXPORT_GLOBS = ("metrics/*.json", "reports/privacy/*.json", "reports/privacy*.json", "plots/*.json")


def _members(root: Path) -> dict[str, bytes]:
    """The project files an auditor gets, and the pinned environment."""
    members: dict[str, bytes] = {}
    for rel in EXPORT_FILES:
        if (root / rel).is_file():
            members[rel] = (root / rel).read_bytes()
    for pattern in EXPORT_GLOBS:
        for p in sorted(root.glob(pattern)):
            if p.is_file():
                members[p.relative_to(root).as_posix()] = p.read_bytes()
    env = {"python": sys.version, "platform": platform.platform(), "packages": pinned_environment()}
    members["environment/requirements.txt"] = ("\n".join(env["packages"]) + "\n").encode()
    members["environment/platform.json"] = _json_bytes({k: env[k] for k in ("python", "platform")})
    return members


def _write_tar(out: Path, members: dict[str, bytes]) -> None:
    """The archive, written whole to a temporary name and then renamed into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(f"audit/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)


def export(root: Path | str = ".", out: Path | str | None = None) -> dict:
    """One .tar.gz for an auditor: ledger, params, run records, pinned environment, validation,
    privacy and metrics results, the report, lineage of the model and a verify result, plus
    MANIFEST.json with each member's SHA-256."""
    root = Path(root)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out) if out else root / f"audit-{stamp}.tar.gz"
    members = _members(root)
    lock = read_lock(root)
    if lock_stages(lock):
        try:
            members["lineage/show.json"] = _json_bytes(describe(root))
        except LookupError as e:
            members["lineage/show.json"] = _json_bytes({"error": str(e)})
        members["lineage/verify.json"] = _json_bytes(verify(root))
    expected = [*EXPORT_FILES, "metrics/anonymize.json"]
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_state(root, [*lock_outputs(lock), str(RECORDS)]),
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(members.items())
        },
        "absent": [rel for rel in expected if rel not in members],
    }
    members["MANIFEST.json"] = _json_bytes(manifest)
    _write_tar(out, members)
    return {"archive": str(out), "members": sorted(members), "absent": manifest["absent"]}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
