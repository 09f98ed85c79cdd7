"""What the scrubber recognises without knowing the record: entity types and their placeholders,
checksum validators, the regex patterns, and the pattern pass over a whole column.

Patterns without a checksum run as RE2 regexes in Arrow's C++ kernels over the whole column;
checksum patterns use RE2 to find candidate rows and validate only the regex candidates in Python.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from stdnum import luhn
from stdnum.cn import ric
from stdnum.exceptions import ValidationError
from stdnum.iso7064 import mod_97_10

from stages.lib.scrub_text import as_string_array, replace_rows

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
# Pattern pass

# Control characters used as row separator and candidate markers; removed from input text.
_SEP, _OPEN, _CLOSE = "\x00", "\x01", "\x02"


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
        arr = replace_rows(arr, rows, "".join(out).split(_SEP))
        counts[pattern.entity] += n
    return arr
