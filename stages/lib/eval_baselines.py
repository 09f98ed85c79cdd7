"""Baselines fitted on the training split (majority class, logistic regression) and a
loss-threshold membership-inference audit of a model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from stages.lib.eval_metrics import MISSING, classification_metrics, encode_labels
from stages.lib.features import FeatureSpec, numeric_values

# The membership audit samples training rows with this seed (a fixed one: the audit is part of the
# evaluation, not of training, and must give the same figure on every rerun).
AUDIT_SEED = 0


def _baseline_frame(df: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """The feature columns in the types the sklearn pipeline expects."""
    out = {}
    for c in spec.numeric:
        out[c] = numeric_values(df[c])  # dates: days since epoch, booleans: 0/1
    for c in spec.categorical:
        out[c] = df[c].astype(object).where(df[c].notna(), MISSING).astype(str)
    for c in spec.text:
        out[c] = df[c].astype(object).where(df[c].notna(), "").astype(str)
    return pd.DataFrame(out, index=df.index)


def logistic_pipeline(spec: FeatureSpec, seed: int = 0) -> Any:
    """One-hot categoricals + standardised numerics + hashed character n-grams of text -> LR."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parts: list[tuple[str, Any, Any]] = []
    if spec.numeric:
        numeric = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        parts.append(("numeric", numeric, list(spec.numeric)))
    if spec.categorical:
        parts.append(
            (
                "categorical",
                OneHotEncoder(handle_unknown="ignore", min_frequency=5),
                list(spec.categorical),
            )
        )
    for c in spec.text:
        # Character n-grams need no tokenizer and work for Chinese as well as English.
        hashed = HashingVectorizer(
            analyzer="char_wb",
            ngram_range=(2, 4),
            n_features=2**12,
            alternate_sign=False,
            norm="l2",
        )
        parts.append((f"text_{c}", hashed, c))  # a scalar column: the vectorizer wants 1-D input
    return Pipeline(
        [
            ("features", ColumnTransformer(parts, sparse_threshold=1.0)),
            ("model", LogisticRegression(max_iter=2000, C=1.0, random_state=seed)),
        ]
    )


@dataclass
class Baselines:
    """The baselines fitted on the training split and scored on the test split."""

    majority: dict[str, Any]
    # None when the training split holds a single class (logistic regression cannot be fitted).
    logistic_regression: dict[str, Any] | None = None
    logistic_proba: np.ndarray | None = None  # its test-split probabilities, schema class order
    logistic_model: Any = None  # the fitted sklearn pipeline (labels are schema class indices)

    def logistic_predict_proba(self, df: pd.DataFrame, spec: FeatureSpec) -> np.ndarray:
        """The logistic model's probabilities for `df`, one column per schema class."""
        proba = np.zeros((len(df), len(spec.classes)))
        proba[:, self.logistic_model.classes_] = self.logistic_model.predict_proba(
            _baseline_frame(df, spec)
        )
        return proba


def baselines(
    train_df: pd.DataFrame, test_df: pd.DataFrame, spec: FeatureSpec, positive: int | None = None
) -> Baselines:
    """Majority class and logistic regression fitted on `train_df`, scored on `test_df`."""
    classes = list(spec.classes)
    y_train = encode_labels(train_df[spec.label], classes)
    y_test = encode_labels(test_df[spec.label], classes)
    k = len(classes)

    counts = np.bincount(y_train, minlength=k)
    majority = np.tile(counts / counts.sum(), (len(y_test), 1))
    result = Baselines(classification_metrics(y_test, majority, classes, positive))
    result.majority["class"] = classes[int(counts.argmax())]
    if np.unique(y_train).size < 2:  # logistic regression needs two classes to fit
        return result
    result.logistic_model = logistic_pipeline(spec).fit(_baseline_frame(train_df, spec), y_train)
    result.logistic_proba = result.logistic_predict_proba(test_df, spec)
    result.logistic_regression = classification_metrics(
        y_test, result.logistic_proba, classes, positive
    )
    return result


def member_sample(train_df: pd.DataFrame, n: int, seed: int = AUDIT_SEED) -> pd.DataFrame:
    """At most `n` training rows drawn without replacement (the audit's members)."""
    if len(train_df) <= n:
        return train_df
    rows = np.sort(np.random.default_rng(seed).choice(len(train_df), size=n, replace=False))
    return train_df.iloc[rows]


def membership_audit(
    member_y: np.ndarray,
    member_proba: np.ndarray,
    non_member_y: np.ndarray,
    non_member_proba: np.ndarray,
    seed: int = AUDIT_SEED,
) -> dict[str, Any]:
    """A loss-threshold membership-inference attack (Yeom et al. 2018): the lower a row's loss,
    the likelier it was trained on. Both sides are cut to the same size, so chance is AUC 0.5.

    Returns the attack's ROC-AUC, its advantage (max over thresholds of TPR - FPR), and the
    number of members and non-members; AUC and advantage are None when a side is empty.
    """
    n = min(len(member_y), len(non_member_y))
    out: dict[str, Any] = {"attack": "loss threshold", "members": n, "non_members": n}
    if n == 0:
        return {**out, "auc": None, "advantage": None}
    rng = np.random.default_rng(seed)
    losses = []
    for y, proba in ((member_y, member_proba), (non_member_y, non_member_proba)):
        rows = np.sort(rng.choice(len(y), size=n, replace=False)) if len(y) > n else np.arange(n)
        p_true = np.asarray(proba, dtype=np.float64)[rows, np.asarray(y)[rows]]
        losses.append(-np.log(np.clip(p_true, 1e-15, 1.0)))
    is_member = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    score = -np.concatenate(losses)  # a low loss says "member"
    fpr, tpr, _ = skm.roc_curve(is_member, score)
    auc = float(skm.roc_auc_score(is_member, score))
    return {**out, "auc": auc, "advantage": float(np.max(tpr - fpr))}
