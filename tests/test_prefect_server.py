"""A real Prefect server, served deployments, a triggered run: Completed, artifacts, dvc.lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

# Offline settings come from tests/conftest.py (OFFLINE_ENV), loaded first.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="prefect-home-"))

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.toy_dvc_repo import dvc, make_toy_repo

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
CRON = "0 3 * * 1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None, log=None):
    """Poll `check()` until it returns something truthy; fail with the process log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.5)
    tail = Path(log).read_text()[-4000:] if log else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


def start_server(home: Path) -> tuple[subprocess.Popen, str]:
    """`prefect server start` on a free port, SQLite under `home`; wait until it is healthy."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        # Schedule runs within seconds of a deployment's creation, not after a minute.
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    }
    env.pop("PREFECT_API_URL", None)
    log = home / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(
            lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200,
            180, "the Prefect server", proc, log,
        )  # fmt: skip
    except BaseException:
        stop(proc)
        raise
    return proc, url


def start_serving(url: str, home: Path, repo: Path) -> tuple[subprocess.Popen, Path]:
    """`python -m flows.deploy` serving the repository's deployments; wait till registered."""
    env = {
        **os.environ,
        "PREFECT_API_URL": url,
        "PREFECT_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    log = home / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.deploy", "--repo", str(repo), "--cron", CRON],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            wait_for(
                lambda: _deployment("dvc-new-data/new-data"), 120, "the deployments", proc, log
            )
    except BaseException:
        stop(proc)
        raise
    return proc, log


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A Prefect server for the module."""
    home = tmp_path_factory.mktemp("prefect-server")
    proc, url = start_server(home)
    try:
        yield url, home
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def served(server, tmp_path_factory):
    """A toy repository and `python -m flows.deploy` serving its deployments."""
    url, home = server
    repo = make_toy_repo(tmp_path_factory.mktemp("served") / "repo", sleep_s=0.2)
    proc, log = start_serving(url, home, repo)
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield repo, log
    finally:
        stop(proc)


def _deployment(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_scheduled_deployment_runs_completed_with_artifacts(served, tmp_path):
    repo, log = served
    deployment = _deployment("dvc-pipeline/scheduled")
    assert [s.schedule.cron for s in deployment.schedules] == [CRON]
    assert deployment.parameters["repo_root"] == str(repo.resolve())

    def scheduled_runs():
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                    )
                ),
            )

    assert wait_for(scheduled_runs, 60, "the scheduler to create runs from the cron")

    run = run_deployment("dvc-pipeline/scheduled", timeout=300, poll_interval=1)
    assert run.state.is_completed(), f"{run.state}\n{Path(log).read_text()[-4000:]}"
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
    keys = {a.key for a in arts}
    assert {"stage-prepare", "stage-left", "stage-right", "stage-report"} <= keys
    summary = next(a for a in arts if a.key == "pipeline-summary")
    assert "# Toy report" in summary.data
    # dvc.lock is what `dvc repro` produces: nothing to redo here, and the same as a fresh repro.
    lock = (repo / "dvc.lock").read_bytes()
    assert "Running stage" not in dvc(repo, "repro")
    assert (repo / "dvc.lock").read_bytes() == lock
    fresh = make_toy_repo(tmp_path / "fresh", sleep_s=0.2)
    dvc(fresh, "repro")
    # Same entries; their order in the file follows completion order, which concurrency varies.
    assert yaml.safe_load((fresh / "dvc.lock").read_bytes()) == yaml.safe_load(lock)


def test_new_data_deployment_adds_a_batch(served, tmp_path):
    repo, log = served
    batch = tmp_path / "new-batch.csv"
    batch.write_text("a,b\n1,1\n2,2\n")
    run = run_deployment("dvc-new-data/new-data", parameters={"batch": str(batch)}, timeout=300)
    assert run.state.is_completed(), f"{run.state}\n{Path(log).read_text()[-4000:]}"
    assert (repo / "data/incoming/new-batch.csv.dvc").is_file()
    assert "Running stage" not in dvc(repo, "repro")


def test_serving_process_exits_promptly_on_sigterm_after_its_server_went_away(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    server_proc, url = start_server(home)
    repo = make_toy_repo(tmp_path / "repo")
    try:
        serving, log = start_serving(url, home, repo)
        server_proc.kill()  # the server goes away without a word...
        server_proc.wait(30)
        time.sleep(30)  # ...and the runner's polling has failed for a while (before the fix,
        # SIGTERM then left the process running for minutes: its clean-up kept retrying)
        if serving.poll() is not None:
            # Prefect's runner can give up on the absent server within those 30 s (it did in
            # two fresh clones); serving must then have stopped as a transient failure (75)
            # that names the server, not hung.
            assert serving.returncode == 75, log.read_text()[-2000:]
            assert "cannot reach the Prefect server" in log.read_text()
            return
        start = time.monotonic()
        serving.send_signal(signal.SIGTERM)
        try:
            code = serving.wait(timeout=60)
        finally:
            took = time.monotonic() - start
            if serving.poll() is None:
                serving.kill()
    finally:
        server_proc.kill()
        server_proc.wait(30)
    assert took < 15, f"took {took:.1f} s\n{log.read_text()[-3000:]}"
    assert code == 0
    assert "Stopping: signal received." in log.read_text()
