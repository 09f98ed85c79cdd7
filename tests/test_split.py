"""The split stage: stable hash assignment, no overlap, class balance."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from stages.lib.io import read_dataset, write_dataset
from stages.lib.params import ParamsError, load_params
from stages.lib.schema import load_schema
from stages.split import SPLITS, SplitConfig, assign, check_fractions, run

ROOT = Path(__file__).resolve().parents[1]
CONFIG = SplitConfig(fractions={"train": 0.7, "val": 0.15, "test": 0.15})


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
