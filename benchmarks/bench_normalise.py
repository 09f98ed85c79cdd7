"""Benchmark: the model's text normaliser, per-row Python (before issue 15) against model_text
(Arrow, vectorised), on Faker texts: eight locales mixed, and English alone (ASCII).

    PYTHONPATH=. python benchmarks/bench_normalise.py            # 200k texts, median of 3
    PYTHONPATH=. python benchmarks/bench_normalise.py --n 20000 --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import unicodedata
from pathlib import Path

import pandas as pd
from faker import Faker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stages.lib.text_bags import normalize_text

LOCALES = ("en_US", "zh_CN", "ja_JP", "ar_AA", "ru_RU", "tr_TR", "de_DE", "el_GR")


def python_normalize_text(values: pd.Series, max_chars: int) -> list[str]:
    """The model's normalize_text before issue 15: one Python loop over the rows."""
    out = []
    for v in values.astype("string").fillna("").tolist():
        s = " ".join(unicodedata.normalize("NFKC", v).lower().split())
        out.append(s[:max_chars])
    return out


def corpus(locales: tuple[str, ...], n: int) -> pd.Series:
    """n Faker texts, 2,000 distinct per locale repeated, locales in equal shares."""
    texts: list[str] = []
    for loc in locales:
        fake = Faker(loc)
        fake.seed_instance(0)
        distinct = [fake.text(max_nb_chars=160) for _ in range(2000)]
        share = n // len(locales)
        texts += (distinct * (share // len(distinct) + 1))[:share]
    return pd.Series(texts, dtype="string")


def median_s(fn, values: pd.Series, runs: int) -> tuple[float, list[str]]:
    """Median wall time of `runs` calls, and the last result."""
    times, out = [], []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn(values, 400)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    """Time both normalisers on each corpus and print them side by side."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    normalize_text(pd.Series(["Σ warm-up"], dtype="string"), 10)  # builds the cached regex
    print(f"{'corpus':<22}{'texts':>8}{'python s':>10}{'arrow s':>10}{'ratio':>8}  equal")
    for name, locales in (("8 locales", LOCALES), ("en_US (ASCII)", ("en_US",))):
        values = corpus(locales, args.n)
        old_s, old = median_s(python_normalize_text, values, args.runs)
        new_s, new = median_s(normalize_text, values, args.runs)
        print(
            f"{name:<22}{len(values):>8}{old_s:>10.3f}{new_s:>10.3f}"
            f"{old_s / new_s:>7.2f}x  {old == new}"
        )


if __name__ == "__main__":
    main()
