"""Every column type passes every stage: date, timestamp, bool, float, int, string, category,
each kept, generalised and used as a feature, through clean -> ... -> evaluate (and predict)."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.conftest import ROOT, params, run_module, venv_env

N = 300
STAGES = ("ingest", "clean", "validate", "anonymize", "split", "augment", "train", "evaluate")

# One column of each type in several roles: kept attribute, generalised quasi-identifier,
# numeric feature, categorical feature.
COLUMNS = {
    "id": {"type": "string", "role": "key"},
    "full_name": {"type": "string", "role": "identifier", "pii": "name"},
    "birth": {"type": "date", "role": "attribute", "quasi": True, "format": "date"},
    "signup": {"type": "date", "role": "numeric"},
    "first_order": {"type": "date", "role": "attribute"},
    "visit_month": {"type": "date", "role": "categorical"},
    "last_seen": {"type": "timestamp", "role": "numeric"},
    "created": {"type": "timestamp", "role": "attribute", "quasi": True},
    "logged_at": {"type": "timestamp", "role": "attribute"},
    "member": {"type": "bool", "role": "categorical", "sensitive": True},
    "newsletter": {"type": "bool", "role": "numeric"},
    "verified": {"type": "bool", "role": "attribute"},
    "score": {"type": "float", "role": "numeric", "min": 0, "max": 1},
    "visits": {"type": "int", "role": "numeric", "min": 0},
    "age": {"type": "int", "role": "attribute", "quasi": True, "min": 0, "max": 120},
    "city": {"type": "category", "role": "categorical", "values": ["Oslo", "Bergen", "Tromso"]},
    "note": {"type": "string", "role": "text"},
    "label": {"type": "category", "role": "label", "values": ["no", "yes"]},
}
POLICIES = {
    "full_name": "drop",
    "birth": {"action": "generalize", "date": "year"},
    "created": {"action": "generalize", "date": "month"},
    "age": {"action": "generalize", "band": 20},
}


def frame(n: int = N, seed: int = 0) -> pd.DataFrame:
    """Source rows as exported: every value a string, in the formats a user meets."""
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    base = datetime.date(2020, 1, 1)
    stamp = datetime.datetime(2024, 5, 1, 12, 0)

    def day(r: int, span: int, start: datetime.date = base) -> datetime.date:
        return start + datetime.timedelta(days=int(r * 7919 % span))

    rows = {
        "id": [f"K{r:05d}" for r in range(n)],
        "full_name": [f"Person Number{r}" for r in range(n)],
        "birth": [f"{1960 + r % 4}-0{1 + r % 9}-1{r % 10}" for r in range(n)],
        "signup": [day(r, 900).isoformat() for r in range(n)],
        "first_order": [day(r, 400).strftime("%d/%m/%Y") for r in range(n)],
        "visit_month": [f"2024-0{1 + r % 3}-01" for r in range(n)],
        "last_seen": [
            (stamp + datetime.timedelta(hours=int(s * 1000))).isoformat() + "Z" for s in score
        ],
        "created": [f"2023-0{1 + r % 2}-0{1 + r % 9}T08:30:00+02:00" for r in range(n)],
        # distinct per row, as event times are (not taken for an identifier)
        "logged_at": [str(stamp + datetime.timedelta(minutes=r)) for r in range(n)],
        "member": [["yes", "no"][r % 2] for r in range(n)],
        "newsletter": [["TRUE", "false", "1", "0"][r % 4] for r in range(n)],
        "verified": [["t", "f", ""][r % 3] for r in range(n)],
        "score": [f"{s:.4f}" for s in score],
        "visits": [str(int(s * 50) + r % 3) for r, s in enumerate(score)],
        "age": [str(20 + r % 60) for r in range(n)],
        "city": [["Oslo", "bergen", "TROMSO"][r % 3] for r in range(n)],
        "note": [f"visit number {r % 7}" for r in range(n)],
        "label": ["yes" if s > 0.5 else "no" for s in score],
    }
    return pd.DataFrame(rows)


def types_params() -> dict:
    """The project's params with this test's schema and small-data settings."""
    p = params()
    p["schema"]["columns"] = COLUMNS
    p["ingest"]["sources"] = ["data/in/types.csv"]
    p["clean"]["label_aliases"] = {}
    p["anonymize"]["policies"] = POLICIES
    p["anonymize"]["k"] = 2
    p["augment"]["numeric_jitter"] = 0.05  # numbers jittered, dates and booleans left as they are
    p["train"].update(epochs=2, min_steps=10, batch_size=64, width=16, cat_min_count=1)
    p["evaluate"]["min_slice_size"] = 5
    p["evaluate"]["gate"] = {k: None for k in p["evaluate"]["gate"]}
    return p


@pytest.mark.slow
def test_every_type_through_every_stage(tmp_path: Path) -> None:
    (tmp_path / "data/in").mkdir(parents=True)
    frame().to_csv(tmp_path / "data/in/types.csv", index=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(types_params(), sort_keys=False))
    env = {**venv_env(), "PYTHONPATH": str(ROOT)}  # this tree's stages, not an installed copy
    for stage in STAGES:
        r = run_module(tmp_path, f"stages.{stage}", env=env)
        assert r.returncode == 0, f"{stage}: {r.stderr[-3000:]}"
        assert "Traceback" not in r.stderr, r.stderr

    m = {s: json.loads((tmp_path / f"metrics/{s}.json").read_text()) for s in STAGES}
    assert m["clean"]["rows_in"] == N and m["clean"]["rows_out"] == N, m["clean"]
    assert m["validate"]["failed_critical"] == 0

    clean = pd.read_parquet(tmp_path / "data/clean")
    assert str(clean.loc[0, "birth"]) == "1960-01-10"
    assert str(clean.loc[0, "first_order"]) == "01/01/2020" or clean["first_order"].notna().all()
    assert clean["last_seen"].dtype.kind == "M" and clean["logged_at"].notna().all()
    # '+02:00' offsets become UTC.
    assert clean.loc[0, "created"] == pd.Timestamp("2023-01-01 06:30:00")
    assert clean["member"].tolist()[:2] == [True, False]
    assert clean["newsletter"].tolist()[:4] == [True, False, True, False]
    assert clean["verified"].isna().sum() == N // 3
    assert set(clean["city"]) == {"Oslo", "Bergen", "Tromso"}

    anon = pd.read_parquet(tmp_path / "data/anon")
    assert "full_name" not in anon.columns and "id" not in anon.columns
    assert set(anon["birth"]) == {"1960", "1961", "1962", "1963"}  # generalised to the year
    assert set(anon["created"]) == {"2023-01", "2023-02"}  # to the month
    for kept in ("first_order", "logged_at", "verified", "signup", "last_seen", "newsletter"):
        assert kept in anon.columns, kept
    assert m["anonymize"]["scan"]["passed"]

    assert m["train"]["epochs_run"] >= 1 and (tmp_path / "models/model.pt").exists()
    # Dates, timestamps and booleans reached the model as numbers (days since epoch, 0/1), not
    # as all-missing columns: each has a spread in the fitted scaler.
    import torch

    state = torch.load(tmp_path / "models/model.pt", weights_only=False)["preprocessor"]
    for col in ("signup", "last_seen", "newsletter", "score", "visits"):
        assert state["numeric"][col]["std"] > 0.1 and state["numeric"][col]["median"] != 0, col
    assert state["numeric"]["signup"]["median"] > 18262  # days since 1970: 2020-01-01 or later
    assert {"member", "visit_month", "city"} <= set(state["categorical"])
    e = m["evaluate"]
    assert e["n"] > 0 and 0.0 <= e["accuracy"] <= 1.0 and e["gate"]["passed"]
    # The bool sensitive column was sliced.
    slices = pd.read_csv(tmp_path / "plots/slices.csv")
    assert set(slices["slice"]) >= {"member=False", "member=True"}, slices

    # predict: new records in the raw schema, every type as text.
    new = frame(20, seed=1).drop(columns=["label"])
    new.to_csv(tmp_path / "new.csv", index=False)
    r = run_module(tmp_path, "stages.cli", "predict", "new.csv", "pred.csv", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert len(pred) == 20 and set(pred["predicted"]) <= {"no", "yes"}
