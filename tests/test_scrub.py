"""The scrubber: planted-entity recall (English and Chinese), checksums, record-aware pass."""

from __future__ import annotations

import random

import pytest

from stages.lib.scrub import cn_id_ok, iban_ok, luhn_ok, scrub_column, scrub_texts
from tests.privacy_fixtures import card, cn_id


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89370400440532013001")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194912310021")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.smith@example.com now", "mail <EMAIL> now"),
        ("call +1 (212) 555-0199 today", "call <PHONE> today"),
        ("ring +44 20 7946 0958.", "ring <PHONE>."),
        ("office 010-12345678 or (030) 1234 5678", "office <PHONE> or <PHONE>"),
        ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok"),
        # Luhn-invalid: no card, but a long digit run all the same (the digit-run rule).
        ("card 4111-1111-1111-1112 stays", "card <NUMBER> stays"),
        ("IBAN DE89 3704 0044 0532 0130 00, thanks", "IBAN <IBAN>, thanks"),
        ("SSN 123-45-6789 and 000-12-3456", "SSN <US_SSN> and <NUMBER>"),
        ("from 192.168.1.10 and 2001:db8::8a2e:370:7334", "from <IP_ADDRESS> and <IP_ADDRESS>"),
        ("see https://example.com/a?b=1. end", "see <URL>. end"),
        (
            "meeting 2023-01-15 at 10:30, order 123456, years 1990-2000",
            "meeting 2023-01-15 at 10:30, order 123456, years 1990-2000",
        ),
        ("order 12345678", "order <NUMBER>"),
    ],
)
def test_patterns(text, expected):
    assert scrub_texts([text]) == [expected]


@pytest.mark.parametrize(
    "text",
    ["card 4111-1111-1111-1112 stays", "SSN 000-12-3456 is not issued", "order 12345678"],
)
def test_digit_run_rule_can_be_switched_off(text):
    assert scrub_texts([text], min_digit_run=None) == [text]


def test_invalid_iban_is_not_an_iban():
    # "0044 0532 ..." inside it reads as a UK number dialled with 00; only the type matters here.
    assert "<IBAN>" not in scrub_texts(["IBAN DE89 3704 0044 0532 0130 01 invalid"])[0]


def test_chinese_text_phones_ids_and_full_width():
    rng = random.Random(3)
    valid, invalid = cn_id(rng, True), cn_id(rng, False)
    texts = [
        f"客户王小明来电，手机13812345678，身份证{valid}。",
        # full-width digits, letters and @
        "手机：１３９ １２３４ ５６７８，邮箱ｗａｎｇ＠ｑｑ．ｃｏｍ",
        f"编号{invalid}不是身份证",  # wrong check digit: not a resident ID
        "电话+86 138-1234-5678或0086 13912345678",
        f"身份证号{valid.lower()}" if valid.endswith("X") else f"身份证号{valid}",
    ]
    out = scrub_texts(texts)
    assert out[0] == "客户王小明来电,手机<PHONE>,身份证<CN_RESIDENT_ID>。"
    assert out[1] == "手机:<PHONE>,邮箱<EMAIL>"
    # A wrong check digit: no resident ID, but 18 digits all the same (the digit-run rule).
    assert out[2] == "编号<NUMBER>不是身份证"
    assert out[3] == "电话<PHONE>或<PHONE>"
    assert out[4] == "身份证号<CN_RESIDENT_ID>"


def test_planted_recall_on_generated_text():
    rng = random.Random(11)
    texts, planted = [], []
    for i in range(300):
        values = {
            "EMAIL": f"user{i}@example.org",
            "PHONE": rng.choice([f"+86 139{i:08d}", f"(415) 555-{1000 + i}", f"1380000{i:04d}"]),
            "CREDIT_CARD": card(rng),
            "CN_RESIDENT_ID": cn_id(rng),
        }
        texts.append(
            f"{values['EMAIL']} 电话{values['PHONE']},卡号 {values['CREDIT_CARD']};"
            f" ID {values['CN_RESIDENT_ID']} 其他编号 {cn_id(rng, False)}"
        )
        planted.append(values)
    arr, counts = scrub_column(texts)
    out = arr.to_pylist()
    for text, values in zip(out, planted, strict=True):
        for entity, value in values.items():
            assert value not in text
            assert f"<{entity}>" in text
    assert {counts[e] for e in ("EMAIL", "PHONE", "CREDIT_CARD", "CN_RESIDENT_ID")} == {300}


def test_record_aware_own_identifiers():
    texts = [
        "Hi John, John Smith called from 555.123.4567; smith said so. Johnny is fine.",
        "王小明说小明的电话是138 1234 5678",
        "Li Wei wrote from LI.WEI@Example.com",
        None,
    ]
    ids = {
        "name": [("full_name", ["John Smith", "王小明", "Li Wei", "Nobody"])],
        "phone": [("phone", ["+1 555 123 4567", "+86 13812345678", None, None])],
        "email": [("email", [None, None, "li.wei@example.com", None])],
    }
    arr, counts = scrub_column(texts, ids)
    out = arr.to_pylist()
    assert out[0] == "Hi <PERSON>, <PERSON> called from <PHONE>; <PERSON> said so. Johnny is fine."
    assert out[1] == "<PERSON>说<PERSON>的电话是<PHONE>"
    assert out[2] == "<PERSON> wrote from <EMAIL>"
    assert out[3] is None
    assert counts["PERSON"] == 6 and counts["PHONE"] == 2 and counts["EMAIL"] == 1


def test_known_names_of_anyone_are_scrubbed_from_text():
    """Other customers' names (referrals) are caught by the dataset's own name deny-list."""
    import pandas as pd

    from stages.lib.scrub import known_name_set, scrub_known_names

    names = known_name_set(["Jack F. Baker", "王伟", "Emma Nelson", "Cher", None])
    texts = pd.Series(
        ["Friend Jack F. Baker called", "推荐人王伟。", "EMMA NELSON wrote", "Cher", None]
    )
    out, n = scrub_known_names(texts, names)
    assert out.tolist()[:4] == [
        "Friend <PERSON> called",
        "推荐人<PERSON>。",
        "<PERSON> wrote",
        "Cher",
    ]
    assert n == 3 and pd.isna(out[4])
    assert texts[0] == "Friend Jack F. Baker called", "input not mutated"
