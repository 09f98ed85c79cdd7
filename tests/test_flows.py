"""The pipeline and new-data flows over a small real git + DVC repository, on a test server."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

# Offline, and a Prefect home of our own, before Prefect is imported.
# Offline settings come from tests/conftest.py (OFFLINE_ENV), loaded first.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness

from flows.new_data import new_data
from flows.pipeline import StageFailed, is_transient, pipeline, summary_rows
from stages.add_batch import add_batch
from stages.repro import PipelineBusy, pipeline_lock
from tests.toy_dvc_repo import dvc, make_toy_repo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    """One Prefect test server (temporary SQLite) for the whole module."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The toy repository, built once (git init, dvc init and dvc add cost seconds each)."""
    return make_toy_repo(tmp_path_factory.mktemp("template") / "repo")


@pytest.fixture
def toy(template, tmp_path, monkeypatch):
    """A fresh copy of the toy repository; stages log attempts and timings in tmp_path/timing."""
    timing = tmp_path / "timing"
    timing.mkdir()
    monkeypatch.setenv("TOY_TIMING_DIR", str(timing))
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    return repo, timing


def attempts(timing: Path) -> list[str]:
    log = timing / "attempts.log"
    return log.read_text().split() if log.exists() else []


def artifacts_of(flow_run_id) -> dict[str, object]:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {a.key: a for a in found}


@pytest.mark.slow  # 10-20 s: several flow runs and dvc commands
def test_flow_matches_dvc_repro(toy, template, tmp_path):
    repo, _ = toy
    state = pipeline(repo_root=str(repo), return_state=True)
    assert state.is_completed(), state.message
    results = {r["stage"]: r for r in state.result()}
    assert list(results) == ["prepare", "left", "right", "report"]  # dvc.yaml order
    assert {r["status"] for r in results.values()} == {"ran"}
    assert results["prepare"]["summary"]["rows_out"] == 2 + 1  # header + 2 rows, counted as lines
    # Artifacts: one table per stage, the summary.md as Markdown.
    arts = artifacts_of(state.state_details.flow_run_id)
    assert {"stage-prepare", "stage-left", "stage-right", "stage-report"} <= set(arts)
    assert "# Toy report" in arts["pipeline-summary"].data
    assert arts["stage-left"].type == "table"
    # dvc repro has nothing left to do, and leaves dvc.lock as the flow wrote it...
    lock = (repo / "dvc.lock").read_bytes()
    out = dvc(repo, "repro")
    assert "Running stage" not in out, out
    assert (repo / "dvc.lock").read_bytes() == lock
    # ...which holds what `dvc repro` writes in a fresh copy of the repository.
    fresh = shutil.copytree(template, tmp_path / "fresh", symlinks=True)
    dvc(fresh, "repro")
    assert yaml.safe_load((fresh / "dvc.lock").read_bytes()) == yaml.safe_load(lock)
    # The other way round: after dvc repro, the flow finds every stage up to date.
    state = pipeline(repo_root=str(repo), return_state=True)
    assert {r["status"] for r in state.result()} == {"up-to-date"}


@pytest.mark.slow  # flow runs of the toy pipeline (test_repro.py covers the codes fast)
def test_gate_failure_fails_the_flow_at_once_with_the_stage_code_and_message(toy):
    repo, timing = toy
    params = repo / "params.yaml"
    params.write_text(params.read_text().replace("fail: false", "fail: true"))
    state = pipeline(repo_root=str(repo), retry_delay_s=5.0, return_state=True)
    assert state.is_failed()
    assert "GATE FAILED: right: score 0.10 below threshold 0.50" in state.message
    with pytest.raises(StageFailed) as failed:
        state.result()
    assert failed.value.code == 3 and failed.value.stage == "right"
    assert (
        failed.value.restored == "right had no previous outputs to restore (it has never completed)"
    )
    tried = attempts(timing)
    assert tried.count("right") == 1, tried  # no retry
    assert "report" not in tried  # the downstream stage never started


@pytest.mark.slow  # flow runs of the toy pipeline (test_repro.py covers the codes fast)
def test_transient_failure_is_retried_with_backoff(toy, tmp_path, monkeypatch):
    repo, timing = toy
    flaky = tmp_path / "flaky"
    flaky.mkdir()
    monkeypatch.setenv("TOY_FLAKY_DIR", str(flaky))
    state = pipeline(repo_root=str(repo), retry_delay_s=0.2, return_state=True)
    assert state.is_completed(), state.message
    assert attempts(timing).count("left") == 2  # exited 75 once, then passed


@pytest.mark.slow  # flow runs of the toy pipeline (test_repro.py covers the codes fast)
def test_flow_command_exits_with_the_stage_code_not_255(toy):
    """`python -m flows.pipeline`: a bad input (exit 2) is not retried and is the exit code."""
    repo, timing = toy
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the test server: no ephemeral one
        "TOY_FAIL": "left:2",
    }
    cmd = [sys.executable, "-m", "flows.pipeline", "--repo", str(repo)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "stage 'left' failed (exit 2): ERROR: left: data/incoming/batch0.csv, line 2" in r.stderr
    assert attempts(timing).count("left") == 1


def test_only_exit_75_is_transient_and_failures_pickle():
    assert is_transient(StageFailed("s", 75, "disk busy"))
    assert not any(is_transient(StageFailed("s", c, "m")) for c in (1, 2, 3, 74, 255))
    assert not is_transient(OSError("not a stage"))
    again = pickle.loads(pickle.dumps(StageFailed("train", 3, "GATE FAILED: x", "restored")))
    assert (again.stage, again.code, again.message, again.restored) == (
        "train",
        3,
        "GATE FAILED: x",
        "restored",
    )


@pytest.mark.slow  # 10-20 s: several flow runs and dvc commands
def test_param_override_is_recorded_as_a_dvc_experiment(toy):
    repo, _ = toy
    pipeline(repo_root=str(repo))  # the baseline
    params_before = (repo / "params.yaml").read_text()
    lock_before = (repo / "dvc.lock").read_text()
    results = pipeline(repo_root=str(repo), params=["prepare.factor=3"], experiment="triple")
    assert [r["experiment"] for r in results] == ["triple"]
    refs = subprocess.run(
        ["git", "for-each-ref", "--format=%(refname)", "refs/exps"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ref = next(r for r in refs if r.endswith("/triple"))

    def show(path: str) -> str:
        cmd = ["git", "show", f"{ref}:{path}"]
        return subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=True).stdout

    assert "factor: 3" in show("params.yaml")
    assert "prepare.factor: 3" in show("dvc.lock")
    # The workspace was never touched: committed params, dvc.lock and outputs.
    assert (repo / "params.yaml").read_text() == params_before
    assert (repo / "dvc.lock").read_text() == lock_before
    assert "up to date" in dvc(repo, "status")


def test_second_caller_is_refused_with_the_holder_named(toy):
    repo, _ = toy

    def second_lock():
        with pipeline_lock(repo, "second caller"):
            pass  # pragma: no cover

    # The second callers run in another thread: a fresh context, as another process would be.
    with pipeline_lock(repo, "nightly run 42"), ThreadPoolExecutor(1) as other:
        with pytest.raises(PipelineBusy, match="nightly run 42"):
            other.submit(second_lock).result()
        state = other.submit(pipeline, repo_root=str(repo), return_state=True).result()
    assert state.is_failed() and "already in progress" in state.message
    assert "nightly run 42" in state.message
    with pipeline_lock(repo, "afterwards"):  # released
        pass


def test_add_batch_skips_content_already_present(toy, tmp_path):
    repo, _ = toy
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "b1.csv").write_text("a,b\n5,6\n")
    (inbox / "same-as-batch0.csv").write_bytes((repo / "data/incoming/batch0.csv").read_bytes())
    (inbox / "batch0.csv").write_text("a,b\n7,8\n")  # new content under a taken name
    added = add_batch(repo, str(inbox / "*.csv"))
    assert [p.parent.as_posix() for p in added] == ["data/incoming"] * 2
    names = sorted(p.name for p in added)
    assert names[0] == "b1.csv" and names[1].startswith("batch0-")
    assert all((repo / f"{p}.dvc").is_file() for p in added)
    assert add_batch(repo, str(inbox)) == []


@pytest.mark.slow  # 10-20 s: several flow runs and dvc commands
def test_new_data_flow_twice_with_the_same_batch(toy, tmp_path):
    repo, _ = toy
    dvc(repo, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    batch = tmp_path / "adult-test-batch.csv"
    batch.write_text("a,b\n" + "\n".join(f"{i},{i}" for i in range(10)) + "\n")
    first = new_data(batch=str(batch), repo_root=str(repo))
    assert first["added"] == ["data/incoming/adult-test-batch.csv"]
    status = {r["stage"]: r["status"] for r in first["stages"]}
    assert status["prepare"] == "ran" and status["report"] == "ran"
    assert first["pushed"] > 0  # a default remote is configured
    assert "in sync" in dvc(repo, "status", "--cloud")
    lock = (repo / "dvc.lock").read_bytes()
    second = new_data(batch=str(batch), repo_root=str(repo))
    assert second["added"] == []
    assert {r["status"] for r in second["stages"]} == {"up-to-date"}
    assert second["pushed"] == 0
    assert (repo / "dvc.lock").read_bytes() == lock


def test_summary_rows_flatten_a_stage_summary_for_its_table():
    summary = {
        "rows_out": 3,
        "extra": {"entities": {"EMAIL": 2}, "none": {}, "cols": ["a", "b"], "many": [0] * 21},
    }
    assert summary_rows(summary) == [
        {"key": "rows_out", "value": 3},
        {"key": "extra.entities.EMAIL", "value": 2},
        {"key": "extra.cols", "value": '["a", "b"]'},
        {"key": "extra.many", "value": "[21 items]"},
    ]
    assert summary_rows(None) == summary_rows({}) == []
