"""Lineage audit commands on a real project copy: dvc repro of the real data path (ingest, clean,
validate) plus small stand-in split/augment/train stages (the real ones live in other modules;
lineage reads any DAG from dvc.lock), a first run and a new-data run, each recorded."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from stages import lineage
from tests.conftest import params, project_copy, run_module, source_frame, venv_env
from tests.test_report import train_fields

pytestmark = pytest.mark.slow

# Stand-ins for split, augment and train with the same data contract: record_id kept,
# data/split/<split>/<batch>/part-*.parquet, augmented rows flagged `_augmented`, a model file.
DOWNSTREAM = """
import hashlib, json, sys
from pathlib import Path
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq

def bucket(rid):
    n = int(hashlib.sha256(rid.encode()).hexdigest()[:8], 16) % 10
    return "train" if n < 7 else "val" if n < 9 else "test"

step = sys.argv[1]
if step == "split":
    for f in sorted(Path("data/clean").rglob("*.parquet")):
        t = pq.read_table(f)
        names = [bucket(r) for r in t.column("record_id").to_pylist()]
        for s in ("train", "val", "test"):
            out = Path("data/split") / s / f.relative_to("data/clean")
            out.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.filter(pa.array([n == s for n in names])), out)
elif step == "augment":
    for f in sorted(Path("data/split/train").rglob("*.parquet")):
        t = pq.read_table(f, columns=["record_id", "_batch", "age", "income"])
        t = t.append_column("_augmented", pa.array([False] * t.num_rows))
        aug = t.set_column(4, "_augmented", pa.array([True] * t.num_rows))
        out = Path("data/train_aug") / f.relative_to("data/split/train")
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables([t, aug]), out)
else:
    rows = sum(pq.read_metadata(f).num_rows for f in Path("data/train_aug").rglob("*.parquet"))
    Path("models").mkdir(exist_ok=True)
    Path("models/model.pt").write_text(json.dumps({"rows": rows}))
    Path("metrics").mkdir(exist_ok=True)
    # train's summary through its model, as the real stage writes it (the project copy's code).
    sys.path.insert(0, str(Path.cwd()))
    from stages.lib.summaries import TrainFields
    from stages.lib.summary import StageSummary

    fields = TrainFields.model_validate_json(Path("toy/train_fields.json").read_text())
    StageSummary("train", rows, rows, fields=fields).write()
"""


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), *args],
        cwd=root,
        env=venv_env(),
        capture_output=True,
        text=True,
    )


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_module(root, "stages.lineage", *args)


def _batch(path: Path, prefix: str, n: int, bad_row: int) -> None:
    frame = source_frame(n)
    key = next(n for n, c in params()["schema"]["columns"].items() if c["role"] == "key")
    frame[key] = [f"{prefix}{r:06d}" for r in range(n)]
    frame.loc[bad_row, "age"] = "5"  # out of range: quarantined by clean
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        frame.to_csv(f, index=False)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A project after a first run and a new-data run, each recorded."""
    root = project_copy(tmp_path_factory.mktemp("lineage") / "p")
    _batch(root / "data/sample/customers_batch1.csv.gz", "C", 60, bad_row=3)
    (root / "toy").mkdir()
    (root / "toy/downstream.py").write_text(DOWNSTREAM)
    (root / "toy/train_fields.json").write_text(train_fields(seed=7).model_dump_json())
    dag = yaml.safe_load((root / "dvc.yaml").read_text())
    keep = {k: dag["stages"][k] for k in ("ingest", "clean", "validate")}
    keep["split"] = {
        "cmd": "python toy/downstream.py split",
        "deps": ["toy/downstream.py", "data/clean"],
        "outs": ["data/split"],
    }
    # The real dvc.yaml's layout: augment and train depend on sub-paths of split's output and
    # on dotted params sub-keys.
    keep["augment"] = {
        "cmd": "python toy/downstream.py augment",
        "deps": ["toy/downstream.py", "data/split/train"],
        "params": ["anonymize.policies", "io.partition_rows"],
        "outs": ["data/train_aug"],
    }
    keep["train"] = {
        "cmd": "python toy/downstream.py train",
        "deps": ["toy/downstream.py", "data/train_aug", "data/split/val"],
        "params": ["anonymize.policies"],
        "outs": ["models/model.pt"],
        "metrics": [{"metrics/train.json": {"cache": False}}],
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": keep}, sort_keys=False))
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "sample and dag"], cwd=root, check=True)

    done = _dvc(root, "repro")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _cli(root, "record", "--trigger", "dvc repro").returncode == 0
    # New data: a second batch arrives in data/incoming (tracked with dvc add) and reruns.
    _batch(root / "data/incoming/customers_batch2.csv.gz", "D", 30, bad_row=4)
    assert _dvc(root, "add", "data/incoming/customers_batch2.csv.gz").returncode == 0
    why = lineage.why(root)
    assert why[0]["stage"] == "ingest"
    assert any(
        f == {"file": "data/incoming/customers_batch2.csv.gz", "change": "new batch"}
        for c in why[0]["causes"]
        for f in c.get("files") or []
    ), why
    done = _dvc(root, "repro")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Data and pipelines are up to date" in _dvc(root, "repro").stdout
    lineage.append_run_record(root, trigger="pipeline repro", flow_run_id="flow-run-123")
    return root


@pytest.fixture
def scratch(project: Path, tmp_path: Path) -> Path:
    """A throwaway copy of the recorded project, for tests that tamper with it."""
    dest = tmp_path / "p"
    shutil.copytree(project, dest, symlinks=True)
    return dest


def test_run_records(project):
    records = lineage.read_records(project)
    assert len(records) == 2
    first, second = records
    assert first["ran"] == ["ingest", "clean", "validate", "split", "augment", "train"]
    assert set(second["ran"]) == set(first["ran"])  # new data reran every stage
    assert second["prefect_flow_run_id"] == "flow-run-123"
    assert second["up_to_date"] is True and second["git"]["dirty"] is False
    assert len(second["git"]["commit"]) == 40
    assert second["device"] == "cpu" and second["seed"] == 7
    assert second["packages"]["dvc"] and second["packages"]["python"]
    lock_text = (project / "dvc.lock").read_text()
    assert second["dvc_lock_sha256"] == hashlib.sha256(lock_text.encode()).hexdigest()
    assert second["metrics"]["metrics/train.json"]["rows_in"] > 0
    assert len(second["batches"]) == 2 and second["key_id"]


def test_show_model_lists_every_stage(project):
    done = _cli(project, "show", "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["target"] == "models/model.pt"
    assert [s["stage"] for s in info["stages"]] == ["ingest", "clean", "split", "augment", "train"]
    assert [s["stage"] for s in info["checks"]] == ["validate"]
    lock = lineage.read_lock(project)
    for s in info["stages"]:
        entry = lock["stages"][s["stage"]]
        assert s["cmd"] == entry["cmd"]
        assert {o["path"]: o["md5"] for o in s["outputs"]} == {
            o["path"]: o["md5"] for o in entry["outs"]
        }
        assert s["run"]["prefect_flow_run_id"] == "flow-run-123"  # the new-data run made it
    ingest = info["stages"][0]
    assert "stages/ingest.py" in {c["path"] for c in ingest["code"]}
    assert ingest["params"]["params.yaml"]["io"] == {"partition_rows": 100000}
    assert {b["file"] for b in info["raw_batches"]} == {
        "data/sample/customers_batch1.csv.gz",
        "data/incoming/customers_batch2.csv.gz",
    }
    # The pure function the report uses gives the same chain.
    assert [s["stage"] for s in lineage.stage_chain(lock, "models/model.pt")] == [
        s["stage"] for s in info["stages"]
    ]
    text = _cli(project, "show").stdout
    for stage in ("ingest", "clean", "split", "augment", "train", "validate"):
        assert f"] {stage}  made by run" in text


def test_verify_passes_then_names_tampered_files(scratch):
    ok = _cli(scratch, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: disk matches dvc.lock" in ok.stdout
    assert _cli(scratch, "verify", "--full").returncode == 0

    clean_part = next((scratch / "data/clean").rglob("*.parquet"))
    table = pq.read_table(clean_part)
    pq.write_table(table.slice(1), clean_part)  # one row quietly dropped
    (scratch / "models/model.pt").unlink()
    batch = scratch / "data/sample/customers_batch1.csv.gz"
    batch.write_bytes(batch.read_bytes() + b"\n")

    for mode in ([], ["--full"]):
        bad = _cli(scratch, "verify", *mode)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        rel = clean_part.relative_to(scratch).as_posix()
        assert f"altered  {rel}" in bad.stdout
        assert "MISSING  output    models/model.pt" in bad.stdout
        assert "source    data/sample/customers_batch1.csv.gz" in bad.stdout
    result = lineage.verify(scratch, full=True)
    kinds = {(p["kind"], p["path"], p["change"]) for p in result["problems"]}
    assert ("raw batch", "data/sample/customers_batch1.csv.gz", "altered") in kinds


def test_verify_dotted_params_key(scratch):
    """A dotted params sub-key (anonymize.policies) verifies clean, and a change to it is named."""
    lock = lineage.read_lock(scratch)
    assert "anonymize.policies" in lock["stages"]["augment"]["params"]["params.yaml"]
    assert lineage.verify(scratch)["ok"]
    params = yaml.safe_load((scratch / "params.yaml").read_text())
    column, policy = next(iter(params["anonymize"]["policies"].items()))
    params["anonymize"]["policies"][column] = "drop" if policy != "drop" else "keep"
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = [p for p in lineage.verify(scratch)["problems"] if p["kind"] == "params"]
    assert {(p["stage"], p["path"]) for p in problems} == {
        ("augment", "params.yaml:anonymize.policies"),
        ("train", "params.yaml:anonymize.policies"),
    }, problems
    (diff,) = problems[0]["params"]
    assert diff["key"] == f"anonymize.policies.{column}" and diff["old"] == policy


def test_why_names_the_param_and_the_code(scratch):
    assert lineage.why(scratch) == []
    params = yaml.safe_load((scratch / "params.yaml").read_text())
    old = params["clean"]["missing_values"]
    params["clean"]["missing_values"] = [*old, "unknown"]
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (scratch / "toy/downstream.py").write_text(DOWNSTREAM + "\n# changed\n")
    result = {r["stage"]: r["causes"] for r in lineage.why(scratch)}
    (param,) = [c for c in result["clean"] if c["kind"] == "params"]
    assert param["key"] == "clean.missing_values"
    assert param["old"] == old and param["new"] == [*old, "unknown"]
    assert any(c["kind"] == "code" and c["path"] == "toy/downstream.py" for c in result["split"])
    assert result["validate"][0]["kind"] == "upstream"
    text = _cli(scratch, "why").stdout
    assert "params.yaml:clean.missing_values:" in text and "-> [" in text
    assert "code file toy/downstream.py modified" in text


def test_trace_second_batch_record_end_to_end(project):
    lock = lineage.read_lock(project)
    rows = pq.read_table(project / "data/raw", columns=["record_id", "_batch", "_source_row"])
    batch2 = [r for r in rows.to_pylist() if r["_batch"].startswith("customers_batch2")]
    train = set(
        pq.read_table(project / "data/split/train", columns=["record_id"])["record_id"].to_pylist()
    )
    kept = next(r for r in batch2 if r["record_id"] in train)
    t = lineage.trace(project, kept["record_id"])
    assert t["sources"] == [
        {
            "batch": kept["_batch"],
            "source_file": "data/incoming/customers_batch2.csv.gz",
            "source_row": kept["_source_row"],
        }
    ]
    assert t["split"] == ["train"] and t["quarantined"] == []
    assert t["augmented_rows"] == 1
    verdicts = [r["trained_on"] for r in t["trained_on_by"]]
    # The current model and the new-data run trained on it; the first run never saw batch 2.
    assert verdicts == [True, False, True], t["trained_on_by"]
    assert lock

    bad = next(r for r in batch2 if r["_source_row"] == 5)  # row index 4: age out of range
    q = lineage.trace(project, bad["record_id"])
    assert q["quarantined"][0]["reason_kind"] == "age out of range"
    assert q["split"] == [] and not any(r["trained_on"] for r in q["trained_on_by"])

    # Train reads data/split/val, a sub-path of split's output: its rows are found through the
    # output's cached manifest (yes), and a test-split record comes out no, not unknown.
    def in_split(name: str) -> set[str]:
        table = pq.read_table(project / "data/split" / name, columns=["record_id"])
        return set(table["record_id"].to_pylist())

    batch1 = [r["record_id"] for r in rows.to_pylist() if r["_batch"].startswith("customers_b")]
    batch1 = [r for r in batch1 if r not in {b["record_id"] for b in batch2}]
    test_id = next(r for r in batch1 if r in in_split("test"))
    val_id = next(r for r in batch1 if r in in_split("val"))
    t_test = lineage.trace(project, test_id)
    assert [r["trained_on"] for r in t_test["trained_on_by"]] == [False, False, False]
    t_val = lineage.trace(project, val_id)
    assert [r["trained_on"] for r in t_val["trained_on_by"]] == [True, True, True]
    assert all(r["via"] == ["data/split/val"] for r in t_val["trained_on_by"])
    text = _cli(project, "trace", test_id).stdout
    assert "current dvc.lock: no" in text and "unknown" not in text

    done = _cli(project, "trace", kept["record_id"])
    assert done.returncode == 0, done.stderr
    assert "row " + str(kept["_source_row"]) in done.stdout and "Split: train" in done.stdout
    # No identifier or source value is printed: none of the batch's source columns appear.
    source = source_frame(30)
    for col in ("full_name", "email", "phone", "street_address", "national_id"):
        assert str(source.loc[kept["_source_row"] - 1, col]) not in done.stdout
    assert f"D{kept['_source_row'] - 1:06d}" not in done.stdout + json.dumps(t)
    assert _cli(project, "trace", "0" * 32).returncode == 1


def test_export_archive_with_manifest(project, tmp_path):
    out = tmp_path / "audit.tar.gz"
    done = _cli(project, "export", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest = json.loads(tar.extractfile("audit/MANIFEST.json").read())
        for name, meta in manifest["members"].items():
            data = tar.extractfile(f"audit/{name}").read()
            assert hashlib.sha256(data).hexdigest() == meta["sha256"]
    for member in (
        "dvc.lock",
        "params.yaml",
        "lineage/runs.jsonl",
        "environment/requirements.txt",
        "reports/validation/results.json",
        "metrics/train.json",
        "lineage/verify.json",
        "lineage/show.json",
    ):
        assert f"audit/{member}" in names
