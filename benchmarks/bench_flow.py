"""Overhead of the pipeline flow over a fully cached pipeline, against an empty flow.

    PYTHONPATH=. python benchmarks/bench_flow.py              # the toy 4-stage repository
    PYTHONPATH=. python benchmarks/bench_flow.py --repo .     # this repository (reproduce first)

Both flows run in this process against one Prefect server (the ephemeral one unless
PREFECT_API_URL is set), after a warm-up run of each, so server start and imports are not
counted. Goal: the cached pipeline flow takes no more than 2 s above the empty flow.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect import flow

from flows.pipeline import pipeline

GOAL_S = 2.0


@flow(name="empty")
def empty() -> None:
    """A flow that does nothing: the fixed cost of a flow run."""


def timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    state = fn(*args, return_state=True, **kwargs)
    elapsed = time.perf_counter() - start
    if not state.is_completed():
        raise SystemExit(f"{fn.name} failed: {state.message}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", help="a DVC repository (default: a fresh toy repository)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    if args.repo:
        repo = Path(args.repo).resolve()
    else:
        from tests.toy_dvc_repo import make_toy_repo

        repo = make_toy_repo(Path(tempfile.mkdtemp(prefix="bench-flow-")) / "repo")
    t0 = time.perf_counter()
    timed(empty)  # starts the ephemeral server when PREFECT_API_URL is unset
    print(f"first flow run (server start included): {time.perf_counter() - t0:.1f} s")
    timed(pipeline, repo_root=str(repo))  # warm-up: reproduces whatever is not cached yet
    results = pipeline(repo_root=str(repo))
    ran = [r["stage"] for r in results if r["status"] != "up-to-date"]
    if ran:
        raise SystemExit(f"pipeline not fully cached after the warm-up: {ran}")
    empty_s, cached_s = [], []
    for _ in range(args.runs):
        empty_s.append(timed(empty))
        cached_s.append(timed(pipeline, repo_root=str(repo)))
    e, c = statistics.median(empty_s), statistics.median(cached_s)
    print(f"stages: {len(results)}  runs: {args.runs}")
    for label, xs, m in (("empty flow", empty_s, e), ("cached pipeline", cached_s, c)):
        print(f"{label + ':':20} median {m:.2f} s  (min {min(xs):.2f}, max {max(xs):.2f})")
    verdict = "ok" if c - e <= GOAL_S else "ABOVE GOAL"
    print(f"overhead:            {c - e:.2f} s  (goal <= {GOAL_S:.1f} s): {verdict}")


if __name__ == "__main__":
    main()
