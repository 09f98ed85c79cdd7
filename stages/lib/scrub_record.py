"""The scrubber's record-aware pass: each row's own identifiers (name and its parts, e-mail,
phone in any formatting, national id, address), taken from its structured columns, found in its
own text.

Candidate rows are found for the whole column at once (numpy elementwise `find` of each row's
needle in its own lower-cased or digits-only text); only rows that really contain one of their
identifiers are then rewritten, by plain string comparison that follows the semantics of one
alternation of that row's escaped identifiers (`_row_regex`, the fallback).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.pii_patterns import PERSON, PII_ENTITY, placeholder
from stages.lib.scrub_text import (
    CJK,
    UNSPACED,
    UNSPACED_CHAR,
    as_string_array,
    normalize_text,
    pinyin_forms,
    replace_rows,
)

_PHONE_SEP = r"[\s()./\-]*"


def _to_numpy(arr: pa.Array) -> np.ndarray:
    """Arrow strings as a numpy StringDType array (nulls as empty strings)."""
    filled = pc.fill_null(arr, "")
    return np.array(filled.to_numpy(zero_copy_only=False), dtype=np.dtypes.StringDType())


@dataclass(frozen=True)
class _Needles:
    """Long form (row, entity, needle, haystack kind) of every row's own identifiers."""

    rows: np.ndarray
    entity: list[str]
    needle: np.ndarray  # lower-cased literal, or digits for phones
    digits: np.ndarray  # True: search the digits-only text


def _needles(identifiers: Mapping[str, Iterable[tuple[str, Any]]], n_rows: int) -> _Needles:
    rows, ents, needles, digits = [], [], [], []

    def add(entity: str, where: np.ndarray, values: pa.Array, min_len: int, dig: bool) -> None:
        values = pc.fill_null(values, "")
        keep = np.flatnonzero(
            pc.greater_equal(pc.utf8_length(values), min_len).to_numpy(zero_copy_only=False)
        )
        if keep.size:
            rows.append(where[keep])
            ents.extend([entity] * keep.size)
            needles.append(_to_numpy(values.take(pa.array(keep))))
            digits.append(np.full(keep.size, dig))

    every = np.arange(n_rows)
    for kind, columns in identifiers.items():
        entity = PII_ENTITY[kind]
        for _, values in columns:
            vals = pc.utf8_lower(pc.utf8_trim_whitespace(normalize_text(values)))
            if len(vals) != n_rows:
                raise ValueError("identifier column and text column differ in length")
            if kind == "phone":
                # The last 9 digits: the subscriber number whatever the country-code spelling.
                dig = pc.replace_substring_regex(vals, r"[^0-9]", "")
                dig = pc.if_else(
                    pc.greater_equal(pc.utf8_length(dig), 7),
                    pc.utf8_slice_codeunits(dig, -9),
                    pa.scalar("", vals.type),
                )
                add(entity, every, dig, 7, True)
                continue
            add(entity, every, vals, 3 if kind == "name" else 4, False)
            if kind == "national_id":
                # Written with other separators or none: compare the digits (7 or more).
                dig = pc.replace_substring_regex(vals, r"[^0-9]", "")
                add(entity, every, dig, 7, True)
            if kind == "address":
                # The street line alone ("1280 Chestnut Rd"), without city and state.
                # (a house number written first with a comma, "12, rue des Lilas", is kept)
                street = pc.utf8_trim_whitespace(
                    pc.replace_substring_regex(vals, r"^(\d+[a-z]?,)?([^,]*),.*$", "\\1\\2")
                )
                add(entity, every, street, 6, False)
            if kind != "name":
                continue
            # Given and family names (two characters or more) of names with several parts.
            parts = pc.utf8_split_whitespace(pc.replace_substring_regex(vals, r"[,;]", " "))
            lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(parts)
            parent = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
            multi = lengths[parent] > 1
            part = pc.and_(pa.array(multi), pc.invert(pc.is_in(flat, value_set=_PARTICLES)))
            add(entity, parent[part.to_numpy(zero_copy_only=False)], flat.filter(part), 2, False)
            # A Chinese name written without spaces: the given name after the surname.
            cjk = pc.fill_null(pc.match_substring_regex(vals, rf"^{CJK}{{3,4}}$"), False)
            given = pc.if_else(cjk, pc.utf8_slice_codeunits(vals, 1), pa.scalar("", vals.type))
            add(entity, every, given, 2, False)
            # A Chinese name's pinyin in either order ("Zhou Wei", "Wei Zhou", "Zhouwei").
            chinese = np.flatnonzero(
                pc.fill_null(pc.match_substring_regex(vals, rf"^{CJK}{{2,4}}$"), False).to_numpy(
                    zero_copy_only=False
                )
            )
            for variant in range(3):
                spelled = [pinyin_forms(v)[variant] for v in vals.take(chinese).to_pylist()]
                add(entity, chinese, pa.array(spelled, vals.type), 5, False)
    if not rows:
        empty = np.array([], dtype=np.dtypes.StringDType())
        return _Needles(np.array([], dtype=np.int64), [], empty, np.array([], dtype=bool))
    return _Needles(np.concatenate(rows), ents, np.concatenate(needles), np.concatenate(digits))


# Name particles: parts of a name, but words of their own in running text ("van", "de").
_PARTICLES = pa.array(
    "van von der den de da di del della la le du dos das do bin ibn al el y e ter ten 't".split(),
    pa.large_string(),
)


def _needle_regex(entity: str, needle: str, is_digits: bool) -> str:
    if is_digits:
        # Any formatting: separators between digits, and any country code / trunk prefix.
        core = _PHONE_SEP.join(re.escape(d) for d in needle)
        return rf"(?<!\d)(?:[+(]*\d{_PHONE_SEP}){{0,5}}?{core}(?!\d)"
    escaped = re.escape(needle)
    if re.search(CJK, needle):
        return escaped  # Chinese text has no word boundaries
    return rf"(?<![^\W{UNSPACED}]){escaped}(?![^\W{UNSPACED}])"


def _row_regex(items: list[tuple[str, str, bool]]) -> re.Pattern[str]:
    """One alternation of a row's identifiers (the reference semantics of `_row_matches`)."""
    return re.compile(
        "|".join(f"(?P<g{j}>{_needle_regex(e, nd, dg)})" for j, (e, nd, dg) in enumerate(items)),
        re.IGNORECASE,
    )


def _casefix_map() -> dict[int, str]:
    # re.IGNORECASE also equates a few lower-case letters with each other (i and dotless i, s and
    # long s, Greek sigma forms, ...); fold each such class to one member so a plain string
    # comparison agrees with the regex.
    try:
        from re._casefix import _EXTRA_CASES  # CPython >= 3.11
    except ImportError:  # pragma: no cover
        return {}
    rep: dict[int, int] = {}
    for k, others in _EXTRA_CASES.items():
        group = [k, *others]
        low = min(rep.get(c, c) for c in group)
        for c in group:
            rep[c] = min(rep.get(c, c), low)
    return {k: chr(v) for k, v in rep.items() if k != v}


_CASEFIX = _casefix_map()
_PHONE_START = re.compile(r"(?<!\d)[+(\d]")
_CJK_RX = re.compile(CJK)


def _is_word(ch: str) -> bool:
    # `re`'s \w, less the scripts written without spaces (the regex's boundary).
    return (ch.isalnum() or ch == "_") and UNSPACED_CHAR.match(ch) is None


def _is_phone_sep(ch: str) -> bool:
    return ch.isspace() or ch in "()./-"  # _PHONE_SEP


def _phone_core(text: str, q: int, needle: str) -> int:
    n = len(text)
    for j, d in enumerate(needle):
        if j:
            while q < n and _is_phone_sep(text[q]):
                q += 1
        if q >= n or text[q] != d:
            return -1
        q += 1
    return -1 if q < n and text[q].isdecimal() else q


def _phone_match(text: str, p: int, needle: str) -> int:
    """End of `_needle_regex(.., needle, True)` matched at p, else -1 (same lazy prefix)."""
    n = len(text)
    q = p
    for k in range(6):
        end = _phone_core(text, q, needle)
        if end >= 0:
            return end
        if k == 5:
            break
        while q < n and text[q] in "+(":
            q += 1
        if q >= n or not text[q].isdecimal():
            return -1
        q += 1
        while q < n and _is_phone_sep(text[q]):
            q += 1
    return -1


def _row_matches(
    text: str, items: list[tuple[str, str, bool]]
) -> list[tuple[int, int, str]] | None:
    """Spans (start, end, entity) that `_row_regex(items).sub` would replace, without compiling a
    regex per row (compiling one per matched row cost ~1 ms each). None: the text's case folding
    changes its length, which plain string comparison cannot follow; use the regex."""
    folded = text.lower().translate(_CASEFIX)
    if len(folded) != len(text):
        return None
    cands: list[tuple[int, int, int]] = []  # (start, alternative, end)
    starts: list[int] | None = None
    for order, (_, needle, is_digits) in enumerate(items):
        if is_digits:
            if starts is None:
                starts = [m.start() for m in _PHONE_START.finditer(text)]
            for p in starts:
                end = _phone_match(text, p, needle)
                if end >= 0:
                    cands.append((p, order, end))
            continue
        lit = needle.lower().translate(_CASEFIX)
        if len(lit) != len(needle):
            return None
        bounded = not _CJK_RX.search(needle)
        size, n = len(lit), len(text)
        at = folded.find(lit)
        while at >= 0:
            end = at + size
            if not bounded or (
                (at == 0 or not _is_word(text[at - 1])) and (end == n or not _is_word(text[end]))
            ):
                cands.append((at, order, end))
            at = folded.find(lit, at + 1)
    # The regex scan: leftmost position first, and there the first alternative that matches.
    cands.sort()
    spans, pos = [], 0
    for start, order, end in cands:
        if start >= pos:
            spans.append((start, end, items[order][0]))
            pos = end
    return spans


_NEXT_NAME = re.compile(r" [A-Z][a-z'-]+")
_PREVIOUS_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z'-]+ $")


def _whole_names(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """A row's own given name or surname that stands inside another person's full name
    ("Spoke with William King" when the row is William Robertson) takes the whole name with it:
    leaving "<PERSON> King" would keep half a name and hide the rest from the known-name pass."""
    out = []
    for i, (start, end, entity) in enumerate(spans):
        if entity == PERSON and " " not in text[start:end]:
            limit = spans[i + 1][0] if i + 1 < len(spans) else len(text)
            after = _NEXT_NAME.match(text, end)
            if after and after.end() <= limit:
                end = after.end()
            floor = out[-1][1] if out else 0
            before = _PREVIOUS_NAME.search(text[:start])
            if before and before.start() >= floor:
                start = before.start()
        out.append((start, end, entity))
    return out


def scrub_record_identifiers(
    texts: Any,
    identifiers: Mapping[str, Iterable[tuple[str, Any]]],
    counts: Counter | None = None,
) -> tuple[pa.Array, Counter]:
    """Replace each row's own identifiers (by pii kind: [(column, values)]) in its own text."""
    arr = as_string_array(texts)
    counts = Counter() if counts is None else counts
    needles = _needles(identifiers, len(arr))
    if not needles.rows.size:
        return arr, counts
    # Vectorised candidate search: each needle in its own row's lower-cased / digits-only text.
    lower = _to_numpy(pc.utf8_lower(arr))
    digit_text = _to_numpy(pc.replace_substring_regex(pc.fill_null(arr, ""), r"[^0-9]", ""))
    hay = np.where(needles.digits, digit_text[needles.rows], lower[needles.rows])
    found = np.flatnonzero(np.strings.find(hay, needles.needle) >= 0)
    if not found.size:
        return arr, counts
    by_row: dict[int, dict[tuple[str, str, bool], None]] = {}
    for i in found:
        by_row.setdefault(int(needles.rows[i]), {})[
            (needles.entity[i], str(needles.needle[i]), bool(needles.digits[i]))
        ] = None
    rows = np.array(sorted(by_row), dtype=np.int64)
    old = arr.take(pa.array(rows)).to_pylist()
    new = []
    for row, text in zip(rows, old, strict=True):
        # Longest needle first, so a full name wins over its parts.
        items = sorted(by_row[int(row)], key=lambda t: -len(t[1]))
        spans = _row_matches(text, items)
        if spans is None:  # rare: fall back to the regex itself
            groups = {f"g{j}": ent for j, (ent, _, _) in enumerate(items)}
            spans = [
                (m.start(), m.end(), groups[m.lastgroup]) for m in _row_regex(items).finditer(text)
            ]
        spans = _whole_names(text, spans)
        pieces, last = [], 0
        for start, end, entity in spans:
            pieces += [text[last:start], placeholder(entity)]
            counts[entity] += 1
            last = end
        new.append("".join(pieces) + text[last:])
    return replace_rows(arr, rows, new), counts
