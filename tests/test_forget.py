"""`pipeline forget BATCH` on a real git + DVC project copy: after it, no value of the batch is
left anywhere under the repository (workspace, .dvc/cache, .pipeline-cache), read as Parquet and
as raw bytes; the other batch is intact; an unknown batch is refused with exit 2."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import ROOT, params, project_copy, source_frame, venv_env

PARQUET_MAGIC = b"PAR1"


def _env() -> dict[str, str]:
    env = venv_env(PIPELINE_WORKERS="1")
    # The partition cache in its default place, inside the repository, so the walk covers it.
    env.pop("PIPELINE_PARTITION_CACHE", None)
    return env


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=repo, env=_env(), capture_output=True, text=True
    )


def _second_batch(path: Path, n: int = 30) -> None:
    """A batch whose identifiers and text appear nowhere else (so any hit is a leftover)."""
    cols = params()["schema"]["columns"]
    frame = source_frame(n)
    distinct = {
        "key": "Z{r:06d}",
        "name": "Quillon Vardebrook {r}",
        "email": "qv{r}@vardebrook.org",
    }
    for name, col in cols.items():
        if col["role"] == "key":
            frame[name] = [distinct["key"].format(r=r) for r in range(n)]
        elif col.get("pii") == "name":
            frame[name] = [distinct["name"].format(r=r) for r in range(n)]
        elif col.get("pii") == "email":
            frame[name] = [distinct["email"].format(r=r) for r in range(n)]
        elif col["role"] == "text":
            frame[name] = [f"xylophone tariff remark {r} of Vardebrook" for r in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)  # plain CSV: its bytes can be searched as they are


def _cells(path: Path) -> str:
    """Every cell of a Parquet file as text (its pages are compressed: bytes alone miss them)."""
    table = pq.read_table(path)
    return "\x00".join(str(v) for col in table.columns for v in col.to_pylist())


def find_values(root: Path, values: set[str]) -> dict[str, list[str]]:
    """Files under `root` holding any of `values`: raw bytes of every file, cells of Parquet."""
    hits: dict[str, list[str]] = {}
    encoded = {v: v.encode() for v in values}
    for top, _dirs, files in os.walk(root):
        for name in files:
            path = Path(top) / name
            if path.is_symlink():
                continue
            data = path.read_bytes()
            texts = [data]
            if data[:4] == PARQUET_MAGIC and data[-4:] == PARQUET_MAGIC:
                texts.append(_cells(path).encode())
            for v, b in encoded.items():
                if any(b in t for t in texts):
                    hits.setdefault(v, []).append(str(path.relative_to(root)))
    return hits


@pytest.mark.slow
def test_forget_second_batch_leaves_no_value(tmp_path: Path) -> None:
    repo = project_copy(tmp_path / "repo")
    first = source_frame(60)
    with gzip.open(repo / "data/sample/customers_batch1.csv.gz", "wt") as f:
        first.to_csv(f, index=False)
    _second_batch(tmp_path / "inbox/customers_batch2.csv")
    added = _run(repo, "stages.cli", "add-batch", str(tmp_path / "inbox/customers_batch2.csv"))
    assert added.returncode == 0, added.stdout + added.stderr
    # Up to split: train/evaluate/report add minutes and nothing forget treats differently.
    done = _run(repo, "dvc", "repro", "split")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    raw = pq.read_table(next((repo / "data/raw").glob("customers_batch2-*")))
    batch = raw.column("_batch")[0].as_py()
    values = {
        str(v)
        for c in ("customer_id", "full_name", "email", "notes", "record_id")
        for v in raw.column(c).to_pylist()
    }
    # What a killed stage or a training run would leave: a temporary and an uncached checkpoint.
    leftover = sorted(values)[0]
    (repo / "data/.clean.tmp-999999-x").mkdir()
    (repo / "data/.clean.tmp-999999-x/part.txt").write_text(leftover)
    (repo / "models/checkpoint").mkdir(parents=True)
    (repo / "models/checkpoint/state.txt").write_text(leftover)
    before = find_values(repo, values)
    assert any(".dvc/cache" in f for fs in before.values() for f in fs), before
    assert any(".pipeline-cache" in f for fs in before.values() for f in fs), before

    unknown = _run(repo, "stages.cli", "forget", "customers_batch9-0000000000")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "customers_batch9-0000000000" in unknown.stderr and batch in unknown.stderr

    dry = _run(repo, "stages.cli", "forget", "--dry-run", batch)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for path in (
        "data/incoming/customers_batch2.csv",
        "data/.clean.tmp-999999-x",
        "models/checkpoint",
    ):
        assert f"would remove {path}" in dry.stdout, dry.stdout
    assert (repo / "data/incoming/customers_batch2.csv").exists()

    gone = _run(repo, "stages.cli", "forget", batch)
    print(gone.stdout)
    assert gone.returncode == 0, gone.stdout[-3000:] + gone.stderr[-3000:]
    assert gone.stdout.strip().splitlines()[-1].startswith("kept:"), gone.stdout

    left = find_values(repo, values)
    assert not left, {v: fs[:3] for v, fs in list(left.items())[:5]}
    # The other batch is still there, all of it, and flows on to the split.
    kept = pq.read_table(repo / "data/raw")
    assert set(kept.column("customer_id").to_pylist()) == set(first["customer_id"])
    assert not (repo / "data/incoming/customers_batch2.csv.dvc").exists()
    split_ids = set(pq.read_table(repo / "data/split", columns=["record_id"]).column(0).to_pylist())
    assert split_ids and split_ids <= set(kept.column("record_id").to_pylist())


def test_forget_a_params_source_edits_params_and_dvc_yaml(tmp_path, monkeypatch) -> None:
    from stages import forget
    from stages.lib.errors import InputError

    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    sample = "data/sample/customers_batch1.csv.gz"
    (tmp_path / "data/sample").mkdir(parents=True)
    with gzip.open(tmp_path / sample, "wt") as f:
        source_frame(5).to_csv(f, index=False)
    (tmp_path / "data/incoming").mkdir(parents=True)
    source_frame(5).to_csv(tmp_path / "data/incoming/b2.csv", index=False)
    monkeypatch.chdir(tmp_path)

    batch = forget.resolve(sample)
    assert batch.source_entry == sample and batch.name.startswith("customers_batch1-")
    assert forget.resolve(batch.name).file == Path(sample)
    params_before = (tmp_path / "params.yaml").read_text().splitlines()
    dag_before = (tmp_path / "dvc.yaml").read_text().splitlines()
    forget.drop_source_entry(sample)
    params_after = (tmp_path / "params.yaml").read_text().splitlines()
    dag_after = (tmp_path / "dvc.yaml").read_text().splitlines()
    # One line changed in params.yaml (every comment kept), one dep line gone from dvc.yaml.
    changed = [(a, b) for a, b in zip(params_before, params_after, strict=True) if a != b]
    assert changed == [(f"  sources: [{sample}, data/incoming]", "  sources: [data/incoming]")]
    assert [line for line in dag_before if line not in dag_after] == [f"      - {sample}"]
    # The last batch left cannot be forgotten: the rerun would have nothing to ingest.
    with pytest.raises(InputError, match="only batch"):
        forget.make_plan(forget.resolve("data/incoming/b2.csv"))


def test_resolve_finds_extensionless_batches_by_ingest_format(tmp_path, monkeypatch) -> None:
    """With ingest.format set, a source folder's files without an extension are batches: forget
    sees the same files ingest reads, so it can name and remove such a batch."""
    from stages.forget import UnknownBatch, resolve
    from stages.lib.errors import InputError
    from stages.lib.io import file_hash
    from stages.lib.sources import batch_id

    incoming = tmp_path / "data/incoming"
    incoming.mkdir(parents=True)
    for name, n in (("first_export", 5), ("second_export", 6)):
        source_frame(n).to_csv(incoming / name, index=False)
    p = params()
    p["ingest"]["sources"] = ["data/incoming"]
    p["ingest"]["format"] = "csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    monkeypatch.chdir(tmp_path)

    second = Path("data/incoming/second_export")
    name = batch_id(second, file_hash(second))
    assert resolve(name).file == second
    assert resolve(str(second)).name == name

    with pytest.raises(UnknownBatch, match="unknown batch 'third_export'"):
        resolve("third_export")

    p["ingest"]["format"] = None  # without it, ingest reads neither file: forget says why
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    why = re.escape("second_export (unsupported type (no extension)")
    with pytest.raises(InputError, match=why):
        resolve(str(second))
