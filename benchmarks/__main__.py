"""Run every benchmark, each in its own process, and print a summary.

    python -m benchmarks                         # all, quick defaults (a loaded 2-core box)
    python -m benchmarks --only data_path,flow   # a selection
    python -m benchmarks --rows 1000000 --runs 3 # the data path at the size issue 8 asks for
    python -m benchmarks --full                  # the benchmarks' own (longer) defaults

Each benchmark prints its figures beside its baseline measured in the same run; this runner
adds the wall time of each and repeats the closing lines of each under one summary.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (script, quick arguments, full arguments, summary lines to repeat)
BENCHMARKS: dict[str, tuple[str, list[str], list[str], int]] = {
    "scrub": ("bench_scrub.py", ["--n", "2000", "--repeats", "3"], [], 36),
    "train": ("bench_train.py", ["--quick"], [], 8),
    "flow": ("bench_flow.py", ["--runs", "3"], ["--runs", "5"], 4),
    "data_path": ("bench_data_path.py", [], [], 14),
    "text": ("bench_text.py", [], [], 3),
    "normalise": ("bench_normalise.py", ["--n", "20000"], [], 3),
}


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks one after another; exit 1 when any of them failed."""
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    ap.add_argument("--full", action="store_true", help="each benchmark's own defaults")
    ap.add_argument(
        "--rows", type=int, default=100_000, help="data path: base rows (default 100000)"
    )
    ap.add_argument("--runs", type=int, default=1, help="data path: runs per median (default 1)")
    ap.add_argument("--upto", default="split", help="data path: last stage to run")
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    print(f"nproc {os.cpu_count()}  load {os.getloadavg()}  {time.strftime('%Y-%m-%d %H:%M %Z')}")
    done: list[tuple[str, int, float, list[str]]] = []
    for name in names:
        script, quick, full, keep = BENCHMARKS[name]
        extra = full if args.full else quick
        if name == "data_path":
            extra = ["--rows", str(args.rows), "--runs", str(args.runs), "--upto", args.upto]
        cmd = [sys.executable, str(ROOT / "benchmarks" / script), *extra]
        print(f"\n### {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        # Output streams through as it comes (these take minutes) and is kept for the summary.
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line.rstrip("\n"))
        rc = proc.wait()
        done.append(
            (
                name,
                rc,
                time.perf_counter() - t0,
                [ln for ln in lines if ln and "| INFO" not in ln][-keep:],
            )
        )

    print("\n" + "=" * 78 + "\nSUMMARY (each figure beside its same-run baseline)")
    for name, rc, wall, tail in done:
        status = "ok" if rc == 0 else f"FAILED (exit {rc})"
        print(f"\n--- {name}: {status}, {wall:.0f} s")
        for line in tail:
            print(f"  {line}")
    print(f"\nload {os.getloadavg()}")
    return 0 if all(rc == 0 for _, rc, _, _ in done) else 1


if __name__ == "__main__":
    sys.exit(main())
