"""Benchmark: the project's scrubber against Microsoft Presidio's pattern recognizers.

Two labelled corpora (benchmarks/pii_corpus.py): the seeded Faker corpus (13 locales, templates
per language, distractors) and the hand-written adversarial file benchmarks/pii_adversarial.json.
Both tools run in this process on the same texts through the adapters of benchmarks/pii_eval.py:
ours with each record's own identifiers and the corpus' known names, as the pipeline calls it;
Presidio (`pip install -e '.[bench]'`) with its no-op NLP engine, its Email, Phone (the corpus'
regions), CreditCard, Iban, UsSsn, Ip and Url recognizers and a deny-list PERSON recognizer of
the known names. Scores come from the output texts alone (pii_eval.score): recall per labelled
entity type (every letter and digit of the span removed), character precision per placeholder
type and overall. Throughput: texts/s, the median of `--repeats` timed runs of each tool.

    PYTHONPATH=. python benchmarks/bench_scrub.py [--n 2000] [--seed 7] [--repeats 3] [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import pii_corpus, pii_eval

TOOLS = {"ours": pii_eval.ours, "presidio": pii_eval.presidio}


def timed(tool, records: list[dict[str, Any]], repeats: int) -> tuple[list[str], float]:
    """The tool's outputs and the median seconds of `repeats` runs (after a small warm-up)."""
    tool(records[:20])  # imports, Presidio's engine
    times, out = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = tool(records)
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def compare(records: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Scores and throughput of both tools on the same records."""
    res: dict[str, Any] = {"texts": len(records)}
    for name, tool in TOOLS.items():
        out, seconds = timed(tool, records, repeats)
        res[name] = {"texts_per_s": len(records) / seconds, **pii_eval.score(records, out)}
    res["ratio"] = res["ours"]["texts_per_s"] / res["presidio"]["texts_per_s"]
    return res


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(title: str, res: dict[str, Any], repeats: int) -> list[str]:
    """Recall (R) and character precision (P) per type, ours beside Presidio, and throughput."""
    o, p = res["ours"], res["presidio"]
    types = sorted({*o["recall"], *o["precision"], *p["precision"]})
    lines = [
        f"{title}: {res['texts']} texts, {o['overall']['spans']} labelled spans",
        f"  {'entity':<15} {'spans':>5} | {'ours R':>7} {'ours P':>7} | "
        f"{'pres. R':>7} {'pres. P':>7}",
    ]
    for t in types:
        n = o["recall"].get(t, {}).get("spans", 0)
        cells = []
        for tool in (o, p):
            cells.append(_f(tool["recall"][t]["recall"]) if t in tool["recall"] else "-")
            cells.append(_f(tool["precision"][t]["precision"]) if t in tool["precision"] else "-")
        lines.append(
            f"  {t:<15} {n:>5} | {cells[0]:>7} {cells[1]:>7} | {cells[2]:>7} {cells[3]:>7}"
        )
    oo, po = o["overall"], p["overall"]
    lines.append(
        f"  {'ALL':<15} {oo['spans']:>5} | {_f(oo['recall']):>7} {_f(oo['precision']):>7} | "
        f"{_f(po['recall']):>7} {_f(po['precision']):>7}"
    )
    lines.append(
        f"  throughput (median of {repeats}): ours {o['texts_per_s']:,.0f} texts/s, "
        f"presidio {p['texts_per_s']:,.0f} texts/s: {res['ratio']:.1f}x"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Run both tools on both corpora, print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="Faker corpus size (default 2000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per tool (median)")
    ap.add_argument("--adversarial", default=str(pii_corpus.ADVERSARIAL))
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)

    corpora = {
        f"faker corpus (seed {args.seed})": pii_corpus.generate(args.n, args.seed)["records"],
        "adversarial corpus": pii_corpus.load(args.adversarial)["records"],
    }
    results = {}
    for title, records in corpora.items():
        results[title] = compare(records, args.repeats)
        print("\n".join(table(title, results[title], args.repeats)), flush=True)
    print("R: recall (spans with every letter and digit removed); P: character precision")
    print("(removed non-space characters inside a labelled span) per placeholder type.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
