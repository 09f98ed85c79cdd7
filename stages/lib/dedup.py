"""A compact deduplication index: 64-bit hashes of record_id and of normalised content.

Replaces a `dict[str, int]` (a Python str key per row, ~150+ bytes, GBs at 10M rows) by two
uint64 columns, 16 bytes per kept row, so that a later batch can be deduplicated against every
earlier one without reprocessing them (the index is saved next to the clean data).

Hash collisions: both hashes are 64-bit SipHash-2-4 (pandas' `hash_array`, fixed key). Two
different record_ids collide with probability 2^-64 per pair, about 3e-6 over all pairs of 10M
rows; a collision would drop one record as a duplicate key. Two different contents of one
record_id collide with the same odds, and only turn a "duplicate key" into an "exact duplicate"
(the row is quarantined either way). Both risks are acceptable for this pipeline.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.lib.io import write_bytes_atomic

# Bump when the hashing of record_id or content changes: an index saved under another scheme
# cannot be compared with new hashes, and `load` refuses it.
HASH_SCHEME = "siphash24-pandas-v1"


def hash_strings(values: Any) -> np.ndarray:
    """64-bit SipHash of each string (nulls hash to a fixed value): stable across runs and
    processes. The project's one string hash (dedup, validate's key check, anonymize's sets)."""
    if isinstance(values, pa.Array | pa.ChunkedArray):
        obj = values.to_numpy(zero_copy_only=False)
    else:
        obj = np.asarray(values, dtype=object)
    if not len(obj):
        return np.empty(0, dtype=np.uint64)
    return pd.util.hash_array(obj.astype(object, copy=False), categorize=False)


class DedupIndex:
    """record_id hash -> content hash of every row kept so far, as sorted uint64 runs.

    New rows go in as one sorted run each; runs of similar size are merged (a log-structured
    merge), so adding a partition costs about its own size and lookups stay O(runs * log n).
    """

    def __init__(self, record: np.ndarray | None = None, content: np.ndarray | None = None):
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        if record is not None and len(record):
            self.add(record, content)

    def __len__(self) -> int:
        return sum(len(r) for r, _ in self._runs)

    def lookup(self, record: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found, content hash where found) for each record hash."""
        record = np.asarray(record, dtype=np.uint64)
        found = np.zeros(len(record), dtype=bool)
        content = np.zeros(len(record), dtype=np.uint64)
        for keys, values in self._runs:
            pos = np.searchsorted(keys, record)
            pos_ok = np.minimum(pos, len(keys) - 1)
            hit = (pos < len(keys)) & (keys[pos_ok] == record)
            found |= hit
            content[hit] = values[pos_ok[hit]]
        return found, content

    def upsert(self, record: np.ndarray, content: np.ndarray) -> None:
        """Set the content of rows already in the index (an update replaced them); add the rest."""
        record = np.asarray(record, dtype=np.uint64)
        content = np.asarray(content, dtype=np.uint64)
        new = np.ones(len(record), dtype=bool)
        for keys, values in self._runs:
            pos = np.searchsorted(keys, record)
            pos_ok = np.minimum(pos, len(keys) - 1)
            hit = (pos < len(keys)) & (keys[pos_ok] == record)
            values[pos_ok[hit]] = content[hit]
            new &= ~hit
        self.add(record[new], content[new])

    def add(self, record: np.ndarray, content: np.ndarray) -> None:
        """Add rows whose record hashes are not in the index yet (the caller checked)."""
        record = np.asarray(record, dtype=np.uint64)
        content = np.asarray(content, dtype=np.uint64)
        if not len(record):
            return
        order = np.argsort(record, kind="stable")
        self._runs.append((record[order], content[order]))
        # Merge while the newest run is at least half its predecessor: O(log n) runs.
        while len(self._runs) > 1 and 2 * len(self._runs[-1][0]) >= len(self._runs[-2][0]):
            (k2, v2), (k1, v1) = self._runs.pop(), self._runs.pop()
            self._runs.append(self._merge(k1, v1, k2, v2))

    @staticmethod
    def _merge(k1, v1, k2, v2) -> tuple[np.ndarray, np.ndarray]:
        keys = np.concatenate([k1, k2])
        values = np.concatenate([v1, v2])
        order = np.argsort(keys, kind="stable")  # timsort: two sorted runs merge in linear time
        return keys[order], values[order]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(record hashes, content hashes), sorted by record hash, as one run."""
        if not self._runs:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint64)
        while len(self._runs) > 1:
            (k2, v2), (k1, v1) = self._runs.pop(), self._runs.pop()
            self._runs.append(self._merge(k1, v1, k2, v2))
        return self._runs[0]

    def save(self, path: Path | str) -> None:
        """Write the index as .npz: `record` and `content` (uint64) and the hash scheme."""
        record, content = self.arrays()
        buf = io.BytesIO()  # a file object: np.savez would append .npz to a str path
        np.savez(buf, record=record, content=content, scheme=np.array(HASH_SCHEME))
        write_bytes_atomic(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path | str) -> DedupIndex:
        """Read an index written by `save`; refuses one written under another hash scheme."""
        with np.load(path, allow_pickle=False) as z:
            scheme = str(z["scheme"])
            if scheme != HASH_SCHEME:
                raise ValueError(
                    f"{path}: dedup index uses hash scheme {scheme!r}, expected {HASH_SCHEME!r}"
                )
            index = cls()
            if len(z["record"]):
                index._runs = [(z["record"].astype(np.uint64), z["content"].astype(np.uint64))]
            return index
