"""The independent leak scan's own detectors: a different method from the scrubber's, so that one
blind spot cannot blind both.

The scrubber tokenises text into words and looks word n-grams up in hashed sets, and finds
patterns with RE2 regexes. This module does neither:

- **Known values**: an Aho-Corasick automaton (pyahocorasick) of every identifier value of the
  partition's clean rows, in canonical form, is run over the canonical form of each released
  text: no tokenisation at all. A match counts where it stands between characters that are not
  letters or digits of its own script, so a Latin name glued to Chinese text is found, and so is
  a customer id before a full stop.
- **Canonical form**: NFKC, case folding, typographic apostrophes made ASCII, and every
  separator between two digits removed, so `521 77 4102`, `521.77.4102` and `521774102` are one
  value. Phone numbers are matched by their last 9 digits (any country-code spelling).
- **Unclassified numbers**: libphonenumber (`phonenumbers.PhoneNumberMatcher`) for numbers
  written in international form, and runs of `min_digit_run` digits or more once separators are
  removed (dates excepted), which is the scrubber's documented rule seen from the other side.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

import ahocorasick
import phonenumbers

from stages.lib.pii_patterns import is_date_shaped
from stages.lib.scrub_text import APOSTROPHES, UNSPACED_CHAR, pinyin_forms

_DIGIT_GAP = re.compile(r"(?<=\d)[\s().\-/]+(?=\d)")
_SPACES = re.compile(r"\s+")
# Digits joined by up to two separators or brackets (the scrubber's rule allows the same).
_DIGIT_RUN = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,2}\d)*")
MIN_VALUE_CHARS = 4  # shorter values (initials, 'n/a') would match everywhere
MIN_CJK_CHARS = 2
MIN_DIGITS = 6  # a digits-only value shorter than this is a number, not an identifier


def canonical(text: str) -> str:
    """NFKC, case-folded, ASCII apostrophes, no separators between digits, single spaces."""
    text = unicodedata.normalize("NFKC", text).translate(APOSTROPHES).casefold()
    return _SPACES.sub(" ", _DIGIT_GAP.sub("", text)).strip()


def _script(ch: str) -> str:
    if UNSPACED_CHAR.match(ch):
        return "unspaced"
    return "spaced" if ch.isalnum() else ""


def _bounded(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] stands apart: its neighbours are not letters or digits of the
    script of its own edge characters (unspaced scripts have no boundaries at all)."""
    first, last = text[start], text[end - 1]
    if start > 0 and _script(first) == "spaced" and _script(text[start - 1]) == "spaced":
        return False
    return not (end < len(text) and _script(last) == "spaced" and _script(text[end]) == "spaced")


@dataclass(frozen=True)
class Finding:
    """One identifier found in one distinct text value: its entity and the check that saw it."""

    entity: str
    check: str


def value_forms(value: str, entity: str) -> list[str]:
    """The canonical forms of one identifier value that the automaton looks for."""
    form = canonical(value)
    if not form:
        return []
    forms = [form]
    if entity == "PHONE":
        digits = re.sub(r"\D", "", form)
        return [digits[-9:]] if len(digits) >= 7 else []
    if entity == "ADDRESS" and "," in form:
        forms.append(form.split(",")[0].strip())  # the street line alone
    if entity == "PERSON":
        words = form.split(" ")
        if len(words) >= 2:
            forms += [f"{words[-1]} {' '.join(words[:-1])}", f"{words[-1]}, {' '.join(words[:-1])}"]
        forms += [f.replace("-", " ") for f in forms if "-" in f]
        if UNSPACED_CHAR.match(form[0]) and len(form) <= 4:
            forms += [canonical(f) for f in pinyin_forms(form)[:2]]
    return [f for f in dict.fromkeys(forms) if _long_enough(f)]


def _long_enough(form: str) -> bool:
    if form.isdigit():
        return len(form) >= MIN_DIGITS
    if UNSPACED_CHAR.match(form[0]):
        return len(form) >= MIN_CJK_CHARS
    return len(form) >= MIN_VALUE_CHARS


class ValueScanner:
    """Aho-Corasick over canonical text for a set of (value, entity) identifier values."""

    def __init__(self, values: Iterable[tuple[str, str]]):
        self.automaton = ahocorasick.Automaton()
        for value, entity in values:
            for form in value_forms(value, entity):
                # Phone suffixes need no left boundary: a country code may stand before them.
                self.automaton.add_word(form, (entity, len(form), entity == "PHONE"))
        self.empty = len(self.automaton) == 0
        if not self.empty:
            self.automaton.make_automaton()

    def find(self, text: str) -> str | None:
        """The entity of the first identifier value found in the text, else None."""
        if self.empty or not text:
            return None
        form = canonical(text)
        for end, (entity, size, suffix) in self.automaton.iter(form):
            start = end + 1 - size
            if suffix:
                if end + 1 == len(form) or not form[end + 1].isdigit():
                    return entity
            elif _bounded(form, start, end + 1):
                return entity
        return None


def find_numbers(text: str, min_digit_run: int | None) -> str | None:
    """PHONE for an international number libphonenumber accepts; NUMBER for a run of
    `min_digit_run` digits or more (separators removed) that is not a date; else None."""
    if not text or sum(ch.isdigit() for ch in text) < 7:
        return None
    form = unicodedata.normalize("NFKC", text)
    if "+" in form:
        for _ in phonenumbers.PhoneNumberMatcher(form, None, leniency=phonenumbers.Leniency.VALID):
            return "PHONE"
    if min_digit_run:
        for m in _DIGIT_RUN.finditer(form):
            run = m.group()
            digits = sum(ch.isdigit() for ch in run)
            if digits >= min_digit_run and not _all_dates(run):
                return "NUMBER"
    return None


def _all_dates(run: str) -> bool:
    """Whether a digit run is only dates or year ranges joined by spaces (left in text on
    purpose: the scrubber's digit-run rule excepts them too)."""
    parts = [p for p in re.split(r"\s+", run.strip()) if p]
    return all(is_date_shaped(p) or len(re.sub(r"\D", "", p)) < 7 for p in parts) and any(
        is_date_shaped(p) for p in parts
    )
