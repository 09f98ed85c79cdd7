"""Issue 16's model parts: periodic numeric embeddings (PLR) and TabM-mini ensembling: shapes,
eval output as the members' mean probability, determinism, a tiny fit, DP's per-sample grads."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.lib.model import (
    EnsembleAdapter,
    EnsembleLinear,
    PeriodicEmbedding,
    Predictor,
    build_net,
    fit_preprocessor,
    forward,
    load_predictor,
    transform,
)
from stages.lib.training import member_loss, save_torch
from stages.train import DPConfig, fit, make_optimizers, make_private, plan
from tests.test_train import (
    CATEGORICAL,
    NUMERIC,
    SMALL,
    TEXT,
    accuracy,
    frame,
    schema_params,
    spec_of,
)

MIXED = {**NUMERIC, **CATEGORICAL, **TEXT}
TABM = dataclasses.replace(SMALL, plr_dim=4, plr_frequencies=3, ensemble=4, label_smoothing=0.05)


def test_parts_have_the_documented_shapes():
    torch.manual_seed(0)
    assert PeriodicEmbedding(3, 5, 4, 0.1)(torch.randn(7, 3)).shape == (7, 12)
    assert EnsembleAdapter(4, 6)(torch.randn(7, 6)).shape == (7, 4, 6)
    assert EnsembleLinear(4, 6, 2)(torch.randn(7, 4, 6)).shape == (7, 4, 2)
    r = EnsembleAdapter(4, 6).r
    assert set(r.unique().tolist()) <= {-1.0, 1.0}  # random signs: members differ at once


def test_plr_sees_each_columns_standardised_value():
    spec = spec_of(schema_params(MIXED))
    df = frame(600, 1)
    prep = fit_preprocessor(df, spec, TABM.prep())
    net = build_net(prep, **TABM.net())
    data = transform(df, prep)
    z = data.x_num[:, net.numeric_z]
    # the standardised value comes first in each column's block: mean 0, std 1 over train
    torch.testing.assert_close(z.mean(0), torch.zeros(2), atol=0.05, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2), atol=0.05, rtol=0)
    assert len(net.cfg.numeric_z) == 2 and net.cfg.numeric_z[0] == 0


def test_training_gives_member_logits_and_eval_their_mean_probability():
    spec = spec_of(schema_params(MIXED))
    df = frame(100, 1)
    prep = fit_preprocessor(df, spec, TABM.prep())
    torch.manual_seed(0)
    net = build_net(prep, **{**TABM.net(), "dropout": 0.0})
    data = transform(df, prep)
    net.train()
    members = forward(net, data)
    assert members.shape == (100, 4, 2)
    net.eval()
    probs = torch.softmax(forward(net, data), 1)
    torch.testing.assert_close(probs, torch.softmax(members, -1).mean(1), atol=1e-5, rtol=1e-5)
    # the loss is the members' mean loss, not the loss of their mean
    flat = F.cross_entropy(members.flatten(0, 1), data.y.repeat_interleave(4))
    torch.testing.assert_close(member_loss(members, data.y), flat)


def test_tabm_with_plr_fits_a_tiny_task_deterministically(tmp_path):
    spec = spec_of(schema_params(MIXED))
    train, val, test = frame(600, 1), frame(200, 2), frame(200, 3)
    a = fit(train, val, spec, TABM, log=lambda _m: None)
    b = fit(train, val, spec, TABM, log=lambda _m: None)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(v, b.model.state_dict()[k], atol=0, rtol=0, msg=k)
    pred = Predictor(a.model, a.state, spec, list(spec.classes))
    assert accuracy(pred, test) >= 0.9  # chance is ~0.6
    save_torch(tmp_path / "model.pt", a.checkpoint)  # predict rebuilds the same network
    loaded = load_predictor(tmp_path / "model.pt")
    np.testing.assert_allclose(loaded.predict_proba(test), pred.predict_proba(test), atol=1e-6)


@pytest.mark.parametrize("k", [1, 3])
def test_dp_per_sample_gradients_are_exact_for_plr_and_the_ensemble(k):
    cfg = dataclasses.replace(
        TABM, ensemble=k, dropout=0.0, label_smoothing=0.0, dp=DPConfig(enabled=True, epsilon=2.0)
    )
    spec = spec_of(schema_params(MIXED))
    df = frame(32, 1)
    prep = fit_preprocessor(df, spec, cfg.prep())
    torch.manual_seed(0)
    raw = build_net(prep, **cfg.net())
    data = transform(df, prep)
    model, _opts, _loader, _privacy = make_private(
        raw, make_optimizers(raw, cfg, 0.01), len(df), plan(len(df), cfg), cfg
    )
    model.train()
    member_loss(forward(model, data), data.y).backward()
    model.disable_hooks()
    for i in (0, 9):
        row = data.take(torch.tensor([i]))
        trained = [(n, p) for n, p in raw.named_parameters() if p.requires_grad]  # not idf
        grads = torch.autograd.grad(member_loss(forward(raw, row), row.y), [p for _, p in trained])
        for (name, p), g in zip(trained, grads, strict=True):
            torch.testing.assert_close(p.grad_sample[i], g, atol=1e-5, rtol=1e-4, msg=name)
