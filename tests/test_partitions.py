"""Per-partition tasks: reuse across runs, local worker processes, a real Dask LocalCluster."""

from __future__ import annotations

import ast
import io
import sys
from dataclasses import asdict
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from stages.lib.dvclock import dvc_yaml_stages, yaml_paths
from stages.lib.io import AtomicDir, file_hash, partition_files, write_dataset
from stages.lib.params import load_params
from stages.lib.partitions import (
    CacheDir,
    Link,
    Partition,
    PartitionRun,
    code_digest,
    code_files,
    digest,
    plain,
)
from stages.lib.progress import steps
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


def _code_root(root: Path) -> Path:
    """A project with a split stage whose deps name two of its three library modules."""
    (root / "stages" / "lib").mkdir(parents=True)
    for f in ("stages/split.py", "stages/lib/io.py", "stages/lib/partitions.py"):
        (root / f).write_text("x = 1\n")
    (root / "stages" / "lib" / "model.py").write_text("y = 1\n")
    deps = ["stages/split.py", "stages/lib/io.py", "stages/lib/partitions.py", "data/anon"]
    (root / "dvc.yaml").write_text(
        "stages:\n  split:\n    cmd: python -m stages.split\n    deps:\n"
        + "".join(f"      - {d}\n" for d in deps)
    )
    return root


def test_the_code_in_a_key_is_what_dvc_reruns_the_stage_on(tmp_path):
    root = _code_root(tmp_path)
    before = code_digest("split", root)
    # A module under stages/lib that is not a dep of the stage: the key stays.
    (root / "stages/lib/model.py").write_text("y = 2\n")
    assert code_digest("split", root) == before
    # A module that is a dep: a new key, as DVC reruns the stage.
    (root / "stages/lib/io.py").write_text("x = 2\n")
    assert code_digest("split", root) != before


def test_the_code_of_a_stage_is_the_py_files_among_its_deps_in_dvc_yaml():
    deps = yaml_paths(dvc_yaml_stages(ROOT)["split"]["deps"])
    files = [f.relative_to(ROOT).as_posix() for f in code_files("split")]
    assert files == sorted(d for d in deps if d.endswith(".py"))
    assert "stages/lib/partitions.py" in files and "stages/lib/model.py" not in files
    with pytest.raises(ValueError, match="no stage 'nosuch'"):
        code_files("nosuch")


def test_key_parts_are_json_of_dataclasses_never_their_repr():
    assert digest(CONFIG) == digest(asdict(CONFIG))
    assert plain(SCHEMA)["columns"]["income"]["role"] == "label"
    assert plain({"min": date(1900, 1, 2)}) == {"min": "1900-01-02"}  # YAML reads dates
    with pytest.raises(TypeError, match="plain data or a dataclass"):
        digest(object())


def _write_one(text: str, out_dir: Path) -> dict:
    (out_dir / "one.txt").write_text(text)
    return {"chars": len(text)}


def test_a_run_links_its_results_and_keeps_only_what_it_used(
    tmp_path, partition_cache, monkeypatch
):
    monkeypatch.setenv("PIPELINE_WORKERS", "1")  # in this process: the test stays fast

    def once(texts: list[str], fail: bool = False) -> list[bool]:
        with PartitionRun("split", {"p": 1}) as work, AtomicDir(tmp_path / "out") as out:
            parts = [Partition(f"p{i}.txt", (t,), t) for i, t in enumerate(texts)]
            results = list(work.run(_write_one, parts, [Link(out, "{name}", "one.txt")]))
            if fail:
                raise RuntimeError("the stage failed after its tasks")
        return [r.reused for r in results]

    assert once(["a", "bb"]) == [False, False]
    stored = partition_cache / "split"
    assert len(list(stored.iterdir())) == 2
    # Outputs are hard links to the stored files, not copies.
    out = tmp_path / "out" / "p1.txt"
    assert out.read_text() == "bb" and out.stat().st_nlink == 2
    assert once(["a", "ccc"]) == [True, False]
    assert len(list(stored.iterdir())) == 2  # "bb" is forgotten after the run succeeded
    # A failed run prunes nothing: the last good run's results stay for the next try.
    with pytest.raises(RuntimeError):
        once(["dddd"], fail=True)
    assert len(list(stored.iterdir())) == 3


def test_a_stored_step_reuses_its_result_and_names_it_by_its_key_parts(tmp_path, partition_cache):
    work = PartitionRun("clean", step="dedup")
    first = work.stored("p0", ("", "map-key"), _write_one, ("x",))
    again = work.stored("p0", ("", "map-key"), _write_one, ("y",))
    assert not first.reused and again.reused and again.file("one.txt").read_text() == "x"
    other = work.stored("p0", (first.task.key, "map-key"), _write_one, ("z",))
    assert not other.reused and other.task.key != first.task.key
    assert len(list((partition_cache / "clean-dedup").iterdir())) == 2
    work.prune()
    assert len(list((partition_cache / "clean-dedup").iterdir())) == 2


def test_progress_in_a_log_is_plain_lines(capsys):
    with steps("split", 2) as advance:
        advance()
        advance()
    err = capsys.readouterr().err
    assert "split: 1/2 partition(s) done" in err and "split: 2/2 partition(s) done" in err
    assert "\x1b" not in err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_rich_bar(monkeypatch):
    for var in ("NO_COLOR", "TERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with steps("split", 2) as advance:
        advance()
        advance()
    shown = terminal.getvalue()
    assert "2/2" in shown and "\x1b[" in shown  # drawn by rich, with ANSI codes
    assert "partition(s) done" not in shown


def test_stages_use_the_partition_run_not_its_parts():
    """Keys, caches and pruning are built in one place: no stage imports the lower layers."""
    allowed = {"Link", "Partition", "PartitionRun", "TaskResult", "CACHE_ENV", "DEFAULT_CACHE"}
    used: dict[str, set[str]] = {}
    for source in sorted((ROOT / "stages").rglob("*.py")):
        if source.name == "partitions.py":
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "stages.lib.partitions":
                used[source.relative_to(ROOT).as_posix()] = {a.name for a in node.names}
    assert {"stages/split.py", "stages/clean.py", "stages/lib/anon_passes.py"} <= set(used)
    assert {f: names - allowed for f, names in used.items() if names - allowed} == {}
