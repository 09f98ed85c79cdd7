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


def test_a_key_with_non_utf8_bytes_exits_2_with_how_to_make_one(tmp_path):
    """Bytes that are not UTF-8 in the environment's key: exit 2, a message naming the variable
    and how to make a good key, no traceback and nothing of the key itself."""
    project = write_project(tmp_path, source_frame(3)).parents[2]
    env = {**venv_env(PIPELINE_WORKERS="1"), "PYTHONPATH": str(ROOT)}
    env[keys.KEY_ENV] = b"\xffsecret-\xfe-bytes-of-a-key-0123"  # type: ignore[assignment]
    done = run_module(project, "stages.ingest", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PIPELINE_HMAC_KEY holds bytes that are not UTF-8 text (byte 1 of" in done.stderr
    assert "secrets.token_hex(32)" in done.stderr
    assert "Traceback" not in done.stderr and "secret-" not in done.stderr
    assert not (project / "data/raw").exists()


def test_key_length_is_counted_in_bytes(monkeypatch):
    """16 bytes of UTF-8 serve even as 8 characters; 15 bytes do not, and the message says
    bytes and how to make a good key."""
    monkeypatch.setenv(keys.KEY_ENV, "é" * 8)  # 8 characters, 16 bytes
    assert keys.load_key() == ("é" * 8).encode("utf-8")
    monkeypatch.setenv(keys.KEY_ENV, "é" * 7 + "x")  # 8 characters, 15 bytes
    with pytest.raises(keys.BadKeyError, match=r"too short: 15 bytes \(UTF-8\); use at least 16"):
        keys.load_key()
    monkeypatch.setenv(keys.KEY_ENV, "k" * 15)
    with pytest.raises(keys.BadKeyError, match=r"secrets\.token_hex"):
        keys.load_key()


def test_a_demo_key_file_with_non_utf8_bytes_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(keys.KEY_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    keys.DEMO_KEY_FILE.parent.mkdir(parents=True)
    keys.DEMO_KEY_FILE.write_bytes(b"0123456789abcdef\x80\x81 not text")
    with pytest.raises(keys.BadKeyError, match=r"demo key file .* not UTF-8 text \(byte 17 of"):
        keys.load_key()
