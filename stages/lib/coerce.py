"""Type coercion of normalised string columns to the schema's types, one function per type, each
returning typed values and per-row reasons (rejected, or value nulled) as typed `reasons`."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.config import CleanConfig
from stages.lib.normalise import NULL_STR, lower_text, map_values, true_mask
from stages.lib.reasons import Reason, first_reason, no_reasons, reasons
from stages.lib.schema import Column

EMAIL_RE = r"^[^@\s<>(),;:]+@[^@\s<>(),;:]+\.[A-Za-z]{2,}$"


# Plain decimal numbers, parsed in C++; anything else goes through pandas.to_numeric (rare).
_SIMPLE_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_SIMPLE_INT = r"^[+-]?[0-9]{1,18}$"  # fits int64 exactly
_INT19 = r"^[+-]?[0-9]{19}$"  # int64 holds some 19-digit numbers: checked one by one
CONTRACT_TYPES = {
    "string": pa.string(),
    "category": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "bool": pa.bool_(),
}
# Spellings of a boolean (compared lower-cased, after normalisation).
BOOL_SPELLINGS = {
    "true": True, "t": True, "yes": True, "y": True, "1": True,
    "false": False, "f": False, "no": False, "n": False, "0": False,
}  # fmt: skip
# Lower bound of a `format: date` column without its own min (its upper bound: today).
DEFAULT_DATE_MIN = datetime.date(1900, 1, 1)


def parse_dates(s: pd.Series, formats: tuple[str, ...]) -> pd.Series:
    """Parse strings with each format in turn; what no format parses becomes NaT."""
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    for fmt in formats:
        todo = out.isna() & s.notna()
        if not todo.any():
            break
        out[todo] = pd.to_datetime(s[todo], format=fmt, errors="coerce")
    return out


# int64's range, and the integers a float64 holds exactly (numbers written as '1.5e3' or '7.0'
# pass through a float, so beyond 2^53 they could not be read as written).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT_EXACT = 2**53


def _parse_numbers(
    s: pa.Array, want_int: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """(float values, parsed mask, exact int64 values or None, too-big mask) of a string column.

    For ints, a parsed whole number that int64 cannot hold as written (20 digits, 1e308, a
    19-digit number above int64's maximum, '1.5e17' beyond a float's exact integers) is flagged
    too big instead of being changed.
    """
    n = len(s)
    num = np.full(n, np.nan)
    parsed = np.zeros(n, dtype=bool)
    simple = true_mask(pc.match_substring_regex(s, _SIMPLE_NUMBER))
    if simple.any():
        num[simple] = pc.cast(s.filter(pa.array(simple)), pa.float64()).to_numpy()
        parsed[simple] = True
    odd = true_mask(pc.is_valid(s)) & ~simple
    if odd.any():  # inf, NaN, ' 7', '1_000', ...: exactly what pandas.to_numeric makes of them
        got = pd.to_numeric(pd.Series(s.filter(pa.array(odd)), dtype="string"), errors="coerce")
        num[odd] = got.to_numpy(dtype="float64", na_value=np.nan)
        parsed[odd] = got.notna().to_numpy()
    if not want_int:
        return num, parsed, None, np.zeros(n, dtype=bool)
    exact, too_big = _exact_ints(s, num, parsed)
    return num, parsed, exact, too_big


def _exact_ints(s: pa.Array, num: np.ndarray, parsed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 of each whole number read exactly as written, else 0; whole numbers too big)."""
    n = len(s)
    exact = np.zeros(n, dtype=np.int64)
    too_big = np.zeros(n, dtype=bool)
    is_int = true_mask(pc.match_substring_regex(s, _SIMPLE_INT))
    if is_int.any():
        digits = pc.utf8_ltrim(s.filter(pa.array(is_int)), "+")  # Arrow's int parser: no '+'
        exact[is_int] = pc.cast(digits, pa.int64()).to_numpy()
    # 19 digits: int64 holds some of them; Python's int decides, for these few rows.
    is_19 = true_mask(pc.match_substring_regex(s, _INT19))
    for i in np.flatnonzero(is_19):
        value = int(s[int(i)].as_py())
        if INT64_MIN <= value <= INT64_MAX:
            exact[i] = value
        else:
            too_big[i] = True
    finite = np.isfinite(num)
    whole = np.zeros(n, dtype=bool)
    whole[finite] = num[finite] == np.floor(num[finite])
    # '1.0', '1e3', 20+ digits: read through a float, exact only up to 2^53.
    other = parsed & whole & ~is_int & ~is_19
    fits = other & (np.abs(np.where(finite, num, 0.0)) <= FLOAT_EXACT)
    exact[fits] = num[fits].astype(np.int64)
    too_big |= other & ~fits
    return exact, too_big


def range_text(lo: Any, hi: Any) -> str:
    """A range for a message: '17..100', 'at least 1', 'at most 99' (never '0..-inf')."""

    def show(b: Any) -> str:
        return f"{b:g}" if isinstance(b, float) else str(b)

    if lo is not None and hi is not None:
        return f"{show(lo)}..{show(hi)}"
    if lo is not None:
        return f"at least {show(lo)}"
    return f"at most {show(hi)}" if hi is not None else "any value"


@dataclass(frozen=True)
class _Reasons:
    """Builds per-row reasons about one column's values (values hidden for identifiers)."""

    name: str
    s: pa.Array
    shown: bool

    def __call__(
        self, mask: np.ndarray, kind: Reason, expected: str | None = None, value: bool = True
    ) -> pa.Array:
        said = self.s if value and self.shown else None
        return reasons(mask, kind, self.name, said, expected)


def _coerce_text(name: str, col: Column, s: pa.Array, cfg: CleanConfig, why: _Reasons):
    """string / category: canonical spelling of known values; e-mail format check."""
    nothing = no_reasons(len(s))
    reject, nulled, typed = nothing, nothing, s
    if col.type == "category":
        lower = lower_text(s)
        if col.values:
            # Unknown values stay as written: validate flags them, clean does not guess.
            canon = {v.lower(): v for v in col.values}
            typed = map_values(lower, list(canon), list(canon.values()), s)
        else:
            typed = lower
    if col.format == "email":
        ok = true_mask(pc.match_substring_regex(typed, EMAIL_RE))
        bad = true_mask(pc.is_valid(typed)) & ~ok
        note = why(bad, Reason.MALFORMED_EMAIL, value=False)
        if name in cfg.reject_bad_format_in:
            reject = note
        else:
            nulled = note
        typed = pc.if_else(pa.array(bad), NULL_STR, typed)
    return typed, reject, nulled


def _coerce_number(col: Column, s: pa.Array, why: _Reasons):
    """int / float: parsed exactly or rejected with a reason naming the column and range."""
    n = len(s)
    is_int = col.type == "int"
    num, parsed, exact, too_big = _parse_numbers(s, is_int)
    present = true_mask(pc.is_valid(s))
    finite = np.isfinite(num)
    not_number = present & ~parsed
    not_finite = parsed & ~finite
    fractional = np.zeros(n, dtype=bool)
    if is_int:
        fractional = parsed & finite & (num != np.floor(num))
    ok = parsed & finite & ~fractional & ~too_big
    out_of_range = np.zeros(n, dtype=bool)
    if col.min is not None:
        out_of_range |= ok & (num < col.min)
    if col.max is not None:
        out_of_range |= ok & (num > col.max)
    lo, hi = col.min, col.max
    if is_int:  # what an int column can hold at all, within the schema's own bounds
        lo = INT64_MIN if lo is None else lo
        hi = INT64_MAX if hi is None else hi
    reject = first_reason(
        why(not_number, Reason.NOT_A_NUMBER),
        why(not_finite, Reason.NOT_FINITE, value=False),
        why(fractional, Reason.NOT_AN_INTEGER),
        why(out_of_range, Reason.OUT_OF_RANGE, range_text(col.min, col.max)),
        why(too_big, Reason.OUT_OF_RANGE, f"{range_text(lo, hi)}, exactly"),
    )
    values = exact if is_int else num
    return pa.array(values, CONTRACT_TYPES[col.type], mask=~ok), reject


def date_bounds(col: Column, today: datetime.date) -> tuple[Any, Any]:
    """A date column's (min, max): the schema's, else for `format: date` 1900-01-01..today."""
    lo, hi = col.min, col.max
    if col.format == "date":
        lo = DEFAULT_DATE_MIN if lo is None else lo
        hi = today if hi is None else hi
    return lo, hi


def _parse_temporal(s: pa.Array, col: Column, cfg: CleanConfig) -> pa.Array:
    """Dates (date_formats) or timestamps (ISO 8601, offsets to UTC; else date_formats)."""
    strings = pd.Series(s, dtype="string")
    if col.type == "date":
        parsed = parse_dates(strings, cfg.date_formats)
        return pa.array(parsed.to_numpy(), pa.timestamp("s"), from_pandas=True)
    out = pd.Series(pd.NaT, index=strings.index, dtype="datetime64[us]")
    present = strings.notna()
    if present.any():
        iso = pd.to_datetime(strings[present], format="ISO8601", utc=True, errors="coerce")
        out[present] = iso.dt.tz_convert(None).astype("datetime64[us]")
    rest = out.isna() & present
    if rest.any():
        out[rest] = parse_dates(strings[rest], cfg.date_formats).astype("datetime64[us]")
    return pa.array(out.to_numpy(), pa.timestamp("us"), from_pandas=True)


def _coerce_temporal(name: str, col: Column, s: pa.Array, cfg: CleanConfig, why: _Reasons):
    """date / timestamp: unparseable values nulled (or rejected); impossible ones rejected."""
    nothing = no_reasons(len(s))
    reject, nulled = nothing, nothing
    stamps = _parse_temporal(s, col, cfg)
    bad = true_mask(pc.is_valid(s)) & ~true_mask(pc.is_valid(stamps))
    kind = Reason.UNPARSEABLE_DATE if col.type == "date" else Reason.UNPARSEABLE_TIMESTAMP
    note = why(bad, kind, value=False)
    if name in cfg.reject_bad_format_in:
        reject = note
    else:
        nulled = note
    lo, hi = date_bounds(col, datetime.datetime.now(datetime.UTC).date())
    days = pc.cast(pc.cast(stamps, pa.date32()), pa.int32())
    out_of_range = np.zeros(len(s), dtype=bool)
    epoch = datetime.date(1970, 1, 1)
    if lo is not None:
        out_of_range |= true_mask(pc.less(days, (lo - epoch).days))
    if hi is not None:
        out_of_range |= true_mask(pc.greater(days, (hi - epoch).days))
    reject = first_reason(reject, why(out_of_range, Reason.OUT_OF_RANGE, range_text(lo, hi)))
    typed = pc.cast(stamps, CONTRACT_TYPES[col.type])
    return typed, reject, nulled


def _coerce_bool(s: pa.Array, why: _Reasons):
    """bool: true/false, yes/no, y/n, t/f, 1/0 (any case); anything else rejected."""
    lower = lower_text(s)
    truth = map_values(
        lower, list(BOOL_SPELLINGS), ["1" if v else "0" for v in BOOL_SPELLINGS.values()], NULL_STR
    )
    bad = true_mask(pc.is_valid(s)) & ~true_mask(pc.is_valid(truth))
    reject = why(bad, Reason.NOT_A_BOOLEAN, "true/false, yes/no or 1/0")
    return pc.equal(truth, "1"), reject


def coerce_array(
    name: str, col: Column, s: pa.Array, cfg: CleanConfig
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Coerce one normalised column to its schema type.

    Returns (typed values, per-row rejection reason or null, per-row reason a value was nulled
    or null); reasons as `reasons.REASON_TYPE`.
    """
    nulled = no_reasons(len(s))
    if col.role == "label" and cfg.label_aliases:
        s = map_values(s, list(cfg.label_aliases), list(cfg.label_aliases.values()), s)
    # Identifier values never go into a reason: reasons are logged and summarised.
    why = _Reasons(name, s, col.role not in ("identifier", "key"))
    if col.type in ("string", "category"):
        typed, reject, nulled = _coerce_text(name, col, s, cfg, why)
    elif col.type in ("int", "float"):
        typed, reject = _coerce_number(col, s, why)
    elif col.type == "bool":
        typed, reject = _coerce_bool(s, why)
    else:
        typed, reject, nulled = _coerce_temporal(name, col, s, cfg, why)
    if col.required:
        missing = ~true_mask(pc.is_valid(typed))
        reject = first_reason(reject, why(missing, Reason.MISSING, value=False))
    return typed, reject, nulled
