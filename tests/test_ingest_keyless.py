"""Ingest as a stage: keyless data, header-less and extensionless files, files it does not read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages import ingest
from stages.lib.params import ParamsError
from stages.lib.schema import RECORD_ID, load_schema
from tests.conftest import params, source_frame, write_project

KEYLESS = {"type": "string", "role": "attribute"}  # customer_id kept, but no longer the key


def keyless_project(tmp: Path, files: dict[str, pd.DataFrame]) -> Path:
    write_project(tmp, None, ingest__sources=["data/in"], schema__columns__customer_id=KEYLESS)
    for name, frame in files.items():
        frame.to_csv(tmp / "data/in" / name, index=False)
    return tmp


def raw_ids(tmp: Path) -> pd.DataFrame:
    raw = pd.read_parquet(tmp / "data/raw")
    return raw.sort_values(["_source_file", "_source_row"]).reset_index(drop=True)


def run_ingest(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    monkeypatch.chdir(tmp)
    ingest.main()
    return raw_ids(tmp)


def test_schema_without_a_key(tmp_path: Path) -> None:
    p = params()
    p["schema"]["columns"]["customer_id"] = KEYLESS
    assert load_schema(p).key is None
    p["schema"]["columns"]["email"]["role"] = "key"
    p["schema"]["columns"]["phone"]["role"] = "key"
    with pytest.raises(
        ParamsError, match=r"schema: 2 columns have role 'key' \(\['email', 'phone'\]"
    ):
        load_schema(p)


def test_keyless_record_ids_distinct_and_stable(tmp_path: Path, monkeypatch, key) -> None:
    """record_id = keyed hash of the row's content + occurrence number in file and row order:
    identical rows (in one file and across files) get distinct ids, the same on every rerun,
    whether the per-file results are reused or not; an earlier file's ids never depend on a
    later file; another key gives other ids."""
    a = source_frame(12)
    a.loc[5] = a.loc[3]  # the same row twice in a.csv
    b = source_frame(12).iloc[[3, 7, 8]].copy()  # its first row repeats a's row 3 a third time
    b.loc[8, "notes"] = "changed"
    tmp = keyless_project(tmp_path / "p", {"a.csv": a, "b.csv": b})
    first = run_ingest(tmp, monkeypatch)
    assert first[RECORD_ID].is_unique and first[RECORD_ID].notna().all()
    summary = json.loads((tmp / "metrics/ingest.json").read_text())
    assert summary["record_id"].startswith("row content")

    again = run_ingest(tmp, monkeypatch)  # per-file results reused from the cache
    assert again[RECORD_ID].tolist() == first[RECORD_ID].tolist()
    shutil.rmtree(tmp / "data/raw")
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(tmp_path / "fresh-cache"))
    assert run_ingest(tmp, monkeypatch)[RECORD_ID].tolist() == first[RECORD_ID].tolist()

    # b's copy of row 3 is its third occurrence: without b, a's ids stay; with b alone it is
    # the first occurrence, so it takes the id a's first row 3 had.
    (tmp / "data/in/b.csv").rename(tmp / "b.csv")
    only_a = run_ingest(tmp, monkeypatch)
    assert only_a[RECORD_ID].tolist() == first[RECORD_ID].tolist()[:12]
    (tmp / "data/in/a.csv").rename(tmp / "a.csv")
    (tmp / "b.csv").rename(tmp / "data/in/b.csv")
    only_b = run_ingest(tmp, monkeypatch)
    assert only_b[RECORD_ID].iloc[0] == first[RECORD_ID].iloc[3]
    assert only_b[RECORD_ID].iloc[0] not in set(first[RECORD_ID].iloc[12:])

    monkeypatch.setenv("PIPELINE_HMAC_KEY", "another-key-0123456789")
    assert not set(run_ingest(tmp, monkeypatch)[RECORD_ID]) & set(only_b[RECORD_ID])


def test_keyed_ids_unchanged(tmp_path: Path, monkeypatch, key) -> None:
    """With a key column, record_id is still the keyed pseudonym of the key alone."""
    from stages.lib.keys import pseudonymize

    frame = source_frame(5)
    write_project(tmp_path, frame)
    raw = run_ingest(tmp_path, monkeypatch)
    assert raw[RECORD_ID].tolist() == pseudonymize(
        key.encode(), frame["customer_id"].tolist(), "record"
    )


def test_headerless_extensionless_tsv_with_format_param(tmp_path: Path, monkeypatch, key) -> None:
    """ingest.format reads a file without an extension; ingest.header false takes the schema's
    columns in order; a quote in TSV is data."""
    frame = source_frame(6)
    frame.loc[2, "notes"] = '"Free entry: text back now'
    write_project(tmp_path, None, ingest__sources=["data/in/sms"], ingest__format="tsv")
    p = yaml.safe_load((tmp_path / "params.yaml").read_text())
    p["ingest"]["header"] = False
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    (tmp_path / "data/in/sms").write_text(
        "\n".join("\t".join(row) for row in frame.astype(str).values.tolist()) + "\n"
    )
    raw = run_ingest(tmp_path, monkeypatch)
    assert len(raw) == 6 and raw["notes"].iloc[2] == '"Free entry: text back now'
    assert raw["customer_id"].tolist() == frame["customer_id"].tolist()


def test_files_not_read_are_named(tmp_path: Path, monkeypatch, key, capsys) -> None:
    """Issue 14: a folder's .xlsx, .md and .DS_Store files were ignored without a word. DVC's
    .dvc and .gitignore files and the folder's README are not data and no news."""
    write_project(tmp_path, source_frame(5), ingest__sources=["data/in"])
    for name in (
        "report.xlsx",
        "notes.md",
        ".DS_Store",
        "batch.csv.dvc",
        ".gitignore",
        "README.md",
    ):
        (tmp_path / "data/in" / name).write_bytes(b"x")
    run_ingest(tmp_path, monkeypatch)
    skipped = json.loads((tmp_path / "metrics/ingest.json").read_text())["skipped_files"]
    assert [(Path(s["file"]).name, s["reason"][:11]) for s in skipped] == [
        (".DS_Store", "a hidden fi"),
        ("notes.md", "unsupported"),
        ("report.xlsx", "unsupported"),
    ]
    err = capsys.readouterr().err
    assert "WARNING: ingest: data/in/report.xlsx is not read: unsupported type (.xlsx)" in err
