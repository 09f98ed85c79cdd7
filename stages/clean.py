"""clean: typed, normalised, deduplicated records; each rejected row goes to quarantine, with why.

Rows in = rows out + rows quarantined + duplicates removed, checked before anything is written.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages.lib.dedup import DedupIndex, hash_strings
from stages.lib.errors import run_stage
from stages.lib.io import AtomicDir, file_hash, partition_names, write_parquet
from stages.lib.params import ParamsError, load_params, section
from stages.lib.partitions import (
    RESULT_FILE,
    CacheDir,
    PartitionTask,
    TaskResult,
    code_digest,
    digest,
    run_tasks,
)
from stages.lib.schema import BATCH, LINEAGE_COLUMNS, RECORD_ID, Column, Schema, load_schema
from stages.lib.summary import StageSummary

RAW_DIR = Path("data/raw")
OUT_DIR = Path("data/clean")
QUARANTINE_DIR = Path("data/quarantine")
REASON_KIND, REASON = "_reason_kind", "_reason"
EMAIL_RE = r"^[^@\s<>(),;:]+@[^@\s<>(),;:]+\.[A-Za-z]{2,}$"
DUPLICATE_KINDS = ("exact duplicate", "duplicate key")
# With on_existing_key: replace, an earlier row a later batch updated (counted with duplicates).
REPLACED = "replaced"


@dataclass(frozen=True)
class CleanConfig:
    """The `clean` section of params.yaml."""

    missing_values: tuple[str, ...] = ("", "?", "na", "null")
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    label_aliases: dict[str, str] = field(default_factory=dict)
    reject_bad_format_in: tuple[str, ...] = ()
    on_existing_key: Literal["quarantine", "replace"] = "quarantine"


# Python's `\s` (= str.isspace()) as an RE2 class: RE2's own `\s` is ASCII only, and these are
# the characters the old `str.replace(r"\s+", " ")` collapsed.
_PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WS_RUN = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE) + "]+"
# Rows the collapse changes: a whitespace character other than ' ', or two spaces in a row.
_WS_TODO = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in _PY_WHITESPACE if c != " ") + "]|  "
# Plain decimal numbers, parsed in C++; anything else goes through pandas.to_numeric (rare).
_SIMPLE_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_SIMPLE_INT = r"^[+-]?[0-9]{1,18}$"  # fits int64 exactly
_FORMAT_CHARS = r"\p{Cf}"  # Unicode format characters: U+200B, U+FEFF, U+200E, U+00AD...
_INT19 = r"^[+-]?[0-9]{19}$"  # int64 holds some 19-digit numbers: checked one by one
# After normalisation no value holds these (they are whitespace), so joining cells with them
# gives each row's content one unambiguous string to hash.
_CELL_SEP, _NULL_CELL = "\x1f", "\x1e"
_NULL_STR = pa.scalar(None, pa.string())
_CONTRACT_TYPES = {
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


@dataclass
class MappedPartition:
    """The per-partition result that needs no cross-partition state (the map step's output)."""

    raw: pa.Table  # the raw partition: lineage + source strings
    typed: pa.Table  # every row, typed to the clean data contract
    reason: pa.Array  # per-row rejection reason, null where the row is good
    record_hash: np.ndarray  # uint64 hash of record_id
    content_hash: np.ndarray  # uint64 hash of the normalised, typed, lower-cased content
    nulled: Counter  # nulled-value note -> count
    # batch -> [rows, rows without a label]: a batch with no label at all is warned about.
    labels_missing: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class CleanResult:
    """What cleaning one partition produced (Arrow tables; `.clean`/`.quarantine` as pandas)."""

    clean_table: pa.Table
    quarantine_table: pa.Table
    reasons: Counter
    nulled: Counter
    kept: np.ndarray  # per input row: kept as clean (what the dedup index gained)

    @property
    def clean(self) -> pd.DataFrame:
        """The clean rows as pandas (nullable Int64, string, date objects)."""
        return self.clean_table.to_pandas()

    @property
    def quarantine(self) -> pd.DataFrame:
        """The quarantined rows as pandas: raw columns + _reason, _reason_kind."""
        return self.quarantine_table.to_pandas()


def _string(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    return a if a.type == pa.string() else pc.cast(a, pa.string())


def _lower(a: pa.Array) -> pa.Array:
    if _ascii(a):
        return pc.ascii_lower(a)
    # utf8proc lower-cases like Python's str.lower except U+0130 (full mapping 'i' + U+0307).
    return pc.utf8_lower(pc.replace_substring(a, "\u0130", "i\u0307"))


def _map_values(a: pa.Array, keys: list[str], values: list[str], other: pa.Array) -> pa.Array:
    """values[i] where a == keys[i], else `other`."""
    idx = pc.index_in(a, value_set=pa.array(keys, pa.string()))
    return pc.if_else(pc.is_valid(idx), pc.take(pa.array(values, pa.string()), idx), other)


def _mask(a) -> np.ndarray:
    return np.asarray(pc.fill_null(a, False).to_numpy(zero_copy_only=False), dtype=bool)


def _ascii(a: pa.Array) -> bool:
    return bool(pc.all(pc.string_is_ascii(a)).as_py() is not False)


def normalise_array(a: pa.Array | pa.ChunkedArray, strip_format: bool = False) -> pa.Array:
    """NFKC-normalise, collapse runs of whitespace and trim (Arrow, vectorised).

    strip_format: also remove Unicode format characters (zero-width space, BOM, direction
    marks): invisible, they make 'Male\u200b' differ from 'Male'. Not for free text, where a
    zero-width joiner belongs to emoji and some scripts.
    """
    a = _string(a)
    if not _ascii(a):  # NFKC leaves ASCII as it is
        a = pc.utf8_normalize(a, "NFKC")
        if strip_format:
            a = pc.replace_substring_regex(a, _FORMAT_CHARS, "")
    # A regex replace costs ~10x a match: rewrite only the rows that have something to collapse.
    todo = _mask(pc.match_substring_regex(a, _WS_TODO))
    if todo.any():
        mask = pa.array(todo)
        fixed = pc.replace_substring_regex(a.filter(mask), _WS_RUN, " ")
        a = pc.replace_with_mask(a, mask, fixed)
    return pc.utf8_trim(a, " ")


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
    short = _mask(pc.less_equal(pc.utf8_length(a), max(len(m) for m in lowered)))
    if not short.any():
        return a
    missing = np.zeros(len(a), dtype=bool)
    hit = pc.is_in(_lower(a.filter(pa.array(short))), value_set=pa.array(lowered, pa.string()))
    missing[short] = _mask(hit)
    return pc.if_else(pa.array(missing), _NULL_STR, a)


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
    simple = _mask(pc.match_substring_regex(s, _SIMPLE_NUMBER))
    if simple.any():
        num[simple] = pc.cast(s.filter(pa.array(simple)), pa.float64()).to_numpy()
        parsed[simple] = True
    odd = _mask(pc.is_valid(s)) & ~simple
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
    is_int = _mask(pc.match_substring_regex(s, _SIMPLE_INT))
    if is_int.any():
        digits = pc.utf8_ltrim(s.filter(pa.array(is_int)), "+")  # Arrow's int parser: no '+'
        exact[is_int] = pc.cast(digits, pa.int64()).to_numpy()
    # 19 digits: int64 holds some of them; Python's int decides, for these few rows.
    is_19 = _mask(pc.match_substring_regex(s, _INT19))
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
    """Builds per-row reason arrays for one column's values (values hidden for identifiers)."""

    s: pa.Array
    shown: bool

    def __call__(self, mask: np.ndarray, text: str, suffix: str = "", value: bool = True):
        if not mask.any():
            return pa.nulls(len(self.s), pa.string())
        if value and self.shown:
            said = pc.binary_join_element_wise(f"{text}: ", self.s, suffix, "")
        else:
            said = pa.scalar(text + suffix)
        return pc.if_else(pa.array(mask), said, _NULL_STR)


def _coerce_text(name: str, col: Column, s: pa.Array, cfg: CleanConfig, why: _Reasons):
    """string / category: canonical spelling of known values; e-mail format check."""
    nothing = pa.nulls(len(s), pa.string())
    reject, nulled, typed = nothing, nothing, s
    if col.type == "category":
        lower = _lower(s)
        if col.values:
            # Unknown values stay as written: validate flags them, clean does not guess.
            canon = {v.lower(): v for v in col.values}
            typed = _map_values(lower, list(canon), list(canon.values()), s)
        else:
            typed = lower
    if col.format == "email":
        ok = _mask(pc.match_substring_regex(typed, EMAIL_RE))
        bad = _mask(pc.is_valid(typed)) & ~ok
        note = why(bad, f"malformed e-mail in {name}", value=False)
        if name in cfg.reject_bad_format_in:
            reject = note
        else:
            nulled = note
        typed = pc.if_else(pa.array(bad), _NULL_STR, typed)
    return typed, reject, nulled


def _coerce_number(name: str, col: Column, s: pa.Array, why: _Reasons):
    """int / float: parsed exactly or rejected with a reason naming the column and range."""
    n = len(s)
    is_int = col.type == "int"
    num, parsed, exact, too_big = _parse_numbers(s, is_int)
    present = _mask(pc.is_valid(s))
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
    reject = pc.coalesce(
        why(not_number, f"{name} is not a number"),
        why(not_finite, f"{name} is not a finite number", value=False),
        why(fractional, f"{name} is not an integer"),
        why(out_of_range, f"{name} out of range", f" (expected {range_text(col.min, col.max)})"),
        why(too_big, f"{name} out of range", f" (expected {range_text(lo, hi)}, exactly)"),
    )
    values = exact if is_int else num
    return pa.array(values, _CONTRACT_TYPES[col.type], mask=~ok), reject


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
    nothing = pa.nulls(len(s), pa.string())
    reject, nulled = nothing, nothing
    stamps = _parse_temporal(s, col, cfg)
    bad = _mask(pc.is_valid(s)) & ~_mask(pc.is_valid(stamps))
    kind = "date" if col.type == "date" else "timestamp"
    note = why(bad, f"unparseable {kind} in {name}", value=False)
    if name in cfg.reject_bad_format_in:
        reject = note
    else:
        nulled = note
    lo, hi = date_bounds(col, datetime.datetime.now(datetime.UTC).date())
    days = pc.cast(pc.cast(stamps, pa.date32()), pa.int32())
    out_of_range = np.zeros(len(s), dtype=bool)
    epoch = datetime.date(1970, 1, 1)
    if lo is not None:
        out_of_range |= _mask(pc.less(days, (lo - epoch).days))
    if hi is not None:
        out_of_range |= _mask(pc.greater(days, (hi - epoch).days))
    reject = pc.coalesce(
        reject, why(out_of_range, f"{name} out of range", f" (expected {range_text(lo, hi)})")
    )
    typed = pc.cast(stamps, _CONTRACT_TYPES[col.type])
    return typed, reject, nulled


def _coerce_bool(name: str, s: pa.Array, why: _Reasons):
    """bool: true/false, yes/no, y/n, t/f, 1/0 (any case); anything else rejected."""
    lower = _lower(s)
    truth = _map_values(
        lower, list(BOOL_SPELLINGS), ["1" if v else "0" for v in BOOL_SPELLINGS.values()], _NULL_STR
    )
    bad = _mask(pc.is_valid(s)) & ~_mask(pc.is_valid(truth))
    reject = why(bad, f"{name} is not a boolean", " (expected true/false, yes/no or 1/0)")
    return pc.equal(truth, "1"), reject


def coerce_array(
    name: str, col: Column, s: pa.Array, cfg: CleanConfig
) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Coerce one normalised column to its schema type.

    Returns (typed values, per-row rejection reason or null, per-row nulled-value note or null).
    """
    nulled = pa.nulls(len(s), pa.string())
    if col.role == "label" and cfg.label_aliases:
        s = _map_values(s, list(cfg.label_aliases), list(cfg.label_aliases.values()), s)
    # Identifier values never go into a reason: reasons are logged and summarised.
    why = _Reasons(s, col.role not in ("identifier", "key"))
    if col.type in ("string", "category"):
        typed, reject, nulled = _coerce_text(name, col, s, cfg, why)
    elif col.type in ("int", "float"):
        typed, reject = _coerce_number(name, col, s, why)
    elif col.type == "bool":
        typed, reject = _coerce_bool(name, s, why)
    else:
        typed, reject, nulled = _coerce_temporal(name, col, s, cfg, why)
    if col.required:
        missing = ~_mask(pc.is_valid(typed))
        reject = pc.coalesce(reject, why(missing, f"missing {name}", value=False))
    return typed, reject, nulled


def reason_kind(reason: pa.Array) -> pa.Array:
    """The value-free kind of a reason ('age out of range: 430 ...' -> 'age out of range')."""
    kind = pc.replace_substring_regex(reason, "(?s):.*", "", max_replacements=1)
    return pc.replace_substring_regex(kind, r"(?s) \(expected.*", "", max_replacements=1)


def content_hashes(typed: dict[str, pa.Array]) -> np.ndarray:
    """A 64-bit hash per row of the typed, lower-cased content (case/space variants match)."""
    cells = [pc.fill_null(_lower(_string(a)), _NULL_CELL) for a in typed.values()]
    return hash_strings(pc.binary_join_element_wise(*cells, _CELL_SEP))


def contract_schema(schema: Schema) -> pa.Schema:
    """The clean data contract as an Arrow schema (pandas metadata: Int64, string, dates)."""
    fields = [
        pa.field(RECORD_ID, pa.string()),
        pa.field("_batch", pa.string()),
        pa.field("_source_file", pa.string()),
        pa.field("_source_row", pa.int64()),
    ] + [pa.field(n, _CONTRACT_TYPES[c.type]) for n, c in schema.columns.items()]
    arrow = pa.schema(fields)
    # The pandas metadata makes readers get Int64/string back, as from the pandas-built files.
    sample = pa.Table.from_pylist([], schema=arrow).to_pandas(types_mapper=_contract_dtype)
    sample["_source_row"] = sample["_source_row"].astype("int64[pyarrow]")
    for n, c in schema.columns.items():
        if c.type == "date":
            sample[n] = pd.Series([datetime.date(2000, 1, 1)], dtype=object).iloc[:0]
    meta = pa.Table.from_pandas(sample, schema=arrow, preserve_index=False).schema.metadata
    return arrow.with_metadata(meta)


def _contract_dtype(t: pa.DataType):
    if t == pa.string():
        return pd.StringDtype()
    if t == pa.int64():
        return pd.Int64Dtype()
    return None


def map_partition(raw: pa.Table, schema: Schema, cfg: CleanConfig) -> MappedPartition:
    """Normalise, type and give reasons for one raw partition: no cross-partition state.

    Pure and picklable in and out, so partitions can be mapped in worker processes.
    """
    typed: dict[str, pa.Array] = {}
    reasons: list[pa.Array] = []
    nulled: Counter = Counter()
    for name, col in schema.columns.items():
        # Free text and identifiers keep their format characters; values compared to a set or
        # parsed (labels, categories, numbers, dates) lose them.
        strip = col.type != "string" or col.role == "label"
        s = to_missing(normalise_array(raw.column(name), strip), cfg.missing_values)
        values, reject, notes = coerce_array(name, col, s, cfg)
        typed[name] = values
        reasons.append(reject)
        for note in pc.drop_null(notes).unique().to_pylist():
            nulled[note] += pc.sum(pc.equal(notes, note)).as_py()
    n = raw.num_rows
    reason = pc.coalesce(*reasons) if reasons else pa.nulls(n, pa.string())
    lineage = {c: raw.column(c).combine_chunks() for c in LINEAGE_COLUMNS}
    cs = contract_schema(schema)
    table = pa.table(
        [pc.cast(lineage[c], cs.field(c).type) for c in LINEAGE_COLUMNS] + list(typed.values()),
        schema=cs,
    )
    return MappedPartition(
        raw=raw,
        typed=table,
        reason=reason,
        record_hash=hash_strings(raw.column(RECORD_ID)),
        content_hash=content_hashes(typed),
        nulled=nulled,
        labels_missing=labels_missing(raw.column(BATCH), typed[schema.label]),
    )


def labels_missing(batch: pa.ChunkedArray | pa.Array, label: pa.Array) -> dict[str, list[int]]:
    """Per batch: [rows, rows whose label is missing]."""
    batch = _string(batch)
    rows = pc.value_counts(batch)
    missing = pc.value_counts(batch.filter(pc.is_null(label)))
    out = {str(v["values"]): [int(v["counts"]), 0] for v in rows.to_pylist()}
    for v in missing.to_pylist():
        out[str(v["values"])][1] = int(v["counts"])
    return out


def unlabelled_batches(counts: dict[str, list[int]]) -> list[str]:
    """Batches none of whose rows has a label."""
    return sorted(b for b, (rows, missing) in counts.items() if rows and rows == missing)


def dedup_partition(
    mapped: MappedPartition, index: DedupIndex, replace: bool = False
) -> CleanResult:
    """Split a mapped partition into clean and quarantined rows against the dedup index.

    Sequential by nature: a row is a duplicate when its record_id was kept earlier in this
    partition or in an earlier one. Adds the rows it keeps to `index`. replace (clean's
    on_existing_key: replace): a row whose record_id was kept in an earlier partition with other
    content is kept, as an update (the caller drops the earlier row, see `superseded`).
    """
    rid, content = mapped.record_hash, mapped.content_hash
    n = len(rid)
    good = ~_mask(pc.is_valid(mapped.reason))
    # Within the partition, a record_id's first row (good or not) makes later ones duplicates.
    _, first, inverse = np.unique(rid, return_index=True, return_inverse=True)
    first_row = first[inverse.reshape(-1)]
    repeated = first_row != np.arange(n)
    found, seen_content = index.lookup(rid)
    earlier = good & found
    if replace:
        earlier &= content == seen_content
    within = good & repeated & ~earlier
    dup = earlier | within
    kept = good & ~dup
    # Same content as the kept row of that record_id: exact duplicate; else duplicate key.
    reference = np.where(earlier, seen_content, content[first_row])
    comparable = earlier | (within & kept[first_row])
    same = comparable & (content == reference)
    index.upsert(rid[kept], content[kept])

    q = np.flatnonzero(~kept)
    take = pa.array(q)
    q_reason = mapped.reason.take(take)
    q_kind = reason_kind(q_reason)
    q_dup = pa.array(dup[q])
    dup_kind = pa.array(np.where(same[q], DUPLICATE_KINDS[0], DUPLICATE_KINDS[1]), pa.string())
    q_rid = _string(mapped.raw.column(RECORD_ID).take(take))
    q_reason = pc.if_else(q_dup, pc.binary_join_element_wise(dup_kind, q_rid, " of "), q_reason)
    q_kind = pc.if_else(q_dup, dup_kind, q_kind)
    # The source's own columns only: a column outside the schema never travels on.
    raw = mapped.raw.select([c for c in mapped.typed.column_names if c in mapped.raw.column_names])
    quarantine = raw.take(take).append_column(REASON, q_reason)
    quarantine = quarantine.append_column(REASON_KIND, q_kind)
    return CleanResult(
        clean_table=mapped.typed.filter(pa.array(kept)),
        quarantine_table=quarantine,
        reasons=Counter(q_kind.to_pylist()),
        nulled=Counter(mapped.nulled),
        kept=kept,
    )


def clean_partition(
    raw: pd.DataFrame | pa.Table,
    schema: Schema,
    cfg: CleanConfig,
    seen: DedupIndex | dict | None = None,
) -> CleanResult:
    """Clean one raw partition: `map_partition` then `dedup_partition` against `seen`.

    `seen` is the cross-partition deduplication index; this function adds the rows it keeps.
    An empty dict (the old signature) stands for a fresh index.
    """
    if not isinstance(seen, DedupIndex):
        if seen:
            raise TypeError("clean_partition: seen must be a DedupIndex")
        seen = DedupIndex()
    if isinstance(raw, pd.DataFrame):
        raw = pa.Table.from_pandas(raw, preserve_index=False)
    return dedup_partition(map_partition(raw, schema, cfg), seen)


def to_arrow(df: pd.DataFrame, schema: Schema) -> pa.Table:
    """A clean frame as an Arrow table with the contract's types."""
    return pa.Table.from_pandas(df, schema=contract_schema(schema), preserve_index=False)


def quarantine_arrow(table: pa.Table) -> pa.Table:
    """Quarantined rows as written to data/quarantine: every column but _source_row a string."""
    q = table.to_pandas(types_mapper=pd.ArrowDtype)
    q = q.astype({c: "string" for c in q.columns if c != "_source_row"})
    return pa.Table.from_pandas(q, preserve_index=False)


MAPPED_EXTRA = (REASON, "_record_hash", "_content_hash")


def map_file(path: Path, schema: Schema, cfg: CleanConfig, out_dir: Path) -> dict[str, Any]:
    """Task: map one raw partition file; typed rows, reasons, hashes to out_dir/mapped.parquet."""
    mapped = map_partition(pq.read_table(path), schema, cfg)
    table = mapped.typed.append_column(REASON, mapped.reason)
    table = table.append_column("_record_hash", pa.array(mapped.record_hash, pa.uint64()))
    table = table.append_column("_content_hash", pa.array(mapped.content_hash, pa.uint64()))
    write_parquet(table, out_dir / "mapped.parquet")
    return {"nulled": dict(mapped.nulled), "labels_missing": mapped.labels_missing}


def load_mapped(raw_file: Path, done: TaskResult) -> MappedPartition:
    """A map task's stored output, with its raw partition, as the dedup step's input."""
    table = pq.read_table(done.file("mapped.parquet"))
    return MappedPartition(
        raw=pq.read_table(raw_file),
        typed=table.drop_columns(list(MAPPED_EXTRA)),
        reason=table.column(REASON).combine_chunks(),
        record_hash=table.column("_record_hash").to_numpy(),
        content_hash=table.column("_content_hash").to_numpy(),
        nulled=Counter(done.result["nulled"]),
    )


def dedup_stored(
    mapped: MappedPartition, index: DedupIndex, out_dir: Path, replace: bool = False
) -> dict[str, Any]:
    """Dedup one mapped partition; clean, quarantine and kept-row hashes go to out_dir."""
    result = dedup_partition(mapped, index, replace)
    write_parquet(result.clean_table, out_dir / "clean.parquet")
    write_parquet(quarantine_arrow(result.quarantine_table), out_dir / "quarantine.parquet")
    keep = result.kept
    np.savez(
        out_dir / "kept.npz", record=mapped.record_hash[keep], content=mapped.content_hash[keep]
    )
    return {
        "rows_in": mapped.raw.num_rows,
        "rows_out": result.clean_table.num_rows,
        "reasons": dict(result.reasons),
        "nulled": dict(result.nulled),
    }


def superseded(kept: list[np.ndarray]) -> list[np.ndarray]:
    """Per partition, a mask of its kept rows whose record_id a later partition kept again
    (with on_existing_key: replace, the later row is the record's current version)."""
    masks: list[np.ndarray] = []
    later = np.empty(0, np.uint64)
    for record in reversed(kept):
        masks.append(np.isin(record, later))
        later = np.union1d(later, record)
    return masks[::-1]


def replaced_rows(clean: pa.Table, mask: np.ndarray, like: pa.Table) -> pa.Table:
    """Clean rows replaced by a later version, as quarantine rows shaped like `like`."""
    rows = clean.filter(pa.array(mask))
    rid = _string(rows.column(RECORD_ID).combine_chunks())
    columns = []
    for f in like.schema:
        if f.name == REASON:
            columns.append(pc.binary_join_element_wise("replaced by a later row of ", rid, ""))
        elif f.name == REASON_KIND:
            columns.append(pa.array([REPLACED] * rows.num_rows, pa.string()))
        else:
            columns.append(pc.cast(rows.column(f.name), f.type))
    return pa.Table.from_arrays(columns, schema=like.schema)


def link_outputs(
    out: AtomicDir, quarantine: AtomicDir, entries: list[tuple[str, Path]], replace: bool
) -> int:
    """Put each partition's clean and quarantine files in place; with replace, rows a later
    partition updated move from clean to quarantine. Returns the number of rows replaced."""
    masks: list[np.ndarray | None] = [None] * len(entries)
    if replace:
        kept = []
        for _, entry in entries:
            with np.load(entry / "kept.npz") as z:
                kept.append(z["record"])
        masks = list(superseded(kept))
    replaced = 0
    for (name, entry), mask in zip(entries, masks, strict=True):
        if mask is None or not mask.any():
            out.link(name, entry / "clean.parquet")
            quarantine.link(name, entry / "quarantine.parquet")
            continue
        clean = pq.read_table(entry / "clean.parquet")
        q = pq.read_table(entry / "quarantine.parquet")
        out.write_table(name, clean.filter(pa.array(~mask)))
        quarantine.write_table(name, pa.concat_tables([q, replaced_rows(clean, mask, q)]))
        replaced += int(mask.sum())
    return replaced


def tally(summary: StageSummary, result: dict[str, Any]) -> None:
    """Add one partition's dedup result to the stage's row accounting."""
    summary.rows_in += result["rows_in"]
    summary.rows_out += result["rows_out"]
    for kind, n in result["reasons"].items():
        if kind in DUPLICATE_KINDS:
            summary.duplicates += n
            summary.extra.setdefault("duplicates_by_kind", Counter())[kind] += n
        else:
            summary.quarantined[kind] += n


def warn_unlabelled(summary: StageSummary, counts: dict[str, list[int]], label: str) -> None:
    """A loud warning (and metrics) for each batch none of whose rows has a label."""
    batches = unlabelled_batches(counts)
    summary.extra["batches_without_labels"] = batches
    for batch in batches:
        print(
            f"clean: WARNING: batch {batch}: all {counts[batch][0]:,} rows have no '{label}' "
            "(the label) and were quarantined; was the label column left empty in the export?",
            file=sys.stderr,
        )


def replaces(cfg: CleanConfig, schema: Schema) -> bool:
    """Whether a later row with a kept key replaces it; refuses replace without a key column."""
    if cfg.on_existing_key == "replace" and not schema.with_role("key"):
        raise ParamsError(
            "clean.on_existing_key: replace needs a key column (role: key) to tell an update "
            "from a new record; without one a row's identity is its content. Set it to "
            "quarantine or give the schema a key column."
        )
    return cfg.on_existing_key == "replace"


def main() -> None:
    """Clean every raw partition into data/clean and data/quarantine.

    The map step runs per partition as tasks (worker processes, reused when the raw partition,
    params and code are unchanged). Deduplication runs in order against a compact index; its
    result for a partition is reused when that partition and every one before it are unchanged
    (a chained key), so a new batch after the earlier ones costs only its own rows.
    """
    params = load_params()
    cfg = section(CleanConfig, "clean", params)
    schema = load_schema(params)
    replace = replaces(cfg, schema)
    summary = StageSummary("clean")
    code = code_digest(__file__)
    files = dict(partition_names(RAW_DIR))
    tasks = [
        PartitionTask(
            name,
            digest(file_hash(file), params["schema"], params["clean"], code),
            map_file,
            (file, schema, cfg),
        )
        for name, file in files.items()
    ]
    index = DedupIndex()
    nulled: Counter = Counter()
    by_batch: dict[str, list[int]] = {}
    dedup_cache, chain, chain_keys = CacheDir("clean-dedup"), digest("dedup", code), []
    map_cache = CacheDir("clean-map")
    entries: list[tuple[str, Path]] = []
    reused = 0
    with AtomicDir(OUT_DIR) as out, AtomicDir(QUARANTINE_DIR) as quarantine:
        for done in run_tasks("clean", tasks, map_cache):
            name = done.task.name
            chain = digest(chain, done.task.key)
            chain_keys.append(chain)
            entry = dedup_cache.get(chain)
            if entry is None:
                staged = dedup_cache.staging(chain)
                mapped = load_mapped(files[name], done)
                result = dedup_stored(mapped, index, staged, replace)
                entry = dedup_cache.put(chain, staged, result)
            else:
                reused += 1
                with np.load(entry / "kept.npz") as kept:
                    index.upsert(kept["record"], kept["content"])
            entries.append((name, entry))
            tally(summary, json.loads((entry / RESULT_FILE).read_text()))
            nulled.update(done.result["nulled"])
            for batch, (rows, missing) in done.result["labels_missing"].items():
                counts = by_batch.setdefault(batch, [0, 0])
                counts[0], counts[1] = counts[0] + rows, counts[1] + missing
        replaced = link_outputs(out, quarantine, entries, replace)
        summary.rows_out -= replaced
        summary.duplicates += replaced
        if replace:
            summary.extra.setdefault("duplicates_by_kind", Counter())[REPLACED] += replaced
        summary.extra["rows_replaced"] = replaced
        summary.extra["values_nulled"] = dict(sorted(nulled.items()))
        warn_unlabelled(summary, by_batch, schema.label)
        summary.check()  # before the outputs are committed: a leak of rows must not land
    map_cache.keep_only(t.key for t in tasks)
    dedup_cache.keep_only(chain_keys)
    print(f"clean: deduplication reused for {reused} of {len(tasks)} partition(s)", file=sys.stderr)
    data = summary.write()
    print(
        f"clean: {data['rows_in']:,} rows in -> {data['rows_out']:,} clean, "
        f"{data['rows_quarantined']:,} quarantined, {data['duplicates']:,} duplicates removed"
        + (f" ({replaced:,} replaced by a later version)" if replaced else "")
    )


if __name__ == "__main__":
    run_stage(main)
