"""validate streams partitions: the verdict and counts over several partitions are those over one,
and the whole-dataset checks (key uniqueness, class shares) see across partitions."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from stages import clean, ingest, validate
from stages.lib.errors import GateFailure
from stages.lib.gx import Check, run_checks
from stages.lib.io import read_dataset, write_dataset
from stages.lib.params import load_params, section
from stages.lib.schema import RECORD_ID, load_schema
from tests.conftest import source_frame, write_project

N = 60


@pytest.fixture
def project(tmp_path: Path, monkeypatch, key) -> Path:
    """A project whose data/clean came out of ingest and clean (one partition)."""
    write_project(tmp_path, source_frame(N))
    monkeypatch.chdir(tmp_path)
    ingest.main()
    clean.main()
    return tmp_path


def setup(project: Path):
    params = load_params()
    cfg = section(validate.ValidateConfig, "validate", params)
    schema = load_schema(params)
    return cfg, schema, validate.build_checks(schema, cfg)


def clean_table() -> pa.Table:
    return read_dataset("data/clean")


def write_parts(table: pa.Table, bounds: list[int]) -> None:
    """Rewrite data/clean as partitions cut at `bounds`."""
    edges = [0, *bounds, table.num_rows]
    parts = [
        (f"part-{i:03d}.parquet", table.slice(a, b - a)) for i, (a, b) in enumerate(pairwise(edges))
    ]
    write_dataset("data/clean", parts)


def parts_of(df: pd.DataFrame, bounds: list[int], checks, label) -> list:
    edges = [0, *bounds, len(df)]
    return [
        validate.validate_partition(df.iloc[a:b].reset_index(drop=True), checks, label)
        for a, b in pairwise(edges)
    ]


def broken(df: pd.DataFrame, schema) -> pd.DataFrame:
    """Failures of several kinds, unevenly spread: labels outside the classes in the first rows,
    a feature's nulls all in the first fifth (15% of it, 3% of all: only the whole passes)."""
    df = df.copy()
    df.loc[[1, 40], schema.label] = "maybe"
    feature = next(n for n in schema.with_role("categorical") if n != schema.label)
    df.loc[[2, 5], feature] = None
    return df


def test_several_partitions_give_the_verdict_and_counts_of_one(project):
    cfg, schema, checks = setup(project)
    df = broken(clean_table().to_pandas(), schema)
    one = validate.aggregate(parts_of(df, [], checks, schema.label), checks, cfg, schema)
    many = validate.aggregate(parts_of(df, [12, 30, 31], checks, schema.label), checks, cfg, schema)
    assert many.rows == one.rows == len(df) and many.partitions == 4
    assert many.results == one.results
    by_family = {}
    for r in many.results:
        by_family.setdefault(r["family"], []).append(r)
    assert [r["unexpected_count"] for r in by_family["label_in_set"]] == [2]
    nulls = [r for r in by_family["not_null_features"] if r["unexpected_count"]]
    assert len(nulls) == 1 and nulls[0]["unexpected_count"] == 2 and nulls[0]["success"]
    # ...although the partition holding those nulls fails the 10% bound on its own.
    first = validate.validate_partition(df.iloc[:12], checks, schema.label)
    local = validate.row_local(checks)
    i = next(i for i, c in enumerate(local) if c.family == "not_null_features" and
             c.column == nulls[0]["column"])  # fmt: skip
    assert not first.checks[i]["success"]
    # The row-local counts are GX's on the whole frame.
    whole = run_checks(df, local)
    merged = [r for r in many.results if r["family"] not in validate.WHOLE_DATASET]
    for mine, gx in zip(merged, whole, strict=True):
        assert (mine["success"], mine["unexpected_count"], mine["element_count"]) == (
            gx["success"], gx["unexpected_count"], gx["element_count"])  # fmt: skip


def test_duplicate_key_across_partitions_is_caught(project):
    cfg, schema, checks = setup(project)
    df = clean_table().to_pandas()
    df.loc[45, RECORD_ID] = df.loc[3, RECORD_ID]  # each half is still unique on its own
    parts = parts_of(df, [30], checks, schema.label)
    verdict = validate.aggregate(parts, checks, cfg, schema)
    unique = next(r for r in verdict.results if r["family"] == "key_unique")
    assert not unique["success"] and unique["unexpected_count"] == 2
    assert len(verdict.suspect_hashes) == 1
    # GX on the whole frame counts the same.
    gx = run_checks(df, [Check.of("ExpectColumnValuesToBeUnique", "key_unique", "critical",
                                  column=RECORD_ID)])  # fmt: skip
    assert gx[0]["unexpected_count"] == 2
    # The exact recount on the values agrees (and would clear a mere hash collision).
    halves = [df[RECORD_ID].iloc[:30], df[RECORD_ID].iloc[30:]]
    assert validate.exact_duplicates(halves, verdict.suspect_hashes) == 2
    assert validate.exact_duplicates(halves[:1], verdict.suspect_hashes) == 0


def test_stage_gates_on_a_duplicate_key_across_partition_files(project):
    table = clean_table()
    ids = table.column(RECORD_ID).to_pylist()
    ids[50] = ids[0]
    write_parts(table.set_column(0, RECORD_ID, pa.array(ids)), [25])
    with pytest.raises(GateFailure, match=r"expect_column_values_to_be_unique.*'record_id'.*2 of"):
        validate.main()
    results = json.loads(Path("reports/validation/results.json").read_text())
    assert results["partitions"] == 2


def test_class_balance_is_over_the_whole_dataset(project):
    cfg, schema, checks = setup(project)
    df = clean_table().to_pandas().sort_values(schema.label, ignore_index=True)
    # Each partition holds a single class, the whole is balanced: passes.
    half = int((df[schema.label] == schema.classes[0]).sum())
    parts = parts_of(df, [half], checks, schema.label)
    ok = validate.aggregate(parts, checks, cfg, schema).results[-1]
    assert ok["family"] == "class_balance" and ok["success"] and ok["element_count"] == len(df)
    # 58 of 60 in one class, one stray of the other in each of two partitions: fails, with the
    # shares of the whole (each partition's own share differs).
    df[schema.label] = schema.classes[0]
    df.loc[[10, 50], schema.label] = schema.classes[1]
    bad = validate.aggregate(parts_of(df, [20, 40], checks, schema.label), checks, cfg, schema)
    r = bad.results[-1]
    assert (
        not r["success"]
        and r["observed"] == f"{schema.classes[0]}: 0.967, {schema.classes[1]}: 0.033"
    )


def test_stage_on_partition_files_matches_one_file(project):
    table = clean_table()
    validate.main()
    one = json.loads(Path("reports/validation/results.json").read_text())
    write_parts(table, [7, 30])
    validate.main()
    many = json.loads(Path("reports/validation/results.json").read_text())
    assert (one["partitions"], many["partitions"]) == (1, 3)
    assert one["results"] == many["results"] and one["rows"] == many["rows"] == table.num_rows
    assert Path("reports/validation/docs/index.html").exists()
    m = json.loads(Path("metrics/validate.json").read_text())
    assert m["partitions"] == 3 and m["failed_critical"] == 0
