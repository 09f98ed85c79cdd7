"""`pipeline add-batch`: only data files are added; everything else is named, never reported
as added; a bad path or an unwritable folder is one message and an exit code, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stages.add_batch import add_batch, batch_files
from stages.lib.errors import InputError, run_stage
from stages.lib.io import WriteError
from tests.conftest import project_copy, run_module

JUNK = {"report.xlsx": b"PK\x03\x04", "README.md": b"# notes", ".DS_Store": b"\x00\x01"}


def inbox(tmp: Path, files: dict[str, bytes]) -> Path:
    folder = tmp / "inbox"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


def test_batch_files_names_what_is_not_data(tmp_path: Path) -> None:
    folder = inbox(tmp_path, {**JUNK, "b1.csv": b"a,b\n1,2\n", "b2.jsonl.gz": b""})
    files, skipped = batch_files(folder)
    assert [f.name for f in files] == ["b1.csv", "b2.jsonl.gz"]
    assert {f.name: why.split(" (")[0] for f, why in skipped} == {
        ".DS_Store": "a hidden file",
        "README.md": "unsupported type",
        "report.xlsx": "unsupported type",
    }
    # With ingest.format set, a file without an extension is data.
    (folder / "sms").write_text("1\tx\n")
    assert "sms" in [f.name for f in batch_files(folder, "tsv")[0]]


def test_nothing_usable_or_nothing_there_is_an_input_error(tmp_path: Path) -> None:
    folder = inbox(tmp_path, JUNK)
    with pytest.raises(InputError, match=r"add-batch: nothing to add from .*inbox: no data file"):
        add_batch(tmp_path, folder)
    with pytest.raises(InputError, match=r"add-batch: .*missing\.csv does not exist"):
        add_batch(tmp_path, tmp_path / "missing.csv")
    with pytest.raises(InputError, match=r"add-batch: .*empty is an empty folder"):
        (tmp_path / "empty").mkdir()
        add_batch(tmp_path, tmp_path / "empty")


def test_unwritable_target_is_a_write_error(tmp_path: Path, capsys) -> None:
    """A folder that cannot be written (here /sys, read-only even for root): exit 74 and a
    message naming it, through the same wrapper the CLI uses."""
    folder = inbox(tmp_path, {"b1.csv": b"a,b\n1,2\n"})
    target = "/sys/pipeline-add-batch-test" if os.geteuid() == 0 else str(tmp_path / "ro/in")
    if os.geteuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
    with pytest.raises(WriteError, match=r"cannot write .*pipeline-add-batch-test|ro/in"):
        add_batch(tmp_path, folder, incoming=target)
    with pytest.raises(SystemExit) as exit_:
        run_stage(lambda: add_batch(tmp_path, folder, incoming=target))
    assert exit_.value.code == 74
    err = capsys.readouterr().err
    assert err.startswith("ERROR: cannot write") and "Traceback" not in err


def test_cli_adds_only_data_and_names_the_rest(tmp_path: Path) -> None:
    """The user's view: `pipeline add-batch` on a folder of mixed files, then on junk only."""
    repo = project_copy(tmp_path / "repo")
    folder = inbox(tmp_path, {**JUNK, "b1.csv": b"a,b\n1,2\n"})
    done = run_module(repo, "stages.cli", "add-batch", str(folder))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "added data/incoming/b1.csv (tracked by DVC); run `pipeline repro` to process it"
    ]
    for name in JUNK:
        assert f"WARNING: add-batch: {folder / name} skipped" in done.stderr
    readme = (repo / "data/incoming/README.md").read_bytes()
    assert readme == Path("data/incoming/README.md").read_bytes()  # the folder's own, kept
    assert sorted(p.name for p in (repo / "data/incoming").iterdir()) == [
        ".gitignore",
        "README.md",
        "b1.csv",
        "b1.csv.dvc",
    ]

    junk_only = tmp_path / "junk"
    junk_only.mkdir()
    (junk_only / "notes.md").write_text("x")
    for path in (junk_only, tmp_path / "nowhere"):
        done = run_module(repo, "stages.cli", "add-batch", str(path))
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith("ERROR: add-batch: ") and str(path) in done.stderr
