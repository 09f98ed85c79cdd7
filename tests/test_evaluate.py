"""Evaluate: metrics against sklearn and first principles, calibration, slices, baselines, gate."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from stages import evaluate as ev
from stages.lib import eval_baselines as eb
from stages.lib import eval_metrics as em
from stages.lib import fairness
from stages.lib.features import FeatureSpec, column_policies, feature_spec
from stages.lib.io import write_dataset
from stages.lib.params import ParamsError, load_params, section
from stages.lib.schema import load_schema
from tests.conftest import anon_config

ROOT = Path(__file__).resolve().parents[1]


def random_problem(n: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and informative but imperfect probabilities for k classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, proba


# ---------------------------------------------------------------------------------------------
# Metrics


@pytest.mark.parametrize("k", [2, 3, 5])
def test_classification_metrics_match_sklearn(k):
    y, proba = random_problem(2000, k, seed=k)
    classes = [f"c{i}" for i in range(k)]
    m = em.classification_metrics(y, proba, classes)
    pred = proba.argmax(axis=1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert m["macro_precision"] == pytest.approx(skm.precision_score(y, pred, average="macro"))
    assert m["macro_recall"] == pytest.approx(skm.recall_score(y, pred, average="macro"))
    f1 = skm.f1_score(y, pred, average=None)
    for i, c in enumerate(classes):
        assert m["per_class"][c]["f1"] == pytest.approx(f1[i])
        assert m["per_class"][c]["support"] == int(np.sum(y == i))
    if k == 2:
        assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))
        assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, proba[:, 1]))
    else:
        ovr = skm.roc_auc_score(y, proba, multi_class="ovr", average="macro")
        assert m["roc_auc"] == pytest.approx(ovr)
        onehot = np.eye(k)[y]
        assert m["pr_auc"] == pytest.approx(skm.average_precision_score(onehot, proba))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, proba))


def test_binary_auc_is_the_probability_a_positive_outranks_a_negative():
    y, proba = random_problem(300, 2, seed=1)
    pos, neg = proba[y == 1, 1], proba[y == 0, 1]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert em.classification_metrics(y, proba, ["a", "b"])["roc_auc"] == pytest.approx(pairs)


def test_multiclass_auc_is_the_mean_of_one_vs_rest_aucs():
    y, proba = random_problem(600, 3, seed=2)
    by_hand = []
    for i in range(3):
        pos, neg = proba[y == i, i], proba[y != i, i]
        by_hand.append((pos[:, None] > neg[None, :]).mean())
    m = em.classification_metrics(y, proba, ["a", "b", "c"])
    assert m["roc_auc"] == pytest.approx(np.mean(by_hand))


def test_binary_pr_auc_follows_the_positive_class():
    y, proba = random_problem(500, 2, seed=5)
    first = em.classification_metrics(y, proba, ["a", "b"], positive=0)
    assert first["pr_auc"] == pytest.approx(skm.average_precision_score(y == 0, proba[:, 0]))
    assert first["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba[:, 1]))


def test_undefined_auc_is_nan_and_bad_shapes_are_refused():
    y = np.zeros(10, dtype=int)
    proba = np.tile([0.7, 0.3], (10, 1))
    assert np.isnan(em.classification_metrics(y, proba, ["a", "b"])["roc_auc"])
    with pytest.raises(ValueError):
        em.classification_metrics(y, proba[:, :1], ["a", "b"])


def test_encode_labels_rejects_unknown_labels():
    assert em.encode_labels(pd.Series(["b", "a"]), ["a", "b"]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="not among the classes"):
        em.encode_labels(pd.Series(["a", "z"]), ["a", "b"])


def test_curves_and_confusion():
    y, proba = random_problem(5000, 2, seed=3)
    roc, pr = em.roc_pr_curves(y, proba, positive=1)
    assert list(roc.columns[:2]) == ["fpr", "tpr"] and list(pr.columns[:2]) == [
        "recall",
        "precision",
    ]
    assert len(roc) <= em.MAX_CURVE_POINTS and len(pr) <= em.MAX_CURVE_POINTS
    assert roc.iloc[0][["fpr", "tpr"]].tolist() == [0, 0] and roc.iloc[-1][
        ["fpr", "tpr"]
    ].tolist() == [1, 1]
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(pr.recall) >= 0)
    # The thinned curve's area stays close to the AUC.
    assert np.trapezoid(roc.tpr, roc.fpr) == pytest.approx(
        skm.roc_auc_score(y, proba[:, 1]), abs=2e-3
    )
    conf = em.confusion_frame(y, proba.argmax(axis=1), ["neg", "pos"])
    table = pd.crosstab(conf.actual, conf.predicted)
    expected = skm.confusion_matrix(y, proba.argmax(axis=1))
    assert table.loc[["neg", "pos"], ["neg", "pos"]].to_numpy().tolist() == expected.tolist()


# ---------------------------------------------------------------------------------------------
# Calibration


THIRTEEN = [f"class {i:02d}" for i in range(13)]


def thirteen_class_problem() -> tuple[np.ndarray, np.ndarray]:
    """2,000 rows of 13 classes of uneven frequency; the last class is absent from the labels."""
    y, proba = random_problem(2000, 13, 5)
    y = np.where(y == 12, y % 5, y)  # class 12 never occurs; classes 0-4 grow more frequent
    return y, proba


def test_thirteen_classes_macro_averages_over_the_classes_present():
    y, proba = thirteen_class_problem()
    m = em.classification_metrics(y, proba, THIRTEEN)
    assert m["macro_classes"] == {"present": 12, "total": 13, "absent": ["class 12"]}
    p, r, f1, _ = skm.precision_recall_fscore_support(
        y, proba.argmax(axis=1), labels=list(range(12)), average=None, zero_division=0
    )
    assert m["macro_recall"] == pytest.approx(r.mean())
    assert m["macro_precision"] == pytest.approx(p.mean())
    assert m["macro_f1"] == pytest.approx(f1.mean())
    onehot = np.eye(13)[y].ravel()
    assert m["roc_auc_micro"] == pytest.approx(skm.roc_auc_score(onehot, proba.ravel()))
    assert m["pr_auc_micro"] == pytest.approx(skm.average_precision_score(onehot, proba.ravel()))
    assert "roc_auc_micro" not in em.classification_metrics(*random_problem(50, 2, 0), ["a", "b"])


def test_thirteen_classes_curves_for_the_ten_most_frequent_and_the_averages():
    y, proba = thirteen_class_problem()
    roc, pr = em.multiclass_curves(y, proba, THIRTEEN)
    counts = np.bincount(y, minlength=13)
    top = [THIRTEEN[i] for i in np.argsort(-counts, kind="stable")[:10]]
    assert list(dict.fromkeys(roc.curve)) == [*top, em.MICRO, em.MACRO]
    assert list(dict.fromkeys(pr.curve)) == [*top, em.MICRO, em.MACRO]
    assert list(roc.columns) == ["curve", "fpr", "tpr", "threshold"]
    for name, part in roc.groupby("curve", sort=False):
        assert part.fpr.is_monotonic_increasing and part.tpr.is_monotonic_increasing, name
    # The macro curve's area is the mean one-vs-rest AUC (up to the 101-point grid).
    macro = roc[roc.curve == em.MACRO]
    area = np.trapezoid(macro.tpr, macro.fpr)
    assert area == pytest.approx(em.classification_metrics(y, proba, THIRTEEN)["roc_auc"], abs=0.01)
    micro = pr[pr.curve == em.MICRO]
    assert micro.recall.iloc[0] == 0 and micro.recall.iloc[-1] == 1
    # The binary case keeps its one curve without a `curve` column.
    y2, p2 = random_problem(200, 2, 1)
    assert "curve" not in em.roc_pr_curves(y2, p2, 1)[0].columns


def test_membership_audit_separates_memorised_rows_from_unseen_ones():
    rng = np.random.default_rng(0)
    y_in, y_out = rng.integers(0, 2, 400), rng.integers(0, 2, 300)
    # members: the true class gets 0.95; non-members: a coin flip between 0.95 and 0.3
    p_in = np.where(np.eye(2)[y_in] == 1, 0.95, 0.05)
    conf = np.where(rng.random(300) < 0.5, 0.95, 0.3)
    p_out = np.where(np.eye(2)[y_out] == 1, conf[:, None], 1 - conf[:, None])
    audit = eb.membership_audit(y_in, p_in, y_out, p_out)
    assert audit["members"] == audit["non_members"] == 300
    # the confident non-members tie with every member (half credit), the others lose to them
    confident = np.mean(conf == 0.95)
    assert audit["auc"] == pytest.approx(1 - confident / 2)
    assert audit["advantage"] == pytest.approx(1 - confident)
    same = eb.membership_audit(y_out, p_out, y_out, p_out)
    assert same["auc"] == pytest.approx(0.5) and same["advantage"] == pytest.approx(0.0)
    assert eb.membership_audit(y_in[:0], p_in[:0], y_out, p_out)["auc"] is None


def test_ece_is_zero_for_a_perfectly_calibrated_toy():
    # Per bin: predicted 0.25 on 4 rows of which 1 positive, 0.75 on 4 rows of which 3.
    p = np.array([0.25] * 4 + [0.75] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    ece, curve = em.calibration(y, p, bins=10)
    assert ece == pytest.approx(0.0)
    assert curve["count"].tolist() == [4, 4]
    assert curve["fraction_positive"].tolist() == pytest.approx([0.25, 0.75])


def test_ece_of_a_miscalibrated_toy():
    p = np.full(100, 0.9)
    y = np.r_[np.ones(50), np.zeros(50)]
    ece, _ = em.calibration(y, p, bins=10)
    assert ece == pytest.approx(0.4)


def test_ece_small_when_outcomes_follow_the_probabilities_large_when_not():
    rng = np.random.default_rng(0)
    p = rng.random(200_000)
    calibrated, _ = em.calibration(rng.random(p.size) < p, p, 10)
    skewed, _ = em.calibration(rng.random(p.size) < p**3, p, 10)
    assert calibrated < 0.01
    assert skewed > 0.15


def test_reliability_curve_matches_sklearn():
    rng = np.random.default_rng(4)
    p = rng.random(5000) ** 2
    p[:10] = [
        0.0,
        0.1,
        0.2,
        0.5,
        1.0,
        0.3,
        0.7,
        0.9,
        0.6,
        0.4,
    ]  # bin edges go where sklearn puts them
    y = rng.random(p.size) < np.sqrt(p)
    ece, curve = em.calibration(y, p, bins=10)
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    assert curve["fraction_positive"].to_numpy() == pytest.approx(frac)
    assert curve["mean_predicted"].to_numpy() == pytest.approx(mean)
    weights = curve["count"] / p.size
    assert ece == pytest.approx(float(np.sum(weights * np.abs(mean - frac))))


def test_top_label_calibration_for_several_classes():
    proba = np.array([[0.8, 0.1, 0.1]] * 5 + [[0.2, 0.7, 0.1]] * 5)
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 2])  # 0.8 -> 4/5 right, 0.7 -> 3/5 right
    ece, curve = em.calibration(y, proba, bins=10)
    assert curve["fraction_positive"].tolist() == pytest.approx([0.6, 0.8])
    assert ece == pytest.approx(0.5 * 0.1 + 0.5 * 0.0)


# ---------------------------------------------------------------------------------------------
# Slices


def crafted_slices() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Group A: 10 rows, 4 positive, predicts positive on 5 (3 true); group B: 10 rows, 5 positive,
    predicts positive on 2 (1 true); group C: 2 rows (too small for the gaps)."""
    group = ["A"] * 10 + ["B"] * 10 + ["C"] * 2
    y = np.array([*[1, 1, 1, 1, 0, 0, 0, 0, 0, 0], *[1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 1, 0])
    pred = np.array([*[1, 1, 1, 0, 1, 1, 0, 0, 0, 0], *[1, 0, 0, 0, 0, 1, 0, 0, 0, 0], 0, 1])
    proba = np.c_[1 - (0.2 + 0.6 * pred), 0.2 + 0.6 * pred]
    df = pd.DataFrame({"grp": group, "other": [None] * 11 + ["x"] * 11})
    return df, y, proba


def test_slice_metrics_and_gaps_on_a_crafted_frame():
    df, y, proba = crafted_slices()
    table, gaps = fairness.slice_metrics(df, y, proba, ["grp"], positive_class=1, min_size=3)
    rows = table.set_index("group")
    assert rows.loc["A", "selection_rate"] == pytest.approx(0.5)
    assert rows.loc["B", "selection_rate"] == pytest.approx(0.2)
    assert rows.loc["A", "tpr"] == pytest.approx(0.75)
    assert rows.loc["B", "tpr"] == pytest.approx(0.2)
    assert rows.loc["A", "fpr"] == pytest.approx(2 / 6)
    assert rows.loc["A", "accuracy"] == pytest.approx(0.7)
    assert rows.loc["A", "base_rate"] == pytest.approx(0.4)
    # Group C (2 rows, 1 positive) is reported but left out of both gaps.
    assert not rows.loc["C", "in_dp_gap"] and not rows.loc["C", "in_eo_gap"]
    assert gaps["demographic_parity_diff"]["grp"]["value"] == pytest.approx(0.3)
    assert gaps["equal_opportunity_diff"]["grp"]["value"] == pytest.approx(0.55)
    assert gaps["equal_opportunity_diff"]["grp"]["groups"] == 2
    # With C included, its selection rate 0.5 and TPR 0 widen the equal-opportunity gap.
    _, gaps = fairness.slice_metrics(df, y, proba, ["grp"], positive_class=1, min_size=1)
    assert gaps["equal_opportunity_diff"]["grp"]["value"] == pytest.approx(0.75)


def test_a_gap_with_fewer_than_two_eligible_groups_is_not_measured():
    """With min_size 5 only group B has 5 positive rows: its equal-opportunity gap is null with
    the reason, and the gate skips it instead of reading it as 0 "within limit"."""
    df, y, proba = crafted_slices()
    _, gaps = fairness.slice_metrics(df, y, proba, ["grp"], positive_class=1, min_size=5)
    assert gaps["demographic_parity_diff"]["grp"]["value"] == pytest.approx(0.3)  # A, B: 10 rows
    eo = gaps["equal_opportunity_diff"]["grp"]
    assert eo["value"] is None and eo["groups"] == 1
    assert eo["reason"] == "1 group(s) of grp with at least 5 positive rows; a gap needs two"
    metrics = {"accuracy": 0.9, "roc_auc": 0.9, "macro_f1": 0.9, "fairness": gaps}
    verdict = ev.check_gate(metrics, gate(max_equal_opportunity_diff=0.0))
    assert verdict.passed and verdict.failures == []
    assert verdict.skipped == [f"equal_opportunity_diff[grp] not measured: {eo['reason']}"]


def test_missing_values_form_their_own_slice():
    df, y, proba = crafted_slices()
    table, gaps = fairness.slice_metrics(df, y, proba, ["other"], positive_class=1)
    assert set(table.group) == {em.MISSING, "x"}
    assert table.n.sum() == len(df)
    assert set(table.slice) == {f"other={em.MISSING}", "other=x"}
    assert gaps["demographic_parity_diff"]["other"]["value"] >= 0


# ---------------------------------------------------------------------------------------------
# Gate


def gate(**kw) -> ev.GateConfig:
    """A gate with the given checks, every other one off (null)."""
    off = dict.fromkeys(f.name for f in dataclasses.fields(ev.GateConfig))
    gate_section = {"gate": {**off, **kw}}
    return section(ev.EvaluateConfig, "evaluate", {"evaluate": {**EVALUATE, **gate_section}}).gate


# evaluate's section but its gate (which each test gives).
EVALUATE = {"slices": [], "positive_class": None, "calibration_bins": 10, "min_slice_size": 30}


def test_gate_failure_names_metric_value_and_threshold():
    metrics = {
        "accuracy": 0.812,
        "roc_auc": 0.95,
        "macro_f1": 0.7,
        "ece": 0.02,
        "fairness": {
            "demographic_parity_diff": {"sex": measured(0.31), "race": measured(0.1)},
            "equal_opportunity_diff": {"sex": measured(0.05)},
        },
    }
    verdict = ev.check_gate(
        metrics,
        gate(
            min_accuracy=0.84,
            min_roc_auc=0.9,
            max_demographic_parity_diff=0.3,
            max_equal_opportunity_diff=0.2,
            max_ece=0.05,
        ),
    )
    assert verdict.failures == [
        "accuracy 0.812 < min_accuracy 0.840",
        "demographic_parity_diff[sex] 0.310 > max_demographic_parity_diff 0.300",
    ]
    assert not verdict.passed and verdict.skipped == []
    assert ev.check_gate(metrics, gate()).failures == []  # every check off


def measured(value: float) -> dict:
    return {"value": value, "groups": 2, "reason": None}


def test_gate_fails_an_undefined_metric():
    metrics = {"accuracy": 0.9, "roc_auc": float("nan"), "macro_f1": 0.9}
    verdict = ev.check_gate(metrics, gate(min_roc_auc=0.5))
    assert verdict.failures == ["roc_auc nan < min_roc_auc 0.500"]


def test_baseline_and_membership_gates():
    metrics = {
        "accuracy": 0.85,
        "roc_auc": 0.9,
        "macro_f1": 0.8,
        "lift_over_logistic_regression": {"accuracy_points": 0.2},
        "membership": {"auc": 0.63},
    }
    verdict = ev.check_gate(metrics, gate(min_lift_over_baseline=0.5, max_membership_auc=0.6))
    assert verdict.failures == [
        "accuracy lift (points) 0.200 < min_lift_over_baseline 0.500",
        "membership_auc 0.630 > max_membership_auc 0.600",
    ]
    metrics["lift_over_logistic_regression"] = {}
    verdict = ev.check_gate(metrics, gate(min_lift_over_baseline=0.5))
    assert verdict.passed and verdict.skipped == [
        "lift over baseline not measured: no logistic-regression baseline"
    ]


def test_params_section_is_typed():
    cfg = section(ev.EvaluateConfig, "evaluate", load_params(ROOT / "params.yaml"))
    assert cfg.gate.min_accuracy is not None
    with pytest.raises(ParamsError):
        section(ev.EvaluateConfig, "evaluate", {"evaluate": {"gate": {"min_acc": 0.8}}})


# ---------------------------------------------------------------------------------------------
# Baselines and the stage


SPEC = FeatureSpec(
    numeric=("age", "hours"),
    categorical=("sex", "job"),
    text=("notes",),
    label="income",
    classes=("low", "high"),
)


def synthetic(n: int, seed: int) -> pd.DataFrame:
    """Anonymized-looking rows whose label depends on numbers, a category and the text."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, n).astype(float)
    hours = rng.integers(5, 80, n).astype(float)
    job = rng.choice(["clerk", "exec", "craft", "sales"], n)
    rich_words = rng.random(n) < 0.5
    notes = np.where(rich_words, "owns several properties", "rents a flat")
    score = 0.05 * (age - 45) + 0.04 * (hours - 40) + 1.5 * (job == "exec") + 1.0 * rich_words
    y = rng.random(n) < 1 / (1 + np.exp(-(score - 1)))
    df = pd.DataFrame(
        {
            "record_id": [f"r{seed}-{i}" for i in range(n)],
            "age": age,
            "hours": hours,
            "sex": rng.choice(["Female", "Male"], n),
            "job": job,
            "notes": notes,
            "income": np.where(y, "high", "low"),
        }
    )
    df.loc[::17, "age"] = np.nan
    df.loc[::13, "job"] = None
    df.loc[::11, "notes"] = None
    return df


def test_baselines_fit_on_train_and_score_test():
    train, test = synthetic(2000, 0), synthetic(1000, 1)
    test.loc[0, "job"] = "astronaut"  # a category unseen in training
    base = eb.baselines(train, test, SPEC)
    majority = base.majority
    share = (test.income == majority["class"]).mean()
    assert majority["class"] == train.income.mode()[0]
    assert majority["accuracy"] == pytest.approx(share)
    assert majority["roc_auc"] == pytest.approx(0.5)
    lr = base.logistic_regression
    assert lr["roc_auc"] > 0.75 and lr["accuracy"] > majority["accuracy"]
    assert base.logistic_proba.shape == (1000, 2)
    assert np.allclose(base.logistic_predict_proba(test, SPEC), base.logistic_proba)


def test_evaluate_in_memory_writes_every_table():
    train, test = synthetic(1500, 2), synthetic(800, 3)
    base = eb.baselines(train, test, SPEC)
    proba = base.logistic_proba
    cfg = ev.EvaluateConfig(**{**EVALUATE, "slices": ()}, gate=gate(min_accuracy=0.99))
    members = eb.member_sample(train, len(test))
    members = ev.Members(members, base.logistic_predict_proba(members, SPEC))
    metrics, plots = ev.evaluate(
        test, proba, list(SPEC.classes), train, SPEC, ["sex"], cfg, members
    )
    assert metrics["positive_class"] == "high"
    assert metrics["lift_over_logistic_regression"]["accuracy"] == pytest.approx(0.0)
    assert metrics["lift_over_logistic_regression"]["accuracy_points"] == pytest.approx(0.0)
    # the model is the logistic baseline here: both audits see the same rows and scores
    audit = metrics["membership"]
    assert audit == metrics["baselines"]["logistic_regression"]["membership"]
    assert audit["members"] == audit["non_members"] == 800 and 0.4 < audit["auc"] < 0.6
    assert not metrics["gate"]["passed"]
    assert metrics["gate"]["failures"][0].startswith("accuracy ")
    assert set(metrics["fairness"]["demographic_parity_diff"]) == {"sex"}
    assert set(plots) == {"confusion", "roc", "pr", "calibration", "slices"}
    assert len(plots["confusion"]) == len(test)
    assert {"bin", "mean_predicted", "fraction_positive", "count"} <= set(plots["calibration"])


class ScorePredictor:
    """A stand-in for the trained model (stages.lib.model lives on the train branch): it scores
    with the logistic baseline; broken, it hands each row another row's scores. Its classes come
    in the reverse of the schema's order, which evaluate must undo."""

    def __init__(self, spec: FeatureSpec, train: pd.DataFrame, broken: bool):
        self.classes = list(spec.classes)[::-1]
        self.spec = spec
        self.pipe = eb.logistic_pipeline(spec).fit(
            eb._baseline_frame(train, spec), em.encode_labels(train[spec.label], self.classes)
        )
        self.broken = broken

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        proba = self.pipe.predict_proba(eb._baseline_frame(df, self.spec))
        if self.broken:
            return proba[np.random.default_rng(0).permutation(len(proba))]
        return proba


@pytest.mark.parametrize("broken", [False, True])
def test_main_writes_outputs_then_enforces_the_gate(tmp_path, monkeypatch, broken):
    params = load_params(ROOT / "params.yaml")
    schema = load_schema(params)
    spec = feature_spec(
        schema, column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
    )
    rng = np.random.default_rng(0)

    def frame(n):
        """Every feature of the real spec; the label follows the first numeric column."""
        out = {"record_id": [f"{i:x}" for i in rng.integers(0, 2**60, n)]}
        for c in spec.numeric:
            lo, hi = schema.columns[c].min or 0, schema.columns[c].max or 1000
            out[c] = rng.integers(int(lo), int(hi) + 1, n)
        for c in spec.categorical:
            out[c] = rng.choice(list(schema.columns[c].values or ("p", "q", "r")), n)
        for c in spec.text:
            out[c] = rng.choice(["paid on time", "asked about the loan"], n)
        first = out[spec.numeric[0]]
        logit = 8 * (first - np.median(first)) / np.ptp(first) + rng.normal(0, 0.5, n)
        out[spec.label] = np.where(logit > 0, spec.classes[1], spec.classes[0])
        return pd.DataFrame(out)

    train, test = frame(1500), frame(600)
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    write_dataset("data/split/train", [("part-00000.parquet", _arrow(train))])
    write_dataset("data/split/test", [("part-00000.parquet", _arrow(test))])
    module = types.ModuleType("stages.lib.model")
    module.load_predictor = lambda path: ScorePredictor(spec, train, broken)
    monkeypatch.setitem(sys.modules, "stages.lib.model", module)

    ev.main()  # a failed gate is a verdict in the metrics, not an exit: the report comes next
    metrics = json.loads(Path("metrics/evaluate.json").read_text())
    assert metrics["gate"]["passed"] is (not broken)
    if broken:
        failures = metrics["gate"]["failures"]
        assert failures[0].startswith("accuracy ") and "< min_accuracy 0.830" in failures[0]
        assert any(f.startswith("roc_auc") for f in failures)
    assert metrics["membership"]["members"] == len(test)
    assert metrics["rows_in"] == metrics["rows_out"] == len(test)
    for name in ("confusion", "roc", "pr", "calibration", "slices"):
        assert Path(f"plots/{name}.csv").stat().st_size > 0
    confusion = pd.read_csv("plots/confusion.csv")
    assert list(confusion.columns) == ["actual", "predicted"] and len(confusion) == len(test)
    slices = pd.read_csv("plots/slices.csv")
    assert set(slices.column) == {"sex", "race"}  # the schema's sensitive columns


def _arrow(df: pd.DataFrame):
    import pyarrow as pa

    return pa.Table.from_pandas(df, preserve_index=False)
