"""The anonymize stage: policies, scrubbing, the independent scan gate, k, and the key."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd
import pytest
import yaml

from stages.anonymize import ScanFailed, run
from stages.anonymize import main as anonymize_main
from stages.lib.anon_index import build_index, scan_identifier_leaks
from stages.lib.anon_risk import class_sizes, quasi_frame, risk_report
from stages.lib.errors import run_stage
from stages.lib.features import column_policies
from stages.lib.io import read_dataset
from stages.lib.params import load_params
from stages.lib.schema import load_schema
from tests.conftest import anon_config
from tests.privacy_fixtures import clean_frame, write_clean

ROOT = Path(__file__).resolve().parents[1]
KEY = b"unit-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def params():
    return load_params(ROOT / "params.yaml")


@pytest.fixture(scope="module")
def schema(params):
    return load_schema(params)


def _clean(tmp_path: Path) -> Path:
    write_clean(
        tmp_path / "clean",
        [("p0.parquet", clean_frame(400)), ("p1.parquet", clean_frame(200, seed=1, start=400))],
    )
    return tmp_path / "clean"


def _run(tmp_path, schema, policies, k=None):
    cfg = anon_config(policies, k=k)
    return run(_clean(tmp_path), tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)


def test_stage_applies_policies_and_passes_scan(tmp_path, params, schema, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the scan report goes to reports/privacy/ under the cwd
    policies = {
        **params["anonymize"]["policies"],
        "date_of_birth": {"action": "generalize", "date": "year"},
        "postcode": {"action": "generalize", "truncate": 2},
    }
    summary, scan = _run(tmp_path, schema, policies, k=3)
    assert scan.passed, scan
    anon = read_dataset(tmp_path / "anon").to_pandas()
    clean = pd.concat([clean_frame(400), clean_frame(200, seed=1, start=400)])
    for dropped in ("full_name", "phone", "street_address", "national_id", "customer_id"):
        assert dropped not in anon.columns
    assert anon["email"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert not anon["email"].isin(clean["email"]).any()
    assert anon["date_of_birth"].str.fullmatch(r"\d{4}").all()
    assert anon["postcode"].str.len().eq(2).all()
    for name in clean["full_name"]:
        assert not anon["notes"].str.contains(name, regex=False).any()
    d = summary.to_dict()
    assert d["key_id"] and d["rows_in"] == 600
    assert d["rows_out"] + d["quarantined_by_reason"].get("k_anonymity", 0) == 600
    assert d["entity_counts"]["notes"]["PERSON"] > 0
    assert d["risk_after_suppression"]["k"] >= 3
    q = read_dataset(tmp_path / "q").to_pandas()
    assert len(q) == d["rows_quarantined"]
    assert q["_reason"].str.startswith("k_anonymity").all()
    assert (tmp_path / "reports/privacy/scan.json").exists()


@pytest.mark.slow  # runs the stage three times (about 10 s on 2 cores)
def test_pseudonyms_are_stable_and_keyed(tmp_path, params, schema, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _run(tmp_path, schema, params["anonymize"]["policies"])
    first = read_dataset(tmp_path / "anon").to_pandas().set_index("record_id")["email"]
    cfg = anon_config(params["anonymize"]["policies"])
    run(
        tmp_path / "clean",
        tmp_path / "anon2",
        tmp_path / "q2",
        cfg,
        schema,
        b"another-key-0123456789",
    )
    second = read_dataset(tmp_path / "anon2").to_pandas().set_index("record_id")["email"]
    _run(tmp_path, schema, params["anonymize"]["policies"])
    again = read_dataset(tmp_path / "anon").to_pandas().set_index("record_id")["email"]
    assert first.equals(again)
    assert not (first == second.reindex(first.index)).any()


@pytest.mark.parametrize(
    "leak",
    [
        {"email": {"action": "mask", "keep_last": 100}},  # e-mails pass unmasked
        {"national_id": {"action": "generalize", "truncate": 18}},  # IDs pass whole
    ],
)
def test_scan_gate_fails_on_leaky_policy(tmp_path, params, schema, monkeypatch, leak):
    monkeypatch.chdir(tmp_path)
    policies = {**params["anonymize"]["policies"], **leak}
    with pytest.raises(ScanFailed) as err:
        _run(tmp_path, schema, policies)
    assert not (tmp_path / "anon").exists()  # nothing committed
    report = (tmp_path / "reports/privacy/scan.json").read_text()
    clean = clean_frame(400)
    column = next(iter(leak))
    assert '"passed": false' in report and f'"column": "{column}"' in report
    assert "record r0" in str(err.value)
    for value in clean[column]:  # findings name record, column and type, never the value
        assert value not in report and value not in str(err.value)


def test_identifier_values_found_anywhere(schema, params):
    policies = column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
    clean = clean_frame(50)
    index = build_index(clean, schema, policies)
    other = clean["full_name"].iloc[7]
    out = pd.DataFrame(
        {"record_id": ["a", "b", "c"],
         "notes": [f"met {other.upper()} today", "nothing here", f"call {clean['phone'].iloc[3]}"]}
    )  # fmt: skip
    found = scan_identifier_leaks(out, ["notes"], index, whole_cell_only=set())
    assert {(f["record_id"], f["entity"]) for f in found} == {("a", "PERSON"), ("c", "PHONE")}


def test_k_anonymity_report(schema, params):
    policies = column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
    df = clean_frame(300)
    sizes = class_sizes(quasi_frame(df, schema, policies))
    rep = risk_report(sizes)
    assert rep["k"] == sizes.min() and 0 <= rep["unique_share"] <= 1
    assert sum(h["rows"] for h in rep["histogram"]) == 300
    assert sum(h["classes"] for h in rep["histogram"]) == rep["classes"]


def _stage_dir(tmp_path: Path) -> Path:
    work = tmp_path / "repo"
    work.mkdir()
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    # 200 generated rows form classes of at most 3: k=5 would suppress them all (exit 3).
    params["anonymize"]["k"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_clean(work / "data/clean", [("p0.parquet", clean_frame(200))])
    return work


def _main(work: Path, monkeypatch, capfd, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """`python -m stages.anonymize ARGS` in `work`, run in this process as its `__main__` runs
    it (run_stage: exit codes and messages): exit code, stdout, stderr. A subprocess cost 5-10 s
    of imports per call; the command line itself is run by the slow lane's end-to-end tests."""
    monkeypatch.chdir(work)
    monkeypatch.delenv("PIPELINE_HMAC_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    capfd.readouterr()
    try:
        run_stage(functools.partial(anonymize_main, list(args)))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capfd.readouterr()
    return code, out, err


def test_key_never_written_and_missing_key_refused(tmp_path, monkeypatch, capfd):
    work = _stage_dir(tmp_path)
    code, _, err = _main(work, monkeypatch, capfd, {})
    assert code == 2 and "PIPELINE_HMAC_KEY" in err
    secret = "s3cret-Key-that-must-never-leak-7f3a9c"
    code, out, err = _main(work, monkeypatch, capfd, {"PIPELINE_HMAC_KEY": secret})
    assert code == 0, err
    assert secret not in out + err
    written = [p for p in work.rglob("*") if p.is_file()]
    assert any(p.match("metrics/anonymize.json") for p in written)
    for path in written:
        data = path.read_bytes()
        assert secret.encode() not in data, path
        assert secret.encode().hex().encode() not in data, path


def test_demo_key_switch(tmp_path, monkeypatch, capfd):
    work = _stage_dir(tmp_path)
    code, _, err = _main(work, monkeypatch, capfd, {}, "--demo-key")
    assert code == 0, err
    assert "DEMO" in err
    assert (work / ".secrets/demo_hmac.key").exists()
    assert (work / ".secrets/.gitignore").read_text().strip() == "*"


def _snapshot(path: Path) -> dict[str, pd.DataFrame]:
    return {f.name: pd.read_parquet(f) for f in sorted(path.glob("*.parquet"))}


@pytest.mark.slow  # runs the stage three times (about 10 s on 2 cores)
def test_a_new_batch_reuses_earlier_partitions_unless_it_concerns_them(
    tmp_path, params, schema, monkeypatch, capsys
):
    """Partitions already anonymized are reused; one whose text names a customer of the new
    batch is scrubbed again; the result equals a run from scratch."""
    monkeypatch.chdir(tmp_path)
    cfg = anon_config(params["anonymize"]["policies"], k=2)
    p0, p1 = clean_frame(300), clean_frame(200, seed=1, start=300)
    p1.loc[p1.index[0], "notes"] = "referred by Zebulon Quartermaine last spring"
    write_clean(tmp_path / "clean", [("p0.parquet", p0), ("p1.parquet", p1)])
    run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)
    capsys.readouterr()
    # Not a customer yet: nothing marks the name as one, so it stays (as it would in one run).
    assert read_dataset(tmp_path / "anon").to_pandas()["notes"].str.contains("Quartermaine").any()
    # A new batch with that customer: p1 is unchanged but must be scrubbed (and scanned) again.
    p2 = clean_frame(100, seed=2, start=500)
    p2.loc[p2.index[0], "full_name"] = "Zebulon Quartermaine"
    write_clean(tmp_path / "clean", [("p0.parquet", p0), ("p1.parquet", p1), ("p2.parquet", p2)])
    summary, scan = run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)
    err = capsys.readouterr().err
    assert "pass 1): 3 partition(s): 2 reused, 1 to run" in err
    assert "pass 2): 3 partition(s): 1 reused, 2 to run" in err
    assert scan.passed
    anon = read_dataset(tmp_path / "anon").to_pandas()
    assert not anon["notes"].str.contains("Quartermaine").any()
    # A batch that names no earlier customer: every earlier partition is reused in both passes.
    p3 = clean_frame(100, seed=3, start=600)
    p3["full_name"] = [f"Newname{i} Person{i}" for i in range(len(p3))]
    write_clean(
        tmp_path / "clean",
        [("p0.parquet", p0), ("p1.parquet", p1), ("p2.parquet", p2), ("p3.parquet", p3)],
    )
    summary, scan = run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)
    err = capsys.readouterr().err
    assert "pass 1): 4 partition(s): 3 reused, 1 to run" in err
    assert "pass 2): 4 partition(s): 3 reused, 1 to run" in err
    incremental = summary.to_dict()
    outputs = (_snapshot(tmp_path / "anon"), _snapshot(tmp_path / "q"))
    monkeypatch.setenv("PIPELINE_PARTITION_CACHE", str(tmp_path / "empty-cache"))
    fresh, _ = run(tmp_path / "clean", tmp_path / "anon2", tmp_path / "q2", cfg, schema, KEY)
    fresh_outputs = (_snapshot(tmp_path / "anon2"), _snapshot(tmp_path / "q2"))
    for a, b in zip(outputs, fresh_outputs, strict=True):
        assert a.keys() == b.keys()
        for name in a:
            pd.testing.assert_frame_equal(a[name], b[name])
    timing = {"duration_s", "peak_memory_mb"}
    assert {k: v for k, v in incremental.items() if k not in timing} == {
        k: v for k, v in fresh.to_dict().items() if k not in timing
    }
