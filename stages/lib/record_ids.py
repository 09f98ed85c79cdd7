"""record_id, a row's stable keyed lineage id, and the other lineage columns ingest adds.

With a key column: the keyed HMAC of the key. Without one: of the row's content and its
occurrence number (identical rows numbered 1, 2, ... in file and row order over the dataset).
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.keys import pseudonymize
from stages.lib.schema import BATCH, RECORD_ID, SOURCE_FILE, SOURCE_ROW


def add_lineage(
    table: pa.Table,
    key: bytes,
    key_column: str | None,
    batch: str,
    source: str,
    first_row: int,
    seen: Occurrences | None = None,
) -> pa.Table:
    """Prepend record_id, batch, source file and source row (1-based data row) to a table.

    record_id is the keyed pseudonym of the key column; without one (`key_column` None), of the
    row's content and its occurrence number (`seen` counts the rows before this table).
    """
    n = table.num_rows
    rows = range(first_row, first_row + n)
    if key_column is None:
        seen = seen if seen is not None else Occurrences()
        record_ids = content_record_ids(key, content_digests(table, key), seen)
    else:
        keys = [
            None if k is None or not k.strip() else unicodedata.normalize("NFKC", k).strip()
            for k in table.column(key_column).to_pylist()
        ]
        by_key = pseudonymize(key, keys, "record")
        # A row without a source key still needs a stable id: its place in its batch.
        by_row = pseudonymize(
            key,
            (f"{batch}:{r}" if k is None else None for k, r in zip(keys, rows, strict=True)),
            "row",
        )
        record_ids = [a if a is not None else b for a, b in zip(by_key, by_row, strict=True)]
    lineage = pa.table(
        {
            RECORD_ID: pa.array(record_ids, pa.string()),
            BATCH: pa.array([batch] * n, pa.string()),
            SOURCE_FILE: pa.array([source] * n, pa.string()),
            SOURCE_ROW: pa.array(rows, pa.int64()),
        }
    )
    for name in table.column_names:
        lineage = lineage.append_column(name, table.column(name))
    return lineage


def content_digests(table: pa.Table, key: bytes) -> np.ndarray:
    """A keyed 64-bit digest of each row's content: every column's raw value, in column order.

    Each value is written as `<length>:<value>` (a null as `~`), so no two different rows
    share an encoding whatever their values hold.
    """
    if table.num_rows == 0:
        return np.empty(0, np.uint64)
    parts = []
    for name in table.column_names:
        col = table.column(name).cast(pa.string())
        length = pc.cast(pc.utf8_length(col), pa.string())
        parts.append(pc.fill_null(pc.binary_join_element_wise(length, col, ":"), "~"))
    canonical = pc.binary_join_element_wise(*parts, "").to_pylist()
    hexes = pseudonymize(key, canonical, "content")
    return np.array([int(h[:16], 16) for h in hexes], dtype=np.uint64)


class Occurrences:
    """How many rows of each content digest were seen so far (sorted arrays, 16 bytes a row)."""

    def __init__(self) -> None:
        self.digests = np.empty(0, np.uint64)
        self.counts = np.empty(0, np.int64)
        self.history: list[np.ndarray] = []  # every digest numbered, in order

    def number(self, digests: np.ndarray) -> np.ndarray:
        """The 1-based occurrence number of each digest, counting earlier calls; records them."""
        self.history.append(digests)
        if len(digests) == 0:
            return np.empty(0, np.int64)
        base = np.zeros(len(digests), np.int64)
        if len(self.digests):
            at = np.minimum(np.searchsorted(self.digests, digests), len(self.digests) - 1)
            hit = self.digests[at] == digests
            base[hit] = self.counts[at[hit]]
        order = np.argsort(digests, kind="stable")
        ordered = digests[order]
        first = np.r_[True, ordered[1:] != ordered[:-1]]
        group_start = np.maximum.accumulate(np.where(first, np.arange(len(ordered)), 0))
        within = np.empty(len(digests), np.int64)
        within[order] = np.arange(len(ordered)) - group_start
        merged, inverse = np.unique(
            np.concatenate([self.digests, ordered[first]]), return_inverse=True
        )
        _, counts = np.unique(ordered, return_counts=True)
        self.counts = np.bincount(
            inverse, weights=np.concatenate([self.counts, counts]), minlength=len(merged)
        ).astype(np.int64)
        self.digests = merged
        return base + within + 1


def content_record_ids(key: bytes, digests: np.ndarray, seen: Occurrences) -> list[str]:
    """record_ids of keyless rows: the keyed pseudonym of content digest and occurrence number,
    so identical rows get distinct, stable ids (1st, 2nd, ... in file and row order)."""
    return occurrence_ids(key, digests, seen.number(digests))


def occurrence_ids(key: bytes, digests: np.ndarray, numbers: np.ndarray) -> list[str]:
    """The keyed pseudonym of each (content digest, occurrence number)."""
    pairs = zip(digests.tolist(), numbers.tolist(), strict=True)
    return pseudonymize(key, (f"{d:016x}#{n}" for d, n in pairs), "content-record")


def renumbered(part: pa.Table, digests: np.ndarray, numbers: np.ndarray, key: bytes) -> pa.Table:
    """A keyless partition with record_ids from the dataset-wide occurrence numbers."""
    ids = occurrence_ids(key, digests, numbers)
    return part.set_column(
        part.schema.get_field_index(RECORD_ID), RECORD_ID, pa.array(ids, pa.string())
    )
