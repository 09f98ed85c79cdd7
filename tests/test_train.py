"""Train stage: schema-driven features, determinism, resume, the stage's outputs, lean imports."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
import yaml

from stages.lib.features import column_policies, feature_spec
from stages.lib.io import write_dataset
from stages.lib.model import (
    Predictor,
    fit_preprocessor,
    load_predictor,
    piecewise_linear,
    transform,
    tree_edges,
)
from stages.lib.schema import load_schema
from stages.lib.text_bags import hash_ngrams, normalize_text
from stages.train import TrainConfig, fit
from tests.conftest import anon_config, params

SMALL = TrainConfig(
    seed=7,
    device="cpu",
    epochs=4,
    min_steps=0,
    batch_size=64,
    lr=0.01,
    warmup_fraction=0.1,
    width=32,
    blocks=1,
    text_buckets=2048,
    text_dim=8,
    cat_min_count=2,
    patience=10,
    patience_min_steps=0,
    resume=True,
)


def schema_params(columns: dict) -> dict:
    """The repository's params with this schema (plus key and label) and no anonymize
    overrides."""
    cols = {"customer_id": {"type": "string", "role": "key"}, **columns}
    cols["label"] = {"type": "category", "role": "label", "values": ["no", "yes"]}
    repo = params()
    return {**repo, "schema": {"columns": cols}, "anonymize": {**repo["anonymize"], "policies": {}}}


def spec_of(params: dict):
    schema = load_schema(params)
    return feature_spec(
        schema, column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
    )


def frame(n: int, seed: int) -> pd.DataFrame:
    """Rows whose label follows the numbers, the category and the text (English or Chinese)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    income = rng.lognormal(10, 2, size=n)
    city = rng.choice(["north", "south", "east", "west"], size=n)
    y = (x + (city == "north") * 1.5 + rng.normal(scale=0.3, size=n) > 0.5).astype(int)
    words = {
        (0, 0): "bad service, will not return",
        (0, 1): "服务很差，不会再来",
        (1, 0): "great service, very happy",
        (1, 1): "服务很好，非常满意",
    }
    lang = rng.integers(0, 2, size=n)
    notes = [words[(int(a), int(b))] for a, b in zip(y, lang, strict=True)]
    df = pd.DataFrame(
        {
            "record_id": [f"r{seed}-{i}" for i in range(n)],
            "x": x,
            "income": pd.array(income.round().astype("int64"), dtype="Int64"),
            "city": pd.array(city, dtype="string"),
            "notes": pd.array(notes, dtype="string"),
            "label": pd.array(np.where(y == 1, "yes", "no"), dtype="string"),
        }
    )
    df.loc[::17, "income"] = pd.NA  # nulls are imputed, with a missing indicator
    df.loc[::13, "city"] = pd.NA
    return df


NUMERIC = {
    "x": {"type": "float", "role": "numeric"},
    "income": {"type": "int", "role": "numeric", "min": 0},
}
CATEGORICAL = {"city": {"type": "category", "role": "categorical"}}
TEXT = {"notes": {"type": "string", "role": "text"}}


def accuracy(pred: Predictor, df: pd.DataFrame) -> float:
    return float((np.array(pred.predict(df)) == df["label"].to_numpy()).mean())


@pytest.mark.parametrize(
    "columns,min_acc",
    [
        pytest.param(NUMERIC, 0.7, id="numbers-only"),
        pytest.param(TEXT, 0.95, id="text-only"),
        pytest.param({**NUMERIC, **CATEGORICAL, **TEXT}, 0.95, id="mixed"),
    ],
)
def test_any_schema_trains_without_code_changes(columns, min_acc):
    spec = spec_of(schema_params(columns))
    train, val, test = frame(600, 1), frame(200, 2), frame(200, 3)
    before = train.copy()
    res = fit(train, val, spec, SMALL, log=lambda _m: None)
    pd.testing.assert_frame_equal(train, before)  # inputs are never mutated
    pred = Predictor(res.model, res.state, spec, list(spec.classes))
    proba = pred.predict_proba(test)
    assert proba.shape == (200, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    assert accuracy(pred, test) >= min_acc
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]


def test_text_hashing_is_stable_and_handles_chinese():
    texts = normalize_text(pd.Series(["Ｈｅｌｌｏ  World", "服务很好", None], dtype="string"), 100)
    assert texts == ["hello world", "服务很好", ""]
    flat, off = hash_ngrams(texts, 1000, 1, 3)
    # framed "\x02服务很好\x03" has 6 chars: 6 unigrams + 5 bigrams + 4 trigrams
    # and an empty (or null) text is its own bag: "\x02\x03" gives 2 unigrams + 1 bigram
    assert off.tolist()[1:] == [off[1], off[1] + 15, off[1] + 15 + 3]
    assert flat.min() >= 0 and flat.max() < 1000
    # the same n-grams anywhere give the same ids (no salted hash)
    flat2, _ = hash_ngrams(["服务很好"], 1000, 1, 3)
    assert flat[off[1] : off[2]].tolist() == flat2.tolist()
    code = (
        "from stages.lib.text_bags import hash_ngrams;"
        "print(hash_ngrams(['abc 中文'], 997, 1, 3)[0].tolist())"
    )
    # One other process, with a str-hash seed other than this one's (two processes cost 5 s):
    # a salted hash would give it other ids.
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"
    env = {**os.environ, "PYTHONHASHSEED": seed}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == str(hash_ngrams(["abc 中文"], 997, 1, 3)[0].tolist())


def test_unseen_and_null_values_at_predict_time():
    spec = spec_of(schema_params({**NUMERIC, **CATEGORICAL, **TEXT}))
    res = fit(
        frame(300, 1),
        frame(100, 2),
        spec,
        dataclasses.replace(SMALL, epochs=1),
        log=lambda _m: None,
    )
    odd = frame(4, 9)
    odd.loc[0, "city"] = "atlantis"
    odd.loc[1, ["x", "income", "notes", "city"]] = [np.nan, pd.NA, pd.NA, pd.NA]
    odd.loc[2, "notes"] = "完全没见过的文字 and unseen words"
    proba = Predictor(res.model, res.state, spec, ["no", "yes"]).predict_proba(
        odd.drop(columns="label")
    )
    assert np.isfinite(proba).all() and proba.shape == (4, 2)


def test_piecewise_linear_encoding():
    edges = [0.0, 1.0, 3.0, 7.0]
    got = piecewise_linear(np.array([-1.0, 0.5, 2.0, 7.0, 9.0]), edges)
    want = [[0, 0, 0], [0.5, 0, 0], [1, 0.5, 0], [1, 1, 1], [1, 1, 1]]
    np.testing.assert_allclose(got, want)
    spec = spec_of(schema_params(NUMERIC))
    quantile = dataclasses.replace(SMALL, bin_edges="quantile").prep()
    state = fit_preprocessor(frame(4000, 1), spec, quantile)
    assert len(state["numeric"]["x"]["edges"]) == 8 + 1  # 4000 rows: 8 bins of 500 rows
    assert transform(frame(10, 2), state).x_num.shape[1] == 2 + 8 + 2 + 8


def test_tree_edges_cut_where_the_label_changes():
    # a zero-inflated column (capital gain): its quantiles collapse onto 0, a tree's do not
    rng = np.random.default_rng(0)
    x = np.where(rng.random(4000) < 0.9, 0.0, rng.uniform(1, 10000, 4000))
    labels = pd.Series(np.where(x > 5000, ">50K", "<=50K"))
    edges = tree_edges(x, labels, 8)
    assert edges[0] == x.min() and edges[-1] == x.max() and edges == sorted(set(edges))
    assert any(abs(e - 5000) < 200 for e in edges)  # the threshold that decides the label
    assert len(np.unique(np.quantile(x, np.linspace(0, 1, 9)))) <= 2
    cfg = dataclasses.replace(SMALL, bin_edges="tree")
    spec = spec_of(schema_params(NUMERIC))
    state = fit_preprocessor(frame(4000, 1), spec, cfg.prep())
    assert 2 <= len(state["numeric"]["x"]["edges"]) <= 8 + 1


def test_cpu_training_is_deterministic():
    spec = spec_of(schema_params({**NUMERIC, **CATEGORICAL, **TEXT}))
    train, val = frame(400, 1), frame(100, 2)
    a = fit(train, val, spec, SMALL, log=lambda _m: None).model.state_dict()
    b = fit(train, val, spec, SMALL, log=lambda _m: None).model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


class Interrupt(Exception):
    pass


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    spec = spec_of(schema_params({**NUMERIC, **CATEGORICAL, **TEXT}))
    train, val = frame(400, 1), frame(100, 2)
    cfg = dataclasses.replace(SMALL, patience=100)
    straight = fit(train, val, spec, cfg, log=lambda _m: None)

    def crash_after_epoch_2(msg: str) -> None:
        if msg.startswith("epoch   2"):
            raise Interrupt  # the checkpoint of epoch 2 is already on disk

    with pytest.raises(Interrupt):
        fit(train, val, spec, cfg, checkpoint_dir=tmp_path, log=crash_after_epoch_2)
    messages: list[str] = []
    resumed = fit(train, val, spec, cfg, checkpoint_dir=tmp_path, log=messages.append)
    assert resumed.info["resumed_from"] == {"step": 12, "epoch": 2}
    assert any(m.startswith("resumed from") for m in messages)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history == straight.history
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k

    # another config does not resume from that checkpoint
    other = fit(
        train,
        val,
        spec,
        dataclasses.replace(cfg, lr=0.02),
        checkpoint_dir=tmp_path,
        log=messages.append,
    )
    assert other.info["resumed_from"] is None


def write_project(root) -> None:
    """data/train_aug (300 rows, every tenth augmented) and data/split/val (100 rows)."""
    tr = frame(300, 1)
    tr["_augmented"] = [i % 10 == 0 for i in range(len(tr))]
    write_dataset(
        root / "data/train_aug",
        [("part-0.parquet", pa.Table.from_pandas(tr, preserve_index=False))],
    )
    write_dataset(
        root / "data/split/val",
        [("part-0.parquet", pa.Table.from_pandas(frame(100, 2), preserve_index=False))],
    )


def test_stage_main_writes_model_curve_and_summary(tmp_path, monkeypatch):
    from stages import train as stage

    params = schema_params({**NUMERIC, **CATEGORICAL, **TEXT})
    params["train"] = json.loads(json.dumps(dataclasses.asdict(SMALL)))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(params, allow_unicode=True, sort_keys=False)
    )
    write_project(tmp_path)
    stage.main()

    summary = json.loads((tmp_path / "metrics/train.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] == 300
    assert summary["augmented_rows"] == 30 and summary["val_rows"] == 100
    assert summary["device"] == "cpu" and summary["precision"] == "fp32"
    assert summary["epochs_run"] == 4 and summary["samples_per_s"] > 0
    assert summary["dp"] == {
        "enabled": False,
        "epsilon": None,
        "delta": None,
        "max_grad_norm": None,
        "noise_multiplier": None,
    }
    curve = pd.read_csv(tmp_path / "plots/train_curve.csv")
    assert list(curve.columns) == ["epoch", "step", "train_loss", "val_loss", "val_accuracy"]
    assert len(curve) == 4
    assert (tmp_path / "models/checkpoint/last.pt").exists()

    ckpt = torch.load(tmp_path / "models/model.pt", weights_only=True)
    assert {
        "model",
        "step",
        "config",
        "preprocessor",
        "spec",
        "classes",
        "schema_digest",
    } <= set(ckpt)
    pred = load_predictor(tmp_path / "models/model.pt")
    assert pred.classes == ["no", "yes"]
    assert pred.spec == spec_of(params)
    test = frame(100, 3)
    # round trip: the loaded predictor scores exactly as the in-memory model did
    res_pred = Predictor(pred.model, ckpt["preprocessor"], pred.spec, pred.classes)
    np.testing.assert_array_equal(pred.predict_proba(test), res_pred.predict_proba(test))
    assert accuracy(pred, test) > 0.75  # 300 rows, 4 epochs: learning, not converged
    data = transform(test, ckpt["preprocessor"])
    # two numeric columns: value + missing indicator each; 300 rows are too few for bins
    assert data.x_num.shape == (100, 4)


def test_train_imports_stay_lean():
    code = (
        "import sys, stages.train, stages.lib.model;"
        "heavy = ('prefect', 'dvc', 'great_expectations', 'sklearn', 'scipy', 'matplotlib');"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_training_bf16_resident():
    spec = spec_of(schema_params({**NUMERIC, **CATEGORICAL, **TEXT}))
    cfg = dataclasses.replace(SMALL, device="cuda", batch_size=128, epochs=6)
    res = fit(frame(2000, 1), frame(300, 2), spec, cfg, log=lambda _m: None)
    assert res.info["device"].startswith("cuda") and res.info["data_resident"]
    assert res.info["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    pred = Predictor(res.model, res.state, spec, list(spec.classes), torch.device("cuda"))
    assert accuracy(pred, frame(300, 3)) > 0.9
