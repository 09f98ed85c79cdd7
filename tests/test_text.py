"""The text path (issue 16): TF-IDF bags, the wide part's own rate, and `text_lr: auto`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from stages.lib.model import HashedBag, bag_idf, bag_weights, fit_preprocessor, transform
from stages.lib.training import TEXT_LR_GRID, TextSGD, plan, probe_text_lr
from stages.train import TrainConfig, fit
from tests.test_train import SMALL, TEXT, frame, schema_params, spec_of


def test_bag_weights_make_each_bag_an_l2_normalised_tfidf_vector():
    flat = torch.tensor([0, 1, 2, 1, 3])
    lens = torch.tensor([3, 0, 2])
    ones = bag_weights(flat, lens, torch.ones(4))
    # without idf: a binary bag divided by the square root of its length, as before issue 16
    torch.testing.assert_close(ones, torch.tensor([3**-0.5] * 3 + [2**-0.5] * 2))
    idf = torch.tensor([1.0, 2.0, 3.0, 4.0])
    w = bag_weights(flat, lens, idf)
    torch.testing.assert_close(w[:3], idf[:3] / idf[:3].norm())
    torch.testing.assert_close(w[3:], torch.tensor([2.0, 4.0]) / torch.tensor([2.0, 4.0]).norm())


def test_bag_idf_is_scikit_learns_smoothed_idf():
    from sklearn.feature_extraction.text import TfidfVectorizer

    docs = ["a b", "a c", "a b d"]
    vec = TfidfVectorizer(token_pattern=r"\w").fit(docs)
    ids = {t: i for i, t in enumerate(vec.get_feature_names_out())}
    flat = torch.tensor([ids[t] for d in docs for t in d.split()])
    idf = bag_idf(flat, 5, len(docs))
    torch.testing.assert_close(idf[:4], torch.tensor(vec.idf_, dtype=torch.float32))
    assert idf[4] == pytest.approx(np.log(4) + 1)  # an unseen bucket: the largest weight


def test_text_sgd_moves_only_touched_rows_and_the_wide_columns_at_their_own_rate():
    bag = HashedBag(10, 5, sparse=True, wide=2)
    before = bag.weight.detach().clone()
    opt = TextSGD([bag.weight], lr=0.5, deep=3, wide_ratio=20.0)
    flat, lens = torch.tensor([1, 4, 4, 7]), torch.tensor([2, 2])
    bag(flat, lens).sum().backward()
    opt.step()
    moved = (bag.weight.detach() - before).abs().sum(1) > 0
    assert moved.nonzero().flatten().tolist() == [1, 4, 7]
    grad = bag.weight.grad.to_dense()
    torch.testing.assert_close(bag.weight.detach()[:, :3], before[:, :3] - 0.5 * grad[:, :3])
    torch.testing.assert_close(bag.weight.detach()[:, 3:], before[:, 3:] - 10.0 * grad[:, 3:])


def _probe(df_train: pd.DataFrame, df_val: pd.DataFrame) -> dict:
    spec = spec_of(schema_params(TEXT))
    cfg = dataclasses.replace(SMALL, text_idf=True)
    state = fit_preprocessor(df_train, spec, cfg.prep())
    train, val = transform(df_train, state), transform(df_val, state)
    return probe_text_lr(train, val, cfg, plan(len(train), cfg), state["text"]["buckets"])


def test_auto_text_lr_takes_a_large_rate_for_text_that_predicts_the_label():
    out = _probe(frame(600, 1), frame(200, 2))
    assert set(out["val_loss"]) == {str(r) for r in TEXT_LR_GRID}
    assert out["text_lr"] >= 10.0, out


def test_auto_text_lr_keeps_the_smallest_rate_for_text_without_label_signal():
    def noise(n: int, seed: int) -> pd.DataFrame:
        df = frame(n, seed)
        rng = np.random.default_rng(seed + 100)
        words = np.array(["alpha", "beta", "gamma", "delta", "苹果", "香蕉", "zeta", "eta"])
        df["notes"] = pd.array(
            [" ".join(rng.choice(words, 3)) + f" #{rng.integers(10**6)}" for _ in range(n)],
            dtype="string",
        )
        return df

    out = _probe(noise(600, 1), noise(200, 2))
    assert out["text_lr"] == TEXT_LR_GRID[0], out


def test_fit_reports_the_auto_rate_and_stores_the_idf_with_the_weights():
    spec = spec_of(schema_params(TEXT))
    cfg = dataclasses.replace(SMALL, text_lr="auto", resume=False)
    res = fit(frame(400, 1), frame(100, 2), spec, cfg, log=lambda _m: None)
    assert res.info["text_lr"]["text_lr"] in TEXT_LR_GRID
    idf = res.checkpoint["model"]["text.0.idf"]
    assert idf.shape == (SMALL.text_buckets,) and float(idf.min()) >= 1.0
    assert float(idf.max()) > float(idf.min())  # frequent n-grams weigh less than rare ones


def test_text_lr_auto_and_numbers_are_accepted_anything_else_is_a_params_error():
    from stages.lib.params import ParamsError

    assert TrainConfig(text_lr="auto").text_lr == "auto"
    assert TrainConfig(text_lr=20.0).text_lr == 20.0
    with pytest.raises(ParamsError, match="text_lr"):
        TrainConfig(text_lr=0.0)
    with pytest.raises(ParamsError, match="text_deep_lr"):
        TrainConfig(text_deep_lr=-1.0)


def test_under_dp_the_text_tables_keep_idf_ones_and_no_probe_runs():
    from stages.train import DPConfig

    spec = spec_of(schema_params(TEXT))
    cfg = dataclasses.replace(
        SMALL, epochs=1, resume=False, dropout=0.0, dp=DPConfig(enabled=True, epsilon=8.0)
    )
    res = fit(frame(200, 1), frame(100, 2), spec, cfg, log=lambda _m: None)
    assert "text_lr" not in res.info
    assert torch.equal(res.checkpoint["model"]["text.0.idf"], torch.ones(SMALL.text_buckets))
