"""Per-partition tasks: reuse across runs, local worker processes, a real Dask LocalCluster."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from stages.lib.io import file_hash, partition_files, write_dataset
from stages.lib.params import load_params
from stages.lib.partitions import CacheDir, digest
from stages.lib.schema import load_schema
from stages.split import SplitConfig, run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = SplitConfig(fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed="split-v1")
SCHEMA = load_schema(load_params(ROOT / "params.yaml"))


def _anon(n: int, start: int) -> pa.Table:
    ids = [f"r{i:08d}" for i in range(start, start + n)]
    labels = ["<=50K" if i % 4 else ">50K" for i in range(start, start + n)]
    return pa.table({"record_id": ids, "_batch": [f"b{start}"] * n, "income": labels})


def _parts(k: int, rows: int = 2000) -> list[tuple[str, pa.Table]]:
    return [(f"b{i}/part-00000.parquet", _anon(rows, i * rows)) for i in range(k)]


def _snapshot(path: Path) -> dict[str, str]:
    """Every output file by relative name and content hash."""
    return {f.relative_to(path).as_posix(): file_hash(f) for f in partition_files(path)}


def _split(tmp_path: Path, out: str, parts: list[tuple[str, pa.Table]]) -> tuple[dict, dict]:
    write_dataset(tmp_path / "anon", parts)
    summary = run(tmp_path / "anon", tmp_path / out, CONFIG, SCHEMA).to_dict()
    return summary, _snapshot(tmp_path / out)


def test_a_new_partition_is_the_only_work_and_the_result_is_unchanged(
    tmp_path, partition_cache, capsys, monkeypatch
):
    _split(tmp_path, "split", _parts(3))
    assert "0 reused, 3 to run" in capsys.readouterr().err
    second, files = _split(tmp_path, "split", _parts(4))
    assert "3 reused, 1 to run" in capsys.readouterr().err
    assert second["rows_in"] == 8000 == second["rows_out"]
    # Only the last run's entries stay stored.
    assert len(list((partition_cache / "split").iterdir())) == 4
    # The same inputs from scratch, with no stored results, give the same bytes and summary.
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(tmp_path / "empty-cache"))
    fresh, fresh_files = _split(tmp_path, "fresh", _parts(4))
    assert "0 reused, 4 to run" in capsys.readouterr().err
    assert files == fresh_files
    timing = {"duration_s", "peak_memory_mb"}
    assert {k: v for k, v in second.items() if k not in timing} == {
        k: v for k, v in fresh.items() if k not in timing
    }


def test_a_changed_param_reruns_every_partition(tmp_path, capsys):
    write_dataset(tmp_path / "anon", _parts(2))
    run(tmp_path / "anon", tmp_path / "split", CONFIG, SCHEMA)
    capsys.readouterr()
    other = SplitConfig(fractions=dict(CONFIG.fractions), seed="split-v2")
    run(tmp_path / "anon", tmp_path / "split", other, SCHEMA)
    assert "0 reused, 2 to run" in capsys.readouterr().err


def test_worker_processes_give_the_same_bytes_as_one_process(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_WORKERS", "1")
    _, inline = _split(tmp_path, "inline", _parts(4))
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(tmp_path / "cache2"))
    monkeypatch.setenv("PIPELINE_WORKERS", "2")
    _, pooled = _split(tmp_path, "pooled", _parts(4))
    assert inline == pooled


def test_a_bad_worker_count_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINE_WORKERS", "two")
    write_dataset(tmp_path / "anon", _parts(2))
    with pytest.raises(ValueError, match="PIPELINE_WORKERS='two'"):
        run(tmp_path / "anon", tmp_path / "split", CONFIG, SCHEMA)


def test_partitions_run_on_a_dask_local_cluster(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    _, inline = _split(tmp_path, "inline", _parts(4))
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(tmp_path / "cache2"))
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        with distributed.Client(cluster) as client:
            _, on_dask = _split(tmp_path, "dask", _parts(4))
            # The work really ran on the cluster's workers, not in this process.
            assert sum(len(v) for v in client.run(_task_log).values()) >= 4
    assert inline == on_dask


def _task_log(dask_worker) -> list[str]:
    """On a Dask worker: the partition tasks it has run."""
    return sorted({str(entry[0]) for entry in dask_worker.state.log if "_call" in str(entry[0])})


def test_a_stored_result_is_found_by_its_key_only(tmp_path):
    cache = CacheDir("t", tmp_path)
    key = digest("input-hash", {"param": 1})
    assert cache.get(key) is None
    staged = cache.staging(key)
    (staged / "x.parquet").write_bytes(b"x")
    entry = cache.put(key, staged, {"rows": 1})
    assert cache.get(key) == entry and (entry / "x.parquet").read_bytes() == b"x"
    assert cache.get(digest("input-hash", {"param": 2})) is None
    cache.keep_only([])
    assert cache.get(key) is None
