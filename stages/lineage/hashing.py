"""Hashing as DVC documents it, with hashlib: MD5 of a file's bytes, and of a directory's .dir
manifest; and reading recorded manifests from DVC's cache by its documented layout."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from stages.lib.dvccli import cache_dir
from stages.lib.io import file_hash

_CACHE_DIRS: dict[str, Path] = {}
# Names DVC never hashes inside a directory output (its default ignore list).
_DVC_SKIPPED = {".git", ".hg", ".dvc"}


def root_dir(repo: Any) -> Path:
    """The project root of a path or of anything with a `root_dir` (a dvc Repo)."""
    return Path(getattr(repo, "root_dir", repo))


def cache_files_dir(root: Path | str) -> Path:
    """Where DVC's cache keeps file objects by MD5: `<dvc cache dir>/files/md5`, as DVC documents
    its cache layout (the cache dir from the public `dvc cache dir` command)."""
    key = str(Path(root).resolve())
    if key not in _CACHE_DIRS:
        _CACHE_DIRS[key] = cache_dir(key) / "files" / "md5"
    return _CACHE_DIRS[key]


def cached_object(root: Path | str, oid: str) -> Path:
    """The path of an object in DVC's cache: files/md5/<first two hex digits>/<the rest>."""
    return cache_files_dir(root) / oid[:2] / oid[2:]


def dir_md5(files: dict[str, str]) -> str:
    """DVC's hash of a directory: the MD5 of its .dir manifest (the JSON list of {md5, relpath}
    sorted by relpath, keys sorted), with ".dir" appended."""
    manifest = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(files.items())]
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def hash_path(repo: Any, path: str, full: bool = False) -> tuple[str | None, dict[str, str] | None]:
    """(DVC's md5 of a workspace path or None when missing, {relpath: md5} of a directory's files).

    `repo` is the project root (or a dvc Repo). Plain MD5 of the bytes, the hash DVC 3 records
    (`hash: md5`); `full` is kept for callers: every byte is read either way.
    """
    abspath = root_dir(repo) / path
    if abspath.is_file():
        return file_hash(abspath, "md5"), None
    if not abspath.is_dir():
        return None, None
    files = {}
    for dirpath, dirnames, filenames in os.walk(abspath):
        dirnames[:] = sorted(d for d in dirnames if d not in _DVC_SKIPPED)
        for name in filenames:
            full_path = Path(dirpath) / name
            files[full_path.relative_to(abspath).as_posix()] = file_hash(full_path, "md5")
    return dir_md5(files), files


def recorded_files(repo: Any, oid: str) -> dict[str, str] | None:
    """{relpath: md5} of a directory as dvc.lock recorded it: its .dir manifest in DVC's cache
    (None when absent: never pulled, or garbage-collected)."""
    try:
        manifest = json.loads(cached_object(root_dir(repo), oid).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {entry["relpath"]: entry["md5"] for entry in manifest}


def file_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> list[dict]:
    """Per-file differences of two {relpath: md5} listings: missing, altered, added."""
    if old is None or new is None:
        return []
    changes = [{"file": f, "change": "missing"} for f in old if f not in new]
    changes += [{"file": f, "change": "altered"} for f in old if f in new and old[f] != new[f]]
    changes += [{"file": f, "change": "added"} for f in new if f not in old]
    return sorted(changes, key=lambda c: c["file"])


def sha256(path: Path) -> str:
    """A file's SHA-256 (the digest ingest records for each raw batch)."""
    return file_hash(path)
