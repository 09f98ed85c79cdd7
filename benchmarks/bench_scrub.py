"""Benchmark: the project's scrubber against Microsoft Presidio's pattern recognizers.

Both run in this process on the same generated texts with planted entities (English and Chinese,
with distractors such as dates, order numbers and checksum-invalid card and ID numbers).
Presidio: presidio-analyzer with its no-op NLP engine and only the Email, Phone and CreditCard
recognizers (`pip install -e '.[bench]'`). Prints texts/s of both, the ratio, and recall and
precision of both on the planted entities.

Scoring, the same for both: each tool's output is the text with detected spans replaced by typed
placeholders. Per text and type, a planted entity is found when its value is gone from the output
and a placeholder of its type is there (true positives = min of the two counts); placeholders
beyond that are false positives.

    PYTHONPATH=. python benchmarks/bench_scrub.py [--n 10000] [--seed 7] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from collections import Counter

from stages.lib.scrub import cn_id_ok, luhn_ok, scrub_column

SHARED = ("EMAIL", "PHONE", "CREDIT_CARD")  # the types both tools look for
PRESIDIO_TYPES = {"EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CREDIT_CARD"}

FIRST = ["john", "maria", "wei", "olga", "kenji", "fatima", "lucas", "priya", "noah", "elena"]
DOMAINS = ["example.com", "mail.example.org", "corp.example.net", "qq.com", "163.com"]


def _card(rng: random.Random, valid: bool) -> str:
    prefix = rng.choice(["4", "51", "55", "37", "6011"])
    length = 15 if prefix == "37" else 16
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    digit = next(d for d in "0123456789" if luhn_ok(body + d) == valid)
    n = body + digit
    sep = rng.choice([" ", "-", ""])
    return sep.join(n[i : i + 4] for i in range(0, len(n), 4)) if sep else n


def _cn_id(rng: random.Random, valid: bool) -> str:
    born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000))
    body = f"{rng.choice(['110105', '310101', '440305'])}{born:%Y%m%d}{rng.randrange(1000):03d}"
    return body + next(c for c in "0123456789X" if cn_id_ok(body + c) == valid)


def _phone(rng: random.Random) -> str:
    r = rng.randrange
    return rng.choice(
        [
            f"({rng.choice(['212', '415', '617'])}) {r(200, 999)}-{r(1000, 9999)}",
            f"+1 {rng.choice(['212', '415', '617'])}-{r(200, 999)}-{r(1000, 9999)}",
            f"+44 20 7{r(100, 999)} {r(1000, 9999)}",
            f"+49 30 {r(10000000, 99999999)}",
            f"+86 13{r(0, 9)} {r(1000, 9999)} {r(1000, 9999)}",
            f"1{rng.choice('3589')}{r(100000000, 999999999)}",
            f"1{rng.choice('3589')}{r(1, 9)}-{r(1000, 9999)}-{r(1000, 9999)}",
        ]
    )


def _iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    for check in range(2, 99):
        s = f"DE{check:02d}{bban}"
        moved = s[4:] + s[:4]
        if int("".join(str(int(c, 36)) for c in moved)) % 97 == 1:
            return " ".join(s[i : i + 4] for i in range(0, len(s), 4))
    raise AssertionError


def generate(n: int, seed: int) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """n texts and, per text, the planted (type, value) entities."""
    rng = random.Random(seed)
    texts, truth = [], []
    for i in range(n):
        r = rng.randrange
        email = f"{rng.choice(FIRST)}.{r(1, 999)}@{rng.choice(DOMAINS)}"
        phone = _phone(rng)
        card = _card(rng, True)
        ents = {
            "EMAIL": email,
            "PHONE": phone,
            "CREDIT_CARD": card,
            "IBAN": _iban(rng),
            "US_SSN": f"{r(100, 665)}-{r(10, 99)}-{r(1000, 9999)}",
            "CN_RESIDENT_ID": _cn_id(rng, True),
            "IP_ADDRESS": f"10.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}",
            "URL": f"https://www.example.com/u/{r(1000, 9999)}?ref=mail",
        }
        noise = rng.choice(
            [
                f"on {2020 + r(0, 5)}-{r(1, 12):02d}-{r(1, 28):02d} at {r(8, 18)}:{r(0, 59):02d}",
                f"order #{r(100000, 999999)}, amount ${r(10, 999)}.{r(0, 99):02d}",
                f"ref {_card(rng, False)}",  # Luhn-invalid: not a card
                f"编号{_cn_id(rng, False)}",  # wrong check digit: not a resident ID
                f"ticket {r(1000, 9999)}-{r(10, 99)}",
            ]
        )
        kind = i % 6
        if kind == 0:
            planted = [("EMAIL", email), ("PHONE", phone)]
            text = f"Customer asked to be contacted at {email} or {phone} {noise}."
        elif kind == 1:
            planted = [("CREDIT_CARD", card)]
            text = f"Paid with card {card}, {noise}; no further issues."
        elif kind == 2:
            planted = [("PHONE", phone), ("CN_RESIDENT_ID", ents["CN_RESIDENT_ID"])]
            text = f"客户来电,电话{phone},身份证号{ents['CN_RESIDENT_ID']},{noise}。"
        elif kind == 3:
            planted = [("IBAN", ents["IBAN"]), ("EMAIL", email)]
            text = f"Refund to IBAN {ents['IBAN']}; confirmation sent to {email} {noise}."
        elif kind == 4:
            planted = [("US_SSN", ents["US_SSN"]), ("IP_ADDRESS", ents["IP_ADDRESS"])]
            text = f"SSN {ents['US_SSN']} verified from {ents['IP_ADDRESS']} {noise}."
        else:
            planted = [("URL", ents["URL"]), ("PHONE", phone)]
            text = f"See {ents['URL']} — callback {phone} {noise}."
        texts.append(text)
        truth.append(planted)
    return texts, truth


def score(
    outputs: list[str], truth: list[list[tuple[str, str]]], types: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    """Recall and precision per type and overall (micro) on the planted entities."""
    tp, fp, fn = Counter(), Counter(), Counter()
    for out, planted in zip(outputs, truth, strict=True):
        for t in types:
            values = [v for pt, v in planted if pt == t]
            tags = out.count(f"<{t}>")
            gone = sum(1 for v in values if v not in out)
            hit = min(tags, gone)
            tp[t] += hit
            fp[t] += tags - hit
            fn[t] += len(values) - hit
    res = {}
    for t in (*types, "ALL"):
        a, b, c = (
            (sum(tp.values()), sum(fp.values()), sum(fn.values())) if t == "ALL"
            else (tp[t], fp[t], fn[t])
        )  # fmt: skip
        res[t] = {
            "recall": round(a / (a + c), 4) if a + c else 1.0,
            "precision": round(a / (a + b), 4) if a + b else 1.0,
            "planted": a + c,
        }
    return res


def run_ours(texts: list[str], repeats: int) -> tuple[list[str], float]:
    """The project's scrubber over the whole column; best of `repeats` timings."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        arr, _ = scrub_column(texts)
        times.append(time.perf_counter() - t0)
        out = arr.to_pylist()
    return out, min(times), statistics.median(times)


def presidio_engine():
    """Presidio's analyzer: no-op NLP engine, Email, Phone and CreditCard recognizers only."""
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        PhoneRecognizer,
    )

    # Offline: Presidio's e-mail recognizer calls tldextract, which otherwise tries to download
    # the public suffix list; use the snapshot bundled with tldextract instead.
    tldextract.tldextract.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())
    registry = RecognizerRegistry(supported_languages=["en"])
    for rec in (EmailRecognizer(), PhoneRecognizer(), CreditCardRecognizer()):
        registry.add_recognizer(rec)
    engine = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def presidio_redact(text: str, results) -> str:
    """Replace Presidio's spans (overlaps resolved by score, then length) with placeholders."""
    chosen, taken = [], []
    for r in sorted(results, key=lambda r: (-r.score, -(r.end - r.start))):
        if all(r.end <= s or r.start >= e for s, e in taken):
            chosen.append(r)
            taken.append((r.start, r.end))
    for r in sorted(chosen, key=lambda r: -r.start):
        text = text[: r.start] + f"<{PRESIDIO_TYPES[r.entity_type]}>" + text[r.end :]
    return text


def run_presidio(texts: list[str]) -> tuple[list[str], float]:
    """Presidio over every text, one call per text (its API)."""
    engine = presidio_engine()
    entities = list(PRESIDIO_TYPES)
    engine.analyze(text=texts[0], language="en", entities=entities)  # warm-up
    t0 = time.perf_counter()
    outs = [
        presidio_redact(t, engine.analyze(text=t, language="en", entities=entities)) for t in texts
    ]
    return outs, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    """Run both, print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    texts, truth = generate(args.n, args.seed)
    all_types = tuple(sorted({t for p in truth for t, _ in p}))
    ours_out, ours_best, ours_median = run_ours(texts, args.repeats)
    pres_out, pres_s = run_presidio(texts)
    ours_tps, pres_tps = len(texts) / ours_best, len(texts) / pres_s
    result = {
        "texts": len(texts),
        "ours_texts_per_s": round(ours_tps),
        "ours_texts_per_s_median": round(len(texts) / ours_median),
        "presidio_texts_per_s": round(pres_tps, 1),
        "ratio": round(ours_tps / pres_tps, 1),
        "shared_types": {
            "ours": score(ours_out, truth, SHARED),
            "presidio": score(pres_out, truth, SHARED),
        },
        "all_types_ours": score(ours_out, truth, all_types),
    }
    o, p = result["shared_types"]["ours"]["ALL"], result["shared_types"]["presidio"]["ALL"]
    print(f"texts: {len(texts)} (seed {args.seed})")
    print(f"ours:     {result['ours_texts_per_s']:>10,} texts/s (best of {args.repeats})")
    print(f"presidio: {result['presidio_texts_per_s']:>10,} texts/s")
    print(f"ratio:    {result['ratio']:>10}x")
    print(f"on {', '.join(SHARED)} (both look for these):")
    print(f"  ours     recall {o['recall']:.4f} precision {o['precision']:.4f}")
    print(f"  presidio recall {p['recall']:.4f} precision {p['precision']:.4f}")
    for t in SHARED:
        a, b = result["shared_types"]["ours"][t], result["shared_types"]["presidio"][t]
        print(
            f"    {t:<12} ours R {a['recall']:.3f} P {a['precision']:.3f} | "
            f"presidio R {b['recall']:.3f} P {b['precision']:.3f} (planted {a['planted']})"
        )
    print("ours on every planted type:")
    for t, v in result["all_types_ours"].items():
        print(f"    {t:<15} R {v['recall']:.3f} P {v['precision']:.3f} (planted {v['planted']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
