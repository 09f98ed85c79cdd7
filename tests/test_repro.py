"""`pipeline repro` over a small real git + DVC repository: stage order, the stage's own exit code
and message instead of DVC's 255, and the previous outputs back after a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stages.repro import stage_failure, stage_order
from tests.toy_dvc_repo import dvc, make_toy_repo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The toy repository after one successful `dvc repro`, committed."""
    repo = make_toy_repo(tmp_path_factory.mktemp("template") / "repo")
    dvc(repo, "repro", "-q")
    return repo


@pytest.fixture
def toy(template, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(template, repo, symlinks=True)
    return repo


def pipeline_repro(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`pipeline repro` run in the repository, as a user runs it."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    return subprocess.run(
        [sys.executable, "-m", "stages.cli", "repro", *args],
        cwd=repo,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_order_is_dvc_yaml_order_and_targets_take_their_upstream(toy):
    assert stage_order(toy) == ["prepare", "left", "right", "report"]
    assert stage_order(toy, ["right"]) == ["prepare", "right"]
    assert stage_order(toy, ["report"]) == ["prepare", "left", "right", "report"]
    with pytest.raises(ValueError, match="no stage named"):
        stage_order(toy, ["nope"])
    stages = yaml.safe_load((toy / "dvc.yaml").read_text())["stages"]
    report_first = {"report": stages.pop("report"), **stages}
    (toy / "dvc.yaml").write_text(yaml.safe_dump({"stages": report_first}, sort_keys=False))
    with pytest.raises(ValueError, match=r"needs data/left\.json from the later"):
        stage_order(toy)


def test_stage_failure_reads_the_code_dvc_reports():
    tail = [
        "warning: 2 rows dropped",
        "GATE FAILED: right: score 0.10 below threshold 0.50",
        "ERROR: failed to reproduce 'right': failed to run: python s.py right, exited with 3",
    ]
    assert stage_failure("right", 255, tail) == (
        3,
        "warning: 2 rows dropped | GATE FAILED: right: score 0.10 below threshold 0.50",
    )
    killed = ["ERROR: failed to reproduce 'train': failed to run: python t.py, exited with -9"]
    assert stage_failure("train", 255, killed)[0] == 128 + 9
    # DVC's own failure (no stage command ran): DVC's code and its ERROR line.
    own = ["ERROR: Unable to acquire lock. Most likely another DVC process is running"]
    assert stage_failure("x", 255, own) == (255, own[0])


def test_gate_failure_exits_3_with_its_message_and_keeps_previous_outputs(toy):
    before = {p: (toy / p).read_bytes() for p in ("data/right.json", "metrics/right.json")}
    params = toy / "params.yaml"
    params.write_text(params.read_text().replace("fail: false", "fail: true"))
    r = pipeline_repro(toy)
    assert r.returncode == 3, r.stderr
    assert "stage 'right' failed (exit 3): GATE FAILED: right: score 0.10" in r.stderr
    assert "restored the previous outputs of right from the DVC cache" in r.stderr
    assert "report" not in r.stdout  # the stage after it never started
    # DVC deleted them before running the stage; they are back, byte for byte.
    assert {p: (toy / p).read_bytes() for p in before} == before
    assert "lineage/runs.jsonl" not in r.stderr  # no run record for a failed run


@pytest.mark.parametrize("code", [2, 75])
def test_stage_exit_code_passes_through_instead_of_255(toy, code):
    before = (toy / "data/left.json").read_bytes()
    r = pipeline_repro(toy, "--force", TOY_FAIL=f"left:{code}")
    assert r.returncode == code, r.stderr
    assert f"stage 'left' failed (exit {code}): ERROR: left: data/incoming/batch0.csv, line 2" in (
        r.stderr
    )
    assert (toy / "data/left.json").read_bytes() == before
    assert "restored the previous outputs of left" in r.stderr


def test_success_records_a_run(toy):
    r = pipeline_repro(toy)
    assert r.returncode == 0, r.stderr
    assert "recorded in lineage/runs.jsonl" in r.stderr
    assert len((toy / "lineage/runs.jsonl").read_text().splitlines()) == 1


def test_a_first_failure_has_nothing_to_restore(tmp_path):
    fresh = make_toy_repo(tmp_path / "fresh")
    r = pipeline_repro(fresh, TOY_FAIL="prepare:2")
    assert r.returncode == 2
    assert "prepare had no previous outputs to restore" in r.stderr


def test_lineage_hashes_are_the_ones_dvc_records(toy):
    """lineage hashes with hashlib as DVC documents (file MD5; .dir manifest MD5), no dvc_data."""
    from types import SimpleNamespace

    from stages import lineage

    extra = toy / "data" / "extra"
    (extra / "sub").mkdir(parents=True)
    (extra / "a.csv").write_text("a\n1\n")
    (extra / "sub" / "b.csv").write_text("b\n2\n")
    dvc(toy, "add", "-q", "data/extra")
    repo = SimpleNamespace(root_dir=str(toy))
    recorded = yaml.safe_load((toy / "data/extra.dvc").read_text())["outs"][0]["md5"]
    now, files = lineage.hash_path(repo, "data/extra")
    assert now == recorded and set(files) == {"a.csv", "sub/b.csv"}
    assert lineage.recorded_files(repo, recorded) == files  # the manifest in DVC's cache
    lock = yaml.safe_load((toy / "dvc.lock").read_text())["stages"]
    for entry in [*lock["prepare"]["deps"], *lock["left"]["outs"]]:  # a directory and files
        assert lineage.hash_path(repo, entry["path"])[0] == entry["md5"], entry["path"]
    (extra / "a.csv").write_text("a\n2\n")
    assert lineage.hash_path(repo, "data/extra")[0] != recorded
    assert lineage.hash_path(repo, "data/missing") == (None, None)


def test_a_cached_pipeline_asks_dvc_status_once_and_a_change_reruns_downstream(toy):
    from stages.repro import repro

    lines: list[str] = []
    runs = repro(toy, out=lines.append, err=lines.append)
    assert [r.status for r in runs] == ["up-to-date"] * 4
    assert lines == []  # no `dvc repro` started: `dvc status` said everything is up to date
    params = toy / "params.yaml"
    params.write_text(params.read_text().replace("factor: 1", "factor: 2"))
    runs = repro(toy, out=lines.append, err=lines.append)
    assert [r.status for r in runs] == ["ran"] * 4
    assert runs[0].summary["rows_out"] == 6
    assert "Running stage 'report':" in lines
