"""The split stage: stable hash assignment, no overlap, class balance."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from stages.lib.features import column_policies, feature_spec
from stages.lib.io import read_dataset, write_dataset
from stages.lib.params import ParamsError, load_params
from stages.lib.schema import load_schema
from stages.split import SPLITS, SplitConfig, assign, check_fractions, content_keys, run
from tests.conftest import anon_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = SplitConfig(fractions={"train": 0.7, "val": 0.15, "test": 0.15}, seed="split-v1")


def _anon(n: int, start: int = 0) -> pa.Table:
    ids = [f"{i * 2654435761 % 2**32:08x}{i:06d}" for i in range(start, start + n)]
    labels = ["<=50K" if i % 4 else ">50K" for i in range(start, start + n)]
    return pa.table({"record_id": ids, "_batch": ["b"] * n, "income": labels})


def _splits(path: Path) -> dict[str, dict[str, str]]:
    out = {}
    for s in SPLITS:
        t = read_dataset(path / s)
        out[s] = dict(zip(t["record_id"].to_pylist(), [s] * t.num_rows, strict=True))
    return out


def test_split_is_stable_when_a_batch_arrives(tmp_path):
    schema = load_schema(load_params(ROOT / "params.yaml"))
    write_dataset(tmp_path / "anon", [("b1.parquet", _anon(3000))])
    first = run(tmp_path / "anon", tmp_path / "split", CONFIG, schema).to_dict()
    before = {r: s for d in _splits(tmp_path / "split").values() for r, s in d.items()}
    write_dataset(
        tmp_path / "anon", [("b1.parquet", _anon(3000)), ("b2.parquet", _anon(1000, start=3000))]
    )
    second = run(tmp_path / "anon", tmp_path / "split", CONFIG, schema).to_dict()
    after_parts = _splits(tmp_path / "split")
    after = {r: s for d in after_parts.values() for r, s in d.items()}
    assert all(after[r] == s for r, s in before.items())  # every old record kept its split
    assert len(after) == 4000 == sum(len(d) for d in after_parts.values())  # no record twice
    assert first["rows_in"] == 3000 and second["rows_out"] == 4000
    for s, share in CONFIG.fractions.items():
        assert abs(second["actual_fractions"][s] - share) < 0.03
    balance = second["class_balance"]
    assert sum(balance[s]["rows"] for s in SPLITS) == 4000
    assert abs(balance["train"]["classes"][">50K"]["share"] - 0.25) < 0.03


def test_assignment_depends_only_on_id_and_seed():
    ids = [f"id{i}" for i in range(500)]
    a = assign(ids, dict(CONFIG.fractions), "s")
    assert (assign(ids[::-1], dict(CONFIG.fractions), "s")[::-1] == a).all()
    assert (assign(ids, dict(CONFIG.fractions), "other") != a).any()


@pytest.mark.parametrize(
    "fractions",
    [
        {"train": 0.7, "val": 0.2, "test": 0.2},
        {"train": 1.0, "val": 0.0},
        {"train": -0.1, "val": 0.6, "test": 0.5},
    ],
)
def test_bad_fractions_refused(fractions):
    with pytest.raises(ParamsError):
        check_fractions(fractions)


def _with_features(n: int, seed: int = 0) -> pa.Table:
    """An anonymized-looking table with the real spec's features; a third of the rows repeat
    another row's features, spelled differently (case, spacing, full-width letters)."""
    import numpy as np

    params = load_params(ROOT / "params.yaml")
    schema = load_schema(params)
    spec = feature_spec(
        schema, column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
    )
    rng = np.random.default_rng(seed)
    base = _anon(n).to_pydict()
    src = np.where(rng.random(n) < 1 / 3, rng.integers(0, n // 10, n), np.arange(n))
    for c in spec.numeric:
        values = rng.integers(0, 10**6, n)[src]
        base[c] = pa.array(values.astype("float64") if c == spec.numeric[0] else values)
    for c in spec.categorical:
        base[c] = [None if v % 7 == 0 else f"v{v % 50}" for v in rng.integers(0, 10**6, n)[src]]
    for c in spec.text:
        words = [f"Note {v} about  the loan" for v in rng.integers(0, 10**6, n)[src]]
        wide = "\uff41\uff42\uff4f\uff55\uff54"  # "about" in full-width letters
        base[c] = [w.upper() if i % 2 else w.replace("about", wide) for i, w in enumerate(words)]
    return pa.table(base), spec, src


def test_rows_with_identical_normalised_features_share_a_split(tmp_path):
    table, spec, src = _with_features(3000)
    schema = load_schema(load_params(ROOT / "params.yaml"))
    parts = [("b1.parquet", table.slice(0, 1500)), ("b2.parquet", table.slice(1500))]
    write_dataset(tmp_path / "anon", parts)
    summary = run(tmp_path / "anon", tmp_path / "split", CONFIG, schema, spec).to_dict()
    where = {r: s for s, d in _splits(tmp_path / "split").items() for r in d}
    ids = table["record_id"].to_pylist()
    split_of_source: dict[int, str] = {}
    for i, source in enumerate(src):  # every copy lands where its source's features went
        assert split_of_source.setdefault(int(source), where[ids[i]]) == where[ids[i]]
    shared = len(src) - len(set(src.tolist()))
    assert sum(summary["feature_duplicates"].values()) == shared > 500
    assert summary["rows_out"] == 3000
    # The keys see the normalisation: case, spacing and full-width letters do not matter.
    keys = content_keys(table, spec)
    assert keys[0] == content_keys(table.slice(0, 1), spec)[0]
    by_source: dict[int, set[str]] = {}
    for key, source in zip(keys, src.tolist(), strict=True):
        by_source.setdefault(source, set()).add(key)
    assert all(len(k) == 1 for k in by_source.values())


def test_a_table_without_feature_columns_splits_by_record_id():
    table = _anon(10)
    spec = feature_spec(
        load_schema(load_params(ROOT / "params.yaml")),
        column_policies(load_schema(load_params(ROOT / "params.yaml")), {}),
    )
    assert content_keys(table, spec) == table["record_id"].to_pylist()
