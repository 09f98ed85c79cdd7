"""Cleaning one raw partition, as pure functions of Arrow tables: the map step (normalise, type,
reasons, hashes), the dedup step against the cross-partition index, and the row rules of
on_existing_key: replace."""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.coerce import CONTRACT_TYPES, coerce_array
from stages.lib.config import CleanConfig
from stages.lib.dedup import DedupIndex, hash_strings
from stages.lib.normalise import as_string, lower_text, normalise_array, to_missing, true_mask
from stages.lib.reasons import (
    Reason,
    first_reason,
    kind_text,
    no_reasons,
    reason_kinds,
    reason_messages,
    reasons,
)
from stages.lib.schema import BATCH, LINEAGE_COLUMNS, REASON, REASON_KIND, RECORD_ID, Schema

# The kinds counted as duplicates, not as quarantined (as written to _reason_kind and metrics).
DUPLICATE_KINDS = (kind_text(Reason.EXACT_DUPLICATE), kind_text(Reason.DUPLICATE_KEY))
# With on_existing_key: replace, an earlier row a later batch updated (counted with duplicates).
REPLACED = kind_text(Reason.REPLACED)
# After normalisation no value holds these (they are whitespace), so joining cells with them
# gives each row's content one unambiguous string to hash.
_CELL_SEP, _NULL_CELL = "\x1f", "\x1e"


@dataclass
class MappedPartition:
    """The per-partition result that needs no cross-partition state (the map step's output)."""

    raw: pa.Table  # the raw partition: lineage + source strings
    typed: pa.Table  # every row, typed to the clean data contract
    reason: pa.Array  # per-row rejection reason (reasons.REASON_TYPE), null where the row is good
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


def content_hashes(typed: dict[str, pa.Array]) -> np.ndarray:
    """A 64-bit hash per row of the typed, lower-cased content (case/space variants match)."""
    cells = [pc.fill_null(lower_text(as_string(a)), _NULL_CELL) for a in typed.values()]
    return hash_strings(pc.binary_join_element_wise(*cells, _CELL_SEP))


def contract_schema(schema: Schema) -> pa.Schema:
    """The clean data contract as an Arrow schema (pandas metadata: Int64, string, dates)."""
    fields = [
        pa.field(RECORD_ID, pa.string()),
        pa.field("_batch", pa.string()),
        pa.field("_source_file", pa.string()),
        pa.field("_source_row", pa.int64()),
    ] + [pa.field(n, CONTRACT_TYPES[c.type]) for n, c in schema.columns.items()]
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
    rejects: list[pa.Array] = []
    nulled: Counter = Counter()
    for name, col in schema.columns.items():
        # Free text and identifiers keep their format characters; values compared to a set or
        # parsed (labels, categories, numbers, dates) lose them.
        strip = col.type != "string" or col.role == "label"
        s = to_missing(normalise_array(raw.column(name), strip), cfg.missing_values)
        values, reject, notes = coerce_array(name, col, s, cfg)
        typed[name] = values
        rejects.append(reject)
        if notes.null_count < len(notes):
            said = reason_messages(notes)
            for note in pc.drop_null(said).unique().to_pylist():
                nulled[note] += pc.sum(pc.equal(said, note)).as_py()
    n = raw.num_rows
    reason = first_reason(*rejects) if rejects else no_reasons(n)
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
    batch = as_string(batch)
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
    good = ~true_mask(pc.is_valid(mapped.reason))
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
    q_rid = as_string(mapped.raw.column(RECORD_ID).take(take))
    # A duplicate was a good row: it has no rejection reason of its own to take precedence.
    q_reason = first_reason(
        mapped.reason.take(take),
        reasons(dup[q] & same[q], Reason.EXACT_DUPLICATE, value=q_rid),
        reasons(dup[q] & ~same[q], Reason.DUPLICATE_KEY, value=q_rid),
    )
    q_kind = reason_kinds(q_reason)
    # The source's own columns only: a column outside the schema never travels on.
    raw = mapped.raw.select([c for c in mapped.typed.column_names if c in mapped.raw.column_names])
    quarantine = raw.take(take).append_column(REASON, reason_messages(q_reason, q_kind))
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
    rid = as_string(rows.column(RECORD_ID).combine_chunks())
    why = reasons(np.ones(rows.num_rows, dtype=bool), Reason.REPLACED, value=rid)
    kinds = reason_kinds(why)
    columns = []
    for f in like.schema:
        if f.name == REASON:
            columns.append(reason_messages(why, kinds))
        elif f.name == REASON_KIND:
            columns.append(kinds)
        else:
            columns.append(pc.cast(rows.column(f.name), f.type))
    return pa.Table.from_arrays(columns, schema=like.schema)
