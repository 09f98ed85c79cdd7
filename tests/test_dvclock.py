"""stages/lib/dvclock.py: the one reader of dvc.lock, here its text digest, and lineage's use of
it (run records and `lineage show` digest dvc.lock through it, never reading the file again)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from stages.lib import dvclock
from stages.lib.paths import MODEL_PATH
from stages.lineage.ledger import default_target
from stages.lineage.records import make_run_record

LOCK = {
    "schema": "2.0",
    "stages": {
        "train": {"cmd": "python -m stages.train", "outs": [{"path": "models/model.pt"}]},
        "report": {"cmd": "python -m stages.report", "outs": [{"path": "report/index.html"}]},
    },
}


def test_the_lock_and_its_digest_come_from_one_read(tmp_path: Path) -> None:
    assert dvclock.read_lock_digest(tmp_path) == ({}, None)
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK, sort_keys=False))
    lock, digest = dvclock.read_lock_digest(tmp_path)
    assert lock == dvclock.read_lock(tmp_path) == LOCK
    assert digest == hashlib.sha256((tmp_path / "dvc.lock").read_bytes()).hexdigest()


def test_a_run_record_digests_dvc_lock_through_the_reader(tmp_path: Path) -> None:
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(LOCK, sort_keys=False))
    record = make_run_record(tmp_path, check_status=False)
    assert record["dvc_lock_sha256"] == dvclock.read_lock_digest(tmp_path)[1]
    assert list(record["stages"]) == ["train", "report"]


def test_lineage_defaults_to_the_model_train_writes() -> None:
    assert default_target(LOCK) == MODEL_PATH.as_posix()
