"""The identifier index: the clean data's identifier values (normalised, as 64-bit hashes) that
the independent scan looks for in the output; stored per partition, merged, and recorded
(RecordingIndex) so that a stored scan result is reused while what it could see is unchanged."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from stages.lib.features import Policy
from stages.lib.schema import RECORD_ID, Schema
from stages.lib.scrub import PII_ENTITY, HashedSet, as_string_array, hash_strings, known_name_set


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


_ASCII_SPACE = r"[\t\n\x0b\x0c\r\x1c-\x1f ]+"  # what str.split() splits ASCII text on


def norm_array(values: Any) -> pa.Array:
    """`_norm` of every value, vectorised: Arrow for ASCII text (NFKC is the identity there and
    casefold is lower), Python only for the others. Nulls become ''."""
    arr = pc.fill_null(as_string_array(values), "")
    nfkc = pc.utf8_normalize(arr, "NFKC")
    out = pc.ascii_lower(pc.utf8_trim(pc.replace_substring_regex(nfkc, _ASCII_SPACE, " "), " "))
    other = np.flatnonzero(~pc.string_is_ascii(nfkc).to_numpy(zero_copy_only=False))
    if other.size:
        mask = np.zeros(len(arr), dtype=bool)
        mask[other] = True
        fixed = pa.array([_norm(t) for t in arr.take(pa.array(other)).to_pylist()], out.type)
        out = pc.replace_with_mask(out, pa.array(mask), fixed)
    return out


_CJK = "\u3400-\u9fff\uf900-\ufaff"
_CJK_RUN = re.compile(f"[{_CJK}]{{2,}}")
# Everything that is not part of a value's token: punctuation, including '.' (so a customer id
# before a full stop is a token of its own), '/', '-' and apostrophes.
_TOKEN_SEP = "\"',;:!?()\\[\\]<>，。；：！？、./\\-"
_DIGIT_RUN = re.compile(r"\+?\(?\d[\d\s().-]{5,}\d")
# RE2 (Arrow) forms. Normalised text has no whitespace but ' '. Python's \s is str.isspace():
# the ASCII ones, NEL and Unicode's Z categories; \d is Nd.
_RE2_TOKEN_SPLIT = f"[ {_TOKEN_SEP}]+"
_RE2_TOKEN = f"[^ {_TOKEN_SEP}]+"
_RE2_NOT_CJK = f"[^{_CJK}]+"
_RE2_NOT_DIGIT_RUN = r"[^\p{Nd}\t\n\x0b\x0c\r\x1c-\x1f\x85\p{Z}().\-]+"
# Entity codes of the hashed index (int8).
ENTITIES = tuple(dict.fromkeys([*PII_ENTITY.values(), "IDENTIFIER"]))
_CODE = {e: i for i, e in enumerate(ENTITIES)}


def object_strings(arr: pa.Array) -> np.ndarray:
    """An Arrow string array as a numpy array of Python objects (str or None)."""
    return arr.to_numpy(zero_copy_only=False).astype(object)


@dataclass(frozen=True)
class IdentifierIndex:
    """Values of the clean data's dropped or pseudonymized identifier columns, normalised, as
    64-bit hashes (see HashedSet: memory ~9 bytes a value, whatever the dataset size)."""

    values: HashedSet  # normalised value -> entity code
    phones: HashedSet  # last 9 digits of phone numbers -> entity code
    names: HashedSet  # known full person names (folded), the deny-list of scrub_known_names
    max_tokens: int = 1

    @classmethod
    def empty(cls) -> IdentifierIndex:
        """An index with nothing in it."""
        return cls(HashedSet.empty(), HashedSet.empty(), HashedSet.empty())

    @classmethod
    def merge(cls, parts: Iterable[IdentifierIndex]) -> IdentifierIndex:
        """One index of several partitions' indexes."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(
            HashedSet.merge(p.values for p in parts),
            HashedSet.merge(p.phones for p in parts),
            HashedSet.merge(p.names for p in parts),
            max(p.max_tokens for p in parts),
        )

    def match(self, candidates: Any, phones: bool = False) -> np.ndarray:
        """The entity code of each candidate string (-1: not a known value / phone suffix)."""
        return (self.phones if phones else self.values).lookup(candidates)


def index_part(df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]) -> IdentifierIndex:
    """The identifier index of one clean frame (vectorised; see IdentifierIndex)."""
    hashes, codes, phone_hashes, name_values = [], [], [], []
    max_tokens = 1
    for name in leak_columns(schema, policies):
        if name not in df.columns:
            continue
        col = schema.columns[name]
        entity = PII_ENTITY.get(col.pii or "", "IDENTIFIER")
        arr = as_string_array(df[name].astype("string"))  # a date identifier as its ISO text
        arr = arr.filter(pc.is_valid(arr))
        if col.pii == "phone":
            digits = pc.replace_substring_regex(pc.utf8_normalize(arr, "NFKC"), r"[^\p{Nd}]", "")
            digits = digits.filter(pc.greater_equal(pc.utf8_length(digits), 7))
            suffix = object_strings(pc.utf8_slice_codeunits(digits, -9))
            phone_hashes.append(HashedSet.from_hashes(hash_strings(suffix), _codes(entity, suffix)))
            continue
        norm = norm_array(arr)
        cjk = pc.fill_null(pc.match_substring_regex(norm, f"[{_CJK}]{{2,}}"), False)
        min_len = pc.if_else(cjk, 2, 4)
        norm = norm.filter(pc.greater_equal(pc.utf8_length(norm), min_len))
        if not len(norm):
            continue
        tokens = token_form(norm)
        max_tokens = max(max_tokens, pc.max(pc.count_substring_regex(tokens, _RE2_TOKEN)).as_py())
        values = object_strings(tokens)
        hashes.append(hash_strings(values))
        codes.append(_codes(entity, values))
        if entity == PII_ENTITY["name"]:
            name_values.append(object_strings(norm))
    values_set = (
        HashedSet.from_hashes(np.concatenate(hashes), np.concatenate(codes))
        if hashes
        else HashedSet.empty()
    )
    names = known_name_set(np.concatenate(name_values)) if name_values else HashedSet.empty()
    return IdentifierIndex(values_set, HashedSet.merge(phone_hashes), names, max_tokens)


def token_form(norm: pa.Array) -> pa.Array:
    """Normalised text as its tokens joined by single spaces: the form the index hashes values
    in and the scan looks n-grams up in. A switch between Chinese and other characters splits
    tokens too (a Latin name glued to Chinese text)."""
    for pattern in (f"([{_CJK}])([^{_CJK} ])", f"([^{_CJK} ])([{_CJK}])"):
        norm = pc.replace_substring_regex(norm, pattern, "\\1 \\2")
    tokens = pc.split_pattern_regex(norm, _RE2_TOKEN_SPLIT)
    return pc.utf8_trim(pc.binary_join(tokens, pa.scalar(" ", norm.type)), " ")


def _codes(entity: str, values: np.ndarray) -> np.ndarray:
    return np.full(len(values), _CODE[entity], dtype=np.int8)


def leak_columns(schema: Schema, policies: dict[str, Policy]) -> list[str]:
    """Identifier (and source key) columns whose values must not appear in the output."""
    return [
        n
        for n, c in schema.columns.items()
        if c.role in ("identifier", "key") and policies[n].action in ("drop", "pseudonymize")
    ]


def build_index(df: pd.DataFrame, schema: Schema, policies: dict[str, Policy]) -> IdentifierIndex:
    """The identifier index of one clean frame."""
    return index_part(df, schema, policies)


class RecordingSet:
    """A HashedSet (or, with None, an empty one) that keeps every candidate hash looked up.

    What a scan looked up is all its result can depend on, so a stored result stays valid while
    the global sets, restricted to those candidates, are unchanged (see `relevant`)."""

    def __init__(self, target: HashedSet | None = None):
        self.target = target
        self.seen: list[np.ndarray] = []

    def __len__(self) -> int:
        # Never "empty": scans skip an empty set without generating (and recording) candidates.
        return max(1, len(self.target) if self.target is not None else 0)

    def lookup_hashes(self, hashes: np.ndarray) -> np.ndarray:
        """The target's codes (-1: absent), recording the hashes."""
        self.seen.append(np.asarray(hashes, dtype=np.uint64))
        if self.target is None:
            return np.full(len(hashes), -1, dtype=np.int8)
        return self.target.lookup_hashes(hashes)

    def hashes(self) -> np.ndarray:
        """Every distinct candidate hash looked up."""
        return np.unique(np.concatenate(self.seen)) if self.seen else np.empty(0, np.uint64)


class RecordingIndex:
    """An IdentifierIndex whose value and phone lookups are recorded (RecordingSet)."""

    def __init__(self, index: IdentifierIndex):
        self.values, self.phones = RecordingSet(index.values), RecordingSet(index.phones)
        self.max_tokens = index.max_tokens

    def match(self, candidates: Any, phones: bool = False) -> np.ndarray:
        """As IdentifierIndex.match."""
        return (self.phones if phones else self.values).lookup_hashes(hash_strings(candidates))


def relevant(found: HashedSet, candidates: np.ndarray) -> str:
    """A digest of the part of a hashed set that a scan with these candidates can see."""
    codes = found.lookup_hashes(candidates)
    hit = codes >= 0
    return array_digest(candidates[hit], codes[hit])


def array_digest(*arrays: np.ndarray) -> str:
    """A SHA-256 of the arrays' raw bytes (a stored result's key part)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
        h.update(b"\x00")
    return h.hexdigest()


def save_index(index: IdentifierIndex, path: Path) -> None:
    """An IdentifierIndex as .npz (hash and code arrays, and max_tokens)."""
    arrays = {
        f"{part}_{what}": getattr(getattr(index, part), what)
        for part in ("values", "phones", "names")
        for what in ("hashes", "codes")
    }
    np.savez(path, max_tokens=np.array(index.max_tokens), **arrays)


def load_index(path: Path) -> IdentifierIndex:
    """An IdentifierIndex saved by save_index."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    sets = {
        part: HashedSet(arrays[f"{part}_hashes"], arrays[f"{part}_codes"])
        for part in ("values", "phones", "names")
    }
    return IdentifierIndex(max_tokens=int(arrays["max_tokens"]), **sets)


def _assign(ent: np.ndarray, rows: np.ndarray, codes: np.ndarray) -> None:
    """Give each row without an entity yet its first hit (in the given order)."""
    hit = codes >= 0
    if not hit.any():
        return
    rows, codes = rows[hit], codes[hit]
    uniq, first = np.unique(rows, return_index=True)
    todo = ent[uniq] < 0
    ent[uniq[todo]] = codes[first[todo]]


def _flat(lists: pa.Array) -> tuple[pa.Array, np.ndarray]:
    return pc.list_flatten(lists), pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)


def leak_entities(texts: pa.Array, index: IdentifierIndex, whole_cell_only: bool) -> np.ndarray:
    """Entity code of the first known identifier found in each text (-1: none): the whole cell,
    then token n-grams (up to index.max_tokens), Chinese 2-4 character substrings, and phone
    digit runs (by their last 9 digits)."""
    raw = pc.fill_null(as_string_array(texts), "")
    norm = token_form(norm_array(raw))
    ent = index.match(object_strings(norm))
    if whole_cell_only:
        return ent
    if len(index.values):
        tok, rows = _flat(pc.split_pattern_regex(norm, _RE2_TOKEN_SPLIT))
        keep = pc.greater(pc.utf8_length(tok), 0)
        tok, rows = tok.filter(keep), rows[keep.to_numpy(zero_copy_only=False)]
        gram, total = tok, len(tok)
        sep = pa.scalar(" ", tok.type)
        for n in range(1, index.max_tokens + 1):
            if total < n:
                break
            if n > 1:
                # n consecutive tokens of one row, joined by one space
                gram = pc.binary_join_element_wise(gram.slice(0, total - n + 1),
                                                   tok.slice(n - 1), sep)  # fmt: skip
            same = rows[: total - n + 1] == rows[n - 1 :]
            _assign(
                ent, rows[: total - n + 1][same], index.match(object_strings(gram.filter(same)))
            )
        other = np.flatnonzero(~pc.string_is_ascii(norm).to_numpy(zero_copy_only=False))
        if other.size:
            runs, parent = _flat(pc.split_pattern_regex(norm.take(pa.array(other)), _RE2_NOT_CJK))
            lens = pc.utf8_length(runs).to_numpy(zero_copy_only=False)
            for n in (2, 3, 4):
                for i in range(max(int(lens.max(initial=0)) - n + 1, 0)):
                    sel = np.flatnonzero(lens >= i + n)
                    subs = pc.utf8_slice_codeunits(runs.take(pa.array(sel)), i, i + n)
                    _assign(ent, other[parent[sel]], index.match(object_strings(subs)))
    if len(index.phones):
        # `_DIGIT_RUN`'s matches: a run of digits, spaces and ().- from its first to last digit,
        # 7 characters or more (a '+' can only start one, so it splits runs).
        seg, parent = _flat(pc.split_pattern_regex(raw, _RE2_NOT_DIGIT_RUN))
        seg = pc.replace_substring_regex(seg, r"^[^\p{Nd}]+|[^\p{Nd}]+$", "")
        long = pc.greater_equal(pc.utf8_length(seg), 7)
        seg, parent = seg.filter(long), parent[long.to_numpy(zero_copy_only=False)]
        digits = pc.replace_substring_regex(seg, r"[^\p{Nd}]", "")
        suffix = pc.utf8_slice_codeunits(digits, -9)
        _assign(ent, parent, index.match(object_strings(suffix), phones=True))
    return ent


def scan_identifier_leaks(
    df: pd.DataFrame, columns: list[str], index: IdentifierIndex, whole_cell_only: set[str]
) -> list[dict[str, str]]:
    """Rows where a known identifier value appears in any string column (whole cell, token
    n-gram, Chinese substring or phone digits).

    Columns in `whole_cell_only` hold HMAC pseudonyms: random hex, whose digit runs would match
    phone numbers by chance, so only a whole cell equal to a known value counts there. Each
    distinct value is examined once (categorical columns have few).
    """
    findings = []
    record_ids = df[RECORD_ID].astype(str).to_numpy()
    for col in columns:
        enc = pc.dictionary_encode(pc.fill_null(as_string_array(df[col]), ""))
        ent = leak_entities(enc.dictionary, index, col in whole_cell_only)
        if not (ent >= 0).any():
            continue
        row_ent = ent[enc.indices.to_numpy(zero_copy_only=False)]
        for row in np.flatnonzero(row_ent >= 0):
            findings.append(
                {"record_id": record_ids[row], "column": col, "entity": ENTITIES[row_ent[row]],
                 "check": "identifier_value"}
            )  # fmt: skip
    return findings
