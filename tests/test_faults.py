"""Faults around whole pipeline runs: killed stages, repeatability, concurrent runs, secrets.

Two clones of the project (in different directories) run `dvc repro` once each, on the first
rows of the sample batch; every test here compares against those reference runs. The stages
come from dvc.yaml, so each stage added to the pipeline is covered without editing this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY, venv_env
from tests.faultlib import (
    dvc,
    dvc_stages,
    fault_env,
    forget_stored_partitions,
    leftover_temporaries,
    module_stages,
    pipeline_clone,
    read_fault_log,
    scan_for_secrets,
    stage_outputs,
    tree_hashes,
    uncached_outputs,
)

pytestmark = pytest.mark.slow

# Remote credentials as a user would provide them (environment), never used: nothing is pushed.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKE7Q2Z",
    "AWS_SECRET_ACCESS_KEY": "fake/secret+Access9Key0For1Tests2Only3xyz",
    "AZURE_STORAGE_KEY": "ZmFrZS1henVyZS1rZXktZm9yLXRlc3RzLW9ubHk=",
}
SECRETS = [TEST_KEY, *CREDENTIALS.values()]
LOCK_MESSAGES = ("Unable to acquire lock", "is busy, it is being blocked by", "already in progress")


def reproducible_outputs(root: Path) -> list[str]:
    """Cached outputs of every stage, except human-readable reports (they carry run times)."""
    out = []
    for stage in dvc_stages(root).values():
        skip = set(uncached_outputs(stage))
        out += [p for p in stage_outputs(stage) if p not in skip and not p.startswith("reports/")]
    return out


def lock_outs(root: Path) -> dict[str, str]:
    """Output hashes recorded in dvc.lock, by path."""
    import yaml

    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", []) or []}


class Reference:
    """A clone after an uninterrupted `dvc repro`: its output hashes and what it logged."""

    def __init__(self, root: Path, result: subprocess.CompletedProcess, log: Path | None):
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        self.root = root
        self.output = result.stdout + result.stderr
        self.hashes = tree_hashes(root, reproducible_outputs(root))
        self.lock = lock_outs(root)
        self.log_events = read_fault_log(log) if log else []
        self.events = Counter(e["stage"] for e in self.log_events)
        self.log = log


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reference, Reference]:
    """Two clones, each reproduced once: A plainly, B with the fault hook counting writes."""
    base = tmp_path_factory.mktemp("clones")
    a = pipeline_clone(base / "first" / "repo")
    b = pipeline_clone(base / "second-clone" / "elsewhere")
    ref_a = Reference(a, dvc(a, "repro", env=venv_env(**CREDENTIALS)), None)
    (base / "logs").mkdir()
    (base / "logs" / "repro-a.log").write_text(ref_a.output)
    log = base / "logs" / "count.jsonl"
    ref_b = Reference(b, dvc(b, "repro", env=fault_env("*:count:0", log, **CREDENTIALS)), log)
    return ref_a, ref_b


def test_two_clones_give_identical_artefacts(runs) -> None:
    """Repeatable: every data artefact and the model hash the same in two separate clones."""
    a, b = runs
    assert a.hashes and a.hashes == b.hashes
    outs = reproducible_outputs(a.root)
    assert {p: a.lock[p] for p in outs} == {p: b.lock[p] for p in outs}
    assert set(b.events) == set(module_stages(b.root)), "the hook saw every stage write"


def kill_points(ref: Reference, stage: str) -> dict[str, int]:
    """Write events to kill at: the first (a partial file), the middle, the last (a rename)."""
    n = ref.events[stage]
    assert n > 0, f"no write events recorded for {stage}"
    return {"first": 1, "middle": (n + 1) // 2, "last": n}


def untracked(repo: Path) -> list[str]:
    """Files git would offer to add (personal data must never be among them)."""
    r = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        line
        for line in r.stdout.splitlines()
        if line.startswith("??") and (".tmp-" in line or ".old-" in line)
    ]


def is_complete(path: Path) -> bool:
    """An uncached output is whole: JSON parses, Parquet has its footer."""
    if path.suffix == ".json":
        json.loads(path.read_text())
    return True


# Every stage is killed in the middle of its writes; the first stage also at its first write
# (a Parquet file without its footer) and at its last (a finished temporary not yet renamed).
KILLS = [
    (stage, point)
    for i, stage in enumerate(module_stages())
    for point in (("first", "middle", "last") if i == 0 else ("middle",))
]


@pytest.mark.parametrize(("stage", "point"), KILLS, ids=[f"{s}-{p}" for s, p in KILLS])
def test_killed_stage_reruns_to_the_same_result(runs, stage: str, point: str, tmp_path) -> None:
    """SIGKILL a stage mid-write: no partial output under a real name, the rerun matches."""
    a, b = runs
    repo = b.root
    k = kill_points(b, stage)[point]
    log = tmp_path / "kill.jsonl"
    forget_stored_partitions(repo)  # the stage must do its work to be killed in the middle of it
    r = dvc(
        repo, "repro", "--force", "--single-item", stage, env=fault_env(f"{stage}:kill:{k}", log)
    )
    killed = [e for e in read_fault_log(log) if e.get("action") == "killed"]
    assert r.returncode != 0 and killed, r.stdout[-2000:] + r.stderr[-2000:]

    outputs = stage_outputs(dvc_stages(repo)[stage])
    uncached = set(uncached_outputs(dvc_stages(repo)[stage]))
    for out in outputs:
        present = tree_hashes(repo, [out]) if (repo / out).exists() else {}
        if out in uncached:
            assert all(is_complete(repo / f) for f in present)
        elif not out.startswith("reports/"):
            expected = {f: h for f, h in a.hashes.items() if f == out or f.startswith(out + "/")}
            assert present in ({}, expected), f"{out}: a partial output is in place after the kill"
    # Whatever is not whole and identical must not pass for up to date.
    intact = all((repo / o).exists() for o in outputs) and all(
        h == a.hashes[f] for f, h in tree_hashes(repo, reproducible_outputs(repo)).items()
    )
    if not intact:
        assert "up to date" not in dvc(repo, "status", stage).stdout

    r = dvc(repo, "repro")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert tree_hashes(repo, reproducible_outputs(repo)) == a.hashes
    assert "up to date" in dvc(repo, "status").stdout
    # DVC may restore the stage from its run cache instead of running it, so what the killed
    # run left can stay until the stage next runs: it must at least be invisible to git.
    assert not untracked(repo), "a killed run's temporaries must be git-ignored"


def test_second_concurrent_run_stops_with_a_clear_message(runs, tmp_path) -> None:
    """While a run is inside a stage, a second `dvc repro` refuses; the first completes intact."""
    a, b = runs
    repo = b.root
    log = tmp_path / "pause.jsonl"
    first_stage = module_stages(repo)[0]
    env = fault_env(f"{first_stage}:pause:120", log)
    first = subprocess.Popen(
        ["dvc", "repro", "--force"],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{log}.paused").exists():
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first run never reached its first write"
            time.sleep(0.1)
        second = dvc(repo, "repro", timeout=120)
        message = second.stdout + second.stderr
        assert second.returncode != 0, message
        assert any(m in message for m in LOCK_MESSAGES), message
    finally:
        Path(f"{log}.go").touch()
        out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out[-3000:]
    assert tree_hashes(repo, reproducible_outputs(repo)) == a.hashes
    assert "up to date" in dvc(repo, "status").stdout


def test_two_runs_started_at_once_corrupt_nothing(runs) -> None:
    """Two `dvc repro --force` at the same instant: a loser names the lock; the result is intact."""
    a, b = runs
    repo = b.root
    procs = [
        subprocess.Popen(
            ["dvc", "repro", "--force"],
            cwd=repo,
            env=venv_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=600), p.stdout.read()) for p in procs]
    for code, out in results:
        if code != 0:
            assert any(m in out for m in LOCK_MESSAGES), out[-3000:]
    assert any(code != 0 for code, _ in results), "both runs ran at once in one repository"
    r = dvc(repo, "repro")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert tree_hashes(repo, reproducible_outputs(repo)) == a.hashes
    assert not untracked(repo)


def test_secrets_stay_out_of_every_file_and_log(runs, tmp_path) -> None:
    """No form of the key or a credential in any file of the run, the DVC cache, or the logs."""
    a, b = runs
    assert (a.root / ".dvc/cache").is_dir()
    logs = a.root.parent.parent / "logs"
    roots = [a.root, b.root, logs]
    prefect_home = None
    if (a.root / "flows" / "pipeline.py").is_file():
        prefect_home = run_prefect_flow(a.root, tmp_path)
        roots.append(prefect_home)
    # What the pipeline wrote: everything except the project's own committed, unchanged files
    # (the tests that define these fake secrets are among those).
    committed = tuple(r / f for r in (a.root, b.root) for f in git_clean_files(r))
    scanned, findings = scan_for_secrets(roots, SECRETS, skip=committed)
    assert scanned > 50
    assert not findings, "\n".join(findings)
    # The scan can find what it looks for: the key was in the stages' environment.
    probe = tmp_path / "probe.txt"
    probe.write_text(f"x {TEST_KEY.encode().hex()} y")
    assert scan_for_secrets([probe], SECRETS)[1]


def git_clean_files(repo: Path) -> list[str]:
    """Files tracked by git and unchanged since the commit."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    changed = subprocess.run(
        ["git", "diff", "--name-only", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    return sorted(set(tracked) - set(changed))


def run_prefect_flow(repo: Path, tmp_path: Path) -> Path:
    """Run the Prefect pipeline flow over the repository; return its PREFECT_HOME."""
    home = tmp_path / "prefect-home"
    env = venv_env(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        **CREDENTIALS,
    )
    env["PYTHONPATH"] = str(repo)
    r = subprocess.run(
        ["python", "-c", "from flows.pipeline import pipeline; pipeline(repo_root='.')"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (home / "flow-output.log").write_text(r.stdout + r.stderr)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return home


def test_stages_that_write_name_the_fault_and_keep_previous_outputs(runs) -> None:
    """A disk filling up mid-write, per stage, run directly: exit 74, clear line, outputs kept."""
    _, b = runs
    repo = b.root
    env_base = {"PYTHONPATH": f"{Path(__file__).resolve().parent / 'faults'}"}
    for stage in module_stages(repo):
        outs = stage_outputs(dvc_stages(repo)[stage])
        before = tree_hashes(repo, outs)
        # The first real data write (a Parquet partition or a file opened for writing).
        n = next(e["event"] for e in b.log_events if e["stage"] == stage and e["kind"] != "replace")
        log = repo.parent / f"fail-{stage}.jsonl"
        forget_stored_partitions(repo)
        env = fault_env(f"{stage}:fail:{n}", log)
        env.update(env_base)
        r = subprocess.run(
            ["python", "-m", f"stages.{stage}"], cwd=repo, env=env, capture_output=True, text=True
        )
        err = r.stderr.strip().splitlines()
        assert r.returncode == 74, r.stderr[-3000:]
        assert err[-1].startswith("ERROR: cannot write ") and "the disk is full" in err[-1], err
        assert "MB free on the device holding" in err[-1]
        assert "Traceback" not in r.stderr
        assert tree_hashes(repo, outs) == before, f"{stage}: previous outputs changed"
        assert not leftover_temporaries(repo)
        log.unlink(missing_ok=True)
    assert "up to date" in dvc(repo, "status").stdout
    os.sync()
