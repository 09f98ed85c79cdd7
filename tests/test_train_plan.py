"""Training sizes follow the data (issue 13.6): batch, steps, warm-up and patience from the row
count, so that the defaults work from a Titanic-sized table to millions of rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from stages.lib.model import Predictor
from stages.lib.params import load_params, section
from stages.train import DPConfig, TrainConfig, auto_batch, fit, plan
from tests.test_train import schema_params, spec_of


def test_config_defaults_are_params_yaml():
    """One source of truth: the code's defaults are exactly the train section of params.yaml."""
    from pathlib import Path

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert section(TrainConfig, "train", params) == TrainConfig()


@pytest.mark.parametrize(
    "rows,batch", [(500, 32), (900, 32), (25_000, 512), (1_000_000, 4096), (10**7, 4096)]
)
def test_batch_follows_rows(rows, batch):
    assert auto_batch(rows) == batch
    assert auto_batch(rows) & (auto_batch(rows) - 1) == 0  # a power of two


@pytest.mark.parametrize("rows,batch", [(500, 64), (22_178, 2048), (10**6, 4096)])
def test_dp_plans_larger_batches_and_the_same_steps(rows, batch):
    """Under DP, ~8 steps per epoch (less noise per row); min_steps still sets the epochs."""
    cfg = TrainConfig(dp=DPConfig(enabled=True))
    p = plan(rows, cfg)
    assert p.batch_size == batch and p.total_steps >= cfg.min_steps
    assert plan(rows, dataclasses.replace(cfg, batch_size=256)).batch_size == 256  # explicit wins


@pytest.mark.parametrize("rows", [500, 900, 25_000, 10**7])
def test_plan_gives_every_size_enough_steps(rows):
    p = plan(rows, TrainConfig())
    assert p.steps_per_epoch >= 15  # never one optimiser step per epoch (issue 13.6)
    assert p.total_steps >= TrainConfig().min_steps
    assert 1 <= p.warmup_steps <= 0.1 * p.total_steps  # warm-up ends long before training does
    assert p.patience * p.steps_per_epoch >= TrainConfig().patience_min_steps
    assert p.patience < p.epochs  # early stopping can happen


def test_plan_respects_explicit_settings_and_ranks():
    p = plan(3000, dataclasses.replace(TrainConfig(), batch_size=100, epochs=2, min_steps=0), 4)
    assert p.batch_size == 100 and p.steps_per_epoch == 30 and p.epochs == 2
    assert plan(3000, dataclasses.replace(TrainConfig(), max_steps=7)).total_steps == 7
    assert plan(10, TrainConfig()).batch_size == 10  # tiny data: one batch of everything


def titanic_like(n: int, seed: int) -> pd.DataFrame:
    """Survival depends on sex, class, age and fare, with an interaction and label noise."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["female", "male"], size=n, p=[0.35, 0.65])
    pclass = rng.choice(["1", "2", "3"], size=n, p=[0.25, 0.2, 0.55])
    age = np.clip(rng.normal(30, 14, size=n), 0.5, 80)
    fare = np.exp(rng.normal(3.0 - 0.6 * pclass.astype(int), 0.7))
    embarked = rng.choice(["S", "C", "Q"], size=n, p=[0.72, 0.19, 0.09])
    z = (
        2.4 * (sex == "female")
        - 0.9 * (pclass.astype(int) - 1)
        - 0.03 * (age - 30)
        + 1.5 * (age < 10)
        - 1.8 * ((sex == "female") & (pclass == "3"))
        + 0.2 * np.log(fare)
        - 1.0
    )
    y = rng.random(n) < 1 / (1 + np.exp(-z))
    df = pd.DataFrame(
        {
            "record_id": [f"p{seed}-{i}" for i in range(n)],
            "sex": pd.array(sex, dtype="string"),
            "pclass": pd.array(pclass, dtype="string"),
            "age": age.round(1),
            "fare": fare.round(2),
            "embarked": pd.array(embarked, dtype="string"),
            "label": pd.array(np.where(y, "yes", "no"), dtype="string"),
        }
    )
    df.loc[::9, "age"] = np.nan  # Titanic misses ages
    return df


TITANIC = {
    "sex": {"type": "category", "role": "categorical"},
    "pclass": {"type": "category", "role": "categorical"},
    "embarked": {"type": "category", "role": "categorical"},
    "age": {"type": "float", "role": "numeric"},
    "fare": {"type": "float", "role": "numeric"},
}


def logistic_accuracy(train: pd.DataFrame, test: pd.DataFrame) -> float:
    """sklearn's logistic regression on the same features: one-hot + imputed, scaled numbers."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cats, nums = ["sex", "pclass", "embarked"], ["age", "fare"]
    features = ColumnTransformer(
        [
            ("c", OneHotEncoder(handle_unknown="ignore"), cats),
            ("n", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), nums),
        ]
    )
    lr = make_pipeline(features, LogisticRegression(max_iter=2000))
    x = lambda d: d[cats + nums].astype(object).where(d[cats + nums].notna(), np.nan)  # noqa: E731
    lr.fit(x(train), train["label"].astype(str))
    return float((lr.predict(x(test)) == test["label"].astype(str).to_numpy()).mean())


@pytest.fixture
def one_thread():
    """Batches of 32 rows gain nothing from intra-op threads, and lose much on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_titanic_sized_table_with_defaults_matches_logistic_regression(one_thread):
    spec = spec_of(schema_params(TITANIC))
    data = titanic_like(891, 1)  # Titanic's size, split 70/15/15 as the pipeline does
    train, val = data.iloc[:623], data.iloc[623:757]
    test = titanic_like(4000, 2)  # a large test set, so that a point of accuracy is signal
    res = fit(train, val, spec, dataclasses.replace(TrainConfig(), device="cpu"), log=print)
    assert res.info["batch_size"] == 32 and res.info["steps"] >= 100
    pred = Predictor(res.model, res.state, spec, list(spec.classes))
    acc = float((np.array(pred.predict(test)) == test["label"].to_numpy()).mean())
    lr_acc = logistic_accuracy(pd.concat([train, val]), test)
    print(f"model {acc:.4f} vs logistic regression {lr_acc:.4f}")
    assert acc >= lr_acc - 0.005  # within the test set's noise floor (se ~0.007), not below it


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"dropout": 1.5}, r"train\.dropout: 1\.5 is outside 0\.\.1"),
        ({"epochs": 0}, r"train\.epochs: 0 is outside 1\.\."),
        ({"lr": -0.1}, r"train\.lr: -0\.1 is outside above 0"),
        ({"ngram_min": 4}, r"train\.ngram_min: 4 is above ngram_max 3"),
    ],
)
def test_out_of_range_settings_are_a_params_error_naming_the_key(override, message) -> None:
    """Issue 14: `train.dropout: 1.5` was a torch traceback (exit 1), now exit 2 naming it."""
    from stages.lib.params import ParamsError, load_params, section
    from stages.train import TrainConfig

    params = load_params()
    params["train"] = {**params["train"], **override}
    with pytest.raises(ParamsError, match=message):
        section(TrainConfig, "train", params)


def test_plr_follows_the_training_rows(tmp_path):
    """PLR_MIN_ROWS: a small table trains without periodic embeddings, and the model file
    records the shape as built, so that it loads back."""
    from stages.lib.config import PLR_MIN_ROWS
    from stages.lib.model import load_predictor
    from stages.lib.training import save_torch
    from tests.test_train import NUMERIC, SMALL, frame

    spec = spec_of(schema_params(NUMERIC))
    cfg = dataclasses.replace(SMALL, plr_dim=8, epochs=1)
    assert cfg.net(PLR_MIN_ROWS)["plr_dim"] == 8 and cfg.net(PLR_MIN_ROWS - 1)["plr_dim"] == 0
    small = fit(frame(300, 1), frame(100, 2), spec, cfg, log=lambda _m: None)
    assert small.model.plr is None and small.checkpoint["net"]["plr_dim"] == 0
    save_torch(tmp_path / "model.pt", small.checkpoint)
    assert load_predictor(tmp_path / "model.pt").predict_proba(frame(20, 3)).shape == (20, 2)
