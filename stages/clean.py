"""clean: typed, normalised, deduplicated records; each rejected row goes to quarantine, with why.

Rows in = rows out + rows quarantined + duplicates removed, checked before anything is written.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.lib.errors import run_stage
from stages.lib.io import AtomicDir, iter_partitions
from stages.lib.params import load_params, section
from stages.lib.schema import LINEAGE_COLUMNS, RECORD_ID, Column, Schema, load_schema
from stages.lib.summary import StageSummary

RAW_DIR = Path("data/raw")
OUT_DIR = Path("data/clean")
QUARANTINE_DIR = Path("data/quarantine")
REASON_KIND, REASON = "_reason_kind", "_reason"
EMAIL_RE = r"^[^@\s<>(),;:]+@[^@\s<>(),;:]+\.[A-Za-z]{2,}$"
DUPLICATE_KINDS = ("exact duplicate", "duplicate key")


@dataclass(frozen=True)
class CleanConfig:
    """The `clean` section of params.yaml."""

    missing_values: tuple[str, ...] = ("", "?", "na", "null")
    date_formats: tuple[str, ...] = ("%Y-%m-%d",)
    label_aliases: dict[str, str] = field(default_factory=dict)
    reject_bad_format_in: tuple[str, ...] = ()


@dataclass
class CleanResult:
    """What cleaning one partition produced."""

    clean: pd.DataFrame
    quarantine: pd.DataFrame
    reasons: Counter
    nulled: Counter


def normalise_text(s: pd.Series) -> pd.Series:
    """NFKC-normalise, collapse runs of whitespace and trim."""
    s = s.astype("string")
    return s.str.normalize("NFKC").str.replace(r"\s+", " ", regex=True).str.strip()


def to_missing(s: pd.Series, spellings: tuple[str, ...]) -> pd.Series:
    """Replace the configured spellings of a missing value (case-insensitive) by null."""
    missing = s.str.lower().isin([m.lower() for m in spellings])
    return s.mask(missing)


def parse_dates(s: pd.Series, formats: tuple[str, ...]) -> pd.Series:
    """Parse strings with each format in turn; what no format parses becomes NaT."""
    out = pd.Series(pd.NaT, index=s.index, dtype="datetime64[s]")
    for fmt in formats:
        todo = out.isna() & s.notna()
        if not todo.any():
            break
        out[todo] = pd.to_datetime(s[todo], format=fmt, errors="coerce")
    return out


def _canonical_case(s: pd.Series, values: tuple[str, ...] | None) -> pd.Series:
    if values:
        canon = {v.lower(): v for v in values}
        lower = s.str.lower()
        # Unknown values stay as written: validate flags them, clean does not guess.
        return lower.map(canon).where(lower.isin(canon), s).astype("string")
    return s.str.lower()


def coerce_column(
    name: str, col: Column, s: pd.Series, cfg: CleanConfig
) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Coerce one normalised column to its schema type.

    Returns (typed values, per-row rejection reason or <NA>, per-row nulled-value note or <NA>).
    """
    reject = pd.Series(pd.NA, index=s.index, dtype="string")
    nulled = pd.Series(pd.NA, index=s.index, dtype="string")
    # Identifier values never go into a reason: reasons are logged and summarised.
    shown = (lambda v: "") if col.role in ("identifier", "key") else (lambda v: f": {v}")

    if col.role == "label" and cfg.label_aliases:
        s = s.replace(dict(cfg.label_aliases))
    if col.type in ("string", "category"):
        typed = _canonical_case(s, col.values) if col.type == "category" else s
        if col.format == "email":
            bad = typed.notna() & ~typed.str.match(EMAIL_RE).fillna(False)
            target = reject if name in cfg.reject_bad_format_in else nulled
            target[bad] = f"malformed e-mail in {name}"
            typed = typed.mask(bad)
    elif col.type in ("int", "float"):
        num = pd.to_numeric(s, errors="coerce")
        not_number = s.notna() & num.isna()
        reject[not_number] = f"{name} is not a number" + s[not_number].map(shown)
        not_finite = num.notna() & ~np.isfinite(num.astype("float64"))
        reject[not_finite & reject.isna()] = f"{name} is not a finite number"
        num = num.mask(not_finite)
        if col.type == "int":
            fractional = num.notna() & (num != np.floor(num))
            reject[fractional & reject.isna()] = f"{name} is not an integer" + s[
                fractional & reject.isna()
            ].map(shown)
            num = num.mask(fractional)
        out_of_range = pd.Series(False, index=s.index)
        if col.min is not None:
            out_of_range |= num < col.min
        if col.max is not None:
            out_of_range |= num > col.max
        out_of_range &= reject.isna()
        lo, hi = ("-inf" if b is None else f"{b:g}" for b in (col.min, col.max))
        bounds = f"(expected {lo}..{hi})"
        reject[out_of_range] = f"{name} out of range" + s[out_of_range].map(shown) + f" {bounds}"
        typed = num.astype("Int64") if col.type == "int" else num.astype("float64")
    else:  # date
        parsed = parse_dates(s, cfg.date_formats)
        bad = s.notna() & parsed.isna()
        target = reject if name in cfg.reject_bad_format_in else nulled
        target[bad] = f"unparseable date in {name}"
        typed = parsed.dt.date
    if col.required:
        missing = typed.isna() & reject.isna()
        reject[missing] = f"missing {name}"
    return typed, reject, nulled


def reason_kind(reason: pd.Series) -> pd.Series:
    """The value-free kind of a reason ('age out of range: 430 ...' -> 'age out of range')."""
    return reason.str.split(":", n=1).str[0].str.replace(r" \(expected.*$", "", regex=True)


def clean_partition(
    raw: pd.DataFrame, schema: Schema, cfg: CleanConfig, seen: dict[str, int]
) -> CleanResult:
    """Clean one raw partition. `seen` maps record_id -> content hash of rows kept so far.

    `seen` is the cross-partition deduplication index; this function adds the rows it keeps.
    """
    cols = list(schema.columns)
    norm = pd.DataFrame({c: to_missing(normalise_text(raw[c]), cfg.missing_values) for c in cols})
    typed: dict[str, pd.Series] = {}
    reasons = pd.Series(pd.NA, index=raw.index, dtype="string")
    nulled_notes: list[pd.Series] = []
    for name, col in schema.columns.items():
        values, reject, nulled = coerce_column(name, col, norm[name], cfg)
        typed[name] = values
        reasons = reasons.fillna(reject)
        nulled_notes.append(nulled[nulled.notna()])

    # Exact duplicates compare normalised content, so case and spacing variants of a category match.
    content = pd.util.hash_pandas_object(
        pd.DataFrame({c: (typed[c].astype("string").str.lower()) for c in cols}), index=False
    )
    rid = raw[RECORD_ID]
    good = reasons.isna()
    earlier = good & rid.isin(seen.keys())
    within = good & rid.duplicated(keep="first") & ~earlier
    dup = earlier | within
    first_hash = pd.Series(
        {**seen, **dict(zip(rid[good & ~dup], content[good & ~dup], strict=True))}
    )
    same = content[dup].to_numpy() == first_hash.reindex(rid[dup]).to_numpy()
    kinds = reason_kind(reasons)
    kinds[dup] = np.where(same, DUPLICATE_KINDS[0], DUPLICATE_KINDS[1])
    reasons[dup] = kinds[dup] + " of " + rid[dup]
    kept = reasons.isna()
    seen.update(zip(rid[kept], content[kept], strict=True))

    clean = pd.concat(
        [raw.loc[kept, list(LINEAGE_COLUMNS)], pd.DataFrame(typed).loc[kept]], axis=1
    ).reset_index(drop=True)
    quarantine = raw.loc[~kept].copy()
    quarantine[REASON] = reasons[~kept]
    quarantine[REASON_KIND] = kinds[~kept]
    nulled = pd.concat(nulled_notes) if nulled_notes else pd.Series(dtype="string")
    return CleanResult(
        clean=clean,
        quarantine=quarantine.reset_index(drop=True),
        reasons=Counter(quarantine[REASON_KIND].tolist()),
        nulled=Counter(nulled.tolist()),
    )


def to_arrow(df: pd.DataFrame, schema: Schema) -> pa.Table:
    """A clean frame as an Arrow table with the contract's types."""
    types = {
        "string": pa.string(),
        "category": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "date": pa.date32(),
    }
    fields = [
        pa.field(RECORD_ID, pa.string()),
        pa.field("_batch", pa.string()),
        pa.field("_source_file", pa.string()),
        pa.field("_source_row", pa.int64()),
    ] + [pa.field(n, types[c.type]) for n, c in schema.columns.items()]
    return pa.Table.from_pandas(df, schema=pa.schema(fields), preserve_index=False)


def main() -> None:
    """Clean every raw partition into data/clean and data/quarantine."""
    params = load_params()
    cfg = section(CleanConfig, "clean", params)
    schema = load_schema(params)
    summary = StageSummary("clean")
    seen: dict[str, int] = {}
    nulled: Counter = Counter()

    with AtomicDir(OUT_DIR) as out, AtomicDir(QUARANTINE_DIR) as quarantine:
        for name, table in iter_partitions(RAW_DIR):
            raw = table.to_pandas(types_mapper=pd.ArrowDtype)
            raw = raw.astype({c: "string" for c in raw.columns if c != "_source_row"})
            result = clean_partition(raw, schema, cfg, seen)
            out.write_table(name, to_arrow(result.clean, schema))
            q = result.quarantine.astype(
                {c: "string" for c in result.quarantine.columns if c != "_source_row"}
            )
            quarantine.write_table(name, pa.Table.from_pandas(q, preserve_index=False))
            summary.rows_in += len(raw)
            summary.rows_out += len(result.clean)
            for kind, n in result.reasons.items():
                if kind in DUPLICATE_KINDS:
                    summary.duplicates += n
                    summary.extra.setdefault("duplicates_by_kind", Counter())[kind] += n
                else:
                    summary.quarantined[kind] += n
            nulled.update(result.nulled)
        summary.extra["values_nulled"] = dict(sorted(nulled.items()))
        summary.check()  # before the outputs are committed: a leak of rows must not land
    data = summary.write()
    print(
        f"clean: {data['rows_in']:,} rows in -> {data['rows_out']:,} clean, "
        f"{data['rows_quarantined']:,} quarantined, {data['duplicates']:,} duplicates removed"
    )


if __name__ == "__main__":
    run_stage(main)
