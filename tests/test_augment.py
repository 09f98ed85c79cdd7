"""Augment: class balance, seeded perturbations, row accounting and lineage of added rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from stages import augment as aug
from stages.lib.features import column_policies, feature_spec
from stages.lib.io import read_dataset, write_dataset
from stages.lib.params import ParamsError, load_params, section
from stages.lib.schema import BATCH, RECORD_ID, SOURCE_FILE, SOURCE_ROW, load_schema
from tests.conftest import anon_config

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
SCHEMA = load_schema(PARAMS)
SPEC = feature_spec(
    SCHEMA, column_policies(SCHEMA, anon_config(PARAMS["anonymize"]["policies"]).policies)
)
BOUNDS = aug.numeric_bounds(SCHEMA, SPEC.numeric)
WORDS = ["paid", "on", "time", "asked", "about", "the", "loan", "moved", "house", "客户", "满意"]


def make_split(n: int = 400, positive_share: float = 0.2, seed: int = 0) -> pa.Table:
    """A training split shaped like anonymize's output: lineage columns and the features."""
    rng = np.random.default_rng(seed)
    cols: dict[str, pa.Array] = {
        RECORD_ID: pa.array([f"{x:032x}" for x in rng.integers(0, 2**62, n)]),
        BATCH: pa.array(["batch1"] * n),
        SOURCE_FILE: pa.array(["customers_batch1.csv.gz"] * n),
        SOURCE_ROW: pa.array(np.arange(n), type=pa.int64()),
    }
    for c in SPEC.numeric:
        lo, hi = BOUNDS[c]
        lo, hi = int(lo or 0), int(hi or 100_000)
        values = rng.integers(lo, hi + 1, n)
        cols[c] = pa.array(values, mask=rng.random(n) < 0.05, type=pa.int64())
    for c in SPEC.categorical:
        values = SCHEMA.columns[c].values or ("a", "b", "c")
        cols[c] = pa.array(rng.choice(list(values), n).tolist(), mask=rng.random(n) < 0.05)
    for c in SPEC.text:
        texts = [" ".join(rng.choice(WORDS, rng.integers(1, 9))) for _ in range(n)]
        cols[c] = pa.array(texts, mask=rng.random(n) < 0.1)
    labels = np.where(rng.random(n) < positive_share, SPEC.classes[-1], SPEC.classes[0])
    cols[SPEC.label] = pa.array(labels.tolist())
    return pa.table(cols)


TEXT = {"p_delete": 0.1, "p_swap": 0.1, "p_char_noise": 0.02}


def config(**kw) -> aug.AugmentConfig:
    base = {
        "seed": 7,
        "balance": "oversample",
        "target_ratio": 1.0,
        "extra_fraction": 0.0,
        "max_copies_per_row": 5,
        "text": TEXT,
        "numeric_jitter": 0.05,
    }
    return section(aug.AugmentConfig, "augment", {"augment": {**base, **kw}})


def run(table: pa.Table, **kw) -> tuple[pa.Table, dict]:
    return aug.augment_table(table, SPEC, BOUNDS, config(**kw))


def test_row_accounting_and_flags():
    table = make_split()
    out, stats = run(table)
    originals = out.filter(pa.compute.invert(out[aug.AUGMENTED]))
    added = out.num_rows - table.num_rows
    assert added > 0
    assert table.num_rows + added == out.num_rows
    assert originals.num_rows == table.num_rows
    # The original rows pass through untouched, in order.
    assert originals.drop_columns([aug.AUGMENTED]).equals(table)
    assert sum(stats["class_counts_after"].values()) == out.num_rows
    assert sum(stats["augmented_by_class"].values()) == added


def test_oversampling_reaches_the_target_ratio():
    table = make_split(n=500, positive_share=0.2)
    for ratio in (1.0, 0.5):
        _, stats = run(table, target_ratio=ratio)
        before, after = stats["class_counts_before"], stats["class_counts_after"]
        majority = max(before.values())
        assert max(after.values()) == majority  # the majority class gets no copies
        assert min(after.values()) == int(np.ceil(ratio * majority))


def test_copies_spread_evenly_over_the_minority_class():
    table = make_split(n=500, positive_share=0.2)
    out, stats = run(table)
    copies = out.filter(out[aug.AUGMENTED])[RECORD_ID].to_pylist()
    per_source = np.unique(copies, return_counts=True)[1]
    assert per_source.max() - per_source.min() <= 1  # each minority row copied k or k+1 times
    assert stats["distinct_sources"] == stats["class_counts_before"][SPEC.classes[-1]]


def test_augmented_rows_keep_record_id_and_lineage_of_their_source():
    table = make_split()
    out, _ = run(table, numeric_jitter=0.0)
    source = {r[RECORD_ID]: r for r in table.to_pylist()}
    copies = out.filter(out[aug.AUGMENTED]).to_pylist()
    assert copies
    for row in copies:
        src = source[row[RECORD_ID]]  # KeyError if a copy had a record_id of its own
        for c in (BATCH, SOURCE_FILE, SOURCE_ROW, SPEC.label, *SPEC.categorical, *SPEC.numeric):
            assert row[c] == src[c], c
        if src["notes"] is None:
            assert row["notes"] is None


def test_same_seed_same_output_and_row_order_does_not_matter():
    table = make_split()
    a, _ = run(table)
    b, _ = run(table)
    assert a.equals(b)
    c, _ = run(table, seed=8)
    assert not a.equals(c)
    # Shuffled input rows (another partition layout): the same records get the same copies.
    perm = np.random.default_rng(3).permutation(table.num_rows)
    d, _ = run(table.take(pa.array(perm)))
    copies = [t.filter(t[aug.AUGMENTED]).sort_by(RECORD_ID) for t in (a, d)]
    assert copies[0][RECORD_ID].equals(copies[1][RECORD_ID])


def test_weights_and_none_add_no_rows():
    table = make_split(n=300, positive_share=0.25)
    out, stats = run(table, balance="weights")
    assert out.num_rows == table.num_rows and not any(out[aug.AUGMENTED].to_pylist())
    before = stats["class_counts_before"]
    weights = stats["class_weights"]
    # Balanced weights make every class weigh the same in total.
    totals = [weights[c] * before[c] for c in SPEC.classes]
    assert totals == pytest.approx([table.num_rows / len(SPEC.classes)] * 2, rel=1e-5)
    out, _ = run(table, balance="none")
    assert out.num_rows == table.num_rows


def test_extra_fraction_adds_copies_of_any_class():
    table = make_split(n=200)
    out, stats = run(table, balance="none", extra_fraction=0.5)
    assert out.num_rows - table.num_rows == 100
    assert all(stats["augmented_by_class"][c] > 0 for c in SPEC.classes)


def test_numeric_jitter_respects_types_bounds_and_nulls():
    table = make_split(n=300)
    out, _ = run(table, numeric_jitter=0.5)
    copies = out.filter(out[aug.AUGMENTED])
    originals = {r[RECORD_ID]: r for r in table.to_pylist()}
    changed = 0
    for c in SPEC.numeric:
        assert copies.schema.field(c).type == table.schema.field(c).type
        values = copies[c].to_pylist()
        lo, hi = BOUNDS[c]
        present = [v for v in values if v is not None]
        assert lo is None or min(present) >= lo
        assert hi is None or max(present) <= hi
        for rid, v in zip(copies[RECORD_ID].to_pylist(), values, strict=True):
            assert (v is None) == (originals[rid][c] is None)
            changed += v != originals[rid][c]
    assert changed > 0


def test_text_augmentation_is_seeded_and_never_empties_a_text():
    params = aug.TextAugment(p_delete=0.9, p_swap=0.5, p_char_noise=0.2)
    text = "the customer asked about the loan twice"
    outs = [aug.augment_text(text, params, np.random.default_rng(1)) for _ in range(2)]
    assert outs[0] == outs[1]
    rng = np.random.default_rng(2)
    for _ in range(200):
        assert aug.augment_text(text, params, rng).strip()
    assert aug.augment_text(None, params, rng) is None
    assert aug.augment_text("", params, rng) == ""


def test_text_augmentation_without_noise_keeps_the_text():
    off = aug.TextAugment(p_delete=0.0, p_swap=0.0, p_char_noise=0.0)
    rng = np.random.default_rng(0)
    assert aug.augment_text("paid on time", off, rng) == "paid on time"
    # Chinese is tokenised per character and rejoined without spaces.
    assert aug.augment_text("客户很满意 paid", off, rng) == "客户很满意 paid"


def test_text_augmentation_keeps_scrubber_placeholders():
    noisy = aug.TextAugment(p_delete=0.0, p_swap=0.0, p_char_noise=1.0)
    rng = np.random.default_rng(0)
    out = aug.augment_text("mail [EMAIL] or call <PHONE>", noisy, rng)
    assert "[EMAIL]" in out.split() and "<PHONE>" in out.split()


def test_config_is_checked():
    with pytest.raises(ParamsError):
        config(target_ratio=0.0)
    with pytest.raises(ParamsError):
        config(balance="smote")
    with pytest.raises(ParamsError):
        config(text={**TEXT, "p_delete": 1.5})


def test_stage_reads_only_the_training_split(tmp_path, monkeypatch):
    """main() on disk: val/test hold garbage that fails any read; nothing of them reaches out."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    train = make_split(n=300, seed=1)
    write_dataset("data/split/train", [("part-00000.parquet", train)])
    for split in ("val", "test"):
        bad = Path("data/split", split)
        bad.mkdir(parents=True)
        (bad / "part-00000.parquet").write_bytes(b"not parquet")  # reading it raises
    aug.main()
    out = read_dataset("data/train_aug")
    summary = json.loads(Path("metrics/augment.json").read_text())
    assert set(out[RECORD_ID].to_pylist()) == set(train[RECORD_ID].to_pylist())
    assert summary["rows_in"] + summary["rows_added"] == summary["rows_out"] == out.num_rows
    assert summary["rows_added"] > 0
    assert (
        summary["class_counts_after"][SPEC.classes[-1]]
        >= summary["class_counts_before"][SPEC.classes[-1]]
    )


def test_copies_per_source_row_are_capped():
    """Two rows of a class against 400 of the other: without the cap each would be copied
    about 200 times; with max_copies_per_row 5 each is copied at most 5 times, extras included,
    and the class is reported short of its target."""
    table = make_split(n=402, positive_share=0.0)
    labels = table[SPEC.label].to_numpy(zero_copy_only=False).copy()
    labels[:2] = SPEC.classes[-1]
    table = table.set_column(
        table.schema.get_field_index(SPEC.label), SPEC.label, pa.array(labels.tolist())
    )
    out, stats = run(table, max_copies_per_row=5, extra_fraction=0.5)
    copies = out.filter(out[aug.AUGMENTED])
    per_row = np.unique(copies[RECORD_ID].to_numpy(zero_copy_only=False), return_counts=True)[1]
    assert per_row.max() <= 5 and stats["most_copies_of_one_row"] == per_row.max()
    assert stats["class_counts_after"][SPEC.classes[-1]] <= 2 + 2 * 5
    assert stats["max_copies_per_row"] == 5
    assert stats["short_of_target"] == {
        "target": 400,
        "rows": {SPEC.classes[-1]: stats["class_counts_after"][SPEC.classes[-1]]},
    }
    _, uncapped = run(table, max_copies_per_row=1000)
    assert uncapped["class_counts_after"][SPEC.classes[-1]] == 400  # the target is reachable
    assert "short_of_target" not in uncapped


def test_cap_copies_keeps_the_first_occurrences_in_order():
    plan = np.array([3, 1, 3, 3, 2, 1, 3])
    assert aug.cap_copies(plan, 2).tolist() == [3, 1, 3, 2, 1]
    assert aug.cap_copies(plan, 0).tolist() == []
