"""Project copies (tests/conftest.py) hold source files, never what the user's runs produced."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import ROOT, copied_files


def test_a_copy_leaves_out_run_outputs_and_data_even_when_committed(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    files = {
        "params.yaml": "a: 1\n",
        "stages/ingest.py": "",
        "dvc.lock": "schema: '2.0'\n",  # committed, as DVC advises: still left out
        "metrics/ingest.json": "{}",
        "plots/roc.csv": "",
        "reports/summary.md": "",
        "models/checkpoint/state.pt": "",
        "lineage/runs.jsonl": "",
        "lineage/README.md": "",
        "data/incoming/batch2.csv.gz.dvc": "outs: []\n",
        "data/raw/b/part-00000.parquet": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "a user's run, committed"], cwd=tmp_path, check=True)
    (tmp_path / "stages/new.py").write_text("")  # a new module, not committed yet
    (tmp_path / "data/mine.csv").write_text("id\n1\n")  # the user's data, not committed
    assert sorted(copied_files(tmp_path)) == [
        "dvc.yaml",
        "lineage/README.md",
        "params.yaml",
        "stages/ingest.py",
        "stages/new.py",
    ]
