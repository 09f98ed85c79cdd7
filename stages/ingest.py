"""ingest: read batch files (CSV, TSV, JSON Lines, Parquet) into partitioned Parquet under data/raw.

Every value is kept as the source wrote it (strings); each row gains its batch, source file,
source row and a stable record_id, its row-level lineage: the keyed HMAC of the source key, or,
for data without a key column, of the row's content and its occurrence number (identical rows
numbered 1, 2, ... in file and row order over the whole dataset).

Parsing never merges or drops a line unseen: CSV values may span lines and read blocks; in TSV
a quote is data; Arrow's record count is checked against an independent reading of the file
(Python's csv module), and every error names the file's true line.
"""

from __future__ import annotations

import posixpath
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stages.lib.config import IngestConfig, IoConfig, pipeline_params
from stages.lib.dvclock import dvc_yaml_stages, under, yaml_paths
from stages.lib.errors import InputError, run_stage
from stages.lib.io import AtomicDir, file_hash, write_parquet
from stages.lib.keys import is_sample, key_id, load_key
from stages.lib.partitions import Link, Partition, PartitionRun, TaskResult
from stages.lib.paths import DVC_YAML as DVC_FILE
from stages.lib.paths import RAW_DIR as OUT_DIR
from stages.lib.progress import note
from stages.lib.readers import read_batches
from stages.lib.record_ids import Occurrences, add_lineage, renumbered
from stages.lib.schema import Schema
from stages.lib.sources import (
    FORMATS,
    GZIP_MAGIC,
    batch_id,
    check_columns,
    check_content,
    file_format,
    find_batch_files,
    list_sources,
    not_data,
)
from stages.lib.summaries import IngestFields
from stages.lib.summary import StageSummary

# Names other modules imported from here before the readers moved to stages/lib (sources,
# delimited, readers, record_ids); new code imports them from there.
__all__ = [
    "DVC_FILE",
    "FORMATS",
    "GZIP_MAGIC",
    "OUT_DIR",
    "IngestConfig",
    "IoConfig",
    "add_lineage",
    "batch_id",
    "check_columns",
    "check_content",
    "file_format",
    "find_batch_files",
    "main",
    "not_data",
    "read_batches",
]


def ingest_file(
    path: Path,
    fmt: str,
    batch: str,
    key: bytes,
    schema: Schema,
    partition_rows: int,
    header: bool,
    out_dir: Path,
) -> dict[str, int]:
    """Task: one batch file into out_dir/part-NNNNN.parquet with lineage columns; rows written.

    Without a key column it also writes out_dir/content.npy, the rows' content digests, from
    which main numbers identical rows across files.
    """
    rows, part, buffer, buffered = 0, 0, [], 0
    seen = Occurrences()

    def flush(table: pa.Table) -> None:
        nonlocal rows, part
        lineage = add_lineage(table, key, schema.key, batch, str(path), rows + 1, seen)
        write_parquet(lineage, out_dir / f"part-{part:05d}.parquet")
        rows += table.num_rows
        part += 1

    columns = list(schema.columns)
    for rb in read_batches(path, fmt, partition_rows, columns, header):
        if rows == 0 and not buffer:
            check_columns(path, rb.schema.names, schema)
        rb = rb.rename_columns([unicodedata.normalize("NFKC", n).strip() for n in rb.schema.names])
        buffer.append(rb.select(columns))
        buffered += rb.num_rows
        while buffered >= partition_rows:
            table = pa.Table.from_batches(buffer)
            flush(table.slice(0, partition_rows))
            rest = table.slice(partition_rows)
            buffer, buffered = rest.to_batches(), rest.num_rows
    if buffered:
        flush(pa.Table.from_batches(buffer))
    if rows == 0:
        raise InputError(f"{path}: has a header but no data rows")
    if schema.key is None:
        np.save(out_dir / "content.npy", np.concatenate(seen.history))
    return {"rows": rows, "partitions": part}


def check_sources_are_deps(sources: tuple[str, ...], dvc_file: Path = DVC_FILE) -> None:
    """Fail when a source in params.yaml is not a dep of the ingest stage in dvc.yaml.

    DVC cannot expand a list from params.yaml into a stage's deps (treeverse/dvc#8171), so
    dvc.yaml lists the sources itself; a source it does not list is data DVC cannot see change
    (`dvc status` would say up to date after an edit). Outside a DVC project: nothing to check.
    """
    if not dvc_file.exists():
        return
    ingest = dvc_yaml_stages(dvc_file.parent).get("ingest") or {}
    deps = [posixpath.normpath(d) for d in yaml_paths(ingest.get("deps"))]
    missing = [
        s
        for s in sources
        if not any(under(posixpath.normpath(Path(s).as_posix()), d) for d in deps)
    ]
    if missing:
        raise InputError(
            f"ingest.sources in params.yaml names {missing}, which {dvc_file} does not list as "
            "deps of the ingest stage, so DVC could not see them change: add each to "
            f"stages.ingest.deps in {dvc_file} (DVC cannot take that list from params.yaml)"
        )


def warn_skipped(skipped: list[tuple[Path, str]]) -> list[dict[str, str]]:
    """Print each file of a source folder that is not read, with why; return them for metrics."""
    for p, why in skipped:
        print(f"WARNING: ingest: {p} is not read: {why}", file=sys.stderr)
    return [{"file": str(p), "reason": why} for p, why in skipped]


def main() -> None:
    """Ingest every batch file named by params into data/raw/<batch>/part-NNNNN.parquet.

    A batch file already ingested with the same content, key and params is reused, not re-read.
    Files of a source folder that are not data (hidden, unsupported type) are not read: each is
    named in a warning and in metrics/ingest.json (`skipped_files`).
    """
    summary = StageSummary("ingest")  # its clock starts here
    p = pipeline_params()
    cfg, io_cfg, schema = p.ingest, p.io, p.schema
    check_sources_are_deps(cfg.sources)

    files, skipped = list_sources(cfg.sources, cfg.format)
    found = checked_files(files, cfg.format)
    # The published demo key serves only when every batch is the bundled sample.
    key = load_key(sample=is_sample(f.sha256 for f in found))
    work = PartitionRun("ingest", key_id(key), schema, io_cfg.partition_rows, cfg.header)
    partitions = [
        Partition(
            f.batch,
            (f.path, f.fmt, f.batch, key, schema, io_cfg.partition_rows, cfg.header),
            (f.sha256, f.path, f.fmt),
        )
        for f in found
    ]
    batches = _run(work, partitions, {f.batch: f.sha256 for f in found}, key, schema)

    summary.rows_in = summary.rows_out = sum(b["rows"] for b in batches)
    summary.fields = IngestFields(
        batches=batches,
        key_id=key_id(key),
        record_id="key column" if schema.key else "row content and occurrence number (no key)",
        skipped_files=warn_skipped(skipped),
    )
    summary.write()


@dataclass(frozen=True)
class BatchFile:
    """A batch file to ingest: its path, format, content hash and batch id."""

    path: Path
    fmt: str
    sha256: str

    @property
    def batch(self) -> str:
        """The batch id: the file's stem and the start of its content hash."""
        return batch_id(self.path, self.sha256)


def checked_files(files: list[Path], fmt: str | None) -> list[BatchFile]:
    """Each file with its format and hash, checked for content and for being a copy."""
    found: list[BatchFile] = []
    seen: dict[str, Path] = {}
    for path in files:
        kind = file_format(path, fmt)
        check_content(path, kind)
        sha256 = file_hash(path)
        if sha256 in seen:
            raise InputError(
                f"{path}: identical to the earlier batch {seen[sha256]}; "
                "remove the copy (a batch is ingested once)"
            )
        seen[sha256] = path
        found.append(BatchFile(path, kind, sha256))
    return found


def _run(
    work: PartitionRun,
    partitions: list[Partition],
    hashes: dict[str, str],
    key: bytes,
    schema: Schema,
) -> list[dict]:
    """Run (or reuse) each file's task into data/raw atomically; each batch's metrics."""
    batches: list[dict] = []
    # Without a key column, identical rows are numbered across files in file and row order.
    occurrences = Occurrences() if schema.key is None else None
    with work, AtomicDir(OUT_DIR) as out:
        for done in work.run(ingest_file, partitions):
            batch, path = done.task.name, done.task.args[0]
            _collect(done, batch, out, occurrences, key)
            rows = done.result["rows"]
            batches.append(
                {
                    "batch": batch,
                    "file": str(path),
                    "sha256": hashes[batch],
                    "rows": rows,
                    "partitions": done.result["partitions"],
                    "reused": done.reused,
                }
            )
            how = "reused" if done.reused else "read"
            note(f"ingest: {path} -> {rows:,} rows as batch {batch} ({how})")
    return batches


def _collect(
    done: TaskResult, batch: str, out: AtomicDir, occurrences: Occurrences | None, key: bytes
) -> None:
    """Put a finished file's partitions into the output, renumbering identical keyless rows
    when an earlier file held the same content (the task numbered its own file only)."""
    names = [f"part-{i:05d}.parquet" for i in range(done.result["partitions"])]
    if occurrences is not None:
        file_digests = np.load(done.file("content.npy"))
        numbers = occurrences.number(file_digests)
        if not np.array_equal(numbers, Occurrences().number(file_digests)):
            start = 0
            for name in names:
                part = pq.read_table(done.file(name))
                end = start + part.num_rows
                fixed = renumbered(part, file_digests[start:end], numbers[start:end], key)
                out.write_table(f"{batch}/{name}", fixed)
                start = end
            return
    PartitionRun.link(done, [Link(out, f"{batch}/{name}", name) for name in names])


if __name__ == "__main__":
    run_stage(main)
