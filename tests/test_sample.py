"""The bundled sample: its builder is deterministic and its planted identifiers are valid."""

from __future__ import annotations

import importlib.util
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "sample"
BATCHES = ("customers_batch1.csv.gz", "customers_batch2.csv.gz")


def _load_builder():
    spec = importlib.util.spec_from_file_location("build_sample", SAMPLE_DIR / "build_sample.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_sample"] = module
    spec.loader.exec_module(module)
    return module


bs = _load_builder()

# A few real Adult rows (as the file writes them, leading spaces included), China and Taiwan
# among them so that Chinese identities are certain to appear.
ADULT_ROWS = """\
39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K
50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, <=50K
38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, United-States, <=50K
28, Private, 338409, Bachelors, 13, Married-civ-spouse, Prof-specialty, Wife, Black, Female, 0, 0, 40, Cuba, <=50K
37, Private, 284582, Masters, 14, Married-civ-spouse, Exec-managerial, Wife, White, Female, 0, 0, 40, United-States, <=50K
52, Self-emp-inc, 287927, HS-grad, 9, Married-civ-spouse, Exec-managerial, Wife, White, Female, 15024, 0, 40, United-States, >50K
44, Private, 83891, Bachelors, 13, Divorced, Adm-clerical, Own-child, Asian-Pac-Islander, Male, 5455, 0, 40, China, <=50K
30, ?, 118551, Some-college, 10, Never-married, ?, Own-child, Asian-Pac-Islander, Female, 0, 0, 20, Taiwan, <=50K
"""  # noqa: E501


@pytest.fixture(scope="module")
def adult() -> pd.DataFrame:
    rows = [line.split(", ") for line in ADULT_ROWS.splitlines()]
    return pd.DataFrame(rows, columns=bs.ADULT_COLUMNS)


@pytest.fixture(scope="module")
def frame(adult) -> pd.DataFrame:
    return bs.build_table(adult, seed=7, id_offset=100, n_rows=4000)


@pytest.fixture(scope="module", params=BATCHES)
def batch(request) -> pd.DataFrame:
    path = SAMPLE_DIR / request.param
    assert path.exists(), f"{path} is missing: run python data/sample/build_sample.py"
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _resident_id_valid(value: str) -> bool:
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    total = sum(int(c) * w for c, w in zip(value[:17], weights, strict=True))
    return "10X98765432"[total % 11] == value[17]


def _luhn_valid(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_builder_is_deterministic(adult, frame):
    again = bs.build_table(adult, seed=7, id_offset=100, n_rows=4000)
    pd.testing.assert_frame_equal(frame, again)
    other = bs.build_table(adult, seed=8, id_offset=100, n_rows=4000)
    assert not frame["full_name"].equals(other["full_name"])


def test_columns_and_planted_counts(frame):
    assert list(frame.columns) == bs.COLUMNS
    planted = frame.attrs["planted"]
    assert len(frame) == 4000 + planted["exact_duplicates"] + planted["near_duplicates"]
    assert frame.duplicated().sum() == planted["exact_duplicates"] == 40
    assert frame["customer_id"].duplicated().sum() == 40 + 20
    ids = frame["customer_id"].drop_duplicates()
    assert ids.min() == "C00000101" and ids.max() == "C00004100"
    # Chinese names: 90% of those born in China/Taiwan (2 of the 8 input rows), about 15% of
    # the others: 0.25 * 0.9 + 0.75 * 0.16 = 0.35 expected.
    share = planted["chinese_names"] / 4000
    assert 0.30 < share < 0.40


def test_resident_ids_have_valid_check_digits(frame):
    cn = frame[frame["national_id"].str.len() == 18]
    assert len(cn) > 50
    assert cn["national_id"].map(_resident_id_valid).all()
    iso = cn["date_of_birth"].str.fullmatch(r"\d{4}-\d{2}-\d{2}")
    assert (
        cn.loc[iso, "national_id"].str[6:14] == cn.loc[iso, "date_of_birth"].str.replace("-", "")
    ).all()
    ssn = frame.loc[frame["national_id"].str.len() != 18, "national_id"]
    assert ssn.str.fullmatch(r"(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}").all()


def test_dates_of_birth_match_ages(frame):
    dob = pd.to_datetime(frame["date_of_birth"], format="%Y-%m-%d", errors="coerce")
    age = pd.to_numeric(frame["age"], errors="coerce")
    planted = frame.attrs["planted"]
    # Only the planted bad dates fail to parse; only the planted bad ages fall outside Adult's.
    assert dob.isna().sum() == planted["bad_date"]
    out_of_range = ~age.between(17, 90)
    assert out_of_range.sum() >= planted["bad_age"] - 2  # planted rows may also be copied
    ok = dob.notna() & ~out_of_range
    ref = pd.Timestamp(bs.REF_DATE)
    had_birthday = (dob.dt.month < ref.month) | (
        (dob.dt.month == ref.month) & (dob.dt.day <= ref.day)
    )
    computed = ref.year - dob.dt.year - (~had_birthday).astype(int)
    assert (computed[ok] == age[ok]).all()


def test_notes_identifiers_are_valid(frame):
    notes = frame["notes"]
    cards = notes.str.extractall(r"(?:card|卡号|file:) ?([\d][\d -]{12,20}\d)")[0]
    assert len(cards) > 0
    assert cards.str.replace(r"\D", "", regex=True).map(_luhn_valid).all()
    ibans = notes.str.extractall(r"(?:IBAN|from) ([A-Z]{2}\d{2}[A-Z0-9 ]{10,34}[A-Z0-9])")[0]
    assert len(ibans) > 0
    for iban in ibans.str.replace(" ", ""):
        rearranged = iban[4:] + iban[:4]
        assert int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    # About 30% of the notes carry the row's own name, e-mail or phone.
    own = frame.attrs["planted"]["notes_own_identifier"] / 4000
    assert 0.2 < own < 0.35


def test_fullwidth_values_are_nfkc_reversible(frame):
    assert bs.to_fullwidth("Self-emp-not-inc") == "Ｓｅｌｆ－ｅｍｐ－ｎｏｔ－ｉｎｃ"
    changed = frame["sex"].map(lambda v: unicodedata.normalize("NFKC", v) != v)
    restored = frame.loc[changed, "sex"].map(lambda v: unicodedata.normalize("NFKC", v))
    assert set(restored) <= {"Male", "Female"}


def test_committed_batches(batch):
    assert list(batch.columns) == bs.COLUMNS
    base = len(batch) / 1.015
    assert abs(batch.duplicated().sum() - 0.01 * base) <= 2
    assert abs(batch["customer_id"].duplicated().sum() - 0.015 * base) <= 3
    # Only a handful of null labels; every other label is Adult's (batch 2 keeps its dot).
    labels = batch["income"].str.rstrip(".")
    assert labels.isin(["<=50K", ">50K"]).sum() >= len(batch) - 10
    assert batch["national_id"][batch["national_id"].str.len() == 18].map(_resident_id_valid).all()


def test_batches_do_not_share_customers():
    ids = [
        set(pd.read_csv(SAMPLE_DIR / name, usecols=["customer_id"], dtype=str)["customer_id"])
        for name in BATCHES
    ]
    assert ids[0].isdisjoint(ids[1])
    test_labels = pd.read_csv(SAMPLE_DIR / BATCHES[1], usecols=["income"], dtype=str)["income"]
    assert test_labels.str.endswith(".").mean() > 0.99


def test_load_adult_skips_the_test_header(tmp_path):
    path = tmp_path / "adult.test"
    path.write_text("|1x3 Cross validator\n" + ADULT_ROWS.replace("K\n", "K.\n") + "\n")
    loaded = bs.load_adult(path)
    assert len(loaded) == 8
    assert loaded.loc[0, "workclass"] == "State-gov"
    assert loaded.loc[0, "income"] == "<=50K."
    assert np.array_equal(loaded.columns, bs.ADULT_COLUMNS)
