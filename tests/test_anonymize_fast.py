"""The vectorised anonymize pieces agree with the plain (slow) forms they replaced."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from stages.lib.anon_index import (
    ENTITIES,
    IdentifierIndex,
    _norm,
    build_index,
    leak_columns,
    norm_array,
    scan_identifier_leaks,
    token_form,
)
from stages.lib.anon_scan import GxRegexScan
from stages.lib.features import column_policies
from stages.lib.params import load_params
from stages.lib.schema import load_schema
from stages.lib.scrub import (
    _NAME_GAPS,
    _WORD,
    TITLES,
    _fold,
    _row_matches,
    _row_regex,
    known_name_set,
    name_variants,
    scrub_known_names,
)
from tests.conftest import anon_config
from tests.privacy_fixtures import clean_frame

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup():
    params = load_params(ROOT / "params.yaml")
    schema = load_schema(params)
    return schema, column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)


def test_record_matches_equal_the_per_row_regex():
    """The compile-free matcher replaces exactly what the per-row alternation regex did."""
    rng = random.Random(0)
    chars = [*"ab 0123456789+().-_,xİıSsſΣσς王小明\u3000", "Ab", "AB", *("0123" * 4)]
    compared = 0
    for _ in range(2000):
        items = []
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                digits = "".join(rng.choice("0123") for _ in range(rng.randint(3, 9)))
                items.append(("PHONE", digits, True))
            else:
                word = "".join(rng.choice("ab s王小σ.") for _ in range(rng.randint(2, 5)))
                items.append(("PERSON", word.lower(), False))
        items = sorted(dict.fromkeys(items), key=lambda t: -len(t[1]))
        text = "".join(rng.choice(chars) for _ in range(rng.randint(0, 40)))
        got = _row_matches(text, items)
        if got is None:
            continue
        groups = {f"g{j}": e for j, (e, _, _) in enumerate(items)}
        want = [(m.start(), m.end(), groups[m.lastgroup]) for m in _row_regex(items).finditer(text)]
        assert got == want, (text, items)
        compared += 1
    assert compared > 1200  # the rest contain 'İ' (regex fallback)


_CJK_SPAN = re.compile("[\u3400-\u9fff\uf900-\ufaff]{2,}")


def _reference_names(text: str, names: set[str]) -> str:
    """The former per-cell implementation with a plain set (and the name forms of
    name_variants: other gaps, surname first, a title and a surname)."""
    folded = text.lower() if len(text.lower()) == len(text) else text
    spans, words = [], list(_WORD.finditer(folded))
    for i in range(len(words)):
        for n in range(min(4, len(words) - i), 1, -1):
            chunk = words[i : i + n]
            gaps = [folded[a.end() : b.start()] for a, b in itertools.pairwise(chunk)]
            if all(g in _NAME_GAPS for g in gaps):
                start, end = chunk[0].start(), chunk[-1].end()
                titled = n == 2 and chunk[0].group() in TITLES and gaps[0] in (" ", ". ")
                if folded[start:end] in names or (titled and "\x01" + chunk[1].group() in names):
                    spans.append((start, end))
                    break
    for run in _CJK_SPAN.finditer(folded):
        s = run.group()
        for size in (4, 3, 2):
            spans += [
                (run.start() + j, run.start() + j + size)
                for j in range(len(s) - size + 1)
                if s[j : j + size] in names
            ]
    merged: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    for a, b in reversed(merged):
        text = text[:a] + "<PERSON>" + text[b:]
    return text


def test_known_names_equal_the_set_based_scrubber():
    rng = random.Random(1)
    raw = ["jack f. baker", "Emma Nelson", "li wei", "jack baker", "ann li wei", "王伟", "王小明"]
    words = [
        "jack",
        "f",
        "baker",
        "Emma",
        "NELSON",
        "li",
        "wei",
        "ann",
        "王伟",
        "王小明说",
        "Mr",
        "o'",
        "é",
        "1",
    ]
    texts = [
        "".join(
            rng.choice(words) + rng.choice([" ", ". ", ", ", "  ", ".", "", "-", "'"])
            for _ in range(rng.randint(0, 10))
        )
        for _ in range(2000)
    ]
    out, n = scrub_known_names(pd.Series(texts), known_name_set(raw))
    variants = {v for r in raw for v in name_variants(_fold(r))}
    want = [_reference_names(t, variants) for t in texts]
    assert out.tolist() == want
    assert n == sum(w.count("<PERSON>") for w in want) > 100


def test_norm_array_equals_norm():
    values = ["  John\tSMITH ", "ＡＢＣ　def", "Straße 1", "王 小明", "", "a\x1cb", "ΣΑΣ"]
    assert norm_array(values).to_pylist() == [_norm(v) for v in values]


def test_hashed_index_matches_every_identifier_value(setup):
    """What the former dict index held (normalised values, phone suffixes) is found."""
    schema, policies = setup
    clean = clean_frame(300)
    index = build_index(clean, schema, policies)
    for name in leak_columns(schema, policies):
        col = schema.columns[name]
        values = clean[name].dropna().astype(str).tolist()
        if col.pii == "phone":
            suffixes = [re.sub(r"\D", "", _norm(v))[-9:] for v in values]
            assert (index.match(suffixes, phones=True) >= 0).all()
            continue
        norm = [_norm(v) for v in values if len(_norm(v)) >= 4 or _CJK_SPAN.search(_norm(v))]
        codes = index.match(token_form(pa.array(norm)).to_pylist())  # the form values hash in
        assert (codes >= 0).all(), name
    assert (index.match(["not an identifier", "john"]) == -1).all()
    merged = IdentifierIndex.merge([index, build_index(clean_frame(50, seed=5), schema, policies)])
    assert len(merged.values) >= len(index.values) and merged.max_tokens >= 2


def test_ngram_cjk_and_phone_leaks_found(setup):
    schema, policies = setup
    clean = clean_frame(200, seed=2)
    index = build_index(clean, schema, policies)
    chinese = next(n for n in clean["full_name"] if not n.isascii())
    english = next(n for n in clean["full_name"] if n.isascii())
    address = clean["street_address"].iloc[5]
    phone = re.sub(r"\D", "", clean["phone"].iloc[9])
    out = pd.DataFrame(
        {
            "record_id": ["a", "b", "c", "d", "e", "f"],
            "notes": [
                f"lives at {address.upper()}, since 2001",  # 3-token n-gram
                f"客户{chinese}来电",  # Chinese substring
                f"call ({phone[-10:-7]}) {phone[-7:-4]}-{phone[-4:]} now",  # reformatted phone
                f"referred by {english.lower()} today",
                "nothing to see",
                None,
            ],
            "email": [clean["email"].iloc[0], "x", "y", "z", "w", None],
        }
    )
    found = scan_identifier_leaks(out, ["notes", "email"], index, whole_cell_only={"email"})
    got = {(f["record_id"], f["column"], f["entity"]) for f in found}
    assert got == {
        ("a", "notes", "ADDRESS"),
        ("b", "notes", "PERSON"),
        ("c", "notes", "PHONE"),
        ("d", "notes", "PERSON"),
        ("a", "email", "EMAIL"),
    }
    assert set(ENTITIES) >= {f["entity"] for f in found}


def test_gx_scan_names_every_row_of_a_leaking_value():
    """GX validates distinct values; a failing value maps back to all rows holding it."""
    df = pd.DataFrame(
        {
            "record_id": ["r1", "r2", "r3", "r4"],
            "notes": ["mail a@b.com", "fine", "mail a@b.com", None],
            "kind": ["x", "x", "y", "x"],
        }
    )
    found = GxRegexScan(["notes", "kind"]).run(df)
    assert {(f["record_id"], f["column"], f["entity"]) for f in found} == {
        ("r1", "notes", "EMAIL"),
        ("r3", "notes", "EMAIL"),
    }
    assert GxRegexScan(["kind"]).run(df) == []
