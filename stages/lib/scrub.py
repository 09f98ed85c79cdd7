"""Free-text scrubbing of identifiers, vectorised over whole columns.

Two passes over a text column:

1. Record-aware: each row's own identifiers from its structured columns (name and its parts,
   e-mail, phone in any formatting, national id, address) are found in its own text. Candidate
   rows are found for the whole column at once (numpy elementwise `find` of each row's needle in
   its own lower-cased or digits-only text); only rows that really contain one of their
   identifiers are then rewritten, with one alternation of that row's escaped identifiers.
2. Patterns: e-mail, URL, IBAN (mod 97), Chinese resident ID (GB 11643 check digit), payment card
   (Luhn), US SSN, IPv4/IPv6, phone numbers. Patterns without a checksum run as RE2 regexes in
   Arrow's C++ kernels over the whole column; checksum patterns use RE2 to find candidate rows and
   validate only the regex candidates in Python.

Text is NFKC-normalised first, so full-width digits, letters and '@' (common in Chinese text)
are matched like their ASCII forms. Matches become typed placeholders such as `<EMAIL>`.
A third pass, over a whole dataset, replaces anyone's known name (stages/lib/known_names.py).

Layout: stages/lib/scrub_text.py (Arrow string columns, NFKC, scripts, pinyin),
stages/lib/pii_patterns.py (entity types, validators, patterns, the pattern pass),
stages/lib/scrub_record.py (the record-aware pass), stages/lib/known_names.py (the hashed
deny-list of known names); this module runs the passes in order on a column and re-exports the
public names, so callers import the scrubber from one place.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.dedup import hash_strings
from stages.lib.known_names import (
    _NAME_GAPS,
    _WORD,
    MAX_CJK_NAME,
    MAX_NAME_WORDS,
    TITLES,
    HashedSet,
    _fold,
    known_name_set,
    known_name_spans,
    name_variants,
    scrub_known_names,
)
from stages.lib.pii_patterns import (
    ADDRESS,
    CARD_LENGTHS,
    CN_RESIDENT_ID,
    CONTAINERS,
    CREDIT_CARD,
    DEFAULT_MIN_DIGIT_RUN,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IBAN_LENGTHS,
    IDENTIFIER,
    IP_ADDRESS,
    NATIONAL_ID,
    NUMBER,
    PATTERNS,
    PERSON,
    PHONE,
    PII_ENTITY,
    URL,
    US_SSN,
    Pattern,
    _apply_pattern,
    cn_id_ok,
    digit_run_pattern,
    iban_ok,
    is_date_shaped,
    luhn_ok,
    placeholder,
    scrub_patterns,
)
from stages.lib.scrub_record import _row_matches, _row_regex, scrub_record_identifiers
from stages.lib.scrub_text import (
    APOSTROPHES,
    UNSPACED,
    UNSPACED_CHAR,
    as_string_array,
    normalize_text,
    pinyin_forms,
)

__all__ = [
    "ADDRESS",
    "APOSTROPHES",
    "CARD_LENGTHS",
    "CN_RESIDENT_ID",
    "CONTAINERS",
    "CREDIT_CARD",
    "DEFAULT_MIN_DIGIT_RUN",
    "EMAIL",
    "ENTITY_TYPES",
    "IBAN",
    "IBAN_LENGTHS",
    "IDENTIFIER",
    "IP_ADDRESS",
    "MAX_CJK_NAME",
    "MAX_NAME_WORDS",
    "NATIONAL_ID",
    "NUMBER",
    "PATTERNS",
    "PERSON",
    "PHONE",
    "PII_ENTITY",
    "TITLES",
    "UNSPACED",
    "UNSPACED_CHAR",
    "URL",
    "US_SSN",
    "_NAME_GAPS",
    "_WORD",
    "HashedSet",
    "Pattern",
    "_fold",
    "_row_matches",
    "_row_regex",
    "as_string_array",
    "cn_id_ok",
    "digit_run_pattern",
    "hash_strings",
    "iban_ok",
    "is_date_shaped",
    "known_name_set",
    "known_name_spans",
    "luhn_ok",
    "name_variants",
    "normalize_text",
    "pinyin_forms",
    "placeholder",
    "scrub_column",
    "scrub_known_names",
    "scrub_patterns",
    "scrub_record_identifiers",
    "scrub_texts",
    "tidy_placeholders",
]


def scrub_column(
    texts: Any,
    identifiers: Mapping[str, Iterable[tuple[str, Any]]] | None = None,
    min_digit_run: int | None = DEFAULT_MIN_DIGIT_RUN,
) -> tuple[pa.Array, Counter]:
    """Scrub a text column: NFKC, the rows' own identifiers, then patterns. Returns counts."""
    counts: Counter = Counter()
    arr = normalize_text(texts)
    if identifiers:
        for pattern in CONTAINERS:
            arr = _apply_pattern(arr, pattern, counts)
        arr, counts = scrub_record_identifiers(arr, identifiers, counts)
    arr, counts = scrub_patterns(arr, counts, min_digit_run, skip_containers=bool(identifiers))
    return tidy_placeholders(arr), counts


def tidy_placeholders(arr: pa.Array) -> pa.Array:
    """What a placeholder leaves of its entity: an extension after a number ("<PHONE> ext. 12"),
    a country code or trunk prefix before one ("+49(0) <PHONE>"), initials before a name."""
    arr = pc.replace_substring_regex(
        arr, r"(<PHONE>|<NUMBER>)[ ]?(?i:x|ext\.?|extension)[ ]?\d{1,6}", "\\1"
    )
    arr = pc.replace_substring_regex(
        arr, r"(^|[^0-9A-Za-z])\+?\d{1,4}(?:[ .-]?\(0\))?[ .-]?(<PHONE>|<NUMBER>)", "\\1\\2"
    )
    return pc.replace_substring_regex(arr, r"\b(?:[A-Z]\. ?){1,3}<PERSON>", "<PERSON>")


def scrub_texts(
    texts: Iterable[str | None], min_digit_run: int | None = DEFAULT_MIN_DIGIT_RUN
) -> list[str | None]:
    """Convenience: pattern-scrub a list of strings (no record-aware pass)."""
    arr, _ = scrub_column(list(texts), min_digit_run=min_digit_run)
    return arr.to_pylist()
