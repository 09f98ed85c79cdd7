"""Environment faults: a full disk and a read-only output directory.

Each test first runs ingest on a small batch (the previous good output), then makes writing
fail and runs it again on a bigger batch. The user must see one line naming the output, the
cause and the fix (exit code 74), and the previous output must be left exactly as it was.
Real faults where the machine allows (a tiny tmpfs, a read-only bind mount, a non-root user);
a simulated write error always.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from stages import ingest
from stages.lib.errors import EXIT_WRITE_FAILED, run_stage
from stages.lib.io import AtomicDir
from tests.conftest import ROOT, TEST_KEY, source_frame, venv_env, write_project
from tests.faultlib import leftover_temporaries, tree_hashes

OUTPUTS = ["data/raw", "metrics/ingest.json"]


def project(tmp: Path, rows: int = 20) -> Path:
    """A project whose ingest already ran once on `rows` rows; the input then grows to 3000.

    The batch lives outside data/, so that data/ can be mounted or locked on its own.
    """
    write_project(tmp, None, ingest__sources=["in/batch.csv"])
    (tmp / "in").mkdir()
    source_frame(rows).to_csv(tmp / "in/batch.csv", index=False)
    # The good run in this process (a stage subprocess costs seconds of imports); the faulted
    # run, which the tests are about, is run_ingest's subprocess.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("HOME", str(tmp))
        mp.setenv("PIPELINE_HMAC_KEY", TEST_KEY)
        mp.delenv("PIPELINE_PARTITION_CACHE")  # the project's own .pipeline-cache, as for a user
        ingest.main()
    source_frame(3000).to_csv(tmp / "in/batch.csv", index=False)
    return tmp


def run_ingest(tmp: Path, user: list[str] | None = None) -> subprocess.CompletedProcess:
    env = venv_env(PYTHONPATH=str(ROOT), HOME=str(tmp))
    env.pop("PIPELINE_PARTITION_CACHE")  # the project's own .pipeline-cache, as for a user
    return subprocess.run(
        [*(user or []), sys.executable, "-m", "stages.ingest"],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
    )


def assert_clear_failure(r: subprocess.CompletedProcess, why: str) -> str:
    line = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""
    assert r.returncode == EXIT_WRITE_FAILED, r.stderr[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    assert line.startswith("ERROR: cannot write data/raw"), line
    assert why in line and "the previous outputs are left as they were" in line, line
    return line


def mount(*args: str) -> None:
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here ({r.stderr.strip() or r.returncode}): real fault skipped")


def test_disk_full_simulated(tmp_path, monkeypatch, key, capsys, partition_cache) -> None:
    """The disk fills up while ingest writes its second partition."""
    write_project(tmp_path, source_frame(20), io__partition_rows=10)
    monkeypatch.chdir(tmp_path)
    ingest.main()
    before = tree_hashes(tmp_path, OUTPUTS)
    source_frame(50).to_csv(tmp_path / "data/in/batch.csv", index=False)
    real_write = pq.ParquetWriter.write_table
    calls = []

    def write_table(self, table, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space")
        return real_write(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", write_table)
    with pytest.raises(SystemExit) as exit_:
        run_stage(ingest.main)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress lines
    assert exit_.value.code == EXIT_WRITE_FAILED
    # The batch's partitions are written where they are stored, then linked into data/raw.
    assert err.startswith(f"ERROR: cannot write {partition_cache}/ingest/"), err
    assert "the disk is full" in err and "MB free on the device holding" in err
    assert tree_hashes(tmp_path, OUTPUTS) == before
    assert not leftover_temporaries(tmp_path)


def test_disk_full_on_a_tiny_tmpfs(tmp_path) -> None:
    """A real full disk: data/ on a 512 KiB tmpfs, filled up before the second run."""
    p = project(tmp_path)
    saved = tmp_path.parent / f"{tmp_path.name}-saved"
    shutil.copytree(p / "data", saved)
    mount("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(p / "data"))
    try:
        shutil.copytree(saved, p / "data", dirs_exist_ok=True)
        before = tree_hashes(p, OUTPUTS)
        # Leave about 64 KiB: enough to start, not enough for 3000 rows.
        free = shutil.disk_usage(p / "data").free
        (p / "data/filler").write_bytes(b"\0" * max(0, free - (64 << 10)))
        r = run_ingest(p)
        line = assert_clear_failure(r, "the disk is full")
        assert "MB free on the device holding" in line
        assert tree_hashes(p, OUTPUTS) == before
        assert not leftover_temporaries(p)
    finally:
        subprocess.run(["umount", str(p / "data")], check=False)


def test_read_only_mount(tmp_path) -> None:
    """data/ remounted read-only (even root cannot write there)."""
    p = project(tmp_path)
    before = tree_hashes(p, OUTPUTS)
    mount("--bind", str(p / "data"), str(p / "data"))
    try:
        mount("-o", "remount,bind,ro", str(p / "data"))
        r = run_ingest(p)
        line = assert_clear_failure(r, "the file system is read-only")
        assert f"make {(p / 'data').resolve()} writable" in line
        assert tree_hashes(p, OUTPUTS) == before
    finally:
        subprocess.run(["umount", str(p / "data")], check=False)


def test_read_only_directory_for_a_normal_user() -> None:
    """data/ with mode 0555, the stage run by a user who does not own it."""
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root ignores permissions and setpriv is not available")
        user = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        user = []
    tmp = Path(tempfile.mkdtemp(prefix="ro-test-"))  # not under pytest's root-only tmp
    try:
        os.chmod(tmp, 0o755)
        p = project(tmp)
        if user:
            probe = subprocess.run([*user, "test", "-r", str(ROOT / "stages/ingest.py")])
            if probe.returncode != 0:
                pytest.skip("the unprivileged user cannot read the project")
            for d, _, files in os.walk(p):
                for name in [".", *files]:
                    os.chown(Path(d) / name, 65534, 65534)
            os.chown(p / "data", 0, 0)  # owned by someone else, and read-only
        before = tree_hashes(p, OUTPUTS)
        os.chmod(p / "data", 0o555)
        r = run_ingest(p, user)
        line = assert_clear_failure(r, "permission denied")
        assert "writable for user id" in line
        assert tree_hashes(p, OUTPUTS) == before
    finally:
        if (tmp / "data").exists():
            os.chmod(tmp / "data", 0o755)
        shutil.rmtree(tmp, ignore_errors=True)


def test_temporaries_of_dead_processes_are_removed(tmp_path) -> None:
    """What a killed writer left is cleared by the next writer; a live writer's is not."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".raw.tmp-{dead.pid}-abc"
    stale_old = tmp_path / f".raw.old-{dead.pid}"
    live = tmp_path / f".raw.tmp-{os.getppid()}-xyz"
    for d in (stale, stale_old, live):
        (d / "b").mkdir(parents=True)
    with AtomicDir(tmp_path / "raw"):
        pass
    assert not stale.exists() and not stale_old.exists() and live.exists()
    assert (tmp_path / "raw").is_dir()
