"""Bring a new batch under DVC in data/incoming: `pipeline add-batch` and the new-data flow.

A batch whose content (MD5, DVC's own file hash) is already in data/incoming is skipped, so giving
the same batch twice adds nothing. DVC is used through its command line (`dvc add`).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

from stages.lib.dvccli import dvc
from stages.lib.dvclock import read_yaml
from stages.lib.errors import InputError
from stages.lib.io import file_hash, writing
from stages.lib.sources import not_data

INCOMING = "data/incoming"
_SKIP_SUFFIXES = (".dvc",)
_SKIP_NAMES = (".gitignore",)


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records for a file in its .dvc file."""
    return file_hash(path, "md5")


def expand_batch(path_or_glob: str | Path) -> list[Path]:
    """The files a path, directory or glob names (sorted); InputError if none."""
    text = str(path_or_glob)
    p = Path(text)
    if p.is_dir():
        files = [f for f in sorted(p.rglob("*")) if f.is_file()]
    elif p.is_file():
        files = [p]
    else:
        files = [Path(f) for f in sorted(glob.glob(text, recursive=True)) if Path(f).is_file()]
    if not files:
        what = "is an empty folder" if p.is_dir() else "does not exist and matches no file"
        raise InputError(f"add-batch: {text} {what}; give a batch file, a folder or a glob")
    return [f.resolve() for f in files]


def batch_files(
    path_or_glob: str | Path, fmt: str | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The data files a path, directory or glob names, and the others with why they are not
    data (hidden, unsupported type: ingest would not read them); InputError if none is data."""
    text = str(path_or_glob)
    base = Path(text).resolve() if Path(text).is_dir() else None
    files, skipped = [], []
    for f in expand_batch(text):
        why = not_data(f.relative_to(base) if base else Path(f.name), fmt)
        if why is None and f.suffix in (*_SKIP_SUFFIXES, ".tmp"):
            why = "DVC's or a temporary file, not data"
        if why is None:
            files.append(f)
        else:
            skipped.append((f, why))
    if not files:
        shown = "; ".join(f"{f.name}: {why}" for f, why in skipped[:10])
        raise InputError(f"add-batch: nothing to add from {text}: no data file ({shown})")
    return files, skipped


def ingest_format(root: Path) -> str | None:
    """params.yaml's ingest.format (files of any name read as that format), else None."""
    return (read_yaml(root / "params.yaml").get("ingest") or {}).get("format")


def _is_batch_file(p: Path) -> bool:
    return p.is_file() and p.suffix not in _SKIP_SUFFIXES and p.name not in _SKIP_NAMES


def known_hashes(incoming: Path) -> set[str]:
    """Content hashes of the batches already in `incoming` (from their .dvc files when present)."""
    hashes: set[str] = set()
    if not incoming.is_dir():
        return hashes
    for p in incoming.iterdir():
        if not _is_batch_file(p):
            continue
        dvcfile = p.with_name(p.name + ".dvc")
        md5 = None
        if dvcfile.is_file():
            outs = read_yaml(dvcfile).get("outs") or []
            md5 = outs[0].get("md5") if outs else None
        hashes.add(md5 or file_md5(p))
    return hashes


def add_batch(
    repo_root: str | Path, path_or_glob: str | Path, incoming: str = INCOMING
) -> list[Path]:
    """Copy new batch files into `incoming` and `dvc add` them; return the paths added.

    Files that are not data (hidden, an unsupported type) are skipped with a warning naming
    each; InputError when none is data or the path names nothing; WriteError when `incoming`
    cannot be written. A file whose content is already there is skipped. A different file
    with a taken name gets its hash prefix appended. If `incoming` is tracked as a whole
    directory (`<incoming>.dvc`), the directory is re-added instead of each file.
    """
    root = Path(repo_root).resolve()
    files, skipped = batch_files(path_or_glob, ingest_format(root))
    for f, why in skipped:
        print(f"WARNING: add-batch: {f} skipped: {why}", file=sys.stderr)
    target_dir = root / incoming
    seen = known_hashes(target_dir)
    added: list[Path] = []
    with writing(target_dir):  # a read-only folder or a full disk: a message, not a traceback
        target_dir.mkdir(parents=True, exist_ok=True)
        for src in files:
            md5 = file_md5(src)
            if md5 in seen:
                continue
            dest = target_dir / src.name
            if dest.exists():
                stem, dot, rest = src.name.partition(".")
                dest = target_dir / f"{stem}-{md5[:8]}{dot}{rest}"
            tmp = dest.with_name(f".{dest.name}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)  # atomic: a reader never sees half a batch
            seen.add(md5)
            added.append(dest)
    if added:
        whole_dir = target_dir.with_name(target_dir.name + ".dvc").is_file()
        targets = [str(target_dir)] if whole_dir else [str(p) for p in added]
        done = dvc(root, "add", "-q", *targets)
        if done.returncode:
            raise OSError(f"dvc add {' '.join(targets)} failed: {done.stderr.strip()}")
    return [p.relative_to(root) for p in added]
