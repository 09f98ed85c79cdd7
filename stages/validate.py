"""validate: a Great Expectations suite derived from the schema runs over the clean data.

The data is validated partition by partition (memory bounded by one partition): the row-local
expectations run through GX on each partition (`validate_partition`), and the checks that are a
property of the whole dataset (record_id uniqueness, class shares) are computed by streaming
(64-bit hashes of the keys, label counts) and combined in `aggregate`.
Results go to reports/validation/ (JSON and static Data Docs, one validation result for the whole
dataset). A failed critical expectation stops the pipeline, naming the expectation, the column and
how many rows; warnings are recorded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib.coerce import EMAIL_RE
from stages.lib.config import ValidateConfig, pipeline_params
from stages.lib.dedup import hash_strings
from stages.lib.errors import GateFailure, run_stage
from stages.lib.gx import TYPE_NAMES, Check, build_docs, describe_failure, named, run_checks
from stages.lib.io import (
    AtomicDir,
    file_hash,
    partition_files,
    partition_names,
    write_json_atomic,
)
from stages.lib.partitions import Partition, PartitionRun
from stages.lib.paths import CLEAN_DIR
from stages.lib.schema import BATCH, RECORD_ID, SOURCE_FILE, SOURCE_ROW, Schema
from stages.lib.summaries import ValidateFields, ValidationReport, dump
from stages.lib.summary import StageSummary

OUT_DIR = Path("reports/validation")
FAMILIES = (
    "key_unique",
    "key_not_null",
    "label_not_null",
    "label_in_set",
    "column_types",
    "numeric_ranges",
    "category_in_set",
    "email_format",
    "not_null_features",
    "class_balance",
)


# Families whose verdict is a property of the whole dataset, not of each row: run per partition
# they would miss what spans partitions, so they are computed by streaming instead.
# - key_unique: a record_id repeated in two partitions is unique within each. Each partition
#   yields a 64-bit hash of each key; the sorted concatenation (8 bytes a row: 80 MB at 10M rows)
#   shows repeated hashes, and only when there are some is the key column re-read to count the
#   repeated keys exactly (a hash collision must not fail the gate).
# - class_balance: class shares; each partition yields its label counts, summed.
# The other families are row-local and run through GX on each partition, their counts summed.
# column_types is checked per partition (each partition file has its own schema, so each must
# pass). not_null_features carries `mostly`, a share of the whole dataset: its verdict is
# recomputed from the summed counts (a partition with 15% nulls beside one with 5% passes a 10%
# bound, as one frame would), not taken as "every partition passed".
WHOLE_DATASET = ("key_unique", "class_balance")


def build_checks(schema: Schema, cfg: ValidateConfig) -> list[Check]:
    """The expectations the schema and params imply, each with its severity."""
    unknown = sorted(set(cfg.severity) - set(FAMILIES))
    if unknown:
        from stages.lib.params import ParamsError

        raise ParamsError(f"validate.severity: unknown check(s) {unknown}; known: {list(FAMILIES)}")
    checks: list[Check] = []

    def add(family: str, kind: str, **kwargs: Any) -> None:
        severity = cfg.severity.get(family, "critical")
        if severity != "off":
            checks.append(Check.of(kind, family, severity, **kwargs))

    add("key_unique", "ExpectColumnValuesToBeUnique", column=RECORD_ID)
    add("key_not_null", "ExpectColumnValuesToNotBeNull", column=RECORD_ID)
    add("label_not_null", "ExpectColumnValuesToNotBeNull", column=schema.label)
    add("label_in_set", "ExpectColumnValuesToBeInSet", column=schema.label,
        value_set=schema.classes)  # fmt: skip
    features = schema.with_role("numeric", "categorical", "text")
    for name, col in schema.columns.items():
        add("column_types", "ExpectColumnValuesToBeInTypeList", column=name,
            type_list=TYPE_NAMES[col.type])  # fmt: skip
        if col.type in ("int", "float") and (col.min is not None or col.max is not None):
            add("numeric_ranges", "ExpectColumnValuesToBeBetween", column=name,
                min_value=col.min, max_value=col.max)  # fmt: skip
        if col.values and col.role != "label":
            add("category_in_set", "ExpectColumnValuesToBeInSet", column=name,
                value_set=list(col.values))  # fmt: skip
        if col.format == "email":
            add("email_format", "ExpectColumnValuesToMatchRegex", column=name, regex=EMAIL_RE)
        if name in features:
            add("not_null_features", "ExpectColumnValuesToNotBeNull", column=name,
                mostly=1 - cfg.max_null_share)  # fmt: skip
    return checks


@dataclass(frozen=True)
class PartitionResult:
    """What validating one partition yields: plain values (picklable), never a row's value."""

    rows: int
    # run_checks results of the row-local checks, in their order (empty for an empty partition).
    checks: tuple[dict[str, Any], ...]
    # 64-bit hash of each non-null record_id, for the uniqueness check across partitions.
    key_hashes: np.ndarray
    # Rows per non-null label value, for the class shares across partitions.
    label_counts: dict[str, int]


@dataclass(frozen=True)
class Verdict:
    """The results over all partitions."""

    rows: int
    partitions: int
    results: list[dict[str, Any]]
    # Key hashes seen more than once: repeated keys, or (rarely) a collision; see exact_duplicates.
    suspect_hashes: np.ndarray


def row_local(checks: Sequence[Check]) -> tuple[Check, ...]:
    """The checks that run through GX on each partition."""
    return tuple(c for c in checks if c.family not in WHOLE_DATASET)


def key_hashes(keys: pd.Series) -> np.ndarray:
    """64-bit hashes of the non-null keys (the same value hashes the same in every partition)."""
    return hash_strings(keys.dropna().to_numpy(dtype=object))


def validate_partition(df: pd.DataFrame, checks: Sequence[Check], label: str) -> PartitionResult:
    """Validate one partition: GX on the row-local checks, plus the streaming checks' inputs.

    Top-level and picklable for worker processes; GX's context is created once per process.
    """
    results = tuple(run_checks(df, row_local(checks))) if len(df) else ()
    counts = df[label].value_counts(dropna=True)
    return PartitionResult(
        rows=len(df),
        checks=results,
        key_hashes=key_hashes(df[RECORD_ID]),
        label_counts={str(k): int(v) for k, v in counts.items()},
    )


def validate_file(path: Path, checks: Sequence[Check], label: str, out_dir: Path) -> dict[str, Any]:
    """Task: validate one partition file; its key hashes go to out_dir/keys.npy."""
    part = validate_partition(pq.read_table(path).to_pandas(), checks, label)
    np.save(out_dir / "keys.npy", part.key_hashes)
    return {"rows": part.rows, "checks": list(part.checks), "label_counts": part.label_counts}


def combine(check: Check, partials: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One check's result over all partitions from its per-partition results."""
    if not partials:  # no rows at all: vacuously true, as GX says of an empty frame
        return {**named(check), "success": True, "unexpected_count": None,
                "unexpected_percent": None, "element_count": 0, "missing_count": None,
                "observed": None, "error": None}  # fmt: skip
    errors = [p["error"] for p in partials if p.get("error")]
    out = dict(partials[0], error=errors[0] if errors else None)
    if all(p["unexpected_count"] is None for p in partials):
        # An aggregate expectation (the column's dtype): each partition must pass.
        observed = list(dict.fromkeys(p["observed"] for p in partials if p["observed"] is not None))
        out["success"] = all(p["success"] for p in partials)
        out["observed"] = observed[0] if len(observed) == 1 else ", ".join(map(str, observed))
        return out
    element = sum(p["element_count"] or 0 for p in partials)
    unexpected = sum(p["unexpected_count"] or 0 for p in partials)
    has_missing = partials[0]["missing_count"] is not None  # absent for the not-null expectation
    missing = sum(p["missing_count"] or 0 for p in partials) if has_missing else None
    # The rows GX weighs `mostly` against: the non-null ones, or all for the not-null check.
    considered = element - (missing or 0)
    mostly = check.args.get("mostly") or 1.0
    share_ok = considered == 0 or (considered - unexpected) / considered >= mostly
    out.update(
        success=share_ok and not errors,
        element_count=element,
        unexpected_count=unexpected,
        missing_count=missing,
        unexpected_percent=100 * unexpected / considered if considered else None,
    )
    return out


def key_unique(
    check: Check, parts: Sequence[PartitionResult], duplicate_rows: int | None
) -> tuple[dict[str, Any], np.ndarray]:
    """Uniqueness of the key over all partitions from their key hashes (GX's counting: every
    row whose key occurs more than once is unexpected; nulls are skipped)."""
    rows = sum(p.rows for p in parts)
    hashes = np.concatenate([p.key_hashes for p in parts] or [np.empty(0, np.uint64)])
    hashes.sort()
    repeated = hashes[1:] == hashes[:-1]
    suspects = np.unique(hashes[1:][repeated])
    if duplicate_rows is None:  # rows whose hash repeats: the count, unless a collision
        duplicate_rows = int(np.isin(hashes, suspects).sum()) if suspects.size else 0
    nonnull = len(hashes)
    result = {
        **named(check),
        "success": duplicate_rows == 0,
        "unexpected_count": duplicate_rows,
        "unexpected_percent": 100 * duplicate_rows / nonnull if nonnull else None,
        "element_count": rows,
        "missing_count": rows - nonnull,
        "observed": None,
        "error": None,
    }
    return result, suspects


def exact_duplicates(keys: Iterable[pd.Series], suspects: np.ndarray) -> int:
    """Rows whose key occurs more than once, counted on the values among the suspect hashes."""
    candidates = [k[np.isin(key_hashes(k), suspects)] for k in (s.dropna() for s in keys)]
    values = pd.concat([c.astype(object) for c in candidates], ignore_index=True)
    return int(values.duplicated(keep=False).sum())


def class_balance(
    counts: dict[str, int], classes: list[str], cfg: ValidateConfig, column: str
) -> dict[str, Any]:
    """Share of each class (of the non-null labels) and whether all lie within the bounds.

    GX 1.x has no pandas expectation for per-value shares, so this one is computed here, from
    label counts summed over the partitions.
    """
    total = sum(counts.values())
    shares = {c: counts.get(c, 0) / total if total else 0.0 for c in classes}
    ok = all(cfg.min_class_share <= s <= cfg.max_class_share for s in shares.values())
    return {
        "expectation": "class_share_between",
        "family": "class_balance",
        "severity": cfg.severity.get("class_balance", "warning"),
        "column": column,
        "kwargs": {"min_value": cfg.min_class_share, "max_value": cfg.max_class_share},
        "success": ok,
        "unexpected_count": None,
        "unexpected_percent": None,
        "element_count": total,
        "observed": ", ".join(f"{k}: {v:.3f}" for k, v in shares.items()),
        "error": None,
    }


def aggregate(
    parts: Sequence[PartitionResult],
    checks: Sequence[Check],
    cfg: ValidateConfig,
    schema: Schema,
    duplicate_rows: int | None = None,
) -> Verdict:
    """The results over the whole dataset from the partitions' results (pure).

    `duplicate_rows`: the exact count of rows with a repeated key, when the suspect hashes of a
    first call were checked against the values (exact_duplicates).
    """
    local = row_local(checks)
    filled = [p for p in parts if p.rows]
    results: list[dict[str, Any]] = []
    suspects = np.empty(0, np.uint64)
    for check in checks:
        if check.family == "key_unique":
            result, suspects = key_unique(check, parts, duplicate_rows)
            results.append(result)
        elif check.family not in WHOLE_DATASET:
            i = local.index(check)
            results.append(combine(check, [p.checks[i] for p in filled]))
    if cfg.severity.get("class_balance", "warning") != "off":
        counts: dict[str, int] = {}
        for p in parts:
            for k, v in p.label_counts.items():
                counts[k] = counts.get(k, 0) + v
        results.append(class_balance(counts, schema.classes, cfg, schema.label))
    return Verdict(sum(p.rows for p in parts), len(parts), results, suspects)


def labels_outside(
    tables: Iterable[pa.Table], label: str, classes: Sequence[str], limit: int = 5
) -> list[str]:
    """Where the first label values outside the classes are: source file, batch, row, column
    and the value (labels are no personal data; repr shows an invisible character)."""
    found: list[str] = []
    allowed = pa.array(list(classes), pa.string())
    for table in tables:
        values = table.column(label)
        outside = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=allowed)))
        for row in table.filter(outside).slice(0, limit - len(found)).to_pylist():
            found.append(
                f"{row[SOURCE_FILE]} (batch {row[BATCH]}) row {row[SOURCE_ROW]}, "
                f"column {label}: {row[label]!r}"
            )
        if len(found) >= limit:
            break
    return found


def where_labels_fail(critical: list[dict[str, Any]], schema: Schema) -> str:
    """For a failed label_in_set check, the rows it failed on (empty otherwise)."""
    if not any(r["family"] == "label_in_set" for r in critical):
        return ""
    cols = [SOURCE_FILE, BATCH, SOURCE_ROW, schema.label]
    tables = (pq.read_table(f, columns=cols) for f in partition_files(CLEAN_DIR))
    rows = labels_outside(tables, schema.label, schema.classes)
    return (
        f"\nLabel values outside {schema.classes}: "
        + "; ".join(rows)
        + ". Fix them in the source, or map a spelling with clean.label_aliases in params.yaml"
        if rows
        else ""
    )


def run_partitions(
    work: PartitionRun, checks: Sequence[Check], label: str
) -> list[PartitionResult]:
    """Each partition of data/clean's result (keyed by its file), computed or reused."""
    partitions = [
        Partition(name, (file, checks, label), file_hash(file))
        for name, file in partition_names(CLEAN_DIR)
    ]
    return [
        PartitionResult(
            rows=done.result["rows"],
            checks=tuple(done.result["checks"]),
            key_hashes=np.load(done.file("keys.npy")),
            label_counts=done.result["label_counts"],
        )
        for done in work.run(validate_file, partitions)
    ]


def whole_verdict(
    parts: Sequence[PartitionResult], checks: Sequence[Check], cfg: ValidateConfig, schema: Schema
) -> Verdict:
    """The verdict over the whole dataset; repeated key hashes are counted on the key values."""
    verdict = aggregate(parts, checks, cfg, schema)
    if verdict.suspect_hashes.size:
        keys = (
            pq.read_table(f, columns=[RECORD_ID]).column(RECORD_ID).to_pandas()
            for f in partition_files(CLEAN_DIR)
        )
        dup = exact_duplicates(keys, verdict.suspect_hashes)
        verdict = aggregate(parts, checks, cfg, schema, duplicate_rows=dup)
    if verdict.rows == 0:
        # Every expectation passes vacuously on no rows; training on nothing must not follow.
        raise GateFailure(
            f"validate: {CLEAN_DIR} has no rows: every source row was quarantined or removed as a "
            "duplicate; see data/quarantine (column _reason) and metrics/clean.json"
        )
    return verdict


def write_report(checks: Sequence[Check], verdict: Verdict, report: ValidationReport) -> None:
    """reports/validation/: results.json and the Data Docs, together or not at all."""
    rows = verdict.rows
    # Results and Data Docs appear together or not at all (a killed run leaves no half report).
    # The Data Docs hold one validation result: the whole dataset's (summed over the partitions,
    # key uniqueness included), not one page per partition.
    with AtomicDir(OUT_DIR) as out:
        # class_balance (the last result) is no GX expectation: it is in results.json only.
        build_docs(
            list(zip(checks, verdict.results[: len(checks)], strict=True)),
            out.tmp / "docs",
            "clean_data",
            {"rows": rows, "partitions": verdict.partitions, "dataset": str(CLEAN_DIR)},
        )
        write_json_atomic(out.tmp / "results.json", dump(report))


def main() -> None:
    """Validate data/clean partition by partition; write reports/validation/{results.json,docs/}."""
    p = pipeline_params()
    cfg, schema = p.validate, p.schema
    checks = build_checks(schema, cfg)
    if not partition_files(CLEAN_DIR):
        raise FileNotFoundError(f"{CLEAN_DIR}: dataset has no Parquet partitions")
    work = PartitionRun("validate", checks, schema.label)
    parts = run_partitions(work, checks, schema.label)
    verdict = whole_verdict(parts, checks, cfg, schema)
    rows = verdict.rows
    results = [{k: v for k, v in r.items() if k != "missing_count"} for r in verdict.results]
    summary = StageSummary("validate", rows_in=rows, rows_out=rows)
    # Through its model: a result the report could not read fails here, not in the report.
    report = ValidationReport(rows=rows, partitions=verdict.partitions, results=results)
    write_report(checks, verdict, report)
    work.prune()
    failed = [r for r in results if not r["success"]]
    critical = [r for r in failed if r["severity"] == "critical"]
    warnings = [r for r in failed if r["severity"] == "warning"]
    summary.fields = ValidateFields(
        expectations=len(results),
        passed=len(results) - len(failed),
        failed_critical=len(critical),
        failed_warning=len(warnings),
        partitions=verdict.partitions,
        data_docs=str(OUT_DIR / "docs" / "index.html"),
    )
    summary.write()
    for r in warnings:
        print(f"validate: WARNING {describe_failure(r)}")
    passed = len(results) - len(failed)
    print(
        f"validate: {passed}/{len(results)} expectations passed on {rows:,} rows "
        f"in {verdict.partitions} partition(s)"
    )
    if critical:
        raise GateFailure(
            "validate: critical expectation(s) failed:\n  "
            + "\n  ".join(describe_failure(r) for r in critical)
            + where_labels_fail(critical, schema)
            + "\nFix the source data or the schema in params.yaml; details in "
            + str(OUT_DIR / "docs" / "index.html")
        )


if __name__ == "__main__":
    run_stage(main)
