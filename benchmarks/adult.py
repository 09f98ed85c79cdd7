"""Development data: UCI Adult as frames with the schema's column names (train/val/test).

Stands in for data/train_aug and data/split until the pipeline produces them. Adds what the
real pipeline's rows carry: a `record_id` and a short free-text `notes` column, in English or
Chinese, written from the row's own features (so it adds no label information of its own).
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

ADULT_DIR = Path("/work/shared/data/adult")
COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
INT_COLUMNS = [
    "age",
    "fnlwgt",
    "education_num",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
]
OCCUPATION_ZH = {
    "Tech-support": "技术支持",
    "Craft-repair": "手工维修",
    "Other-service": "其他服务",
    "Sales": "销售",
    "Exec-managerial": "行政管理",
    "Prof-specialty": "专业技术",
    "Handlers-cleaners": "搬运清洁",
    "Machine-op-inspct": "机器操作",
    "Adm-clerical": "行政文员",
    "Farming-fishing": "农业渔业",
    "Transport-moving": "运输",
    "Priv-house-serv": "家政服务",
    "Protective-serv": "安保",
    "Armed-Forces": "军队",
}


def read_adult_file(path: Path | str) -> pd.DataFrame:
    """One Adult file as a typed frame: '?' is null, the test file's trailing dots removed."""
    df = pd.read_csv(
        path,
        header=None,
        names=COLUMNS,
        sep=",",
        skipinitialspace=True,
        na_values=["?"],
        comment="|",
        dtype=str,
    )
    df = df.dropna(how="all")
    for col in COLUMNS:
        df[col] = df[col].astype("string").str.strip()
    df["income"] = df["income"].str.rstrip(".")
    for col in INT_COLUMNS:
        df[col] = pd.to_numeric(df[col]).astype("Int64")
    return df.reset_index(drop=True)


def synthetic_notes(df: pd.DataFrame, prefix: str) -> pd.Series:
    """A short note per row, a third of them in Chinese, derived from the row's features."""
    notes = []
    for i, (occ, hours, wc) in enumerate(
        zip(df["occupation"], df["hours_per_week"], df["workclass"], strict=True)
    ):
        occ = "unknown" if pd.isna(occ) else occ
        wc = "unknown" if pd.isna(wc) else wc
        pick = zlib.crc32(f"{prefix}{i}".encode()) % 6
        if pick < 2:
            notes.append(f"每周工作{hours}小时，职业：{OCCUPATION_ZH.get(occ, '未知')}")
        elif pick < 5:
            notes.append(f"Works {hours} hours a week as {occ.replace('-', ' ')} ({wc}).")
        else:
            notes.append(pd.NA)  # some rows have no note at all
    return pd.Series(notes, index=df.index, dtype="string")


def with_lineage(df: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Add record_id and notes (a new frame)."""
    out = df.copy()
    out.insert(0, "record_id", [f"{prefix}{i:06d}" for i in range(len(df))])
    out["notes"] = synthetic_notes(df, prefix)
    return out


def load_adult(
    root: Path | str = ADULT_DIR, val_share: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(train, val, test): adult.data split by a hash of record_id, adult.test as test."""
    root = Path(root)
    data = with_lineage(read_adult_file(root / "adult.data"), "a")
    test = with_lineage(read_adult_file(root / "adult.test"), "t")
    bucket = np.array([zlib.crc32(r.encode()) % 1000 for r in data["record_id"]])
    is_val = bucket < int(val_share * 1000)
    train = data[~is_val].reset_index(drop=True)
    val = data[is_val].reset_index(drop=True)
    return train, val, test


def generalize(df: pd.DataFrame, bands: dict[str, int]) -> pd.DataFrame:
    """Numeric columns banded like anonymize's `{action: generalize, band: N}` (a new frame)."""
    out = df.copy()
    for col, width in bands.items():
        lo = (out[col] // width) * width
        out[col] = (lo.astype("string") + "-" + (lo + width - 1).astype("string")).astype("string")
    return out
