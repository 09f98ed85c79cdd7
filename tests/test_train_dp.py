"""Differential privacy (Opacus DP-SGD): per-sample gradients are right (text bags included),
clipped to the norm, the ε spent stays within the target and reaches metrics; device errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import yaml

from stages.lib.model import build_net, fit_preprocessor, forward, transform
from stages.lib.training import member_loss
from stages.train import DPConfig, fit, make_optimizers, make_private, plan
from tests.test_train import CATEGORICAL, NUMERIC, SMALL, TEXT, frame, schema_params, spec_of

MIXED = {**NUMERIC, **CATEGORICAL, **TEXT}
DP = dataclasses.replace(
    SMALL, dropout=0.0, dp=DPConfig(enabled=True, epsilon=2.0, delta=None, max_grad_norm=0.5)
)


def private_setup(n: int = 64):
    """A small net made private, and a batch of `n` rows with numbers, a category and text."""
    torch.manual_seed(0)
    spec = spec_of(schema_params(MIXED))
    df = frame(n, 1)
    prep = fit_preprocessor(df, spec, DP.prep())
    data = transform(df, prep)
    raw = build_net(prep, **DP.net())
    opts = make_optimizers(raw, DP, 0.01)
    model, opts, _loader, privacy = make_private(raw, opts, n, plan(n, DP), DP)
    return raw, model, opts[0], privacy, data


def test_per_sample_gradients_are_exact_for_every_layer_and_the_text_bags():
    raw, model, _opt, _privacy, data = private_setup()
    model.train()
    loss = member_loss(forward(model, data), data.y)
    loss.backward()
    model.disable_hooks()  # the reference: plain autograd, one row at a time
    for i in (0, 5, 17):
        raw.zero_grad()
        row = data.take(torch.tensor([i]))
        trained = [(n, p) for n, p in raw.named_parameters() if p.requires_grad]  # not idf
        grads = torch.autograd.grad(
            member_loss(raw(row.x_num, row.x_cat, row.text_flat, row.text_off), row.y),
            [p for _, p in trained],
        )
        for (name, p), g in zip(trained, grads, strict=True):
            torch.testing.assert_close(p.grad_sample[i], g, atol=1e-5, rtol=1e-4, msg=name)
    assert raw.text[0].weight.grad_sample.shape == (64, *raw.text[0].weight.shape)


def test_each_rows_gradient_is_clipped_to_max_grad_norm():
    raw, model, opt, _privacy, data = private_setup()
    model.train()
    member_loss(forward(model, data), data.y).backward()
    params = [p for p in raw.parameters() if p.requires_grad]
    norms = torch.stack([p.grad_sample.flatten(1).norm(dim=1) for p in params]).norm(dim=0)
    c = DP.dp.max_grad_norm
    assert (norms > c).any()  # without clipping some rows would weigh more than c
    opt.clip_and_accumulate()
    factor = (c / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        expected = torch.einsum("i,i...->...", factor, p.grad_sample)
        torch.testing.assert_close(p.summed_grad, expected, atol=1e-6, rtol=1e-5)


def test_dp_training_spends_at_most_the_target_epsilon():
    spec = spec_of(schema_params(MIXED))
    train = frame(400, 1)
    train["_augmented"] = [i % 5 == 0 for i in range(400)]  # augment's copies: 80 rows
    res = fit(train, frame(100, 2), spec, DP, log=lambda _m: None)
    dp = res.info["dp"]
    assert set(dp) == {
        "enabled",
        "epsilon",
        "delta",
        "max_grad_norm",
        "noise_multiplier",
        "not_covered",
    }
    assert "bin edges" in dp["not_covered"]  # preprocessing is fitted outside DP-SGD: said
    # DP trains on source rows only (a record's copies would spend its budget twice): δ = 1/320
    assert dp["enabled"] is True and dp["delta"] == 1 / 320 and dp["max_grad_norm"] == 0.5
    assert 0 < dp["epsilon"] <= DP.dp.epsilon and dp["noise_multiplier"] > 0
    assert res.info["epochs_run"] == DP.epochs  # Poisson batches, ~batch_size rows each
    tighter = dataclasses.replace(DP, dp=dataclasses.replace(DP.dp, epsilon=0.5))
    res2 = fit(frame(400, 1), frame(100, 2), spec, tighter, log=lambda _m: None)
    assert res2.info["dp"]["noise_multiplier"] > dp["noise_multiplier"]  # less ε, more noise
    assert res2.info["dp"]["epsilon"] <= 0.5


def test_without_dp_the_report_says_so():
    spec = spec_of(schema_params(NUMERIC))
    res = fit(frame(200, 1), frame(50, 2), spec, SMALL, log=lambda _m: None)
    assert res.info["dp"] == {
        "enabled": False,
        "epsilon": None,
        "delta": None,
        "max_grad_norm": None,
        "noise_multiplier": None,
    }


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_is_a_params_error_exit_2(tmp_path, monkeypatch, capsys):
    from stages import train as stage
    from stages.lib.errors import run_stage
    from tests.test_train import write_project

    params = schema_params(NUMERIC)
    params["train"] = json.loads(json.dumps(dataclasses.asdict(SMALL)))
    params["train"]["device"] = "cuda"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_project(tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_stage(stage.main)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "train.device" in err and "no CUDA device" in err and "Traceback" not in err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_dp_training_on_a_gpu():
    spec = spec_of(schema_params(MIXED))
    cfg = dataclasses.replace(DP, device="cuda")
    res = fit(frame(400, 1), frame(100, 2), spec, cfg, log=lambda _m: None)
    assert res.info["device"].startswith("cuda") and 0 < res.info["dp"]["epsilon"] <= 2.0


def test_under_dp_the_best_epoch_is_chosen_by_val_accuracy_not_val_loss():
    from torch import nn

    from stages.train import TrainState, record_epoch

    net = nn.Linear(2, 2)
    by_loss, by_acc = (TrainState({}, "d", {}, {}) for _ in range(2))
    # DP-SGD's noisy model: val accuracy climbs while its (badly calibrated) val loss rises
    for loss, acc in [(0.60, 0.78), (0.66, 0.84), (0.65, 0.85)]:
        record_epoch(by_loss, net, loss, acc, {})
        record_epoch(by_acc, net, loss, acc, {}, by_accuracy=True)
    assert (by_loss.best_val_accuracy, by_loss.bad_epochs) == (0.78, 2)
    assert (by_acc.best_val_accuracy, by_acc.bad_epochs) == (0.85, 0)
