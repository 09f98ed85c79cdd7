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
import itertools
import operator
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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

# Which placeholder a record's own identifier of each schema `pii` kind becomes.
PII_ENTITY = {
    "name": PERSON,
    "email": EMAIL,
    "phone": PHONE,
    "national_id": NATIONAL_ID,
    "address": ADDRESS,
}


def placeholder(entity: str) -> str:
    """The typed placeholder that replaces an entity of this type."""
    return f"<{entity}>"


# ---------------------------------------------------------------------------------------------
# Validators: each takes a regex candidate and returns how many leading characters of it are a
# valid entity (0: none). Returning a prefix lets a greedy candidate that swallowed a following
# number still yield the entity at its start.


_DOUBLED = str.maketrans("0123456789", "0246813579")  # digit -> digit sum of its double


def luhn_ok(digits: str) -> bool:
    """Whether a digit string passes the Luhn checksum (payment cards)."""
    # Every second digit from the right is doubled; translate() does it in C.
    kept = digits[-1::-2]
    doubled = digits[-2::-2].translate(_DOUBLED)
    total = sum(kept.encode()) + sum(doubled.encode()) - 48 * len(digits)
    return total % 10 == 0


# Issued card lengths; 17 and 18 are left out, so an 18-digit Chinese resident ID number with a
# wrong check digit that happens to pass Luhn is not taken for a card.
CARD_LENGTHS = (13, 14, 15, 16, 19)


def _card_prefix(candidate: str) -> int:
    """Longest prefix, cut at a separator or the end, that is a Luhn-valid card-length number."""
    cuts = [i for i, ch in enumerate(candidate) if ch in " -"] + [len(candidate)]
    for cut in reversed(cuts):
        digits = candidate[:cut].replace(" ", "").replace("-", "")
        if len(digits) < 13:
            break
        if len(digits) in CARD_LENGTHS and luhn_ok(digits):
            return cut
    return 0


# IBAN lengths by country (ISO 13616 registry, common countries); others: any length 15-34.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29, "CH": 21, "CY": 28,
    "CZ": 24, "DE": 22, "DK": 18, "EE": 20, "ES": 24, "FI": 18, "FR": 27, "GB": 22, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "KW": 30, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "QA": 29,
    "RO": 24, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "TR": 26,
}  # fmt: skip


_LETTER_DIGITS = {ord(c): str(10 + i) for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}


def iban_ok(compact: str) -> bool:
    """Whether an IBAN without spaces passes the ISO 13616 mod-97 check."""
    if len(compact) < 15 or not compact[:2].isalpha() or not compact[2:4].isdigit():
        return False
    moved = compact[4:] + compact[:4]
    return int(moved.upper().translate(_LETTER_DIGITS)) % 97 == 1


def _iban_prefix(candidate: str) -> int:
    """Length of the valid IBAN at the start of the candidate (spaces allowed), else 0."""
    positions = [i for i, ch in enumerate(candidate) if ch != " "]
    compact = candidate.replace(" ", "")
    lengths = [IBAN_LENGTHS[compact[:2]]] if compact[:2] in IBAN_LENGTHS else range(34, 14, -1)
    for n in lengths:
        if n <= len(compact) and iban_ok(compact[:n]):
            return positions[n - 1] + 1
    return 0


_GB11643_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_GB11643_SUM = sum(_GB11643_WEIGHTS)  # removes the ASCII offset of the digits' bytes


def cn_id_ok(value: str) -> bool:
    """Whether an 18-character Chinese resident ID has a valid GB 11643 check character."""
    if len(value) != 18 or not value[:17].isdigit():
        return False
    total = sum(map(operator.mul, value[:17].encode(), _GB11643_WEIGHTS)) - 48 * _GB11643_SUM
    return "10X98765432"[total % 11] == value[17].upper()


def _ssn_prefix(candidate: str) -> int:
    """The SSN's length if its area, group and serial are ones the SSA issues, else 0."""
    area, group, serial = candidate.split("-")
    ok = area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
    return len(candidate) if ok else 0


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

_LEAD = r"(^|[^0-9A-Za-z_])"  # not inside a word or number
_LEAD_NOPLUS = r"(^|[^0-9A-Za-z_+])"  # ... and not after '+', which starts a phone number
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


PATTERNS: tuple[Pattern, ...] = (
    Pattern(
        EMAIL,
        r"()([A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})",
    ),
    Pattern(
        URL,
        rf"()((?:https?|ftp)://{_URL_CHARS}*{_URL_END}|www\.{_URL_CHARS}*{_URL_END})",
    ),
    Pattern(
        IBAN,
        _LEAD + r"([A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?)\b",
        _iban_prefix,
    ),
    Pattern(
        CN_RESIDENT_ID,
        _LEAD + r"([1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}"
        r"[0-9Xx])\b",
        _whole(cn_id_ok),
    ),
    Pattern(CREDIT_CARD, _LEAD_NOPLUS + r"([2-6]\d(?:[ -]?\d){11,17})\b", _card_prefix),
    Pattern(US_SSN, _LEAD + r"(\d{3}-\d{2}-\d{4})\b", _ssn_prefix),
    Pattern(
        IP_ADDRESS,
        r"(^|[^0-9A-Za-z_:])((?:"
        + _HEX
        + r":){2,6}\d{1,3}(?:\.\d{1,3}){3}|(?:"
        + _HEX
        + r":){2,7}"
        + _HEX
        + r")",
        _ipv6_prefix,
    ),
    Pattern(IP_ADDRESS, r"(^|[^0-9A-Za-z_.])((?:" + _OCTET + r"\.){3}" + _OCTET + r")\b"),
    Pattern(
        PHONE,
        _LEAD_NOPLUS + r"("
        # Chinese mobile, optionally with +86 / 0086
        r"(?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}"
        # international: +CC, optional (area) or (0), then digit groups
        r"|(?:\+|00)[1-9]\d{0,2}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}"
        # North American: (555) 123-4567, 555-123-4567, 1-800-555-0199
        r"|(?:1[ .-]?)?(?:\(\d{3}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}"
        # North American written as ten bare digits (NANP: area and exchange start 2-9)
        r"|[2-9]\d{2}[2-9]\d{6}"
        # national with trunk 0: 020 7946 0958, (030) 1234 5678, 010-12345678
        r"|(?:\(0[1-9]\d{0,3}\)|0[1-9]\d{0,3})[ .-]?\d{3,4}[ .-]?\d{3,4}"
        r")\b",
    ),
)

ENTITY_TYPES = tuple(dict.fromkeys([p.entity for p in PATTERNS] + list(PII_ENTITY.values())))


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


def scrub_patterns(texts: Any, counts: Counter | None = None) -> tuple[pa.Array, Counter]:
    """Replace pattern-detected identifiers in a (normalised) text column; count per type."""
    arr = as_string_array(texts)
    counts = Counter() if counts is None else counts
    for pattern in PATTERNS:
        tag = placeholder(pattern.entity)
        if pattern.validator is None:
            # Count the placeholders before and after (a literal count is cheaper than a second
            # regex pass over the column).
            before = pc.sum(pc.count_substring(arr, tag)).as_py() or 0
            arr = pc.replace_substring_regex(arr, pattern.regex, "\\1" + tag)
            counts[pattern.entity] += (pc.sum(pc.count_substring(arr, tag)).as_py() or 0) - before
            continue
        # Checksummed identifiers: RE2 marks every candidate in the column (\x01 cand \x02);
        # Python only splits the marked rows and runs the checksum on each candidate.
        marked = pc.replace_substring_regex(arr, pattern.regex, "\\1" + _OPEN + "\\2" + _CLOSE)
        hits = pc.fill_null(pc.count_substring(marked, _OPEN), 0).to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(hits)
        if not rows.size:
            continue
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
    return arr, counts


# ---------------------------------------------------------------------------------------------
# Record-aware pass

_CJK = "[\u3400-\u9fff\uf900-\ufaff]"  # literal characters: RE2 has no \\u escapes
_PHONE_SEP = r"[\s().\-]*"


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
            if kind != "name":
                continue
            # Given and family names (two characters or more) of names with several parts.
            parts = pc.utf8_split_whitespace(pc.replace_substring_regex(vals, r"[,;]", " "))
            lengths = pc.fill_null(pc.list_value_length(parts), 0).to_numpy(zero_copy_only=False)
            flat = pc.list_flatten(parts)
            parent = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)
            multi = lengths[parent] > 1
            add(entity, parent[multi], flat.filter(pa.array(multi)), 2, False)
            # A Chinese name written without spaces: the given name after the surname.
            cjk = pc.fill_null(pc.match_substring_regex(vals, rf"^{_CJK}{{3,4}}$"), False)
            given = pc.if_else(cjk, pc.utf8_slice_codeunits(vals, 1), pa.scalar("", vals.type))
            add(entity, every, given, 2, False)
    if not rows:
        empty = np.array([], dtype=np.dtypes.StringDType())
        return _Needles(np.array([], dtype=np.int64), [], empty, np.array([], dtype=bool))
    return _Needles(np.concatenate(rows), ents, np.concatenate(needles), np.concatenate(digits))


def _needle_regex(entity: str, needle: str, is_digits: bool) -> str:
    if is_digits:
        # Any formatting: separators between digits, and any country code / trunk prefix.
        core = _PHONE_SEP.join(re.escape(d) for d in needle)
        return rf"(?<!\d)(?:[+(]*\d{_PHONE_SEP}){{0,5}}?{core}(?!\d)"
    escaped = re.escape(needle)
    if re.search(_CJK, needle):
        return escaped  # Chinese text has no word boundaries
    return rf"(?<!\w){escaped}(?!\w)"


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
    by_row: dict[int, list[tuple[str, str, bool]]] = {}
    for i in found:
        by_row.setdefault(int(needles.rows[i]), []).append(
            (needles.entity[i], str(needles.needle[i]), bool(needles.digits[i]))
        )
    rows = np.array(sorted(by_row), dtype=np.int64)
    old = arr.take(pa.array(rows)).to_pylist()
    new = []
    for row, text in zip(rows, old, strict=True):
        # One alternation per row, longest needle first so a full name wins over its parts.
        items = sorted(set(by_row[int(row)]), key=lambda t: -len(t[1]))
        groups = {f"g{j}": ent for j, (ent, _, _) in enumerate(items)}
        rx = re.compile(
            "|".join(
                f"(?P<g{j}>{_needle_regex(e, nd, dg)})" for j, (e, nd, dg) in enumerate(items)
            ),
            re.IGNORECASE,
        )

        def repl(m: re.Match[str], groups=groups) -> str:
            entity = groups[m.lastgroup]
            counts[entity] += 1
            return placeholder(entity)

        new.append(rx.sub(repl, text))
    return _replace_rows(arr, rows, new), counts


# ---------------------------------------------------------------------------------------------


def scrub_column(
    texts: Any, identifiers: Mapping[str, Iterable[tuple[str, Any]]] | None = None
) -> tuple[pa.Array, Counter]:
    """Scrub a text column: NFKC, the rows' own identifiers, then patterns. Returns counts."""
    counts: Counter = Counter()
    arr = normalize_text(texts)
    if identifiers:
        arr, counts = scrub_record_identifiers(arr, identifiers, counts)
    arr, counts = scrub_patterns(arr, counts)
    return arr, counts


def scrub_texts(texts: Iterable[str | None]) -> list[str | None]:
    """Convenience: pattern-scrub a list of strings (no record-aware pass)."""
    arr, _ = scrub_column(list(texts))
    return arr.to_pylist()


_WORD = re.compile(r"[^\W\d_]+")
_CJK_SPAN = re.compile("[\u3400-\u9fff\uf900-\ufaff]{2,}")


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def known_name_set(values: Iterable[Any]) -> set[str]:
    """Full names worth a deny-list: two or more words, or two or more Chinese characters."""
    names = set()
    for v in values:
        if v is None or v is pd.NA or (isinstance(v, float) and v != v):
            continue
        folded = _fold(str(v))
        if len(_WORD.findall(folded)) >= 2 or _CJK_SPAN.fullmatch(folded):
            names.add(folded)
    return names


def _name_spans(text: str, names: set[str], max_words: int = 4) -> list[tuple[int, int]]:
    """Character spans of known names in `text` (matched case-insensitively)."""
    folded = text.lower()
    if len(folded) != len(text):  # a rare lower-casing that changes length: match as written
        folded = text
    spans = []
    words = list(_WORD.finditer(folded))
    for i in range(len(words)):
        for n in range(min(max_words, len(words) - i), 1, -1):
            chunk = words[i : i + n]
            # Words may be separated by a space or by an initial's dot: "Jack F. Baker".
            if all(
                folded[a.end() : b.start()] in (" ", ". ") for a, b in itertools.pairwise(chunk)
            ):
                if folded[chunk[0].start() : chunk[-1].end()] in names:
                    spans.append((chunk[0].start(), chunk[-1].end()))
                    break
    for run in _CJK_SPAN.finditer(folded):
        s = run.group()
        for size in (4, 3, 2):
            spans += [
                (run.start() + j, run.start() + j + size)
                for j in range(len(s) - size + 1)
                if s[j : j + size] in names
            ]
    return spans


def scrub_known_names(texts: pd.Series, names: set[str]) -> tuple[pd.Series, int]:
    """Replace any known full name (anyone's, not only the row's own) by <PERSON>.

    Notes often mention other customers ("referred by ..."): no pattern recognises a name, but
    the dataset's own identifier columns list every name it holds, so they make a deny-list.
    Texts are expected NFKC-normalised (scrub_column's output is).
    """
    out = texts.astype("string").copy()
    replaced = 0
    if not names:
        return out, 0
    for idx, text in out.dropna().items():
        spans = sorted(_name_spans(text, names))
        if not spans:
            continue
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a < merged[-1][1]:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        for a, b in reversed(merged):
            text = text[:a] + placeholder(PERSON) + text[b:]
        out[idx] = text
        replaced += len(merged)
    return out, replaced
