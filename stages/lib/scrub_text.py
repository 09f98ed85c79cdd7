"""Text helpers shared by the scrubber's passes and the leak scan: Arrow string columns, NFKC,
scripts written without spaces, typographic apostrophes, pinyin."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CJK = "[\u3400-\u9fff\uf900-\ufaff]"  # literal characters: RE2 has no \\u escapes
# Scripts written without spaces: a Latin name glued to them still stands alone.
UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
UNSPACED_CHAR = re.compile(f"[{UNSPACED}]")
APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'"})


def as_string_array(values: Any) -> pa.Array:
    """Any column-like (Arrow array, pandas Series, list) as one Arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    elif not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.large_string(), from_pandas=True)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_string())
    return values.cast(pa.large_string())


def normalize_text(values: Any) -> pa.Array:
    """NFKC-normalise a string column (full-width digits, letters, '@' become ASCII).

    The control characters NUL, SOH and STX, which the scrubber uses as markers, are removed.
    """
    arr = pc.utf8_normalize(as_string_array(values), "NFKC")
    # Typographic apostrophes become ASCII ones, so "O’Rourke" is matched like "O'Rourke".
    arr = pc.replace_substring_regex(arr, "[\u2018\u2019\u02bc]", "'")
    return pc.replace_substring_regex(arr, "[\x00-\x02]", "")


def replace_rows(arr: pa.Array, rows: np.ndarray, new_values: list[str]) -> pa.Array:
    """The array with `rows` (sorted indices) replaced by `new_values`."""
    mask = np.zeros(len(arr), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(arr, pa.array(mask), pa.array(new_values, type=arr.type))


def pinyin_forms(name: str) -> tuple[str, str, str]:
    """A Chinese name in pinyin: surname first, given name first, and run together."""
    from pypinyin import lazy_pinyin  # only data with Chinese names pays for its import

    surname, *given = lazy_pinyin(name)
    rest = "".join(given)
    return f"{surname} {rest}", f"{rest} {surname}", f"{surname}{rest}"
