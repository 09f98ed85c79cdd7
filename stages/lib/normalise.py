"""Text normalisation of raw string columns (Arrow, vectorised): NFKC, whitespace, the
spellings of a missing value, and the small Arrow helpers the cleaning steps share."""

from __future__ import annotations

import functools
import sys
import unicodedata

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# Python's `\s` (= str.isspace()) as an RE2 class: RE2's own `\s` is ASCII only, and these are
# the characters the old `str.replace(r"\s+", " ")` collapsed.
_PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS_RUN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE) + "]+"
# Rows the collapse changes: a whitespace character other than ' ', or two spaces in a row.
_WS_TODO = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE if c != " ") + "]|  "
_FORMAT_CHARS = r"\p{Cf}"  # Unicode format characters: U+200B, U+FEFF, U+200E, U+00AD...
NULL_STR = pa.scalar(None, pa.string())


def as_string(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One Arrow string array of an array or chunked array."""
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    return a if a.type == pa.string() else pc.cast(a, pa.string())


def lower_text(a: pa.Array) -> pa.Array:
    """Lower-cased as Python's str.lower does it."""
    if is_ascii(a):
        return pc.ascii_lower(a)
    # utf8proc lower-cases like Python's str.lower except U+0130 (full mapping 'i' + U+0307).
    # A replace costs ~5x the utf8_lower itself: only when some row has one.
    if pc.any(pc.match_substring(a, "\u0130")).as_py():
        a = pc.replace_substring(a, "\u0130", "i\u0307")
    return pc.utf8_lower(a)


def map_values(a: pa.Array, keys: list[str], values: list[str], other: pa.Array) -> pa.Array:
    """values[i] where a == keys[i], else `other`."""
    idx = pc.index_in(a, value_set=pa.array(keys, pa.string()))
    return pc.if_else(pc.is_valid(idx), pc.take(pa.array(values, pa.string()), idx), other)


def true_mask(a) -> np.ndarray:
    """A boolean Arrow array as a numpy mask, null as False."""
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


def is_ascii(a: pa.Array) -> bool:
    """Whether every value of a string array is ASCII."""
    return bool(pc.all(pc.string_is_ascii(a)).as_py() is not False)


def normalise_array(a: pa.Array | pa.ChunkedArray, strip_format: bool = False) -> pa.Array:
    """NFKC-normalise, collapse runs of whitespace and trim (Arrow, vectorised).

    strip_format: also remove Unicode format characters (zero-width space, BOM, direction
    marks): invisible, they make 'Male\u200b' differ from 'Male'. Not for free text, where a
    zero-width joiner belongs to emoji and some scripts.
    """
    a = as_string(a)
    if not is_ascii(a):  # NFKC leaves ASCII as it is
        a = pc.utf8_normalize(a, "NFKC")
        if strip_format:
            a = pc.replace_substring_regex(a, _FORMAT_CHARS, "")
    return _collapse_whitespace(a)


def _collapse_whitespace(a: pa.Array) -> pa.Array:
    """Runs of str.isspace() whitespace as one space, trimmed."""
    # A regex replace costs ~10x a match: rewrite only the rows that have something to collapse.
    todo = true_mask(pc.match_substring_regex(a, _WS_TODO))
    if todo.any():
        mask = pa.array(todo)
        fixed = pc.replace_substring_regex(a.filter(mask), _WS_RUN, " ")
        a = pc.replace_with_mask(a, mask, fixed)
    return pc.utf8_trim(a, " ")


def python_model_text(s: str) -> str:
    """One string as the model sees it, in Python: the definition model_text vectorises."""
    return " ".join(unicodedata.normalize("NFKC", s).lower().split())


@functools.cache
def _python_only() -> str:
    """An RE2 class of the code points whose rows model_text leaves to Python.

    Those this Python's Unicode database leaves unassigned (Cn): Arrow's utf8proc follows a
    newer Unicode and decomposes, orders and lower-cases them differently. And those whose NFKC
    holds a capital sigma: str.lower writes a final sigma by context, utf8proc never does.
    """
    sigma = "\u03a3"  # only a character with a decomposition can turn into one under NFKC
    odd = [
        c
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) == "Cn"
        or chr(c) == sigma
        or (
            unicodedata.decomposition(chr(c)) != ""
            and sigma in unicodedata.normalize("NFKC", chr(c))
        )
    ]
    return _ranges_class(odd)


@functools.cache
def _nfkc_may_change() -> str:
    """An RE2 class of the code points in a row that NFKC may change (Unicode's quick check).

    A code point not NFKC by itself, a combining mark (ccc > 0) that may be reordered, or the
    second half of a canonical pair (a Hangul vowel or trailing consonant, some vowel signs) that
    may compose with the code point before it. A row without one is NFKC already.
    """
    may = {
        c
        for c in range(sys.maxunicode + 1)
        if not 0xD800 <= c < 0xE000
        and (unicodedata.combining(chr(c)) or not unicodedata.is_normalized("NFKC", chr(c)))
    }
    for c in range(sys.maxunicode + 1):
        d = unicodedata.decomposition(chr(c)).split()
        if len(d) == 2 and not d[0].startswith("<"):
            may.add(int(d[1], 16))
    may |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo
    return _ranges_class(sorted(may))


def _ranges_class(codes: list[int]) -> str:
    """An RE2 character class of sorted code points, as ranges."""
    ranges, i = [], 0
    while i < len(codes):
        j = i
        while j + 1 < len(codes) and codes[j + 1] == codes[j] + 1:
            j += 1
        ranges.append(f"\\x{{{codes[i]:x}}}-\\x{{{codes[j]:x}}}")
        i = j + 1
    return "[" + "".join(ranges) + "]"


def _nfkc(a: pa.Array) -> pa.Array:
    """NFKC of a string array, run only on the rows it may change (~10x faster on prose)."""
    todo = pc.match_substring_regex(a, _nfkc_may_change())
    if not pc.any(todo).as_py():
        return a
    return pc.replace_with_mask(a, todo, pc.utf8_normalize(a.filter(todo), "NFKC"))


def model_text(values: pa.Array | pa.ChunkedArray, max_chars: int | None = None) -> pa.Array:
    """The text the model sees (Arrow, vectorised): NFKC, lower-cased as str.lower, runs of
    str.isspace() whitespace as one space, trimmed, cut to max_chars code points; null as "".

    Equal to python_model_text row by row: the rows Arrow cannot match (a capital sigma, a code
    point newer than this Python's Unicode: see _python_only) go through Python.
    """
    a = pc.fill_null(as_string(values), "")
    if is_ascii(a):
        a = _collapse_whitespace(pc.ascii_lower(a))
    else:
        raw, odd = a, pc.match_substring_regex(a, _python_only())
        a = _collapse_whitespace(lower_text(_nfkc(a)))
        if pc.any(odd).as_py():
            fixed = [python_model_text(v) for v in raw.filter(odd).to_pylist()]
            a = pc.replace_with_mask(a, odd, pa.array(fixed, pa.string()))
    return a if max_chars is None else pc.utf8_slice_codeunits(a, 0, max_chars)


def normalise_text(s: pd.Series) -> pd.Series:
    """NFKC-normalise, collapse runs of whitespace and trim."""
    out = normalise_array(pa.array(s.astype("string"), pa.string(), from_pandas=True))
    return pd.Series(out.to_pandas(), index=s.index, dtype="string")


def to_missing(a: pa.Array, spellings: tuple[str, ...]) -> pa.Array:
    """Replace the configured spellings of a missing value (case-insensitive) by null."""
    if not spellings:
        return a
    lowered = [m.lower() for m in spellings]
    # Lower-casing never shortens a string, so only short values can be a missing spelling.
    short = true_mask(pc.less_equal(pc.utf8_length(a), max(len(m) for m in lowered)))
    if not short.any():
        return a
    missing = np.zeros(len(a), dtype=bool)
    hit = pc.is_in(lower_text(a.filter(pa.array(short))), value_set=pa.array(lowered, pa.string()))
    missing[short] = true_mask(hit)
    return pc.if_else(pa.array(missing), NULL_STR, a)
