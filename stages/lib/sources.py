"""Batch files: which files the sources name, their format, early content checks, header names.

Shared by ingest, predict, forget and the new-data flow, so that all of them see the same files
and read them the same way.
"""

from __future__ import annotations

import gzip
import re
import unicodedata
from pathlib import Path
from typing import IO

from stages.lib.config import Format  # noqa: F401  (its home moved to config; re-exported)
from stages.lib.errors import InputError
from stages.lib.schema import Schema

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
PARQUET_MAGIC = b"PAR1"
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"


# What a source folder holds besides data that is DVC's or git's bookkeeping, or its README:
# never reported.
BOOKKEEPING_SUFFIXES = (".dvc",)
BOOKKEEPING_NAMES = (".gitignore", ".dvcignore")


def file_format(path: Path, override: str | None = None) -> str:
    """The format of a batch file: `override` (ingest.format), else its extension (.gz allowed)."""
    if override is not None:
        return override
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise InputError(
            f"{path}: unsupported file type; expected one of {', '.join(sorted(FORMATS))} "
            "(optionally .gz), or set ingest.format in params.yaml for files without one"
        )
    return fmt


def list_sources(
    sources: tuple[str, ...], fmt: str | None = None
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The data files the sources name (sorted), and each other file of a source folder with
    why it is not read (hidden, unsupported type). DVC's .dvc and .gitignore files are left out."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for source in sources:
        path = Path(source)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for p in sorted(path.rglob("*")):
                if not p.is_file() or _bookkeeping(p):
                    continue
                why = not_data(p.relative_to(path), fmt)
                if why is None:
                    files.append(p)
                else:
                    skipped.append((p, why))
        else:
            raise InputError(f"ingest.sources: {source} does not exist")
    if not files:
        seen = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        raise InputError(
            f"ingest.sources {list(sources)}: no data files found "
            f"(looked for {', '.join(sorted(FORMATS))}, optionally .gz)"
            + (f"; not read: {seen}" if seen else "")
        )
    return files, skipped


def find_batch_files(sources: tuple[str, ...], fmt: str | None = None) -> list[Path]:
    """Expand files and directories of batch files into a sorted list of data files."""
    return list_sources(sources, fmt)[0]


def _bookkeeping(path: Path) -> bool:
    # A folder's README documents it (data/incoming has one): not data, and no news.
    return (
        path.name in BOOKKEEPING_NAMES
        or path.suffix in BOOKKEEPING_SUFFIXES
        or path.name in ("README", "README.md", "README.txt")
    )


def not_data(relative: Path, fmt: str | None) -> str | None:
    """Why a file (its path inside a source folder) is not read as data, or None when it is."""
    if any(part.startswith(".") for part in relative.parts):
        return "a hidden file"
    try:
        file_format(relative, fmt)
    except InputError:
        kind = "".join(relative.suffixes[-2:]) or "no extension"
        return f"unsupported type ({kind}); expected {', '.join(sorted(FORMATS))} or ingest.format"
    return None


def batch_id(path: Path, digest: str) -> str:
    """A batch's identifier: the file's stem and the start of its content hash."""
    stem = path.name.split(".")[0]
    return f"{stem}-{digest[:10]}"


def gzipped(path: Path) -> bool:
    """Whether a batch file is named .gz."""
    return path.suffix.lower() == ".gz"


def open_binary(path: Path) -> IO[bytes]:
    """A batch file's bytes, decompressed when it is named .gz."""
    return gzip.open(path, "rb") if gzipped(path) else path.open("rb")


def check_content(path: Path, fmt: str) -> None:
    """Fail early when a file is empty or is not what its extension says."""
    with path.open("rb") as f:
        head = f.read(4096)
    if not head:
        raise InputError(f"{path}: file is empty; expected a header and data rows")
    gz = gzipped(path)
    if gz and head[:2] != GZIP_MAGIC:
        raise InputError(f"{path}: named .gz but is not gzip-compressed")
    if not gz and head[:2] == GZIP_MAGIC:
        raise InputError(f"{path}: is gzip-compressed but not named .gz; rename it to {path}.gz")
    if fmt == "parquet" and gz:
        raise InputError(
            f"{path}: a gzip-compressed Parquet file; decompress it (gunzip): Parquet compresses "
            "its own data"
        )
    if fmt == "parquet" and head[:4] != PARQUET_MAGIC:
        raise InputError(f"{path}: named .parquet but is not a Parquet file")
    if fmt == "parquet":
        return
    if gz:  # the checks below are about the text inside
        try:
            with gzip.open(path, "rb") as g:
                head = g.read(4096)
        except (OSError, EOFError) as e:
            raise InputError(
                f"{path}: cannot be read as {fmt.upper()}: {short_error(e)} "
                "(a truncated or corrupt compressed file?)"
            ) from e
        if not head:
            raise InputError(f"{path}: file is empty; expected a header and data rows")
    _check_text_head(path, fmt, head)


def _check_text_head(path: Path, fmt: str, head: bytes) -> None:
    """Catch the usual exports that are not UTF-8 text before the parser does."""
    if head[:4] == PARQUET_MAGIC:
        raise InputError(f"{path}: is a Parquet file; rename it to .parquet")
    if head[:4] == ZIP_MAGIC:
        raise InputError(
            f"{path}: is a ZIP archive (an Excel .xlsx workbook?), not {fmt.upper()} text; "
            f"export it as UTF-8 {fmt.upper()}"
        )
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise InputError(f"{path}: is UTF-16 text; re-save it as UTF-8")
    if b"\x00" in head:
        # UTF-16 without a byte-order mark: every other byte of ASCII text is NUL.
        pairs = head[: len(head) // 2 * 2]
        if pairs and max(pairs[0::2].count(0), pairs[1::2].count(0)) > 0.4 * len(pairs) / 2:
            raise InputError(f"{path}: is UTF-16 text (no byte-order mark); re-save it as UTF-8")
        raise InputError(
            f"{path}: holds binary data (NUL bytes), not {fmt.upper()} text; expected UTF-8 text"
        )


def short_error(e: Exception) -> str:
    """The first line of a parser's error, without the row text it may quote."""
    # Arrow quotes the offending row after "got N:"; that text may hold personal data.
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return re.sub(r"(got \d+)\s*:.*$", r"\1", first)[:300]


def norm_name(name: str) -> str:
    """A column name as compared with the schema: NFKC, stripped."""
    return unicodedata.normalize("NFKC", name).strip()


def check_names(path: Path, names: list[str]) -> list[str]:
    """The header's names, normalised; InputError on an empty or repeated name."""
    cleaned = [norm_name(n) for n in names]
    empty = [i + 1 for i, n in enumerate(cleaned) if not n]
    if empty:
        trailing = empty == list(range(len(cleaned) - len(empty) + 1, len(cleaned) + 1))
        raise InputError(
            f"{path}: header column(s) {empty} have no name"
            + (
                " (trailing delimiters at the end of the header, as some spreadsheet exports "
                "write): delete the empty columns and save again"
                if trailing
                else ": name them as in the schema of params.yaml"
            )
        )
    repeated = sorted({n for n in cleaned if cleaned.count(n) > 1})
    if repeated:
        raise InputError(f"{path}: duplicate column name(s) {repeated} in the header")
    return cleaned


def check_columns(path: Path, names: list[str], schema: Schema) -> None:
    """Fail when the file's columns differ from the schema's: missing or unexpected columns."""
    cleaned = check_names(path, names)
    expected = list(schema.columns)
    missing = [c for c in expected if c not in cleaned]
    extra = [c for c in cleaned if c not in expected]
    if len(cleaned) == 1 and len(expected) > 1 and ("\t" in cleaned[0] or ";" in cleaned[0]):
        raise InputError(
            f"{path}: found a single column {cleaned[0][:60]!r}: wrong delimiter? "
            "CSV files must be comma-separated, .tsv files tab-separated"
        )
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(
                f"unexpected column(s) {extra} (an unknown column could carry personal data past "
                "the privacy policy: add it to schema in params.yaml with a role, or remove it)"
            )
        raise InputError(f"{path}: {'; '.join(parts)}")
