"""Text hashing: ids spread like a random function's, the table sized to the data, old models."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from faker import Faker

from stages.lib.errors import InputError
from stages.lib.features import hash_word_ngrams
from stages.lib.model import load_predictor
from stages.lib.text_bags import AUTO_TEXT_BUCKETS, hash_ngrams, text_buckets
from stages.lib.training import save_torch
from stages.train import DPConfig, TrainConfig, fit
from tests.test_train import SMALL, TEXT, frame, schema_params, spec_of


def _expected_occupied(distinct: int, buckets: int) -> float:
    """Buckets a uniformly random function fills with `distinct` keys (balls into bins)."""
    return buckets * (1 - np.exp(-distinct / buckets))


def _cjk_texts() -> list[str]:
    """Every CJK unified ideograph once, and as many bigrams: the case FNV alone collapsed."""
    chars = np.array([chr(c) for c in range(0x4E00, 0x9FA6)])
    pairs = np.random.default_rng(0).choice(chars, (len(chars), 2))
    return chars.tolist() + ["".join(p) for p in pairs]


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("buckets", [2**12, 2**18])
def test_character_ngrams_fill_buckets_like_a_random_function(n, buckets):
    fake = Faker(["en_US", "de_DE", "ja_JP"])
    fake.seed_instance(3)
    texts = _cjk_texts() + [fake.text() for _ in range(900)]
    full, _ = hash_ngrams(texts, 2**40, n, n)  # at 2^40 ids are (practically) the n-grams
    ids, _ = hash_ngrams(texts, buckets, n, n)
    distinct = np.unique(full).size
    occupied = np.unique(ids).size
    assert occupied == pytest.approx(_expected_occupied(distinct, buckets), rel=0.03)


def test_word_ngrams_fill_buckets_like_a_random_function():
    fake = Faker(["en_US", "fr_FR", "es_ES"])
    fake.seed_instance(4)
    texts = [fake.text() for _ in range(3000)]
    full, _ = hash_word_ngrams(texts, 2**40, 2)
    ids, _ = hash_word_ngrams(texts, 2**14, 2)
    expected = _expected_occupied(np.unique(full).size, 2**14)
    assert np.unique(ids).size == pytest.approx(expected, rel=0.03)


def _prep(n_texts: int, distinct_words: int, **over) -> int:
    spec = spec_of(schema_params(TEXT))
    rng = np.random.default_rng(1)
    words = [f"w{i:06d}" for i in range(distinct_words)]
    notes = [" ".join(rng.choice(words, 6)) for _ in range(n_texts)]
    df = pd.DataFrame({"notes": pd.array(notes, dtype="string")})
    cfg = dataclasses.replace(TrainConfig(), **{"text_buckets": 0, **over})
    return text_buckets(df, spec.text, cfg.prep())


def test_auto_buckets_follow_the_distinct_ngrams():
    small, rich = _prep(200, 20), _prep(3000, 20_000)
    lo, hi = AUTO_TEXT_BUCKETS
    assert small == lo  # templated notes: the smallest table
    assert lo < rich <= hi and rich & (rich - 1) == 0  # a power of two, larger for richer text
    assert _prep(3000, 20_000, dp=DPConfig(enabled=True)) == 4096  # DP's cap
    assert _prep(200, 20, text_buckets=1000) == 1000  # an explicit size is kept


def test_a_model_hashed_by_the_old_function_is_refused_with_what_to_do(tmp_path):
    spec = spec_of(schema_params(TEXT))
    res = fit(frame(200, 1), frame(100, 2), spec, SMALL, log=lambda _m: None)
    old = {**res.checkpoint, "preprocessor": {**res.checkpoint["preprocessor"], "version": 2}}
    save_torch(tmp_path / "model.pt", old)
    with pytest.raises(InputError, match=r"model\.pt.*version 2.*Retrain it: dvc repro train"):
        load_predictor(tmp_path / "model.pt")
