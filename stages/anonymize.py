"""Anonymize: apply column policies, scrub free text, gate on an independent scan, measure k.

Reads data/clean/, writes data/anon/ (same partitions), data/quarantine_anon/ (rows of
equivalence classes smaller than k, with `_reason`), metrics/anonymize.json and
reports/privacy/scan.json. Needs the pseudonymisation key (see stages/lib/keys.py).

The pure functions live in stages/lib: anon_policies.py (policies, scrubbing), anon_risk.py
(k-anonymity), anon_index.py (the identifier index), anon_scan.py (the independent scan and the
mislabel guard), anon_passes.py (the passes as stored tasks); here: params, the run, the summary.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib import keys
from stages.lib.anon_passes import class_sizes_of, profile_pass, release, scan_pass
from stages.lib.anon_policies import describe_policy
from stages.lib.anon_risk import check_not_all_suppressed, risk_report, sizes_of
from stages.lib.anon_scan import check_mislabelled, scan_report
from stages.lib.config import AnonymizeConfig, pipeline_params
from stages.lib.errors import GateFailure, run_stage
from stages.lib.features import column_policies
from stages.lib.io import AtomicDir, partition_names, write_json_atomic
from stages.lib.paths import ANON_DIR as OUTPUT
from stages.lib.paths import CLEAN_DIR as INPUT
from stages.lib.schema import BATCH, Schema
from stages.lib.summaries import AnonymizeFields, Risk, ScanReport, dump
from stages.lib.summary import StageSummary

QUARANTINE = Path("data/quarantine_anon")
SCAN_REPORT = Path("reports/privacy/scan.json")


class ScanFailed(GateFailure):
    """The independent scan found an identifier in the anonymized output."""


def run(
    input_dir: Path,
    output_dir: Path,
    quarantine_dir: Path,
    config: AnonymizeConfig,
    schema: Schema,
    key: bytes,
) -> tuple[StageSummary, ScanReport]:
    """The whole stage over partitions, each step reusing what an earlier run stored.

    1. Per partition (tasks): policies and per-row scrubbing, identifier index, class hashes.
    2. The global identifier index and class sizes (k over the whole dataset).
    3. Per partition (tasks): the dataset's known names scrubbed, the independent scan. A stored
       result is reused while the global sets, restricted to the candidates it looked up, are
       unchanged, so a new batch does not redo earlier partitions unless it concerns them.
    4. In order: rows of classes smaller than k to quarantine, the rest to data/anon.
    """
    summary = StageSummary("anonymize")
    policies = column_policies(schema, config.policies)
    files = dict(partition_names(input_dir))
    digits = config.min_digit_run
    profile_run, profiled = profile_pass(files, schema, policies, key, digits)
    check_mislabelled(d.result for d in profiled)
    classes, sizes = class_sizes_of(profiled)
    before = risk_report(pd.Series(sizes, dtype="int64"))
    check_not_all_suppressed(sizes, config.k)
    scan_run, scanned = scan_pass(profiled, files, schema, policies, digits)

    with AtomicDir(output_dir) as out, AtomicDir(quarantine_dir) as quarantine:
        done = release((profiled, scanned), classes, sizes, config.k, (out, quarantine), summary)
        scan = scan_report(done.findings)
        write_json_atomic(SCAN_REPORT, dump(scan))
        if done.findings:
            raise ScanFailed(
                f"anonymize: the independent scan found {len(done.findings)} identifier(s) in "
                f"the output (see {SCAN_REPORT}); first: "
                + "; ".join(
                    f"record {f['record_id']} column {f['column']} {f['entity']}"
                    for f in done.findings[:5]
                )
            )
    for work in (profile_run, scan_run, done.run):
        work.prune()
    kept = np.concatenate(done.kept_classes) if done.kept_classes else np.empty(0, np.uint64)
    after = risk_report(pd.Series(sizes_of(kept), dtype="int64"))
    summary.fields = AnonymizeFields(
        key_id=keys.key_id(key),
        policies={n: describe_policy(p) for n, p in policies.items()},
        entity_counts={c: dict(sorted(v.items())) for c, v in done.counts.items()},
        scan=scan.verdict(),
        quasi_identifiers=profiled[0].result["quasi_identifiers"] if profiled else [],
        k_threshold=config.k,
        risk_before_suppression=Risk.model_validate(before),
        risk_after_suppression=Risk.model_validate(after),
    )
    return summary, scan


def batch_digests(path: Path) -> set[str]:
    """The content-hash prefixes in the input's batch ids (`_batch`, ingest's batch_id:
    "<stem>-<sha256[:10]>"): which source files the rows came from."""
    found: set[str] = set()
    for _, file in partition_names(path):
        column = pq.read_table(file, columns=[BATCH]).column(BATCH)
        found.update(b.rsplit("-", 1)[-1] for b in pc.unique(column).to_pylist() if b)
    return found


def main(argv: list[str] | None = None) -> int:
    """Run the stage from params.yaml."""
    parser = argparse.ArgumentParser(prog="python -m stages.anonymize", description=__doc__)
    parser.add_argument(
        "--demo-key",
        action="store_true",
        help=f"create a random local demo key in {keys.DEMO_KEY_FILE} if none exists "
        "(never for real data)",
    )
    args = parser.parse_args(argv)
    p = pipeline_params()
    config, schema = p.anonymize, p.schema
    if args.demo_key and not os.environ.get(keys.KEY_ENV):
        keys.create_demo_key()
    # run_stage turns a missing key into exit 2 with how to set one.
    key = keys.load_key(sample=keys.is_sample(batch_digests(INPUT)))
    # A scan hit raises ScanFailed, a gate failure: run_stage exits 3, never retried.
    summary, _ = run(INPUT, OUTPUT, QUARANTINE, config, schema, key)
    data = summary.write()
    print(
        f"anonymize: {data.rows_in} in, {data.rows_out} out, "
        f"{data.rows_quarantined} suppressed (k={config.k}); key {data.key_id}; "
        f"scan passed; k before {data.risk_before_suppression.k}"
    )
    return 0


if __name__ == "__main__":
    run_stage(main)
