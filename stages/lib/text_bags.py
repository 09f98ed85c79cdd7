"""Text columns as bags of hashed n-grams: normalised text, character and word n-grams hashed
into a table of buckets, and the table's size (train.text_buckets, or auto from the data)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.lib.config import PrepConfig
from stages.lib.features import hash_word_ngrams, merge_bags, mix64
from stages.lib.normalise import model_text

# text_buckets 0 (auto) picks a power of two in this range: at least twice the distinct n-grams
AUTO_TEXT_BUCKETS = (2**12, 2**20)

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def normalize_text(values: pd.Series, max_chars: int) -> list[str]:
    """NFKC, lower-cased, whitespace-collapsed text; nulls become empty strings."""
    return model_text(
        pa.array(values.astype("string"), pa.string(), from_pandas=True), max_chars
    ).to_pylist()


def hash_ngrams(
    texts: list[str], buckets: int, ngram_min: int, ngram_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """Character n-grams of each text hashed into `buckets` ids: (flat ids, offsets [n + 1]).

    Works on Unicode code points, so English words and Chinese characters are treated alike; the
    hash is FNV-1a over code points then `mix64`, in numpy, stable across processes and machines
    (unlike Python's salted hash()). Each text is framed by \\x02 ... \\x03 so n-grams see its
    start/end.
    """
    framed = ["\x02" + t + "\x03" for t in texts]
    lens = np.fromiter((len(t) for t in framed), dtype=np.int64, count=len(framed))
    cps = np.frombuffer("".join(framed).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    row_of = np.repeat(np.arange(len(framed), dtype=np.int64), lens)
    row_end = np.repeat(np.cumsum(lens), lens)  # exclusive end position of each char's text
    ids, rows = [], []
    pos = np.arange(cps.size, dtype=np.int64)
    for n in range(ngram_min, ngram_max + 1):
        start = pos[pos + n <= row_end] if cps.size else pos
        h = np.full(start.size, _FNV_OFFSET ^ np.uint64(n), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for k in range(n):
                h = (h ^ cps[start + k]) * _FNV_PRIME
        ids.append((mix64(h) % np.uint64(buckets)).astype(np.int64))
        rows.append(row_of[start])
    flat_ids, flat_rows = np.concatenate(ids), np.concatenate(rows)
    order = np.argsort(flat_rows, kind="stable")  # group by row, deterministic within a row
    counts = np.bincount(flat_rows, minlength=len(texts))
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return flat_ids[order], offsets


def text_ngrams(
    values: pd.Series, buckets: int, t: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """A text column's character and word n-grams hashed into `buckets` ids (flat, offsets);
    `t`: the preprocessor's text settings."""
    texts = normalize_text(values, t["max_chars"])
    flat, off = hash_ngrams(texts, buckets, t["ngram_min"], t["ngram_max"])
    if t["word_ngram_max"]:
        flat, off = merge_bags((flat, off), hash_word_ngrams(texts, buckets, t["word_ngram_max"]))
    return flat, off


def text_buckets(df: pd.DataFrame, columns: tuple[str, ...], cfg: PrepConfig) -> int:
    """The hash table size of the text columns: train.text_buckets, or with 0 (auto) the
    smallest power of two at least twice the distinct n-grams of the richest column in the
    training rows, within AUTO_TEXT_BUCKETS: templated notes get a small table, a review corpus
    one with few collisions (ids at a power of two are the low bits of the full hash, so a
    count at 2^40 buckets is a count of distinct n-grams). Capped under DP."""
    cap = cfg.text_buckets_cap or math.inf
    if cfg.text_buckets:
        return int(min(cfg.text_buckets, cap))
    settings = {
        "max_chars": cfg.text_max_chars,
        "ngram_min": cfg.ngram_min,
        "ngram_max": cfg.ngram_max,
        "word_ngram_max": cfg.word_ngram_max,
    }
    distinct = max(
        (np.unique(text_ngrams(df[c], 2**40, settings)[0]).size for c in columns), default=0
    )
    lo, hi = AUTO_TEXT_BUCKETS
    return int(min(cap, hi, max(lo, 1 << (2 * distinct - 1).bit_length())))
