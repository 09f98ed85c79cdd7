"""The shared run identity, dvc.lock reader, digest, git helper and params flattener
(stages/lib): lineage's run records and the report read them from one place."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from stages.lib import dvclock, runinfo
from stages.lib.digest import canonical_digest
from stages.lib.dvccli import dvc_json, stage_name
from stages.lib.git import git_state, is_run_output, tree_text
from stages.lineage.records import make_run_record
from stages.report.render import run_identity


def _git(root: Path, *args: str) -> None:
    cmd = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args]
    subprocess.run(cmd, cwd=root, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    _git(tmp_path, "init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "params.yaml").write_text("train:\n  seed: 7\n")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "init")
    return tmp_path


def test_canonical_digest_ignores_key_order_and_sees_values():
    assert canonical_digest({"a": 1, "b": [1, 2]}) == canonical_digest({"b": [1, 2], "a": 1})
    assert canonical_digest({"a": 1}) != canonical_digest({"a": 2})
    assert len(canonical_digest({"a": 1}, 12)) == 12


def test_param_leaves_one_flattener_for_lineage_and_report():
    value = {"lr": 0.1, "layers": [8, 4], "opt": {"name": "adam", "betas": {"b1": 0.9}}, "e": {}}
    leaves = dvclock.param_leaves(value, "train")
    assert leaves == {
        "train.lr": 0.1,
        "train.layers": [8, 4],  # a list is one leaf, as dvc.lock keys it
        "train.opt.name": "adam",
        "train.opt.betas.b1": 0.9,
        "train.e": {},
    }
    big = {f"c{i}": i for i in range(dvclock.MAX_SHOWN_PARAM_LEAVES + 1)}
    shown, summary = dvclock.shown_params("schema", big)
    assert shown == {} and summary.startswith(f"{len(big)} values, sha256:")
    shown, summary = dvclock.shown_params("train", value)
    assert shown == leaves and summary is None


def test_dvc_lock_reader(tmp_path):
    assert dvclock.read_lock(tmp_path) == {} and dvclock.lock_entry(tmp_path, "x") is None
    lock = {"stages": {"a": {"outs": [{"path": "data/a", "hash": "md5", "md5": "1.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert dvclock.lock_outputs(dvclock.read_lock(tmp_path)) == ["data/a"]
    (out,) = dvclock.lock_entry(tmp_path, "a")["outs"]
    assert dvclock.entry_hash(out) == "1.dir" and dvclock.hash_name(out) == "md5"
    assert dvclock.params_value({"a": {"b": 3}}, "a.b") == 3
    assert dvclock.params_value({"a.b": 4}, "a.b") == 4


def test_dirty_means_code_changed_not_run_outputs(repo):
    state = git_state(repo, ["data/clean"])
    assert state["commit"] and not state["dirty"] and tree_text(state) == "clean"
    (repo / "metrics").mkdir()
    (repo / "metrics/train.json").write_text("{}")
    (repo / "dvc.lock").write_text("stages: {}\n")
    (repo / "data/clean").mkdir(parents=True)
    (repo / "data/clean/part.parquet").write_text("x")
    state = git_state(repo, ["data/clean"])
    assert not state["dirty"] and state["changed_files"] == 3
    assert tree_text(state).startswith("dirty: only run outputs")
    (repo / "code.py").write_text("x = 2\n")
    state = git_state(repo, ["data/clean"])
    assert state["dirty"] and state["dirty_files"] == ["code.py"]
    assert tree_text(state).startswith("DIRTY: 1")
    assert is_run_output("data/incoming/b.csv.dvc") and not is_run_output("stages/x.py")


def test_lineage_and_report_agree_on_the_run_identity(repo, monkeypatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PREFECT__FLOW_RUN_ID", "flow-run-42")
    (repo / "code.py").write_text("x = 3\n")
    record = make_run_record(repo, check_status=False)
    page = run_identity()
    assert record["prefect_flow_run_id"] == page["prefect_flow_run"] == "flow-run-42"
    assert record["git"]["commit"] == page["commit"]
    assert record["git"]["dirty"] is page["code_dirty"] is True
    assert set(record["packages"]) == set(page["packages"]) >= {"python", "dvc", "pandas"}
    assert runinfo.prefect_flow_run_id() == "flow-run-42"


def test_dvc_json_says_why_when_dvc_cannot_answer(tmp_path):
    data, why = dvc_json(tmp_path, "status")
    assert data is None and why
    assert stage_name("dvc.yaml:train") == "train" and stage_name("train") == "train"
