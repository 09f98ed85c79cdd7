"""Clean's typing of every schema type, and its handling of the values issue 14 found wrong:
huge integers, impossible dates, invisible characters, unlabelled batches, updated records."""

from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from stages.lib.clean_rows import (
    dedup_partition,
    labels_missing,
    map_partition,
    replaced_rows,
    superseded,
    unlabelled_batches,
)
from stages.lib.coerce import coerce_array, date_bounds, range_text
from stages.lib.config import CleanConfig
from stages.lib.dedup import DedupIndex
from stages.lib.features import numeric_values
from stages.lib.normalise import normalise_array
from stages.lib.params import ParamsError
from stages.lib.reasons import reason_messages
from stages.lib.schema import Column, load_schema
from tests.conftest import params, source_frame
from tests.test_clean import CFG, raw

TODAY = datetime.datetime.now(datetime.UTC).date()


def coerce(col: Column, values: list, cfg: CleanConfig = CFG) -> tuple[list, list, list]:
    typed, reject, nulled = coerce_array("x", col, pa.array(values, pa.string()), cfg)
    return (
        typed.to_pylist(),
        reason_messages(reject).to_pylist(),
        reason_messages(nulled).to_pylist(),
    )


INT = Column(type="int", role="numeric")


@pytest.mark.parametrize(
    "text",
    ["1e308", "12345678901234567890", "-12345678901234567890", "9223372036854775808", "1.5e17"],
)
def test_int_too_big_is_quarantined_with_the_range(text):
    typed, reject, _ = coerce(INT, [text])
    assert typed == [None]
    assert reject == [
        f"x out of range: {text} (expected -9223372036854775808..9223372036854775807, exactly)"
    ]


@pytest.mark.parametrize(
    "text, value",
    [
        ("1234567890123456789", 1234567890123456789),  # 19 digits: exact, not via a float
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("+123456789012345678", 123456789012345678),
        ("1e3", 1000),
        ("7.0", 7),
    ],
)
def test_int_within_int64_is_exact(text, value):
    typed, reject, _ = coerce(INT, [text])
    assert typed == [value] and reject == [None]


def test_int_range_names_the_schema_bound():
    _, reject, _ = coerce(Column(type="int", role="numeric", min=1), ["0", "1e308"])
    assert reject == [
        "x out of range: 0 (expected at least 1)",
        "x out of range: 1e308 (expected 1..9223372036854775807, exactly)",
    ]


def test_range_text_never_prints_inf():
    assert range_text(0.0, None) == "at least 0"
    assert range_text(None, 99.0) == "at most 99"
    assert range_text(17.0, 100.0) == "17..100"
    assert range_text(datetime.date(1900, 1, 1), None) == "at least 1900-01-01"
    assert "inf" not in range_text(None, None)


DOB = Column(type="date", role="attribute", format="date")


def test_impossible_dates_of_birth_are_quarantined():
    later = (TODAY + datetime.timedelta(days=1)).isoformat()
    typed, reject, nulled = coerce(DOB, ["9999-12-31", "0001-01-01", later, "1980-04-03", None])
    expected = f"(expected 1900-01-01..{TODAY.isoformat()})"
    assert reject[:3] == [
        f"x out of range: 9999-12-31 {expected}",
        f"x out of range: 0001-01-01 {expected}",
        f"x out of range: {later} {expected}",
    ]
    assert reject[3:] == [None, None] and typed[3] == datetime.date(1980, 4, 3)
    assert nulled == [None] * 5


def test_date_bounds_from_params_as_iso_dates():
    p = params()
    p["schema"]["columns"]["date_of_birth"].update(min="1920-01-01", max=datetime.date(2010, 1, 1))
    col = load_schema(p).columns["date_of_birth"]
    assert date_bounds(col, TODAY) == (datetime.date(1920, 1, 1), datetime.date(2010, 1, 1))
    _, reject, _ = coerce(col, ["1919-12-31", "2010-01-01", "2010-01-02"])
    assert reject == [
        "x out of range: 1919-12-31 (expected 1920-01-01..2010-01-01)",
        None,
        "x out of range: 2010-01-02 (expected 1920-01-01..2010-01-01)",
    ]
    # A date column without format: date has no default bounds.
    plain = Column(type="date", role="attribute")
    assert date_bounds(plain, TODAY) == (None, None)
    assert coerce(plain, ["9999-12-31"])[1] == [None]


@pytest.mark.parametrize(
    "column, bound, message",
    [
        ("date_of_birth", "yesterday", r"date_of_birth\.min: expected an ISO date"),
        ("age", "1990-01-01", r"age\.min: expected a number for a int column"),
    ],
)
def test_bad_bounds_are_params_errors(column, bound, message):
    p = params()
    p["schema"]["columns"][column]["min"] = bound
    with pytest.raises(ParamsError, match=message):
        load_schema(p)


def test_timestamps_to_utc_and_unparseable_nulled():
    col = Column(type="timestamp", role="numeric")
    typed, reject, nulled = coerce(
        col, ["2020-01-01T10:00:00Z", "2020-01-01 10:00:00+02:00", "15/03/1980", "soon", None]
    )
    assert typed[:3] == [
        datetime.datetime(2020, 1, 1, 10),
        datetime.datetime(2020, 1, 1, 8),
        datetime.datetime(1980, 3, 15),
    ]
    assert typed[3:] == [None, None] and reject == [None] * 5
    assert nulled[3] == "unparseable timestamp in x"


def test_booleans():
    col = Column(type="bool", role="categorical")
    values = ["Yes", "no", "1", "0", "TRUE", "f", "Y", "n", "maybe", None]
    typed, reject, _ = coerce(col, values)
    assert typed == [True, False, True, False, True, False, True, False, None, None]
    assert reject[8] == "x is not a boolean: maybe (expected true/false, yes/no or 1/0)"
    assert reject[:8] == [None] * 8


def test_invisible_characters_stripped_from_labels_and_categories(schema=None):
    schema = load_schema(params())
    frame = source_frame(6)
    frame.loc[0, "income"] = ">50K\u200b"  # zero-width space
    frame.loc[1, "income"] = "\ufeff<=50K"  # BOM
    frame.loc[2, "sex"] = "Male\u00a0"  # no-break space
    frame.loc[3, "sex"] = "Fe\u200bmale"
    frame.loc[4, "notes"] = "keep\u200dthis"  # free text keeps its joiner
    mapped = map_partition(pa.Table.from_pandas(raw(frame)), schema, CFG)
    typed = mapped.typed.to_pandas()
    assert typed["income"].tolist()[:2] == [">50K", "<=50K"]
    assert typed["sex"].tolist()[2:4] == ["Male", "Female"]
    assert typed["notes"][4] == "keep\u200dthis"
    assert normalise_array(pa.array(["\u200b", " a\u2060b "]), True).to_pylist() == ["", "ab"]


def test_unlabelled_batch_is_found():
    batch = pa.array(["a", "a", "b", "b", "c"])
    label = pa.array([None, None, "x", None, "y"], pa.string())
    counts = labels_missing(batch, label)
    assert counts == {"a": [2, 2], "b": [2, 1], "c": [1, 0]}
    assert unlabelled_batches(counts) == ["a"]


def test_replace_keeps_the_later_version_and_accounts_for_the_earlier():
    schema = load_schema(params())
    first = source_frame(6)
    second = source_frame(6).iloc[[1, 2, 4]].copy()
    second.loc[1, "notes"] = "moved house"  # an update of record 1
    second.loc[2, "notes"] = "new phone"  # an update of record 2
    # record 4 unchanged: an exact duplicate, whatever the setting
    index = DedupIndex()
    a = dedup_partition(map_partition(pa.Table.from_pandas(raw(first)), schema, CFG), index, True)
    b_map = map_partition(pa.Table.from_pandas(raw(second)), schema, CFG)
    b = dedup_partition(b_map, index, True)
    assert b.clean_table.num_rows == 2 and b.reasons == {"exact duplicate": 1}
    masks = superseded(
        [a.clean_table.column("record_id").to_numpy(), b.clean_table.column("record_id").to_numpy()]
    )
    assert masks[0].tolist() == [False, True, True, False, False, False]
    assert masks[1].tolist() == [False, False]
    # The index holds the new content: the same update again is an exact duplicate.
    again = dedup_partition(b_map, index, True)
    assert again.clean_table.num_rows == 0 and again.reasons == {"exact duplicate": 3}
    rows = replaced_rows(a.clean_table, masks[0], _quarantine_like(a))
    assert rows.column("_reason_kind").to_pylist() == ["replaced", "replaced"]
    assert rows.column("_reason").to_pylist()[0].startswith("replaced by a later row of rid-")
    # Without replace (the default) the updates are duplicate keys, as before.
    index = DedupIndex()
    dedup_partition(map_partition(pa.Table.from_pandas(raw(first)), schema, CFG), index)
    b = dedup_partition(b_map, index)
    assert b.clean_table.num_rows == 0
    assert b.reasons == {"duplicate key": 2, "exact duplicate": 1}


def _quarantine_like(result) -> pa.Table:
    from stages.lib.clean_rows import quarantine_arrow

    return quarantine_arrow(result.quarantine_table)


def test_dedup_index_upsert():
    index = DedupIndex(np.array([1, 2], np.uint64), np.array([10, 20], np.uint64))
    index.upsert(np.array([2, 3], np.uint64), np.array([21, 30], np.uint64))
    assert [a.tolist() for a in index.arrays()] == [[1, 2, 3], [10, 21, 30]]


def test_numeric_encoding_of_dates_timestamps_booleans():
    dates = pd.Series([datetime.date(1970, 1, 11), None], dtype=object)
    assert numeric_values(dates)[0] == 10 and np.isnan(numeric_values(dates)[1])
    stamps = pd.Series(pd.to_datetime(["1970-01-02 12:00", None]))
    assert numeric_values(stamps)[0] == 1.5
    bools = pd.Series([True, None, False], dtype=object)
    assert numeric_values(bools)[[0, 2]].tolist() == [1.0, 0.0]
    assert numeric_values(pd.Series([True, False])).tolist() == [1.0, 0.0]
    assert numeric_values(pd.Series(["2.5", "x"]))[0] == 2.5


def test_label_without_values_is_a_params_error():
    p = params()
    del p["schema"]["columns"]["income"]["values"]
    with pytest.raises(ParamsError, match=r"schema\.columns\.income: the label needs its 'values'"):
        load_schema(p)


def test_replace_needs_a_key_column():
    from stages.clean import replaces
    from stages.lib.schema import Schema

    keyless = Schema(
        {
            "text": Column(type="string", role="text"),
            "label": Column(type="category", role="label", values=("a", "b")),
        }
    )
    replace = dataclasses.replace(CFG, on_existing_key="replace")
    assert replaces(replace, load_schema(params()))
    assert not replaces(dataclasses.replace(CFG, on_existing_key="quarantine"), keyless)
    with pytest.raises(ParamsError, match=r"clean\.on_existing_key: replace needs a key column"):
        replaces(replace, keyless)
