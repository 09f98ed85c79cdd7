"""Temperature scaling (train.calibrate): the fitted temperature, what it changes, old models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stages.lib.model import Predictor, load_predictor
from stages.lib.training import fit_temperature, save_torch
from stages.train import fit
from tests.test_train import CATEGORICAL, NUMERIC, SMALL, TEXT, frame, schema_params, spec_of


def test_fit_temperature_recovers_the_temperature_labels_were_drawn_at():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(40_000, 3, generator=gen) * 4
    for true_t in (0.5, 2.0, 5.0):
        y = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=gen).squeeze(1)
        t = fit_temperature(logits, y)
        # an independent method: the best of a fine grid of the same loss
        grid = np.exp(np.linspace(np.log(0.1), np.log(10), 2001))
        losses = [float(F.cross_entropy(logits.double() / g, y)) for g in grid]
        assert abs(t - true_t) / true_t < 0.05
        assert abs(t - grid[int(np.argmin(losses))]) / t < 0.01


def test_calibration_changes_probabilities_not_decisions():
    spec = spec_of(schema_params({**NUMERIC, **CATEGORICAL, **TEXT}))
    train, val, test = frame(600, 1), frame(300, 2), frame(300, 3)
    plain = fit(train, val, spec, dataclasses.replace(SMALL, calibrate=False), log=lambda _m: None)
    cal = fit(train, val, spec, SMALL, log=lambda _m: None)
    assert plain.info["calibration"] is None
    c = cal.info["calibration"]
    assert c["temperature"] != 1.0 and c["val_loss_after"] <= c["val_loss_before"]
    p_plain = Predictor(plain.model, plain.state, spec, list(spec.classes)).predict_proba(test)
    p_cal = Predictor(cal.model, cal.state, spec, list(spec.classes)).predict_proba(test)
    np.testing.assert_array_equal(p_plain.argmax(1), p_cal.argmax(1))
    # each row's log-odds are the uncalibrated ones divided by the temperature: same ranking
    with np.errstate(divide="ignore"):
        odds_plain, odds_cal = (np.log(p[:, 1]) - np.log(p[:, 0]) for p in (p_plain, p_cal))
    finite = np.isfinite(odds_plain) & np.isfinite(odds_cal)
    assert finite.mean() > 0.5
    t = c["temperature"]
    np.testing.assert_allclose(odds_cal[finite] * t, odds_plain[finite], rtol=1e-4, atol=1e-4)
    assert not np.allclose(p_plain, p_cal)
    assert float(cal.checkpoint["model"]["temperature"]) == pytest.approx(t, rel=1e-6)


def test_a_model_saved_before_calibration_still_loads(tmp_path):
    spec = spec_of(schema_params(NUMERIC))
    res = fit(frame(200, 1), frame(100, 2), spec, SMALL, log=lambda _m: None)
    old = {**res.checkpoint, "model": dict(res.checkpoint["model"])}
    del old["model"]["temperature"]
    save_torch(tmp_path / "model.pt", old)
    pred = load_predictor(tmp_path / "model.pt")
    assert float(pred.model.temperature) == 1.0
    assert pred.predict_proba(frame(50, 3)).shape == (50, 2)
