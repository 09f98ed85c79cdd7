"""Stage tests: ingest -> clean -> validate in a temporary project directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages import clean, ingest, validate
from stages.lib.errors import GateFailure, InputError
from stages.lib.keys import MissingKeyError
from tests.conftest import TEST_KEY, source_frame, write_project


def run_data_path(tmp: Path) -> dict:
    ingest.main()
    clean.main()
    validate.main()
    return {
        s: json.loads((tmp / f"metrics/{s}.json").read_text())
        for s in ("ingest", "clean", "validate")
    }


def test_data_path_accounts_rows_and_writes_docs(tmp_path, monkeypatch, key):
    frame = source_frame(50)
    frame.loc[3, "age"] = "999"
    frame = pd.concat([frame, frame.iloc[[10, 11]]], ignore_index=True)
    write_project(tmp_path, frame)
    monkeypatch.chdir(tmp_path)
    m = run_data_path(tmp_path)
    assert m["ingest"]["rows_out"] == 52
    assert m["clean"]["rows_in"] == 52
    assert m["clean"]["rows_out"] + m["clean"]["rows_quarantined"] + m["clean"]["duplicates"] == 52
    assert m["clean"]["duplicates"] == 2 and m["clean"]["quarantined_by_reason"] == {
        "age out of range": 1
    }
    q = pd.read_parquet(tmp_path / "data/quarantine")
    assert len(q) == 3 and q["_reason"].notna().all()
    assert (tmp_path / "reports/validation/docs/index.html").exists()
    assert m["validate"]["failed_critical"] == 0
    raw = pd.read_parquet(tmp_path / "data/raw")
    assert raw["record_id"].str.len().eq(32).all() and TEST_KEY not in raw.to_csv()


def test_record_ids_are_stable_and_keyed(tmp_path, monkeypatch, key):
    write_project(tmp_path, source_frame(5))
    monkeypatch.chdir(tmp_path)
    ingest.main()
    first = pd.read_parquet("data/raw")["record_id"].tolist()
    ingest.main()
    assert pd.read_parquet("data/raw")["record_id"].tolist() == first
    monkeypatch.setenv("PIPELINE_HMAC_KEY", "another-key-0123456789")
    ingest.main()
    assert set(pd.read_parquet("data/raw")["record_id"]).isdisjoint(first)


def test_critical_breach_stops_with_a_clear_message(tmp_path, monkeypatch, key):
    frame = source_frame(30)
    frame.loc[[2, 5], "income"] = "unknown-class"
    write_project(tmp_path, frame)
    monkeypatch.chdir(tmp_path)
    ingest.main()
    clean.main()
    with pytest.raises(GateFailure) as err:
        validate.main()
    msg = str(err.value)
    assert (
        "expect_column_values_to_be_in_set" in msg and "'income'" in msg and "2 of 30 rows" in msg
    )
    results = json.loads(Path("reports/validation/results.json").read_text())
    assert any(not r["success"] and r["severity"] == "critical" for r in results["results"])


def test_warning_is_recorded_and_run_goes_on(tmp_path, monkeypatch, key):
    frame = source_frame(30)
    frame.loc[:10, "workclass"] = "?"
    write_project(tmp_path, frame)
    monkeypatch.chdir(tmp_path)
    m = run_data_path(tmp_path)
    assert m["validate"]["failed_warning"] == 1 and m["validate"]["failed_critical"] == 0


def test_no_key_refuses_to_run(tmp_path, monkeypatch):
    monkeypatch.delenv("PIPELINE_HMAC_KEY", raising=False)
    write_project(tmp_path, source_frame(3))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingKeyError, match="PIPELINE_HMAC_KEY"):
        ingest.main()


# Unreadable files, missing/extra columns and truncated rows: see tests/test_bad_input.py.


def test_ingest_reads_only_a_new_batch_and_names_a_bad_file_from_a_worker(
    tmp_path, monkeypatch, key
):
    """Batch files are ingested in worker processes; an earlier batch is reused, not re-read."""
    monkeypatch.setenv("PIPELINE_WORKERS", "2")
    write_project(tmp_path, source_frame(30), name="a.csv")
    monkeypatch.chdir(tmp_path)
    p = yaml.safe_load(Path("params.yaml").read_text())
    p["ingest"]["sources"] = ["data/in"]
    Path("params.yaml").write_text(yaml.safe_dump(p))
    ingest.main()
    first = pd.read_parquet("data/raw")
    later = source_frame(45).iloc[30:]
    later.to_csv("data/in/b.csv", index=False)
    ingest.main()
    m = json.loads(Path("metrics/ingest.json").read_text())
    assert [(b["rows"], b["reused"]) for b in m["batches"]] == [(30, True), (15, False)]
    both = pd.read_parquet("data/raw")
    assert len(both) == 45 and both.iloc[:30].equals(first)
    Path("data/in/c.csv").write_text(Path("data/in/b.csv").read_text().replace(",", ";", 3))
    Path("data/in/d.csv").write_text("only,a,header\n")
    with pytest.raises(InputError, match=r"data/in/[cd]\.csv"):
        ingest.main()
    assert pd.read_parquet("data/raw").equals(both)  # the failed run left the output alone


def test_clean_does_only_the_new_batch_and_still_catches_its_duplicates(
    tmp_path, monkeypatch, key, capsys
):
    """A later batch is deduplicated against earlier ones whose work is reused, not redone."""
    write_project(tmp_path, source_frame(40).iloc[:30], name="a.csv")
    monkeypatch.chdir(tmp_path)
    p = yaml.safe_load(Path("params.yaml").read_text())
    p["ingest"]["sources"] = ["data/in"]
    Path("params.yaml").write_text(yaml.safe_dump(p))
    ingest.main()
    clean.main()
    # Batch b: rows 30..39 are new, row 5 repeats a customer of batch a.
    source_frame(40).iloc[[*range(30, 40), 5]].to_csv("data/in/b.csv", index=False)
    ingest.main()
    capsys.readouterr()
    clean.main()
    err = capsys.readouterr().err
    assert "1 reused, 1 to run" in err and "reused for 1 of 2" in err
    m = json.loads(Path("metrics/clean.json").read_text())
    assert (m["rows_in"], m["rows_out"], m["duplicates"]) == (41, 40, 1)
    incremental = pd.read_parquet("data/clean")
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(tmp_path / "empty-cache"))
    clean.main()
    assert pd.read_parquet("data/clean").equals(incremental)  # the same as from scratch
