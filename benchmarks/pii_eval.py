"""Score any scrubber on a labelled corpus (benchmarks/pii_corpus.py) from its output text alone.

A tool's output is the text with what it found replaced by `<TYPE>` placeholders. Which original
characters it removed is recovered by aligning the output to the input (`removed`): first by the
literal text between placeholders, on the text as written and then on its NFKC form (a tool may
normalise full-width characters); if neither aligns, by difflib on characters. Then:

- recall, per labelled entity type: the share of labelled spans whose alphanumeric characters
  were all removed (half a span removed is a miss; the placeholder's type does not matter);
- character precision, per placeholder type and overall: the share of removed characters (not
  counting whitespace) that lie inside some labelled span, of any type.

Adapters run a tool over corpus records and return its output texts: `ours` (the project's
scrubber, through its public API) and `presidio` (presidio-analyzer's pattern recognizers, no
NLP model, plus a deny-list recognizer of the corpus' known names).
"""

from __future__ import annotations

import difflib
import functools
import re
import unicodedata
from collections import Counter
from typing import Any

PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9_]*)>")
DELETED = ""  # the type of characters removed without a placeholder in their place


# ---------------------------------------------------------------------------------------------
# Alignment: which characters of the input did the output remove, and under which placeholder


def _nfkc(text: str) -> tuple[str, list[int]]:
    """NFKC of the text character by character, and the input index of each output character."""
    chars, owner = [], []
    for i, c in enumerate(text):
        n = unicodedata.normalize("NFKC", c)
        chars.append(n)
        owner.extend([i] * len(n))
    return "".join(chars), owner


def _by_literals(src: str, out: str) -> list[tuple[int, int, str]] | None:
    """The (start, end, type) gaps of `src` that the placeholders of `out` replaced, when the
    text between placeholders is `src`'s own text in order (leftmost placement); else None."""
    parts = PLACEHOLDER.split(out)
    lits, types = parts[0::2], parts[1::2]
    if not types:
        return [] if src == out else None
    head, tail = lits[0], lits[-1]
    limit = len(src) - len(tail)
    if not src.startswith(head) or not src.endswith(tail) or limit < len(head):
        return None
    gaps, pos = [], len(head)
    for k, entity in enumerate(types):
        if k + 1 < len(types):
            # Each placeholder replaced at least one character: the next literal starts later.
            j = src.find(lits[k + 1], pos + 1, limit)
            if j < 0:
                return None
        else:
            j = limit
            if j <= pos:
                return None
        gaps.append((pos, j, entity))
        pos = j + len(lits[k + 1])
    return gaps


def _by_difflib(src: str, out: str) -> list[tuple[int, int, str]]:
    """The same from a character diff: each placeholder becomes one character that matches
    nothing in `src`."""
    types, marked, last = [], [], 0
    for m in PLACEHOLDER.finditer(out):
        marked.append(out[last : m.start()] + chr(0xF0000 + len(types)))
        types.append(m.group(1))
        last = m.end()
    marked = "".join(marked) + out[last:]
    gaps = []
    matcher = difflib.SequenceMatcher(None, src, marked, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            tags = [types[ord(c) - 0xF0000] for c in marked[j1:j2] if ord(c) >= 0xF0000]
            gaps.append((i1, i2, tags[0] if tags else DELETED))
    return gaps


def removed(src: str, out: str) -> list[str | None]:
    """Per character of `src`: None if the output kept it, else the type of the placeholder
    that replaced it (DELETED when none did)."""
    result: list[str | None] = [None] * len(src)
    gaps = _by_literals(src, out)
    if gaps is not None:
        for a, b, entity in gaps:
            result[a:b] = [entity] * (b - a)
        return result
    norm, owner = _nfkc(src)
    gaps = _by_literals(norm, out)
    if gaps is None:
        gaps = _by_difflib(norm, out)
    for a, b, entity in gaps:
        for k in range(a, b):
            result[owner[k]] = entity
    return result


# ---------------------------------------------------------------------------------------------
# Scores


def score(records: list[dict[str, Any]], outputs: list[str]) -> dict[str, Any]:
    """Recall per labelled entity type and character precision per placeholder type.

    {"recall": {type: {"spans", "found", "recall"}}, "precision": {type: {"removed",
    "in_spans", "precision"}}, "overall": {"spans", "found", "recall", "removed", "in_spans",
    "precision"}}; a precision with nothing removed is None.
    """
    spans, found, gone, inside = Counter(), Counter(), Counter(), Counter()
    for rec, out in zip(records, outputs, strict=True):
        text = rec["text"]
        cut = removed(text, out)
        labelled = [False] * len(text)
        for start, end, entity in rec["spans"]:
            labelled[start:end] = [True] * (end - start)
            spans[entity] += 1
            alnum = [i for i in range(start, end) if text[i].isalnum()]
            found[entity] += all(cut[i] is not None for i in alnum)
        for i, entity in enumerate(cut):
            if entity is not None and not text[i].isspace():
                gone[entity] += 1
                inside[entity] += labelled[i]
    n_spans, n_found = sum(spans.values()), sum(found.values())
    n_gone, n_inside = sum(gone.values()), sum(inside.values())
    return {
        "recall": {
            t: {"spans": spans[t], "found": found[t], "recall": found[t] / spans[t]}
            for t in sorted(spans)
        },
        "precision": {
            t: {"removed": gone[t], "in_spans": inside[t], "precision": inside[t] / gone[t]}
            for t in sorted(gone)
        },
        "overall": {
            "spans": n_spans,
            "found": n_found,
            "recall": n_found / n_spans if n_spans else None,
            "removed": n_gone,
            "in_spans": n_inside,
            "precision": n_inside / n_gone if n_gone else None,
        },
    }


def misses(records: list[dict[str, Any]], outputs: list[str], entity: str) -> list[str]:
    """The labelled values of `entity` that a tool did not fully remove, for inspection."""
    res = []
    for rec, out in zip(records, outputs, strict=True):
        cut = removed(rec["text"], out)
        for start, end, ent in rec["spans"]:
            text = rec["text"]
            if ent == entity and any(
                cut[i] is None for i in range(start, end) if text[i].isalnum()
            ):
                res.append(text[start:end])
    return res


def false_removals(records: list[dict[str, Any]], outputs: list[str]) -> list[tuple[str, str]]:
    """(removed text outside every labelled span, its placeholder type), for inspection."""
    res = []
    for rec, out in zip(records, outputs, strict=True):
        text, cut = rec["text"], removed(rec["text"], out)
        labelled = [False] * len(text)
        for start, end, _ in rec["spans"]:
            labelled[start:end] = [True] * (end - start)
        run, kind = [], None
        for i, entity in enumerate([*cut, None]):
            bad = i < len(text) and entity is not None and not labelled[i]
            if bad and (not run or entity == kind):
                run.append(text[i])
                kind = entity
                continue
            if run and "".join(run).strip():
                res.append(("".join(run), kind))
            run, kind = ([text[i]], entity) if bad else ([], None)
    return res


# ---------------------------------------------------------------------------------------------
# Adapters: records in, output texts out


def ours(records: list[dict[str, Any]]) -> list[str]:
    """The project's scrubber as the pipeline calls it: each row's own identifiers (the `own`
    fields whose kind the scrubber knows), then the dataset's known names (every own name)."""
    import pandas as pd

    from stages.lib.scrub import PII_ENTITY, known_name_set, scrub_column, scrub_known_names

    texts = [r["text"] for r in records]
    identifiers = {
        kind: [(kind, [r["own"].get(kind) for r in records])]
        for kind in PII_ENTITY
        if any(r["own"].get(kind) for r in records)
    }
    arr, _ = scrub_column(texts, identifiers)
    names = known_name_set(r["own"].get("name") for r in records)
    out, _ = scrub_known_names(pd.Series(arr.to_pylist(), dtype="string"), names)
    return out.tolist()


# Presidio's entity names -> this corpus' placeholder types.
PRESIDIO_TYPES = {
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "URL",
    "PERSON": "PERSON",
}
# The phone regions of the corpus' locales (Presidio's phone recognizer searches per region).
PHONE_REGIONS = ("US", "GB", "IN", "AU", "DE", "FR", "ES", "IT", "NL", "BR", "PL", "CN", "JP")


@functools.lru_cache(maxsize=4)
def presidio_engine(known_names: tuple[str, ...] = ()):
    """Presidio's analyzer: no-op NLP engine (no model), its pattern recognizers for the types
    above, and a deny-list PERSON recognizer of the known names (Presidio's own way to give it
    a list of names)."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UrlRecognizer,
        UsSsnRecognizer,
    )

    # Offline: Presidio's e-mail and URL recognizers call tldextract, which otherwise tries to
    # download the public suffix list; use the snapshot bundled with tldextract instead.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    registry = RecognizerRegistry(supported_languages=["en"])
    recognizers = [
        EmailRecognizer(),
        PhoneRecognizer(supported_regions=PHONE_REGIONS),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        IpRecognizer(),
        UrlRecognizer(),
    ]
    if known_names:
        recognizers.append(PatternRecognizer("PERSON", deny_list=list(known_names)))
    for rec in recognizers:
        registry.add_recognizer(rec)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def presidio_redact(text: str, results) -> str:
    """Replace Presidio's spans (overlaps resolved by score, then length) with placeholders."""
    chosen, taken = [], []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start), r.start)):
        if all(r.end <= s or r.start >= e for s, e in taken):
            chosen.append(r)
            taken.append((r.start, r.end))
    for r in sorted(chosen, key=lambda r: -r.start):
        text = text[: r.start] + f"<{PRESIDIO_TYPES[r.entity_type]}>" + text[r.end :]
    return text


def presidio(records: list[dict[str, Any]]) -> list[str]:
    """Presidio over every text, one call per text (its API)."""
    names = tuple(sorted({r["own"]["name"] for r in records if r["own"].get("name")}))
    engine = presidio_engine(names)
    entities = list(PRESIDIO_TYPES)
    return [
        presidio_redact(r["text"], engine.analyze(text=r["text"], language="en", entities=entities))
        for r in records
    ]
