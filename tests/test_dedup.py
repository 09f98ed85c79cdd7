"""The compact dedup index, and clean's map/dedup split that uses it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from stages.lib.clean_rows import dedup_partition, map_partition
from stages.lib.dedup import DedupIndex, hash_strings
from stages.lib.schema import load_schema
from tests.conftest import params, source_frame
from tests.test_clean import CFG, raw


def test_index_matches_a_dict_over_many_runs():
    rng = np.random.default_rng(0)
    index, truth = DedupIndex(), {}
    for _ in range(40):
        keys = rng.integers(0, 2**64, size=rng.integers(0, 500), dtype=np.uint64)
        keys = np.unique(keys[~np.isin(keys, list(truth))])
        values = rng.integers(0, 2**64, size=len(keys), dtype=np.uint64)
        index.add(keys, values)
        truth.update(zip(keys.tolist(), values.tolist(), strict=True))
    assert len(index) == len(truth)
    probe = np.concatenate(
        [np.array(list(truth), np.uint64), rng.integers(0, 2**64, 1000, np.uint64)]
    )
    found, content = index.lookup(probe)
    assert found.tolist() == [k in truth for k in probe.tolist()]
    assert content[found].tolist() == [truth[k] for k in probe[found].tolist()]
    record, _ = index.arrays()
    assert np.all(record[1:] > record[:-1]), "one sorted run after arrays()"


def test_index_save_load_round_trip(tmp_path):
    index = DedupIndex(np.array([3, 1, 2], np.uint64), np.array([30, 10, 20], np.uint64))
    index.save(tmp_path / "dedup.npz")
    back = DedupIndex.load(tmp_path / "dedup.npz")
    assert [a.tolist() for a in back.arrays()] == [[1, 2, 3], [10, 20, 30]]
    assert back.lookup(np.array([2, 4], np.uint64))[0].tolist() == [True, False]
    empty = tmp_path / "empty.npz"
    DedupIndex().save(empty)
    assert len(DedupIndex.load(empty)) == 0


def test_index_refuses_another_hash_scheme(tmp_path):
    path = tmp_path / "old.npz"
    with open(path, "wb") as f:
        np.savez(f, record=np.zeros(0, np.uint64), content=np.zeros(0, np.uint64), scheme="x")
    with pytest.raises(ValueError, match="hash scheme 'x'"):
        DedupIndex.load(path)


def test_hash_strings_is_stable():
    # A persisted index is only comparable while the hash never changes: pin its values.
    h = hash_strings(pa.array(["rid-1", None]))
    assert h.dtype == np.uint64
    assert h.tolist() == [9400610862170241189, 8385562840259582418]


def test_persisted_index_dedups_a_later_batch_like_one_run(tmp_path):
    schema = load_schema(params())
    frame = pa.Table.from_pandas(raw(source_frame(10)), preserve_index=False)
    first, second = frame.slice(0, 6), frame.slice(4)
    together = DedupIndex()
    dedup_partition(map_partition(first, schema, CFG), together)
    expected = dedup_partition(map_partition(second, schema, CFG), together)

    earlier = DedupIndex()
    dedup_partition(map_partition(first, schema, CFG), earlier)
    earlier.save(tmp_path / "dedup.npz")
    later = dedup_partition(
        map_partition(second, schema, CFG), DedupIndex.load(tmp_path / "dedup.npz")
    )
    assert later.reasons == expected.reasons == {"exact duplicate": 2}
    assert later.clean_table.equals(expected.clean_table)


def test_duplicate_of_a_rejected_row_is_a_duplicate_key():
    # As before the rewrite: a record_id's first row in a partition, even a rejected one,
    # makes later rows with that id duplicates, and there is no kept content to match.
    schema = load_schema(params())
    frame = source_frame(3)
    frame = frame.iloc[[0, 0, 1, 2]].reset_index(drop=True)
    frame.loc[0, "age"] = "abc"
    result = dedup_partition(
        map_partition(pa.Table.from_pandas(raw(frame)), schema, CFG), DedupIndex()
    )
    assert result.reasons == {"age is not a number": 1, "duplicate key": 1}
