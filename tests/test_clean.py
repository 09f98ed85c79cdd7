"""Unit tests of clean's pure functions on tiny frames."""

from __future__ import annotations

import pandas as pd
import pytest

from stages.lib.clean_rows import clean_partition
from stages.lib.coerce import parse_dates
from stages.lib.config import CleanConfig
from stages.lib.dedup import DedupIndex
from stages.lib.normalise import normalise_text
from stages.lib.schema import BATCH, RECORD_ID, SOURCE_FILE, SOURCE_ROW, load_schema
from tests.conftest import params, source_frame

CFG = CleanConfig(
    missing_values=("", "?", "na", "null"),
    date_formats=("%Y-%m-%d", "%d/%m/%Y"),
    label_aliases={"<=50K.": "<=50K", ">50K.": ">50K"},
    reject_bad_format_in=(),
    on_existing_key="quarantine",
)


def raw(frame: pd.DataFrame) -> pd.DataFrame:
    """A raw partition as ingest writes it: lineage columns + source strings."""
    out = frame.astype("string").copy()
    out.insert(0, RECORD_ID, ("rid-" + out["customer_id"]).astype("string"))
    out.insert(1, BATCH, "b1")
    out.insert(2, SOURCE_FILE, "in.csv")
    out.insert(3, SOURCE_ROW, range(1, len(out) + 1))
    return out


@pytest.fixture
def schema():
    return load_schema(params())


def test_normalise_text_nfkc_and_whitespace():
    s = pd.Series(["  Ｍａｌｅ ", "a \t b", None])
    assert normalise_text(s).tolist()[:2] == ["Male", "a b"]
    assert pd.isna(normalise_text(s)[2])


def test_parse_dates_tries_formats_in_order():
    s = pd.Series(["1980-02-01", "15/03/1980", "31/02/1980", None])
    out = parse_dates(s, ("%Y-%m-%d", "%d/%m/%Y"))
    assert str(out[0].date()) == "1980-02-01" and str(out[1].date()) == "1980-03-15"
    assert pd.isna(out[2]) and pd.isna(out[3])


def test_clean_accounts_for_every_row(schema):
    frame = source_frame(30)
    frame.loc[1, "age"] = "430"
    frame.loc[2, "income"] = "?"
    frame.loc[3, "age"] = "abc"
    frame.loc[4, "sex"] = "ｍａｌｅ"
    frame.loc[5, "email"] = "someone@@example"
    frame = pd.concat([frame, frame.iloc[[6]], frame.iloc[[7]]], ignore_index=True)
    frame.loc[len(frame) - 1, "notes"] = "a different note"  # same key, other content
    before = frame.copy()
    result = clean_partition(raw(frame), schema, CFG, seen={})
    assert frame.equals(before), "inputs must not be mutated"
    assert len(result.clean) + len(result.quarantine) == len(frame)
    reasons = dict(result.reasons)
    assert reasons == {
        "age out of range": 1,
        "missing income": 1,
        "age is not a number": 1,
        "exact duplicate": 1,
        "duplicate key": 1,
    }
    q = result.quarantine.set_index("_source_row")["_reason"]
    assert q[2] == "age out of range: 430 (expected 17..100)"
    assert q[31].startswith("exact duplicate of rid-C000006")
    assert result.clean.loc[result.clean["customer_id"] == "C000004", "sex"].item() == "Male"
    assert result.nulled == {"malformed e-mail in email": 1}
    assert result.clean["age"].dtype == "Int64"


def test_identifier_values_never_appear_in_reasons(schema):
    frame = source_frame(5)
    frame.loc[0, "customer_id"] = ""
    result = clean_partition(raw(frame), schema, CFG, seen={})
    assert result.quarantine["_reason"].tolist() == ["missing customer_id"]


def test_duplicates_found_across_partitions(schema):
    frame = raw(source_frame(10))
    seen = DedupIndex()
    first = clean_partition(frame.iloc[:6], schema, CFG, seen)
    second = clean_partition(frame.iloc[4:], schema, CFG, seen)
    assert len(first.clean) == 6 and len(second.clean) == 4
    assert second.reasons == {"exact duplicate": 2}


def test_label_aliases_map_and_unknown_labels_pass_to_validate(schema):
    frame = source_frame(4)
    frame.loc[0, "income"] = ">50K."
    frame.loc[1, "income"] = "maybe"
    result = clean_partition(raw(frame), schema, CFG, seen={})
    labels = result.clean["income"].tolist()
    assert labels[0] == ">50K" and labels[1] == "maybe"


def test_normalise_text_collapses_every_python_whitespace():
    s = pd.Series(["\x1cA\u2028 b\u3000\u3000c\x85", " x  y ", "\u00a0", "plain"])
    assert normalise_text(s).tolist() == ["A b c", "x y", "", "plain"]


def test_number_edge_cases_keep_their_reasons(schema):
    frame = source_frame(8)
    cells = {0: "inf", 1: "NaN", 2: "1e3", 3: "1.0", 4: "+41", 5: "4_0", 6: "39.5"}
    for r, v in cells.items():
        frame.loc[r, "hours_per_week"] = v
    result = clean_partition(raw(frame), schema, CFG, seen={})
    q = result.quarantine.set_index("_source_row")["_reason"].to_dict()
    assert q == {
        1: "hours_per_week is not a finite number",
        2: "hours_per_week is not a number: NaN",
        3: "hours_per_week out of range: 1e3 (expected 1..99)",
        6: "hours_per_week is not a number: 4_0",
        7: "hours_per_week is not an integer: 39.5",
    }
    hours = result.clean.set_index("_source_row")["hours_per_week"]
    assert hours[4] == 1 and hours[5] == 41 and hours.dtype == "Int64"
