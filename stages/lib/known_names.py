"""Known names (anyone's, not only the row's own) in text: the dataset's full names as a hashed
deny-list, their candidate spans in text (word n-grams, a title and a surname, Chinese
substrings), and their replacement by <PERSON>.

Notes often mention other customers ("referred by ..."): no pattern recognises a name, but the
dataset's own identifier columns list every name it holds, so they make a deny-list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.dedup import hash_strings
from stages.lib.pii_patterns import PERSON, placeholder
from stages.lib.scrub_text import APOSTROPHES, UNSPACED, as_string_array, pinyin_forms

# ---------------------------------------------------------------------------------------------
# Hashed string sets: a dataset's identifier values (millions at 10M rows) kept as sorted 64-bit
# hashes instead of a Python set/dict of strings (~9 bytes per value instead of ~100).


def _strings(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False).astype(object)


@dataclass(frozen=True)
class HashedSet:
    """A set of strings as sorted unique 64-bit hashes, each with a small int code.

    Membership is by hash: two different strings share a hash with probability about
    n^2 / 2^65 (~1e-6 for 10M values per partition's candidates), and a collision only makes a
    non-identifier count as one (scrubbed or flagged): never a leak.
    """

    hashes: np.ndarray  # uint64, sorted, unique
    codes: np.ndarray  # int8, same length

    @classmethod
    def empty(cls) -> HashedSet:
        """No values."""
        return cls(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int8))

    @classmethod
    def from_hashes(cls, hashes: np.ndarray, codes: np.ndarray) -> HashedSet:
        """Sorted and deduplicated; of duplicate hashes, the last one's code is kept."""
        if not len(hashes):
            return cls.empty()
        order = np.argsort(hashes, kind="stable")
        h, c = hashes[order], codes[order]
        last = np.r_[h[1:] != h[:-1], True]
        return cls(np.ascontiguousarray(h[last]), np.ascontiguousarray(c[last].astype(np.int8)))

    @classmethod
    def merge(cls, parts: Iterable[HashedSet]) -> HashedSet:
        """The union of several sets (later parts' codes win on duplicates)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls.from_hashes(
            np.concatenate([p.hashes for p in parts]), np.concatenate([p.codes for p in parts])
        )

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The code of each hash, -1 where absent."""
        out = np.full(len(hashes), -1, dtype=np.int8)
        if not len(self.hashes) or not len(hashes):
            return out
        pos = np.searchsorted(self.hashes, hashes)
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == hashes
        out[hit] = self.codes[pos[hit]]
        return out

    def lookup(self, values: Any) -> np.ndarray:
        """The code of each string, -1 where absent."""
        return self.lookup_hashes(hash_strings(values))


# ---------------------------------------------------------------------------------------------
# Known names (anyone's) in text

# A word of a name: letters of a spaced script (a Latin name glued to Chinese text stands apart).
_WORD = re.compile(f"[^\\W\\d_{UNSPACED}]+")
_CJK_SPAN = re.compile("[\u3400-\u9fff\uf900-\ufaff]{2,}")
# Between the words of a name: a space, an initial's dot and a space, an apostrophe (O'Rourke),
# a hyphen (Jean-Luc) or a comma after a surname written first (VANDERMEULEN, LUCINDA).
_CJK_SPACED = re.compile("[\u3400-\u9fff\uf900-\ufaff]{1,3} [\u3400-\u9fff\uf900-\ufaff]{1,3}")
MAX_CJK_NAME = 4
_CJK_PAIR = re.compile("([\u3400-\u9fff\uf900-\ufaff]+)(?= ([\u3400-\u9fff\uf900-\ufaff]+))")
_NAME_GAPS = (" ", ". ", "'", "-", ", ", " '")
MAX_NAME_WORDS = 4
# Titles before a surname: "Mr. Featherstonehaugh" names a known customer by the surname alone.
TITLES = frozenset(
    "mr mrs ms miss mx dr prof sir madam herr frau m mme mlle monsieur madame sr sra srta don "
    "sig signor signora dhr mevr heer mevrouw senhor senhora".split()
)
_TITLED = "\x01"  # marks a surname entry of the deny-list: it counts only after a title


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(APOSTROPHES)
    return " ".join(text.lower().split())


def name_variants(folded: str) -> list[str]:
    """The forms of a folded full name that the deny-list holds: as written, surname first
    (with and without a comma), the surname after a title, and a Chinese name's pinyin."""
    if _CJK_SPAN.fullmatch(folded):
        return [folded, *pinyin_forms(folded)[:2]]
    if _CJK_SPACED.fullmatch(folded):  # 佐藤 花子: with its space and without
        joined = folded.replace(" ", "")
        return [folded, joined] if len(joined) <= MAX_CJK_NAME else [folded]
    if len(_WORD.findall(folded)) < 2:
        return []
    words = folded.split(" ")
    out = [folded]
    if len(words) >= 2:
        first, last = " ".join(words[:-1]).rstrip("."), words[-1]
        out += [f"{last} {first}", f"{last}, {first}"]
        if len(last) >= 3:
            out.append(_TITLED + last)
    return out


def known_name_set(values: Iterable[Any]) -> HashedSet:
    """Full names worth a deny-list (two or more words, or two or more Chinese characters),
    folded, in every form `name_variants` gives, as a hashed set."""
    names = set()
    for v in values:
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            continue
        names.update(name_variants(_fold(str(v))))
    return HashedSet.from_hashes(hash_strings(list(names)), np.zeros(len(names), dtype=np.int8))


@dataclass
class _Candidates:
    """Candidate name spans of many texts: row, start, end, word index (-1: a CJK substring)
    and the span's text (for hashing)."""

    row: list[np.ndarray] = field(default_factory=list)
    start: list[np.ndarray] = field(default_factory=list)
    end: list[np.ndarray] = field(default_factory=list)
    word: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)

    def add(self, row, start, end, word, texts) -> None:
        if len(row):
            self.row.append(np.asarray(row, dtype=np.int64))
            self.start.append(np.asarray(start, dtype=np.int64))
            self.end.append(np.asarray(end, dtype=np.int64))
            self.word.append(np.asarray(word, dtype=np.int64))
            self.hashes.append(hash_strings(texts))

    def cat(self) -> tuple[np.ndarray, ...]:
        if not self.row:
            e = np.empty(0, dtype=np.int64)
            return e, e, e, e, np.empty(0, dtype=np.uint64)
        return tuple(
            np.concatenate(x) for x in (self.row, self.start, self.end, self.word, self.hashes)
        )


def _ascii_name_candidates(lower: pa.Array, rows: np.ndarray, out: _Candidates) -> None:
    """Word n-grams (2..4 words joined by their own ' ' or '. ' gaps) of ASCII lower-case texts,
    vectorised in Arrow: for ASCII, `_WORD` is [a-z]+."""
    if not len(lower):
        return
    gaps = pc.split_pattern_regex(lower, "[a-z]+")  # m+1 pieces around m words
    n_gaps = pc.list_value_length(gaps).to_numpy(zero_copy_only=False).astype(np.int64)
    words = pc.list_flatten(pc.split_pattern_regex(lower, "[^a-z]+"))
    words = words.filter(pc.greater(pc.utf8_length(words), 0))
    n_words = n_gaps - 1
    if not len(words):
        return
    local = np.repeat(np.arange(len(lower)), n_words)  # row (in `lower`) of each word
    gap_flat = pc.list_flatten(gaps)
    glen = pc.utf8_length(gap_flat).to_numpy(zero_copy_only=False).astype(np.int64)
    wlen = pc.utf8_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    k = np.arange(len(words))
    before, after = k + local, k + local + 1  # each row has one gap more than words
    first = np.r_[True, local[1:] != local[:-1]]
    inc = glen[before] + np.where(first, 0, np.r_[0, wlen[:-1]])
    c = np.cumsum(inc)
    row_first = np.maximum.accumulate(np.where(first, k, 0))
    start = c - c[row_first] + inc[row_first]
    end = start + wlen
    gap_after = gap_flat.take(pa.array(after))
    gap_ok = pc.is_in(gap_after, value_set=pa.array(_NAME_GAPS, gap_after.type)).to_numpy(
        zero_copy_only=False
    )
    total = len(words)
    valid = np.ones(total, dtype=bool)
    for n in range(2, MAX_NAME_WORDS + 1):
        # n words from k: same row, and every gap between them a name gap
        nxt = np.r_[local[n - 1 :] == local[: total - n + 1], np.zeros(n - 1, dtype=bool)]
        valid = valid & np.r_[gap_ok[n - 2 :], np.zeros(n - 2, dtype=bool)] & nxt
        idx = np.flatnonzero(valid)
        if not idx.size:
            break
        pieces = []
        for j in range(n):
            pieces.append(words.take(pa.array(idx + j)))
            if j < n - 1:
                pieces.append(gap_after.take(pa.array(idx + j)))
        gram = pc.binary_join_element_wise(*pieces, pa.scalar("", words.type))
        out.add(rows[local[idx]], start[idx], end[idx + n - 1], idx, _strings(gram))
        if n == 2:  # a title and the word after it: a candidate surname
            titled = pc.and_(
                pc.is_in(pieces[0], value_set=pa.array(sorted(TITLES), words.type)),
                pc.is_in(pieces[1], value_set=pa.array([" ", ". "], words.type)),
            ).to_numpy(zero_copy_only=False)
            t = idx[titled]
            surnames = pc.binary_join_element_wise(
                pa.scalar(_TITLED, words.type),
                words.take(pa.array(t + 1)),
                pa.scalar("", words.type),
            )
            out.add(rows[local[t]], start[t], end[t + 1], t, _strings(surnames))


_Columns = tuple[list, list, list, list, list]  # row, start, end, word index, text


def _python_name_candidates(texts: list[str], rows: np.ndarray, out: _Candidates) -> None:
    """The same candidates for other texts (and Chinese substrings), one text at a time."""
    cols: _Columns = ([], [], [], [], [])
    word_id = 0
    for row, text in zip(rows, texts, strict=True):
        folded = text.lower()
        if len(folded) != len(text):  # a rare lower-casing that changes length: match as written
            folded = text
        word_id = _word_candidates(row, folded, word_id, cols)
        _cjk_candidates(row, folded, cols)
    out.add(*cols)


def _word_candidates(row: int, folded: str, word_id: int, cols: _Columns) -> int:
    """Word n-grams of one text (and a title with the word after it) appended to `cols`;
    returns the next text's first word index."""
    r, s, e, w, t = cols
    words = [(m.start(), m.end()) for m in _WORD.finditer(folded)]
    for i in range(len(words)):
        for n in range(2, min(MAX_NAME_WORDS, len(words) - i) + 1):
            if folded[words[i + n - 2][1] : words[i + n - 1][0]] not in _NAME_GAPS:
                break
            a, b = words[i][0], words[i + n - 1][1]
            r.append(row), s.append(a), e.append(b), w.append(word_id + i)
            t.append(folded[a:b])
            first = folded[words[i][0] : words[i][1]]
            if n == 2 and first in TITLES and folded[words[i][1] : words[i + 1][0]] in " . ":
                r.append(row), s.append(a), e.append(b), w.append(word_id + i)
                t.append(_TITLED + folded[words[i + 1][0] : b])
    return word_id + len(words)


def _cjk_candidates(row: int, folded: str, cols: _Columns) -> None:
    """Chinese substrings of one text that could be a name, appended to `cols` (word -1)."""
    r, s, e, w, t = cols
    for m in _CJK_PAIR.finditer(folded):  # two CJK runs around one space: 佐藤 花子
        a, b = m.start(1), m.end(2)
        for i in range(max(a, m.end(1) - 3), m.end(1)):
            for j in range(m.start(2) + 1, min(b, m.start(2) + 3) + 1):
                r.append(row), s.append(i), e.append(j), w.append(-1), t.append(folded[i:j])
    for run in _CJK_SPAN.finditer(folded):
        g = run.group()
        for size in (4, 3, 2):
            for j in range(len(g) - size + 1):
                r.append(row), s.append(run.start() + j), e.append(run.start() + j + size)
                w.append(-1), t.append(g[j : j + size])


def known_name_spans(texts: pa.Array, names: HashedSet) -> dict[int, list[tuple[int, int]]]:
    """Row -> merged character spans of known names in it (matched case-insensitively).

    At each word the longest run of 2-4 words (joined by a `_NAME_GAPS` gap) that is a known
    name, or a title and a known surname, counts; in Chinese, every 2-4 character substring that
    is one.
    """
    arr = pc.fill_null(as_string_array(texts), "")
    if not len(names) or not len(arr):
        return {}
    is_ascii = pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
    cands = _Candidates()
    fast = np.flatnonzero(is_ascii)
    _ascii_name_candidates(pc.ascii_lower(arr.take(pa.array(fast))), fast, cands)
    slow = np.flatnonzero(~is_ascii)
    if slow.size:
        _python_name_candidates(arr.take(pa.array(slow)).to_pylist(), slow, cands)
    row, start, end, word, hashes = cands.cat()
    hit = names.lookup_hashes(hashes) >= 0
    row, start, end, word = row[hit], start[hit], end[hit], word[hit]
    # Per word, only its longest matching n-gram (the candidates of a word ascend in n).
    is_word = word >= 0
    last = np.ones(len(word), dtype=bool)
    if is_word.any():
        keys = np.where(is_word, word, -1 - np.arange(len(word)))
        # ASCII and Python candidates number their words differently: key on (row, word).
        order = np.lexsort((end, keys, row))
        row, start, end, word, keys = row[order], start[order], end[order], word[order], keys[order]
        last = np.r_[(row[1:] != row[:-1]) | (keys[1:] != keys[:-1]), True] | (keys < 0)
        row, start, end = row[last], start[last], end[last]
    spans: dict[int, list[tuple[int, int]]] = {}
    for r_, a, b in sorted(zip(row.tolist(), start.tolist(), end.tolist(), strict=True)):
        merged = spans.setdefault(r_, [])
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return spans


def scrub_known_names(texts: pd.Series, names: HashedSet) -> tuple[pd.Series, int]:
    """Replace any known full name (anyone's, not only the row's own) by <PERSON>.

    Notes often mention other customers ("referred by ..."): no pattern recognises a name, but
    the dataset's own identifier columns list every name it holds, so they make a deny-list.
    Texts are expected NFKC-normalised (scrub_column's output is).
    """
    out = texts.astype("string").copy()
    spans = known_name_spans(pa.array(out, type=pa.large_string(), from_pandas=True), names)
    if not spans:
        return out, 0
    rows = sorted(spans)
    new = []
    for r, text in zip(rows, out.iloc[rows].tolist(), strict=True):
        for a, b in reversed(spans[r]):
            text = text[:a] + placeholder(PERSON) + text[b:]
        new.append(text)
    out.iloc[rows] = new
    return out, sum(len(v) for v in spans.values())
