"""lineage: answer an auditor from dvc.lock (the ledger) and the run records, by command.

- records: run records (lineage/runs.jsonl, in git): who and what ran the pipeline, one JSON
  line a run, with the one run identity of stages/lib/runinfo (git, Prefect run, packages);
- ledger: pure functions over dvc.lock (read by stages/lib/dvclock): chains, producers, digests;
- hashing: DVC's documented hashes (MD5 of a file; of a directory's .dir manifest) with hashlib;
- show: the chain of stages that produced an artefact, back to the raw batches;
- verify: re-hash what dvc.lock lists and name every missing or altered file;
- why: for every stage `dvc status --json` says would rerun, the input, params key or code
  file that changed;
- trace: where one record_id came from and where it went, without printing identifiers;
- export: one archive for an auditor, with a manifest of SHA-256 digests;
- cli: the `pipeline lineage` command (`python -m stages.lineage`).

No DVC name is imported: DVC is asked through its CLI's JSON (stages/lib/dvccli).
"""

from __future__ import annotations

from stages.lib.digest import canonical_digest
from stages.lib.dvclock import LOCK, lock_stages, read_lock
from stages.lib.git import git_state
from stages.lib.runinfo import pinned_environment
from stages.lineage.cli import app
from stages.lineage.export import export
from stages.lineage.hashing import (
    cache_files_dir,
    cached_object,
    dir_md5,
    file_changes,
    hash_path,
    recorded_files,
)
from stages.lineage.ledger import (
    default_target,
    downstream,
    is_code,
    metrics_files,
    params_diff,
    producer_of,
    producing_record,
    side_checks,
    stage_chain,
    stage_digests,
    stage_entry,
)
from stages.lineage.records import (
    RECORDS,
    append_run_record,
    headline_metrics,
    make_run_record,
    read_records,
    repro_and_record,
)
from stages.lineage.show import describe, format_show
from stages.lineage.trace import format_trace, trace
from stages.lineage.verify import format_verify, verify
from stages.lineage.why import format_why, why

__all__ = [
    "LOCK",
    "RECORDS",
    "app",
    "append_run_record",
    "cache_files_dir",
    "cached_object",
    "canonical_digest",
    "default_target",
    "describe",
    "dir_md5",
    "downstream",
    "export",
    "file_changes",
    "format_show",
    "format_trace",
    "format_verify",
    "format_why",
    "git_state",
    "hash_path",
    "headline_metrics",
    "is_code",
    "lock_stages",
    "make_run_record",
    "metrics_files",
    "params_diff",
    "pinned_environment",
    "producer_of",
    "producing_record",
    "read_lock",
    "read_records",
    "recorded_files",
    "repro_and_record",
    "side_checks",
    "stage_chain",
    "stage_digests",
    "stage_entry",
    "trace",
    "verify",
    "why",
]
