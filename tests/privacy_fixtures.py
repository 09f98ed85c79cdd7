"""Generated clean-contract data for the anonymize and split tests (no real people)."""

from __future__ import annotations

import datetime as dt
import random

import pandas as pd
import pyarrow as pa

from stages.lib.io import write_dataset
from stages.lib.scrub import cn_id_ok, luhn_ok

GIVEN = ["John", "Maria", "Ahmed", "Olga", "Kenji", "Fatima", "Lucas", "Priya", "Noah", "Elena"]
FAMILY = ["Smith", "Garcia", "Khan", "Ivanova", "Tanaka", "Haddad", "Silva", "Patel", "Berg"]
CN_FAMILY = ["王", "李", "张", "刘", "陈"]
CN_GIVEN = ["小明", "秀英", "建华", "丽娜", "志强"]


def cn_id(rng: random.Random, valid: bool = True) -> str:
    """An 18-character resident ID with a valid (or deliberately wrong) check character."""
    born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000))
    body = f"{rng.choice(['110105', '310101', '440305'])}{born:%Y%m%d}{rng.randrange(1000):03d}"
    for check in "0123456789X":
        if cn_id_ok(body + check) == valid:
            return body + check
    raise AssertionError("unreachable")


def card(rng: random.Random, valid: bool = True) -> str:
    """A 16-digit Visa-like number, Luhn-valid or not."""
    body = "4" + "".join(str(rng.randrange(10)) for _ in range(14))
    for d in "0123456789":
        if luhn_ok(body + d) == valid:
            n = body + d
            return " ".join(n[i : i + 4] for i in range(0, 16, 4))
    raise AssertionError("unreachable")


def clean_frame(n: int, seed: int = 0, batch: str = "b1", start: int = 0) -> pd.DataFrame:
    """A frame following the clean contract for the project's params.yaml schema."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + n):
        chinese = rng.random() < 0.3
        if chinese:
            name = rng.choice(CN_FAMILY) + rng.choice(CN_GIVEN)
            phone = f"+86 1{rng.choice('3589')}{rng.randrange(10**9):09d}"
            nid = cn_id(rng)
        else:
            name = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"
            phone = f"+1 555 {rng.randrange(100, 999)} {rng.randrange(1000, 9999)}"
            nid = f"{rng.randrange(100, 665)}-{rng.randrange(10, 99)}-{rng.randrange(1000, 9999)}"
        email = f"{name.split()[0].lower() if not chinese else 'user'}{i}@example.com"
        own = rng.choice(
            [
                f"Customer {name} asked to call back on {phone}.",
                f"Mail sent to {email}; card {card(rng)} on file.",
                f"{name}来电,手机{phone[4:]},身份证{nid}" if chinese else f"Spoke to {name}.",
                "Prefers e-mail contact, no other notes.",
                f"IBAN DE89 3704 0044 0532 0130 00, server 10.0.{i % 250}.7",
            ]
        )
        rows.append(
            {
                "record_id": f"r{i:06d}",
                "_batch": batch,
                "_source_file": f"{batch}.csv",
                "_source_row": i,
                "customer_id": f"C{i:07d}",
                "full_name": name,
                "email": email,
                "phone": phone,
                "date_of_birth": dt.date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
                "street_address": f"{i} Elm Street",
                "postcode": f"{rng.choice(['SW', 'NW', 'EC'])}{rng.randrange(1, 9)} 1AA",
                "national_id": nid,
                "notes": own,
                "age": 20 + i % 50,
                "workclass": rng.choice(["Private", "State-gov"]),
                "fnlwgt": rng.randrange(10000, 500000),
                "education": "Bachelors",
                "education_num": 13,
                "marital_status": "Never-married",
                "occupation": "Sales",
                "relationship": "Not-in-family",
                "race": "White",
                "sex": rng.choice(["Female", "Male"]),
                "capital_gain": 0,
                "capital_loss": 0,
                "hours_per_week": 40,
                "native_country": "United-States",
                "income": rng.choice(["<=50K", ">50K"]),
            }
        )
    df = pd.DataFrame(rows)
    for c in ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"):
        df[c] = df[c].astype("Int64")
    df["_source_row"] = df["_source_row"].astype("int64")
    return df


def write_clean(path, frames: list[tuple[str, pd.DataFrame]]) -> None:
    """Write frames as a clean dataset directory (one partition each)."""
    parts = []
    for name, df in frames:
        table = pa.Table.from_pandas(df, preserve_index=False)
        table = table.set_column(
            table.schema.get_field_index("date_of_birth"),
            "date_of_birth",
            pa.array(df["date_of_birth"], type=pa.date32()),
        )
        parts.append((name, table))
    write_dataset(path, parts)
