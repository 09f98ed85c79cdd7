"""Every leak measured on data nobody here wrote (issue 12), as a regression test: the scrubber
removes it, and the independent scan (a different method) finds it when the scrubber does not."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from stages.anonymize import ScanFailed, run
from stages.lib import anon_policies, anon_scan
from stages.lib.anon_scan import MislabelledColumn
from stages.lib.leakscan import ValueScanner, find_numbers
from stages.lib.params import load_params
from stages.lib.schema import SOURCE_FILE, SOURCE_ROW, load_schema
from stages.lib.scrub import as_string_array, known_name_set, scrub_column, scrub_known_names
from tests.conftest import anon_config
from tests.privacy_fixtures import clean_frame, write_clean

ROOT = Path(__file__).resolve().parents[1]
KEY = b"unit-test-key-0123456789abcdef"

OWN = {
    "name": "Lucinda Vandermeulen",
    "email": "lucinda.v@example.com",
    "phone": "+1 (312) 467-3395",
    "national_id": "873-42-8334",
    "address": "1280 Chestnut Rd, Springfield, IL",
    "key": "C00007835",
}
# Other customers of the dataset (its known names) and their identifiers.
OTHERS = ["Paul Patel", "Chao Li", "Michael Ruiz", "Charles Nguyen", "Patrick O'Rourke",
          "Jean-Luc Picard", "Hugh Featherstonehaugh", "周伟"]  # fmt: skip

# (text, what must not survive of it)
LEAKS = [
    ("朋友Paul Patel的邮箱是<EMAIL>。", ["paul", "patel"]),
    ("已与Chao Li确认信息。", ["chao li"]),
    ("由Michael Ruiz推荐。", ["michael", "ruiz"]),
    ("推荐人Charles Nguyen,电话<PHONE>。", ["charles", "nguyen"]),
    ("Call 699 956 915 or 467 3395", ["699956915", "4673395"]),
    ("Cliente ligou do (37) 788-063 e 60-56-85-91", ["37788063", "60568591"]),
    ("Tel 0490 75 40 81, 03.93.92.16.85", ["0490754081", "0393921685"]),
    ("Desk 345-899-3560x4587 or +1-202-555-0143x769", ["3458993560", "4587", "2025550143", "769"]),
    ("Reach me on 415/867-5314, call09050000327, Help08714742804", ["4158675314", "09050000327",
                                                                   "08714742804"]),
    ("UK 0845 602 1234, 0905 123 4567, 447801259231", ["08456021234", "09051234567",
                                                      "447801259231"]),
    ("JCB 1800 0000 0000 002, card 4917.6123.0045.1214", ["4917612300451214"]),
    ("iban gb82 west 1234 5698 7654 32 and DE89-3704-0044-0532-0130-00",
     ["gb82west12345698765432", "de89370400440532013000"]),
    ("See HTTP://WWW.URAWINNER.COM or WWW.ASJESUS.COM", ["urawinner", "asjesus"]),
    ("SSN 873428334, 521 77 4102, 521.77.4105", ["873428334", "521774102", "521774105"]),
    ("身份证 110105 19491231 002X", ["11010519491231002"]),
    ("Parcel returned from 1280 Chestnut Rd.", ["1280 chestnut"]),
    ("Write to lucy at example dot com or lucy[at]example.com or lucy (at) example (dot) com",
     ["lucy"]),
    ("Spoke to Patrick O'Rourke and o’rourke, patrick", ["rourke"]),
    ("Jean-Luc Picard called", ["picard"]),
    ("VANDERMEULEN, LUCINDA signed", ["vandermeulen", "lucinda"]),
    ("Ask Mr. Featherstonehaugh", ["featherstonehaugh"]),
    ("Own id C00007835.", ["c00007835"]),
    ("Zhou Wei referred her", ["zhou wei"]),
]  # fmt: skip


def _flat(text: str) -> str:
    """Lower-case, NFKC, separators between digits removed: a leak in any written form shows."""
    text = unicodedata.normalize("NFKC", text).lower()
    return re.sub(r"(?<=\d)[\s().\-/]+(?=\d)", "", text)


def _scrub(texts: list[str]) -> list[str]:
    """The pipeline's free-text path: own identifiers and patterns, then known names."""
    ids = {kind: [(kind, [value] * len(texts))] for kind, value in OWN.items()}
    arr, _ = scrub_column(texts, ids)
    out, _ = scrub_known_names(pd.Series(arr.to_pylist()), known_name_set([OWN["name"], *OTHERS]))
    return out.tolist()


@pytest.mark.parametrize(("text", "forbidden"), LEAKS, ids=[t[:30] for t, _ in LEAKS])
def test_scrubber_removes_the_measured_leak(text, forbidden):
    (out,) = _scrub([text])
    for value in forbidden:
        assert value not in _flat(out), (text, out)


def _scanner() -> ValueScanner:
    entity = {"name": "PERSON", "email": "EMAIL", "phone": "PHONE", "national_id": "NATIONAL_ID",
              "address": "ADDRESS", "key": "IDENTIFIER"}  # fmt: skip
    values = [(v, entity[k]) for k, v in OWN.items()] + [(n, "PERSON") for n in OTHERS]
    return ValueScanner(values)


@pytest.mark.parametrize(
    "text",
    [
        "朋友Paul Patel的邮箱是x。",
        "已与Chao Li确认信息。",
        "SSN 873428334",
        "SSN 873 42 8334",
        "Parcel returned from 1280 Chestnut Rd.",
        "Own id C00007835.",
        "VANDERMEULEN, LUCINDA signed",
        "o’rourke, patrick wrote",
        "Zhou Wei referred her",
        "tel (312) 467-3395",
    ],
)
def test_independent_scan_finds_known_values_in_any_form(text):
    assert _scanner().find(text) is not None


@pytest.mark.parametrize(
    "text", ["Call 699 956 915", "0490 75 40 81", "call09050000327", "+44 20 7946 0958"]
)
def test_independent_scan_finds_unclassified_numbers(text):
    assert find_numbers(text, 7) is not None


@pytest.mark.parametrize("text", ["meeting 2023-01-15 at 10:30", "order 123456", "in 1990-2000"])
def test_independent_scan_leaves_dates_and_short_numbers(text):
    assert find_numbers(text, 7) is None and _scanner().find(text) is None


def test_scan_stops_the_run_when_the_scrubber_is_off(tmp_path, monkeypatch):
    """One blind spot must not blind both: with the scrubber switched off, the scan alone stops
    the stage with a gate failure that names record, column and entity, and releases nothing."""
    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml")
    schema = load_schema(params)
    frame = clean_frame(300)
    write_clean(tmp_path / "clean", [("p0.parquet", frame)])

    def no_scrub(values, *a, **k):
        return as_string_array(values), Counter()

    monkeypatch.setattr(anon_policies, "scrub_column", no_scrub)
    monkeypatch.setattr(anon_scan, "scrub_column", no_scrub)
    monkeypatch.setattr(anon_policies, "scrub_known_names", lambda values, names: (values, 0))
    cfg = anon_config(params["anonymize"]["policies"])
    with pytest.raises(ScanFailed) as err:
        run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)
    message = str(err.value)
    assert re.search(r"record r\d+ column notes (PERSON|PHONE|EMAIL|IDENTIFIER|NUMBER)", message)
    assert not (tmp_path / "anon").exists()
    for value in frame["full_name"]:
        assert value not in message


def test_no_source_positions_are_released(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml")
    schema = load_schema(params)
    write_clean(tmp_path / "clean", [("p0.parquet", clean_frame(200))])
    cfg = anon_config(params["anonymize"]["policies"])
    run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)
    columns = pq.read_table(tmp_path / "anon").column_names
    assert SOURCE_FILE not in columns and SOURCE_ROW not in columns
    assert "record_id" in columns


def test_mislabelled_identifier_column_stops_the_run(tmp_path, monkeypatch):
    """full_name declared categorical would release every name: exit 2 naming it and the fix."""
    monkeypatch.chdir(tmp_path)
    params = load_params(ROOT / "params.yaml")
    params["schema"]["columns"]["full_name"] = {"type": "string", "role": "categorical"}
    policies = {k: v for k, v in params["anonymize"]["policies"].items() if k != "full_name"}
    schema = load_schema(params)
    write_clean(tmp_path / "clean", [("p0.parquet", clean_frame(300))])
    cfg = anon_config(policies)
    with pytest.raises(MislabelledColumn, match=r"'full_name'.*role: identifier"):
        run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, schema, KEY)
    assert not (tmp_path / "anon").exists()
    # A user who knows the column is no identifier says so in the schema: the guard lets it pass.
    params["schema"]["columns"]["full_name"]["not_identifier"] = True
    run(tmp_path / "clean", tmp_path / "anon", tmp_path / "q", cfg, load_schema(params), KEY)
    assert "full_name" in pq.read_table(tmp_path / "anon").column_names
