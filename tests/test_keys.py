"""Which pseudonymisation key a run uses: the environment's, the random demo file's, or, for the
bundled sample only, the published demo key (same record_ids, split and metrics everywhere)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages import anonymize, ingest
from stages.lib import keys
from stages.lib.io import file_hash
from tests.conftest import ROOT, run_module, source_frame, venv_env, write_project

SAMPLE = "data/sample/customers_batch1.csv.gz"


def test_published_digests_are_the_bundled_sample_files():
    files = sorted((ROOT / "data/sample").glob("*.csv.gz"))
    assert {file_hash(f) for f in files} == keys.SAMPLE_SHA256


def test_is_sample_needs_every_digest_to_be_a_sample_file():
    one, two = sorted(keys.SAMPLE_SHA256)
    assert keys.is_sample([one, two]) and keys.is_sample([one[:10]])
    assert not keys.is_sample([])  # no data is not the sample
    assert not keys.is_sample([one, "0" * 64])  # one user file among sample files
    assert not keys.is_sample([one[:4]])  # too short a prefix to name a file


def _sample_project(tmp: Path, batch: Path, where: str = SAMPLE) -> Path:
    write_project(tmp)
    params = (tmp / "params.yaml").read_text().replace("data/in/batch.csv", where)
    (tmp / "params.yaml").write_text(params)
    (tmp / where).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(batch, tmp / where)
    return tmp


def _ingest_without_key(project: Path) -> subprocess.CompletedProcess:
    env = venv_env(PIPELINE_WORKERS="1")
    env.pop("PIPELINE_HMAC_KEY")
    return run_module(project, "stages.ingest", env={**env, "PYTHONPATH": str(ROOT)})


def test_sample_without_a_key_uses_the_published_key_on_every_machine(tmp_path):
    """Two "machines" (directories), no key set: the same published key, the same record_ids;
    a copy of the sample in data/incoming (the new-data demo) is still the sample."""
    runs = []
    for name, where in (("a", SAMPLE), ("b", "data/incoming/customers_batch1.csv.gz")):
        project = _sample_project(tmp_path / name, ROOT / SAMPLE, where)
        done = _ingest_without_key(project)
        assert done.returncode == 0, done.stderr
        assert "PUBLISHED demo pseudonymisation key" in done.stderr  # the loud warning
        assert keys.key_id(keys.SAMPLE_KEY) in done.stderr
        runs.append(pq.read_table(project / "data/raw", columns=["record_id"]).column(0))
    assert runs[0].equals(runs[1]) and len(runs[0]) == 33_050
    summary = (tmp_path / "a/metrics/ingest.json").read_text()
    assert keys.key_id(keys.SAMPLE_KEY) in summary


def test_other_data_without_a_key_exits_2_saying_how_to_set_one(tmp_path):
    """The user's own file, even saved over the sample's name, never gets the published key."""
    user = tmp_path / "user.csv.gz"
    source_frame(20).to_csv(user, index=False)
    project = _sample_project(tmp_path / "p", user)
    done = _ingest_without_key(project)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "export PIPELINE_HMAC_KEY=$(python -c 'import secrets;print(" in done.stderr
    assert "pipeline demo-key" in done.stderr
    assert not (project / "data/raw").exists()


def test_a_random_demo_key_file_serves_any_data_with_a_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(keys.MissingKeyError, match="pipeline demo-key"):
        keys.load_key()
    keys.create_demo_key()
    key = keys.load_key()
    assert key != keys.SAMPLE_KEY and keys.load_key(sample=True) == key
    assert "random local DEMO" in capsys.readouterr().err
    monkeypatch.setenv(keys.KEY_ENV, "k" * 32)
    assert keys.load_key(sample=True) == b"k" * 32  # the environment's key comes first


def test_anonymize_sees_which_batches_its_rows_came_from(tmp_path):
    one = sorted(keys.SAMPLE_SHA256)[0]
    for i, batch in enumerate([f"customers_batch1-{one[:10]}", "mine-0123456789"]):
        part = tmp_path / batch / "part-00000.parquet"
        part.parent.mkdir()
        pq.write_table(pa.table({"_batch": [batch] * 3, "x": [i] * 3}), part)
    digests = anonymize.batch_digests(tmp_path)
    assert digests == {one[:10], "0123456789"} and not keys.is_sample(digests)


def test_ingest_asks_for_a_key_before_reading_other_data(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    write_project(tmp_path, pd.DataFrame(source_frame(3)))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(keys.MissingKeyError, match="bundled sample"):
        ingest.main()
