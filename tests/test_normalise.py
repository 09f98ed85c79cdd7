"""model_text, the one text normaliser of the model and split's content key, equals the
per-row Python definition the model used before (kept here as the oracle)."""

from __future__ import annotations

import sys
import unicodedata

import pandas as pd
import pyarrow as pa
import pytest
from faker import Faker
from hypothesis import given, settings
from hypothesis import strategies as st

from stages.lib.normalise import model_text
from stages.lib.text_bags import normalize_text
from stages.split import _normalised


def oracle(values: list[str | None], max_chars: int | None) -> list[str]:
    """The model's normalize_text before it was vectorised, verbatim but for the null check."""
    out = []
    for v in ["" if v is None else v for v in values]:
        s = " ".join(unicodedata.normalize("NFKC", v).lower().split())
        out.append(s if max_chars is None else s[:max_chars])
    return out


# Every code point Python counts as whitespace, every Unicode separator (Z*), and the
# invisible ones that look like a separator but are not (ZWSP, MVS, BOM, word joiner).
SPACES = sorted(
    {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    | {chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)).startswith("Z")}
    | set("\u200b\u180e\ufeff\u2060")
)
# Letters whose lower case differs between str.lower and utf8proc, or depends on context.
TRICKY = [*"İIıiΣσςẞßǅǄǆΐΰ", "\u0307", "\u0301", "A", "a", ".", "Ⅻ", "㎏", "ﬁ", "①"]
LOCALES = ("zh_CN", "ja_JP", "ar_AA", "ru_RU", "tr_TR", "de_DE", "el_GR", "en_US")
FIXED = [
    "İSTANBUL İli",
    "STRAßE ẞ",
    "ΟΔΟΣ ΣΟΦΟΚΛΕΟΥΣ, Σ.",
    "ΣΑ Σ' ΑΣ.Σ",
    "Ｈｅｌｌｏ\u3000 World",
    "a\x1cb\x1dc\x1ed\x1fe\x85f\u1680g\u2028h\u2029i\x0bj",
    "\u00a0\u2000x\u205f\u202fy\u3000",
    "",
    None,
]


def check(values: list[str | None], max_chars: int | None = None) -> None:
    """model_text, the model's normalize_text and split's text key all equal the oracle."""
    want = oracle(values, max_chars)
    assert model_text(pa.array(values, pa.string()), max_chars).to_pylist() == want
    series = pd.Series(values, dtype="string")
    assert normalize_text(series, 10**6 if max_chars is None else max_chars) == want
    if max_chars is None:
        chunked = pa.chunked_array([pa.array(values, pa.string())])
        assert _normalised(chunked, "text").to_pylist() == want


def test_fixed_cases_incl_dotted_i_final_sigma_and_every_space() -> None:
    check(FIXED)
    check(FIXED, 3)
    check(["x" + c + c + "y" for c in SPACES] + [c + "x" + c for c in SPACES])
    check(["".join(SPACES) + "a" + "".join(SPACES)])


def test_every_code_point_alone_and_in_context() -> None:
    # Covers the code points Arrow's newer Unicode treats differently (they go through Python).
    cps = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c < 0xE000]
    check(cps)
    check(["AΣ" + c + " Σ" + c + "B" for c in cps[:0x3000]])


def test_sequences_nfkc_composes_are_normalised() -> None:
    # model_text runs NFKC only on rows with a code point that may change: a row whose code
    # points are each NFKC must still compose (canonical pairs, Hangul jamo, reordering).
    pairs = []
    for c in range(sys.maxunicode + 1):
        d = unicodedata.decomposition(chr(c)).split()
        if d and not d[0].startswith("<"):
            pairs.append("x" + "".join(chr(int(h, 16)) for h in d) + "y")
    hangul = [
        chr(0x1100 + lead) + chr(0x1161 + v) + chr(0x11A8 + t)
        for lead in range(19)
        for v in range(21)
        for t in range(0, 27, 5)
    ]
    hangul += ["\uac00\u11a8", "\u1100\uac00", "a\u0328\u0301", "a\u0301\u0328"]
    check(pairs + hangul)


@pytest.mark.parametrize("locale", LOCALES)
def test_faker_texts_in_several_scripts(locale: str) -> None:
    fake = Faker(locale)
    fake.seed_instance(15)
    texts = [fake.text(max_nb_chars=120) for _ in range(150)]
    texts += [f"{fake.name()}\n{fake.address()}".upper() for _ in range(150)]
    check(texts)
    check(texts, 17)


text_any = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=30)
text_tricky = st.text(alphabet=st.sampled_from(SPACES + TRICKY), max_size=30)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.none(), text_any, text_tricky), max_size=12),
    st.one_of(st.none(), st.integers(0, 40)),
)
def test_property_equals_python_definition(values: list[str | None], max_chars) -> None:
    check(values, max_chars)


def test_split_key_and_model_ascii_fast_path() -> None:
    check(["  Hello\tWORLD \n", "a  b", "ABC", None, ""], 4)
