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
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from stdnum import luhn
from stdnum.cn import ric
from stdnum.exceptions import ValidationError
from stdnum.iso7064 import mod_97_10

from stages.lib.dedup import hash_strings

# Placeholder entity types (the text between < and > in the output).
EMAIL = "EMAIL"
PHONE = "PHONE"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
US_SSN = "US_SSN"
CN_RESIDENT_ID = "CN_RESIDENT_ID"
IP_ADDRESS = "IP_ADDRESS"
URL = "URL"
PERSON = "PERSON"
NATIONAL_ID = "NATIONAL_ID"
ADDRESS = "ADDRESS"
IDENTIFIER = "IDENTIFIER"
NUMBER = "NUMBER"

# Which placeholder a record's own identifier of each schema `pii` kind becomes.
PII_ENTITY = {
    "name": PERSON,
    "email": EMAIL,
    "phone": PHONE,
    "national_id": NATIONAL_ID,
    "address": ADDRESS,
    "key": IDENTIFIER,  # the source's record key (customer id), which record_id replaces
}


def placeholder(entity: str) -> str:
    """The typed placeholder that replaces an entity of this type."""
    return f"<{entity}>"


# ---------------------------------------------------------------------------------------------
# Validators: each takes a regex candidate and returns how many leading characters of it are a
# valid entity (0: none). Returning a prefix lets a greedy candidate that swallowed a following
# number still yield the entity at its start.


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum (payment cards; python-stdnum)."""
    return luhn.is_valid(digits)


# Issued card lengths: 12 (Maestro) to 19. 17 and 18 are left out, so an 18-digit Chinese
# resident ID number with a wrong check digit that happens to pass Luhn is not taken for a card
# (the digit-run rule masks it anyway).
CARD_LENGTHS = (12, 13, 14, 15, 16, 19)
_SEPARATORS = " .-"


def _card_prefix(candidate: str) -> int:
    """Longest prefix, cut at a separator or the end, that is a Luhn-valid card-length number."""
    cuts = [i for i, ch in enumerate(candidate) if ch in _SEPARATORS] + [len(candidate)]
    for cut in reversed(cuts):
        digits = _compact(candidate[:cut])
        if len(digits) < min(CARD_LENGTHS):
            break
        if len(digits) in CARD_LENGTHS and luhn.is_valid(digits):
            return cut
    return 0


def _compact(value: str) -> str:
    return value.replace(" ", "").replace("-", "").replace(".", "")


# IBAN lengths by country (ISO 13616 registry, common countries); others: any length 15-34.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29,
    "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


def iban_ok(compact: str) -> bool:
    """Whether an IBAN without separators passes the ISO 13616 mod-97 check (python-stdnum)."""
    compact = compact.upper()
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    return mod_97_10.is_valid(compact[4:] + compact[:4])


def _iban_prefix(candidate: str) -> int:
    """Length of the valid IBAN at the start of the candidate (spaces, dashes), else 0."""
    positions = [i for i, ch in enumerate(candidate) if ch not in " -"]
    compact = candidate.replace(" ", "").replace("-", "").upper()
    lengths = [IBAN_LENGTHS[compact[:2]]] if compact[:2] in IBAN_LENGTHS else range(34, 14, -1)
    for n in lengths:
        if n <= len(compact) and iban_ok(compact[:n]):
            return positions[n - 1] + 1
    return 0


def cn_id_ok(value: str) -> bool:
    """Whether an 18-character Chinese resident ID has a valid GB 11643 check character and
    birth date (python-stdnum). The region is not checked: stdnum's list of region codes lags
    behind the ones in use, and an ID of an unlisted region is still an identifier."""
    compact = value.replace(" ", "").upper()
    if len(compact) != 18 or not compact[:17].isdigit():
        return False
    try:
        ric.get_birth_date(compact)
    except ValidationError:
        return False
    return ric.calc_check_digit(compact) == compact[17]


def _ssn_prefix(candidate: str) -> int:
    """The SSN's length if its area, group and serial are ones the SSA issues, else 0."""
    digits = _compact(candidate)
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    ok = area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
    return len(candidate) if ok else 0


_DATE_SHAPES = re.compile(
    r"(?:1[89]|20)\d\d([-/. ])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])"  # 2023-01-15
    r"|(?:0?[1-9]|[12]\d|3[01])([-/. ])(?:0?[1-9]|1[0-2])\2(?:1[89]|20)\d\d"  # 15.01.2023
    r"|(?:0?[1-9]|1[0-2])([-/. ])(?:0?[1-9]|[12]\d|3[01])\3(?:1[89]|20)\d\d"  # 01/15/2023
    r"|(?:1[89]|20)\d\d ?[-/] ?(?:1[89]|20)\d\d"  # a range of years: 1990-2000
)


def is_date_shaped(candidate: str) -> bool:
    """Whether a run of digits and separators reads as a date or a range of years."""
    return _DATE_SHAPES.fullmatch(candidate.strip("()+ ")) is not None


def _digit_run_validator(min_digits: int) -> Callable[[str], int]:
    def validate(candidate: str) -> int:
        if is_date_shaped(candidate) or sum(ch.isdigit() for ch in candidate) < min_digits:
            return 0
        return len(candidate)

    return validate


def _ipv6_prefix(candidate: str) -> int:
    """The candidate's length if it parses as IPv6 and has 6 characters or more (not '::1')."""
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return 0
    return len(candidate) if len(candidate) >= 6 else 0


def _whole(check: Callable[[str], bool]) -> Callable[[str], int]:
    return lambda candidate: len(candidate) if check(candidate) else 0


# ---------------------------------------------------------------------------------------------
# Patterns. Every regex is valid in both RE2 (Arrow) and Python `re` (with re.ASCII), has group 1
# = the boundary character before the entity (put back in the replacement, since RE2 has no
# look-behind) and group 2 = the entity. Order matters: checksum-validated numbers go before
# phones so a card or ID is typed as such, e-mails before URLs.

_LEAD = r"(^|[^0-9])"  # not inside a number (glued to letters is fine: "SSN223-59-8379")
_LEAD_NOPLUS = r"(^|[^0-9+])"  # ... and not after '+', which starts a phone number
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_HEX = r"[0-9A-Fa-f]{0,4}"
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]"
_URL_END = r"[A-Za-z0-9\-_~/#@$&*+=%]"


@dataclass(frozen=True)
class Pattern:
    """One entity type's regex and, for checksummed identifiers, its validator."""

    entity: str
    regex: str
    validator: Callable[[str], int] | None = None


_EXTENSION = r"(?:[ ]?(?i:x|ext\.?|extension)[ ]?\d{1,6})?"
_OBFUSCATED_AT = r"(?:[ ]?[\[({]at[\])}][ ]?| at )"
_OBFUSCATED_DOT = r"(?:[ ]?[\[({]dot[\])}][ ]?| dot )"

PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        EMAIL,
        r"()([A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})",
    ),
    # Obfuscated: name[at]example.com, name (at) example (dot) com, name at example dot com
    # (the spelled-out ' at ' only together with a spelled-out dot, so prose is left alone).
    Pattern(
        EMAIL,
        r"(?i)()([a-z0-9._%+\-]+"
        r"(?:[ ]?[\[({]at[\])}][ ]?[a-z0-9\-]+(?:(?:\.|" + _OBFUSCATED_DOT + r")[a-z0-9\-]+)*"
        r"(?:\.|" + _OBFUSCATED_DOT + r")[a-z]{2,6}"
        r"| at [a-z0-9\-]+(?:(?:\.|"
        + _OBFUSCATED_DOT
        + r")[a-z0-9\-]+)*"
        + _OBFUSCATED_DOT
        + r"[a-z]{2,6}))\b",
    ),
    Pattern(
        URL,
        rf"(?i)()((?:https?|ftp)://{_URL_CHARS}*{_URL_END}|www\.{_URL_CHARS}*{_URL_END})",
    ),
    # A number written with '+' is a phone number, before any checksum could claim part of it
    # ("+49(0) 443164431" holds a valid-looking SSN).
    Pattern(
        PHONE,
        _LEAD_NOPLUS
        + r"(\+[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}"
        + _EXTENSION
        + r")\b",
    ),
    Pattern(
        IBAN,
        # No boundary before it: "IBANGB21..." is common, and mod 97 decides.
        r"(?i)()([A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?)\b",
        _iban_prefix,
    ),
    Pattern(
        CN_RESIDENT_ID,
        _LEAD + r"([1-9]\d{5} ?(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]) ?\d{3}"
        r"[0-9Xx])\b",
        _whole(cn_id_ok),
    ),
    Pattern(CREDIT_CARD, _LEAD_NOPLUS + r"([1-6]\d(?:[ .-]?\d){10,17})\b", _card_prefix),
    # With separators: nine bare digits are as often a phone number (the digit-run rule masks them).
    Pattern(US_SSN, _LEAD + r"(\d{3}[ .-]\d{2}[ .-]\d{4})\b", _ssn_prefix),
    Pattern(
        IP_ADDRESS,
        r"(^|[^0-9A-Fa-f:])((?:"
        + _HEX
        + r":){2,6}\d{1,3}(?:\.\d{1,3}){3}|(?:"
        + _HEX
        + r":){2,7}"
        + _HEX
        + r")",
        _ipv6_prefix,
    ),
    # Greedy over further ".digits", so "+33.(0)4.75.86.81.27" (a phone) is no address.
    Pattern(
        IP_ADDRESS,
        r"(^|[^0-9.])((?:" + _OCTET + r"\.){3}" + _OCTET + r"(?:\.\d+)*)\b",
        lambda c: len(c) if c.count(".") == 3 else 0,
    ),
    Pattern(
        PHONE,
        _LEAD_NOPLUS + r"((?:"
        # Chinese mobile, optionally with +86 / 0086
        r"(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ .-]?\d{4}){2}"
        # international: +CC, optional (area) or (0), then digit groups
        r"|(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}"
        # North American: (555) 123-4567, 555-123-4567, 415/867-5314, 1-800-555-0199
        r"|(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ ./-])\d{3}[ .-]\d{4}"
        # North American written as ten bare digits (NANP: area and exchange start 2-9)
        r"|[2-9]\d{2}[2-9]\d{6}"
        # national with trunk 0: 020 7946 0958, (030) 1234 5678, 010-12345678
        r"|(?:\(0[1-9]\d{0,3}\)|0[1-9]\d{0,3})[ .-]?\d{3,4}[ .-]?\d{3,4}"
        r")" + _EXTENSION + r")\b",
    ),
)


def digit_run_pattern(min_digits: int) -> Pattern:
    """The conservative rule for what no pattern classified: a run of `min_digits` or more digits
    (single separators, brackets and an extension allowed; glued to letters too), not a date.
    It catches phone and national-number formats of any country, at the cost of masking long
    order or reference numbers as well."""
    return Pattern(
        NUMBER,
        r"(^|[^0-9])(\+?\(?\d(?:[ .\-/()]{0,3}\d){"
        + str(max(min_digits - 1, 1))
        + ",}"
        + _EXTENSION
        + ")",
        _digit_run_validator(min_digits),
    )


# What `scrub_column` masks by default: runs of 7 digits or more (anonymize.min_digit_run).
DEFAULT_MIN_DIGIT_RUN = 7

# E-mails and URLs hold other identifiers (a name in "wang.singh@..."): they go first, before a
# record's own name parts could break them up.
CONTAINERS = PATTERNS[:3]

ENTITY_TYPES = tuple(
    dict.fromkeys([p.entity for p in PATTERNS] + [NUMBER] + list(PII_ENTITY.values()))
)


# ---------------------------------------------------------------------------------------------
# Column helpers


def as_string_array(values: Any) -> pa.Array:
    """Any column-like (Arrow array, pandas Series, list) as one Arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    elif not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.large_string(), from_pandas=True)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        values = values.cast(pa.large_string())
    return values.cast(pa.large_string())


# Control characters used as row separator and candidate markers; removed from input text.
_SEP, _OPEN, _CLOSE = "\x00", "\x01", "\x02"


def normalize_text(values: Any) -> pa.Array:
    """NFKC-normalise a string column (full-width digits, letters, '@' become ASCII).

    The control characters NUL, SOH and STX, which the scrubber uses as markers, are removed.
    """
    arr = pc.utf8_normalize(as_string_array(values), "NFKC")
    # Typographic apostrophes become ASCII ones, so "O’Rourke" is matched like "O'Rourke".
    arr = pc.replace_substring_regex(arr, "[\u2018\u2019\u02bc]", "'")
    return pc.replace_substring_regex(arr, "[\x00-\x02]", "")


def _to_numpy(arr: pa.Array) -> np.ndarray:
    """Arrow strings as a numpy StringDType array (nulls as empty strings)."""
    filled = pc.fill_null(arr, "")
    return np.array(filled.to_numpy(zero_copy_only=False), dtype=np.dtypes.StringDType())


def _replace_rows(arr: pa.Array, rows: np.ndarray, new_values: list[str]) -> pa.Array:
    """The array with `rows` (sorted indices) replaced by `new_values`."""
    mask = np.zeros(len(arr), dtype=bool)
    mask[rows] = True
    return pc.replace_with_mask(arr, pa.array(mask), pa.array(new_values, type=arr.type))


# ---------------------------------------------------------------------------------------------
# Pattern pass


def scrub_patterns(
    texts: Any,
    counts: Counter | None = None,
    min_digit_run: int | None = DEFAULT_MIN_DIGIT_RUN,
    skip_containers: bool = False,
) -> tuple[pa.Array, Counter]:
    """Replace pattern-detected identifiers in a (normalised) text column; count per type.

    Last, runs of `min_digit_run` or more digits that no pattern classified become <NUMBER>
    (None or 0: off)."""
    arr = as_string_array(texts)
    counts = Counter() if counts is None else counts
    patterns = PATTERNS + ((digit_run_pattern(min_digit_run),) if min_digit_run else ())
    for pattern in patterns[len(CONTAINERS) :] if skip_containers else patterns:
        arr = _apply_pattern(arr, pattern, counts)
    return arr, counts


def _apply_pattern(arr: pa.Array, pattern: Pattern, counts: Counter) -> pa.Array:
    """One pattern's matches replaced by its placeholder (validated first, if it has a validator);
    counts the replacements."""
    tag = placeholder(pattern.entity)
    if pattern.validator is None:
        # Count the placeholders before and after (a literal count is cheaper than a second
        # regex pass over the column).
        before = pc.sum(pc.count_substring(arr, tag)).as_py() or 0
        arr = pc.replace_substring_regex(arr, pattern.regex, "\\1" + tag)
        counts[pattern.entity] += (pc.sum(pc.count_substring(arr, tag)).as_py() or 0) - before
        return arr
    # Checksummed identifiers: RE2 marks every candidate in the column (\x01 cand \x02);
    # Python only splits the marked rows and runs the checksum on each candidate.
    marked = pc.replace_substring_regex(arr, pattern.regex, "\\1" + _OPEN + "\\2" + _CLOSE)
    hits = pc.fill_null(pc.count_substring(marked, _OPEN), 0).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(hits)
    if not rows.size:
        return arr
    pieces = _SEP.join(marked.take(pa.array(rows)).to_pylist()).split(_OPEN)
    out, n, validate = [pieces[0]], 0, pattern.validator
    for piece in pieces[1:]:
        cand, _, rest = piece.partition(_CLOSE)
        length = validate(cand)
        if length:
            n += 1
            out.append(tag + cand[length:] + rest)
        else:
            out.append(cand + rest)
    if n:
        arr = _replace_rows(arr, rows, "".join(out).split(_SEP))
        counts[pattern.entity] += n
    return arr


# ---------------------------------------------------------------------------------------------
# Record-aware pass

_CJK = "[\u3400-\u9fff\uf900-\ufaff]"  # literal characters: RE2 has no \\u escapes
# Scripts written without spaces: a Latin name glued to them still stands alone.
UNSPACED = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_PHONE_SEP = r"[\s()./\-]*"


@dataclass(frozen=True)
class _Needles:
    """Long form (row, entity, needle, haystack kind) of every row's own identifiers."""

    rows: np.ndarray
    entity: list[str]
    needle: np.ndarray  # lower-cased literal, or digits for phones
    digits: np.ndarray  # True: search the digits-only text


def _needles(identifiers: Mapping[str, Iterable[tuple[str, Any]]], n_rows: int) -> _Needles:
    rows, ents, needles, digits = [], [], [], []

    def add(entity: str, where: np.ndarray, values: pa.Array, min_len: int, dig: bool) -> None:
        values = pc.fill_null(values, "")
        keep = np.flatnonzero(
            pc.greater_equal(pc.utf8_length(values), min_len).to_numpy(zero_copy_only=False)
        )
        if keep.size:
            rows.append(where[keep])
            ents.extend([entity] * keep.size)
            needles.append(_to_numpy(values.take(pa.array(keep))))
            digits.append(np.full(keep.size, dig))

    every = np.arange(n_rows)
    for kind, columns in identifiers.items():
        entity = PII_ENTITY[kind]
        for _, values in columns:
            vals = pc.utf8_lower(pc.utf8_trim_whitespace(normalize_text(values)))
            if len(vals) != n_rows:
                raise ValueError("identifier column and text column differ in length")
            if kind == "phone":
                # The last 9 digits: the subscriber number whatever the country-code spelling.
                dig = pc.replace_substring_regex(vals, r"[^0-9]", "")
                dig = pc.if_else(
                    pc.greater_equal(pc.utf8_length(dig), 7),
                    pc.utf8_slice_codeunits(dig, -9),
                    pa.scalar("", vals.type),
                )
                add(entity, every, dig, 7, True)
                continue
            add(entity, every, vals, 3 if kind == "name" else 4, False)
            if kind == "national_id":
                # Written with other separators or none: compare the digits (7 or more).
                dig = pc.replace_substring_regex(vals, r"[^0-9]", "")
                add(entity, every, dig, 7, True)
            if kind == "address":
                # The street line alone ("1280 Chestnut Rd"), without city and state.
                # (a house number written first with a comma, "12, rue des Lilas", is kept)
                street = pc.utf8_trim_whitespace(
                    pc.replace_substring_regex(vals, r"^(\d+[a-z]?,)?([^,]*),.*$", "\\1\\2")
                )
                add(entity, every, street, 6, False)
            if kind != "name":
                continue
            # Given and family names (two characters or more) of names with several parts.
            parts = pc.utf8_split_whitespace(pc.replace_substring_regex(vals, r"[,;]", " "))
            lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(parts)
            parent = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
            multi = lengths[parent] > 1
            part = pc.and_(pa.array(multi), pc.invert(pc.is_in(flat, value_set=_PARTICLES)))
            add(entity, parent[part.to_numpy(zero_copy_only=False)], flat.filter(part), 2, False)
            # A Chinese name written without spaces: the given name after the surname.
            cjk = pc.fill_null(pc.match_substring_regex(vals, rf"^{_CJK}{{3,4}}$"), False)
            given = pc.if_else(cjk, pc.utf8_slice_codeunits(vals, 1), pa.scalar("", vals.type))
            add(entity, every, given, 2, False)
            # A Chinese name's pinyin in either order ("Zhou Wei", "Wei Zhou", "Zhouwei").
            chinese = np.flatnonzero(
                pc.fill_null(pc.match_substring_regex(vals, rf"^{_CJK}{{2,4}}$"), False).to_numpy(
                    zero_copy_only=False
                )
            )
            for variant in range(3):
                spelled = [pinyin_forms(v)[variant] for v in vals.take(chinese).to_pylist()]
                add(entity, chinese, pa.array(spelled, vals.type), 5, False)
    if not rows:
        empty = np.array([], dtype=np.dtypes.StringDType())
        return _Needles(np.array([], dtype=np.int64), [], empty, np.array([], dtype=bool))
    return _Needles(np.concatenate(rows), ents, np.concatenate(needles), np.concatenate(digits))


# Name particles: parts of a name, but words of their own in running text ("van", "de").
_PARTICLES = pa.array(
    "van von der den de da di del della la le du dos das do bin ibn al el y e ter ten 't".split(),
    pa.large_string(),
)


def pinyin_forms(name: str) -> tuple[str, str, str]:
    """A Chinese name in pinyin: surname first, given name first, and run together."""
    from pypinyin import lazy_pinyin  # only data with Chinese names pays for its import

    surname, *given = lazy_pinyin(name)
    rest = "".join(given)
    return f"{surname} {rest}", f"{rest} {surname}", f"{surname}{rest}"


def _needle_regex(entity: str, needle: str, is_digits: bool) -> str:
    if is_digits:
        # Any formatting: separators between digits, and any country code / trunk prefix.
        core = _PHONE_SEP.join(re.escape(d) for d in needle)
        return rf"(?<!\d)(?:[+(]*\d{_PHONE_SEP}){{0,5}}?{core}(?!\d)"
    escaped = re.escape(needle)
    if re.search(_CJK, needle):
        return escaped  # Chinese text has no word boundaries
    return rf"(?<![^\W{UNSPACED}]){escaped}(?![^\W{UNSPACED}])"


def _row_regex(items: list[tuple[str, str, bool]]) -> re.Pattern[str]:
    """One alternation of a row's identifiers (the reference semantics of `_row_matches`)."""
    return re.compile(
        "|".join(f"(?P<g{j}>{_needle_regex(e, nd, dg)})" for j, (e, nd, dg) in enumerate(items)),
        re.IGNORECASE,
    )


def _casefix_map() -> dict[int, str]:
    # re.IGNORECASE also equates a few lower-case letters with each other (i and dotless i, s and
    # long s, Greek sigma forms, ...); fold each such class to one member so a plain string
    # comparison agrees with the regex.
    try:
        from re._casefix import _EXTRA_CASES  # CPython >= 3.11
    except ImportError:  # pragma: no cover
        return {}
    rep: dict[int, int] = {}
    for k, others in _EXTRA_CASES.items():
        group = [k, *others]
        low = min(rep.get(c, c) for c in group)
        for c in group:
            rep[c] = min(rep.get(c, c), low)
    return {k: chr(v) for k, v in rep.items() if k != v}


_CASEFIX = _casefix_map()
_PHONE_START = re.compile(r"(?<!\d)[+(\d]")
_CJK_RX = re.compile(_CJK)
UNSPACED_CHAR = re.compile(f"[{UNSPACED}]")


def _is_word(ch: str) -> bool:
    # `re`'s \w, less the scripts written without spaces (the regex's boundary).
    return (ch.isalnum() or ch == "_") and UNSPACED_CHAR.match(ch) is None


def _is_phone_sep(ch: str) -> bool:
    return ch.isspace() or ch in "()./-"  # _PHONE_SEP


def _phone_core(text: str, q: int, needle: str) -> int:
    n = len(text)
    for j, d in enumerate(needle):
        if j:
            while q < n and _is_phone_sep(text[q]):
                q += 1
        if q >= n or text[q] != d:
            return -1
        q += 1
    return -1 if q < n and text[q].isdecimal() else q


def _phone_match(text: str, p: int, needle: str) -> int:
    """End of `_needle_regex(.., needle, True)` matched at p, else -1 (same lazy prefix)."""
    n = len(text)
    q = p
    for k in range(6):
        end = _phone_core(text, q, needle)
        if end >= 0:
            return end
        if k == 5:
            break
        while q < n and text[q] in "+(":
            q += 1
        if q >= n or not text[q].isdecimal():
            return -1
        q += 1
        while q < n and _is_phone_sep(text[q]):
            q += 1
    return -1


def _row_matches(
    text: str, items: list[tuple[str, str, bool]]
) -> list[tuple[int, int, str]] | None:
    """Spans (start, end, entity) that `_row_regex(items).sub` would replace, without compiling a
    regex per row (compiling one per matched row cost ~1 ms each). None: the text's case folding
    changes its length, which plain string comparison cannot follow; use the regex."""
    folded = text.lower().translate(_CASEFIX)
    if len(folded) != len(text):
        return None
    cands: list[tuple[int, int, int]] = []  # (start, alternative, end)
    starts: list[int] | None = None
    for order, (_, needle, is_digits) in enumerate(items):
        if is_digits:
            if starts is None:
                starts = [m.start() for m in _PHONE_START.finditer(text)]
            for p in starts:
                end = _phone_match(text, p, needle)
                if end >= 0:
                    cands.append((p, order, end))
            continue
        lit = needle.lower().translate(_CASEFIX)
        if len(lit) != len(needle):
            return None
        bounded = not _CJK_RX.search(needle)
        size, n = len(lit), len(text)
        at = folded.find(lit)
        while at >= 0:
            end = at + size
            if not bounded or (
                (at == 0 or not _is_word(text[at - 1])) and (end == n or not _is_word(text[end]))
            ):
                cands.append((at, order, end))
            at = folded.find(lit, at + 1)
    # The regex scan: leftmost position first, and there the first alternative that matches.
    cands.sort()
    spans, pos = [], 0
    for start, order, end in cands:
        if start >= pos:
            spans.append((start, end, items[order][0]))
            pos = end
    return spans


_NEXT_NAME = re.compile(r" [A-Z][a-z'-]+")
_PREVIOUS_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z'-]+ $")


def _whole_names(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """A row's own given name or surname that stands inside another person's full name
    ("Spoke with William King" when the row is William Robertson) takes the whole name with it:
    leaving "<PERSON> King" would keep half a name and hide the rest from the known-name pass."""
    out = []
    for i, (start, end, entity) in enumerate(spans):
        if entity == PERSON and " " not in text[start:end]:
            limit = spans[i + 1][0] if i + 1 < len(spans) else len(text)
            after = _NEXT_NAME.match(text, end)
            if after and after.end() <= limit:
                end = after.end()
            floor = out[-1][1] if out else 0
            before = _PREVIOUS_NAME.search(text[:start])
            if before and before.start() >= floor:
                start = before.start()
        out.append((start, end, entity))
    return out


def scrub_record_identifiers(
    texts: Any,
    identifiers: Mapping[str, Iterable[tuple[str, Any]]],
    counts: Counter | None = None,
) -> tuple[pa.Array, Counter]:
    """Replace each row's own identifiers (by pii kind: [(column, values)]) in its own text."""
    arr = as_string_array(texts)
    counts = Counter() if counts is None else counts
    needles = _needles(identifiers, len(arr))
    if not needles.rows.size:
        return arr, counts
    # Vectorised candidate search: each needle in its own row's lower-cased / digits-only text.
    lower = _to_numpy(pc.utf8_lower(arr))
    digit_text = _to_numpy(pc.replace_substring_regex(pc.fill_null(arr, ""), r"[^0-9]", ""))
    hay = np.where(needles.digits, digit_text[needles.rows], lower[needles.rows])
    found = np.flatnonzero(np.strings.find(hay, needles.needle) >= 0)
    if not found.size:
        return arr, counts
    by_row: dict[int, dict[tuple[str, str, bool], None]] = {}
    for i in found:
        by_row.setdefault(int(needles.rows[i]), {})[
            (needles.entity[i], str(needles.needle[i]), bool(needles.digits[i]))
        ] = None
    rows = np.array(sorted(by_row), dtype=np.int64)
    old = arr.take(pa.array(rows)).to_pylist()
    new = []
    for row, text in zip(rows, old, strict=True):
        # Longest needle first, so a full name wins over its parts.
        items = sorted(by_row[int(row)], key=lambda t: -len(t[1]))
        spans = _row_matches(text, items)
        if spans is None:  # rare: fall back to the regex itself
            groups = {f"g{j}": ent for j, (ent, _, _) in enumerate(items)}
            spans = [
                (m.start(), m.end(), groups[m.lastgroup]) for m in _row_regex(items).finditer(text)
            ]
        spans = _whole_names(text, spans)
        pieces, last = [], 0
        for start, end, entity in spans:
            pieces += [text[last:start], placeholder(entity)]
            counts[entity] += 1
            last = end
        new.append("".join(pieces) + text[last:])
    return _replace_rows(arr, rows, new), counts


# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Hashed string sets: a dataset's identifier values (millions at 10M rows) kept as sorted 64-bit
# hashes instead of a Python set/dict of strings (~9 bytes per value instead of ~100).


def _strings(arr: pa.Array) -> np.ndarray:
    return arr.to_numpy(zero_copy_only=False).astype(object)


@dataclass(frozen=True)
class HashedSet:
    """A set of strings as sorted unique 64-bit hashes, each with a small int code.

    Membership is by hash: two different strings share a hash with probability about
    n^2 / 2^65 (~1e-6 for 10M values per partition's candidates), and a collision only makes a
    non-identifier count as one (scrubbed or flagged): never a leak.
    """

    hashes: np.ndarray  # uint64, sorted, unique
    codes: np.ndarray  # int8, same length

    @classmethod
    def empty(cls) -> HashedSet:
        """No values."""
        return cls(np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int8))

    @classmethod
    def from_hashes(cls, hashes: np.ndarray, codes: np.ndarray) -> HashedSet:
        """Sorted and deduplicated; of duplicate hashes, the last one's code is kept."""
        if not len(hashes):
            return cls.empty()
        order = np.argsort(hashes, kind="stable")
        h, c = hashes[order], codes[order]
        last = np.r_[h[1:] != h[:-1], True]
        return cls(np.ascontiguousarray(h[last]), np.ascontiguousarray(c[last].astype(np.int8)))

    @classmethod
    def merge(cls, parts: Iterable[HashedSet]) -> HashedSet:
        """The union of several sets (later parts' codes win on duplicates)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls.from_hashes(
            np.concatenate([p.hashes for p in parts]), np.concatenate([p.codes for p in parts])
        )

    def __len__(self) -> int:
        return len(self.hashes)

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The code of each hash, -1 where absent."""
        out = np.full(len(hashes), -1, dtype=np.int8)
        if not len(self.hashes) or not len(hashes):
            return out
        pos = np.searchsorted(self.hashes, hashes)
        pos[pos == len(self.hashes)] = 0
        hit = self.hashes[pos] == hashes
        out[hit] = self.codes[pos[hit]]
        return out

    def lookup(self, values: Any) -> np.ndarray:
        """The code of each string, -1 where absent."""
        return self.lookup_hashes(hash_strings(values))


# ---------------------------------------------------------------------------------------------
# Known names (anyone's) in text

# A word of a name: letters of a spaced script (a Latin name glued to Chinese text stands apart).
_WORD = re.compile(f"[^\\W\\d_{UNSPACED}]+")
_CJK_SPAN = re.compile("[\u3400-\u9fff\uf900-\ufaff]{2,}")
# Between the words of a name: a space, an initial's dot and a space, an apostrophe (O'Rourke),
# a hyphen (Jean-Luc) or a comma after a surname written first (VANDERMEULEN, LUCINDA).
_CJK_SPACED = re.compile("[\u3400-\u9fff\uf900-\ufaff]{1,3} [\u3400-\u9fff\uf900-\ufaff]{1,3}")
MAX_CJK_NAME = 4
_CJK_PAIR = re.compile("([\u3400-\u9fff\uf900-\ufaff]+)(?= ([\u3400-\u9fff\uf900-\ufaff]+))")
_NAME_GAPS = (" ", ". ", "'", "-", ", ", " '")
MAX_NAME_WORDS = 4
# Titles before a surname: "Mr. Featherstonehaugh" names a known customer by the surname alone.
TITLES = frozenset(
    "mr mrs ms miss mx dr prof sir madam herr frau m mme mlle monsieur madame sr sra srta don "
    "sig signor signora dhr mevr heer mevrouw senhor senhora".split()
)
_TITLED = "\x01"  # marks a surname entry of the deny-list: it counts only after a title
APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'"})


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(APOSTROPHES)
    return " ".join(text.lower().split())


def name_variants(folded: str) -> list[str]:
    """The forms of a folded full name that the deny-list holds: as written, surname first
    (with and without a comma), the surname after a title, and a Chinese name's pinyin."""
    if _CJK_SPAN.fullmatch(folded):
        return [folded, *pinyin_forms(folded)[:2]]
    if _CJK_SPACED.fullmatch(folded):  # 佐藤 花子: with its space and without
        joined = folded.replace(" ", "")
        return [folded, joined] if len(joined) <= MAX_CJK_NAME else [folded]
    if len(_WORD.findall(folded)) < 2:
        return []
    words = folded.split(" ")
    out = [folded]
    if len(words) >= 2:
        first, last = " ".join(words[:-1]).rstrip("."), words[-1]
        out += [f"{last} {first}", f"{last}, {first}"]
        if len(last) >= 3:
            out.append(_TITLED + last)
    return out


def known_name_set(values: Iterable[Any]) -> HashedSet:
    """Full names worth a deny-list (two or more words, or two or more Chinese characters),
    folded, in every form `name_variants` gives, as a hashed set."""
    names = set()
    for v in values:
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            continue
        names.update(name_variants(_fold(str(v))))
    return HashedSet.from_hashes(hash_strings(list(names)), np.zeros(len(names), dtype=np.int8))


@dataclass
class _Candidates:
    """Candidate name spans of many texts: row, start, end, word index (-1: a CJK substring)
    and the span's text (for hashing)."""

    row: list[np.ndarray] = field(default_factory=list)
    start: list[np.ndarray] = field(default_factory=list)
    end: list[np.ndarray] = field(default_factory=list)
    word: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)

    def add(self, row, start, end, word, texts) -> None:
        if len(row):
            self.row.append(np.asarray(row, dtype=np.int64))
            self.start.append(np.asarray(start, dtype=np.int64))
            self.end.append(np.asarray(end, dtype=np.int64))
            self.word.append(np.asarray(word, dtype=np.int64))
            self.hashes.append(hash_strings(texts))

    def cat(self) -> tuple[np.ndarray, ...]:
        if not self.row:
            e = np.empty(0, dtype=np.int64)
            return e, e, e, e, np.empty(0, dtype=np.uint64)
        return tuple(
            np.concatenate(x) for x in (self.row, self.start, self.end, self.word, self.hashes)
        )


def _ascii_name_candidates(lower: pa.Array, rows: np.ndarray, out: _Candidates) -> None:
    """Word n-grams (2..4 words joined by their own ' ' or '. ' gaps) of ASCII lower-case texts,
    vectorised in Arrow: for ASCII, `_WORD` is [a-z]+."""
    if not len(lower):
        return
    gaps = pc.split_pattern_regex(lower, "[a-z]+")  # m+1 pieces around m words
    n_gaps = pc.list_value_length(gaps).to_numpy(zero_copy_only=False).astype(np.int64)
    words = pc.list_flatten(pc.split_pattern_regex(lower, "[^a-z]+"))
    words = words.filter(pc.greater(pc.utf8_length(words), 0))
    n_words = n_gaps - 1
    if not len(words):
        return
    local = np.repeat(np.arange(len(lower)), n_words)  # row (in `lower`) of each word
    gap_flat = pc.list_flatten(gaps)
    glen = pc.utf8_length(gap_flat).to_numpy(zero_copy_only=False).astype(np.int64)
    wlen = pc.utf8_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    k = np.arange(len(words))
    before, after = k + local, k + local + 1  # each row has one gap more than words
    first = np.r_[True, local[1:] != local[:-1]]
    inc = glen[before] + np.where(first, 0, np.r_[0, wlen[:-1]])
    c = np.cumsum(inc)
    row_first = np.maximum.accumulate(np.where(first, k, 0))
    start = c - c[row_first] + inc[row_first]
    end = start + wlen
    gap_after = gap_flat.take(pa.array(after))
    gap_ok = pc.is_in(gap_after, value_set=pa.array(_NAME_GAPS, gap_after.type)).to_numpy(
        zero_copy_only=False
    )
    total = len(words)
    valid = np.ones(total, dtype=bool)
    for n in range(2, MAX_NAME_WORDS + 1):
        # n words from k: same row, and every gap between them a name gap
        nxt = np.r_[local[n - 1 :] == local[: total - n + 1], np.zeros(n - 1, dtype=bool)]
        valid = valid & np.r_[gap_ok[n - 2 :], np.zeros(n - 2, dtype=bool)] & nxt
        idx = np.flatnonzero(valid)
        if not idx.size:
            break
        pieces = []
        for j in range(n):
            pieces.append(words.take(pa.array(idx + j)))
            if j < n - 1:
                pieces.append(gap_after.take(pa.array(idx + j)))
        gram = pc.binary_join_element_wise(*pieces, pa.scalar("", words.type))
        out.add(rows[local[idx]], start[idx], end[idx + n - 1], idx, _strings(gram))
        if n == 2:  # a title and the word after it: a candidate surname
            titled = pc.and_(
                pc.is_in(pieces[0], value_set=pa.array(sorted(TITLES), words.type)),
                pc.is_in(pieces[1], value_set=pa.array([" ", ". "], words.type)),
            ).to_numpy(zero_copy_only=False)
            t = idx[titled]
            surnames = pc.binary_join_element_wise(
                pa.scalar(_TITLED, words.type),
                words.take(pa.array(t + 1)),
                pa.scalar("", words.type),
            )
            out.add(rows[local[t]], start[t], end[t + 1], t, _strings(surnames))


def _python_name_candidates(texts: list[str], rows: np.ndarray, out: _Candidates) -> None:
    """The same candidates for other texts (and Chinese substrings), one text at a time."""
    r, s, e, w, t = [], [], [], [], []
    word_id = 0
    for row, text in zip(rows, texts, strict=True):
        folded = text.lower()
        if len(folded) != len(text):  # a rare lower-casing that changes length: match as written
            folded = text
        words = [(m.start(), m.end()) for m in _WORD.finditer(folded)]
        for i in range(len(words)):
            for n in range(2, min(MAX_NAME_WORDS, len(words) - i) + 1):
                if folded[words[i + n - 2][1] : words[i + n - 1][0]] not in _NAME_GAPS:
                    break
                a, b = words[i][0], words[i + n - 1][1]
                r.append(row), s.append(a), e.append(b), w.append(word_id + i)
                t.append(folded[a:b])
                first = folded[words[i][0] : words[i][1]]
                if n == 2 and first in TITLES and folded[words[i][1] : words[i + 1][0]] in " . ":
                    r.append(row), s.append(a), e.append(b), w.append(word_id + i)
                    t.append(_TITLED + folded[words[i + 1][0] : b])
        word_id += len(words)
        for m in _CJK_PAIR.finditer(folded):  # two CJK runs around one space: 佐藤 花子
            a, b = m.start(1), m.end(2)
            for i in range(max(a, m.end(1) - 3), m.end(1)):
                for j in range(m.start(2) + 1, min(b, m.start(2) + 3) + 1):
                    r.append(row), s.append(i), e.append(j), w.append(-1), t.append(folded[i:j])
        for run in _CJK_SPAN.finditer(folded):
            g = run.group()
            for size in (4, 3, 2):
                for j in range(len(g) - size + 1):
                    r.append(row), s.append(run.start() + j), e.append(run.start() + j + size)
                    w.append(-1), t.append(g[j : j + size])
    out.add(r, s, e, w, t)


def known_name_spans(texts: pa.Array, names: HashedSet) -> dict[int, list[tuple[int, int]]]:
    """Row -> merged character spans of known names in it (matched case-insensitively).

    At each word the longest run of 2-4 words (joined by a `_NAME_GAPS` gap) that is a known
    name, or a title and a known surname, counts; in Chinese, every 2-4 character substring that
    is one.
    """
    arr = pc.fill_null(as_string_array(texts), "")
    if not len(names) or not len(arr):
        return {}
    is_ascii = pc.string_is_ascii(arr).to_numpy(zero_copy_only=False)
    cands = _Candidates()
    fast = np.flatnonzero(is_ascii)
    _ascii_name_candidates(pc.ascii_lower(arr.take(pa.array(fast))), fast, cands)
    slow = np.flatnonzero(~is_ascii)
    if slow.size:
        _python_name_candidates(arr.take(pa.array(slow)).to_pylist(), slow, cands)
    row, start, end, word, hashes = cands.cat()
    hit = names.lookup_hashes(hashes) >= 0
    row, start, end, word = row[hit], start[hit], end[hit], word[hit]
    # Per word, only its longest matching n-gram (the candidates of a word ascend in n).
    is_word = word >= 0
    last = np.ones(len(word), dtype=bool)
    if is_word.any():
        keys = np.where(is_word, word, -1 - np.arange(len(word)))
        # ASCII and Python candidates number their words differently: key on (row, word).
        order = np.lexsort((end, keys, row))
        row, start, end, word, keys = row[order], start[order], end[order], word[order], keys[order]
        last = np.r_[(row[1:] != row[:-1]) | (keys[1:] != keys[:-1]), True] | (keys < 0)
        row, start, end = row[last], start[last], end[last]
    spans: dict[int, list[tuple[int, int]]] = {}
    for r_, a, b in sorted(zip(row.tolist(), start.tolist(), end.tolist(), strict=True)):
        merged = spans.setdefault(r_, [])
        if merged and a < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return spans


def scrub_known_names(texts: pd.Series, names: HashedSet) -> tuple[pd.Series, int]:
    """Replace any known full name (anyone's, not only the row's own) by <PERSON>.

    Notes often mention other customers ("referred by ..."): no pattern recognises a name, but
    the dataset's own identifier columns list every name it holds, so they make a deny-list.
    Texts are expected NFKC-normalised (scrub_column's output is).
    """
    out = texts.astype("string").copy()
    spans = known_name_spans(pa.array(out, type=pa.large_string(), from_pandas=True), names)
    if not spans:
        return out, 0
    rows = sorted(spans)
    new = []
    for r, text in zip(rows, out.iloc[rows].tolist(), strict=True):
        for a, b in reversed(spans[r]):
            text = text[:a] + placeholder(PERSON) + text[b:]
        new.append(text)
    out.iloc[rows] = new
    return out, sum(len(v) for v in spans.values())
