"""The data path (ingest -> clean -> validate -> anonymize -> split) at scale, with baselines.

    PYTHONPATH=. python benchmarks/bench_data_path.py --rows 1000000 --runs 3

In a throwaway copy of the project (git ls-files copy, git init; .dvc is committed) whose bundled
sample batch is replaced by N generated rows (data/sample/build_sample.py, cached under
--cache-dir), it measures, each beside its goal and a same-run baseline:
1. every data stage run as `python -m stages.<verb>` (its process tree sampled for peak RSS):
   seconds and peak RSS, median of --runs; baseline: pyarrow read_csv + write_table of the input.
2. `dvc repro split` from scratch (the stages plus DVC's hashing and caching), then a no-op
   `dvc repro split` (median of --runs); baseline: `dvc --version` (interpreter + DVC import).
3. a new batch of 1% more rows in data/incoming: `dvc repro split` again, as a share of the
   from-scratch run (goal <= 5%).
4. validate's Great Expectations suite as the stage runs it (per partition, aggregated; Data Docs
   timed apart) against the same checks computed directly with pandas on the whole frame: the
   ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ("ingest", "clean", "validate", "anonymize", "split")
OUTPUTS = (
    ".pipeline-cache",  # stored partition results: a from-scratch run must not reuse them
    "data/raw",
    "data/clean",
    "data/quarantine",
    "reports/validation",
    "data/anon",
    "data/quarantine_anon",
    "reports/privacy",
    "data/split",
)
GOAL_1M_S = 60.0
GOAL_NOOP_S = 3.0
GOAL_BATCH_SHARE = 0.05
BENCH_KEY = "bench-key-0123456789abcdef"
OFFLINE_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
}


def env() -> dict[str, str]:
    """Subprocess environment: this interpreter's bin first, offline, a pseudonymisation key."""
    e = dict(os.environ, **OFFLINE_ENV, PIPELINE_HMAC_KEY=BENCH_KEY)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.pop("PYTHONPATH", None)
    return e


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """Run cmd: (wall seconds, peak RSS in MiB of its whole process tree, workers included).

    Sampled every 50 ms with psutil: stages run partitions in worker processes, so the peak of
    the largest single process (what /usr/bin/time reports) would understate the memory used.
    """
    import psutil

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT)
        root, peak = psutil.Process(proc.pid), 0
        while proc.poll() is None:
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            except psutil.Error:
                pass
            peak = max(peak, total)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            out.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.read()[-6000:]}")
    return wall, peak / 2**20


def make_input(rows: int, cache: Path) -> Path:
    """The N-row source file, generated once (build_sample.py --rows) and kept in `cache`."""
    path = cache / f"rows_{rows}.csv.gz"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, str(ROOT / "data/sample/build_sample.py"), "--rows", str(rows),
             "--out", str(path)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        print(f"generated {path} in {time.perf_counter() - t0:.0f} s")
    return path


def make_batch(rows: int, cache: Path) -> Path:
    """A new batch of `rows` rows with fresh customer ids (no overlap with the base file)."""
    path = cache / f"batch_{rows}.csv.gz"
    if not path.exists():
        sys.path.insert(0, str(ROOT / "data/sample"))
        import build_sample as bs

        adult = bs.load_adult(Path(bs.DEFAULT_ADULT_DIR) / "adult.data")
        frame = bs.build_table(adult, bs.SEED + 99, id_offset=900_000_000, n_rows=rows)
        bs.write_csv_gz(frame, path, level=6)
    return path


def project_copy(dest: Path, source_file: Path) -> Path:
    """A fresh git repository of the project with `source_file` as the bundled first batch."""
    from tests.conftest import project_copy as copy_project  # the one way to copy the project

    copy_project(dest)
    shutil.copyfile(source_file, dest / "data/sample/customers_batch1.csv.gz")
    git = ["git", "-c", "user.email=b@example.com", "-c", "user.name=bench"]
    subprocess.run([*git, "commit", "-qam", "bench input"], cwd=dest, check=True)
    return dest


def clear_outputs(repo: Path) -> None:
    for out in OUTPUTS:
        shutil.rmtree(repo / out, ignore_errors=True)


def arrow_baseline(src: Path, repo: Path) -> tuple[float, float]:
    """Plain pyarrow: read the gzip'd CSV as strings and write one Parquet file."""
    code = (
        "import sys, pyarrow.csv as c, pyarrow.parquet as pq\n"
        "t = c.read_csv(sys.argv[1], convert_options=c.ConvertOptions("
        "column_types={}, strings_can_be_null=False))\n"
        "t = t.cast(__import__('pyarrow').schema([(f.name, 'string') for f in t.schema]))\n"
        "pq.write_table(t, sys.argv[2])\n"
    )
    out = repo / "baseline.parquet"
    res = timed([sys.executable, "-c", code, str(src), str(out)], repo)
    out.unlink()
    return res


def pandas_checks(df, checks, schema, cfg) -> list[tuple[str, str, int]]:
    """validate's expectations computed directly with pandas: unexpected count per check."""
    from stages.validate import class_balance

    out = []
    for ch in checks:
        a = ch.args
        kind = ch.kind
        col = df[a["column"]]
        nonnull = col.notna()
        if kind == "ExpectColumnValuesToBeUnique":
            bad = int((col.duplicated(keep=False) & nonnull).sum())
        elif kind == "ExpectColumnValuesToNotBeNull":
            bad = int((~nonnull).sum())
        elif kind == "ExpectColumnValuesToBeInSet":
            bad = int((~col.isin(list(a["value_set"])) & nonnull).sum())
        elif kind == "ExpectColumnValuesToBeInTypeList":
            dtype = col.dtype
            pandas_ext = type(dtype).__module__.startswith("pandas")
            name = type(dtype).__name__ if pandas_ext else str(dtype)
            bad = 0 if (name in a["type_list"] or str(dtype) in a["type_list"]) else len(col)
        elif kind == "ExpectColumnValuesToBeBetween":
            v = col[nonnull]
            lo = a.get("min_value", -float("inf"))
            hi = a.get("max_value", float("inf"))
            bad = int(((v < lo) | (v > hi)).sum())
        elif kind == "ExpectColumnValuesToMatchRegex":
            bad = int((~col[nonnull].astype(str).str.contains(a["regex"], regex=True)).sum())
        else:
            raise SystemExit(f"no pandas equivalent for {kind}")
        out.append((ch.type, a["column"], bad))
    counts = df[schema.label].value_counts().to_dict()
    balance = class_balance(counts, schema.classes, cfg, schema.label)["success"]
    out.append(("class_balance", schema.label, int(not balance)))
    return out


def gx_compare(runs: int) -> None:
    """In a project directory: validate's GX suite against pandas on data/clean (JSON out).

    GX runs as the validate stage runs it: partition by partition through one validation
    definition per process (context creation, about 8 s with the import, is left out of the
    timing), the whole-dataset checks (key uniqueness, class shares) streamed beside it and the
    results aggregated; Data Docs, built once from the aggregate, are timed apart. pandas computes
    the same checks on the whole frame.
    """
    from stages.lib.gx import build_docs, context
    from stages.lib.io import iter_partitions, read_dataset
    from stages.lib.params import load_params, section
    from stages.lib.schema import load_schema
    from stages.validate import ValidateConfig, aggregate, build_checks, validate_partition

    params = load_params()
    cfg = section(ValidateConfig, "validate", params)
    schema = load_schema(params)
    checks = build_checks(schema, cfg)
    t0 = time.perf_counter()
    frames = [t.to_pandas() for _, t in iter_partitions("data/clean")]
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    context()
    ctx_s = time.perf_counter() - t0
    gx_s, pd_s = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        verdict = aggregate(
            [validate_partition(f, checks, schema.label) for f in frames], checks, cfg, schema
        )
        gx_s.append(time.perf_counter() - t0)
    df = read_dataset("data/clean").to_pandas()
    del frames
    for _ in range(runs):
        t0 = time.perf_counter()
        mine = pandas_checks(df, checks, schema, cfg)
        pd_s.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        build_docs(
            list(zip(checks, verdict.results[: len(checks)], strict=True)),
            Path(d) / "docs", "bench", {"rows": verdict.rows},
        )  # fmt: skip
        docs_s = time.perf_counter() - t0
    # Same answers: the unexpected counts agree wherever GX reports one.
    gx_counts = {(r["expectation"], r["column"]): r["unexpected_count"] for r in verdict.results}
    disagree = []
    for k, c, b in mine:
        theirs = gx_counts.get((k, c))
        if theirs is not None and theirs != b:
            disagree.append((k, c, b, theirs))
    figures = {
        "rows": len(df),
        "partitions": verdict.partitions,
        "checks": len(checks),
        "load_s": load_s,
        "gx_context_s": ctx_s,
        "gx_s": statistics.median(gx_s),
        "gx_docs_s": docs_s,
        "pandas_s": statistics.median(pd_s),
        "disagree": disagree[:5],
    }
    print(json.dumps(figures))


def time_stages(
    repo: Path, src: Path, stages: tuple[str, ...], runs: int
) -> tuple[float, dict, dict, float, list]:
    """Each stage from scratch, `runs` times, beside the pyarrow baseline: (median path
    seconds, median seconds per stage, peak RSS per stage, peak RSS of the path, baselines)."""
    per: dict[str, list[tuple[float, float]]] = {s: [] for s in stages}
    base: list[tuple[float, float]] = []
    for r in range(runs):
        clear_outputs(repo)
        base.append(arrow_baseline(src, repo))
        for s in stages:
            per[s].append(timed([sys.executable, "-m", f"stages.{s}"], repo))
        total = sum(per[s][-1][0] for s in stages)
        print(f"  run {r + 1}: " + "  ".join(f"{s} {per[s][-1][0]:.1f}" for s in stages)
              + f"  total {total:.1f} s  (load {os.getloadavg()[0]:.2f})")  # fmt: skip
    med = {s: statistics.median(x[0] for x in per[s]) for s in stages}
    rss = {s: max(x[1] for x in per[s]) for s in stages}
    path_s = statistics.median(sum(per[s][i][0] for s in stages) for i in range(runs))
    return path_s, med, rss, max(rss.values()), base


def fmt_s(x: float) -> str:
    return f"{x:7.1f} s" if x >= 10 else f"{x:7.2f} s"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="base rows of the input")
    ap.add_argument("--runs", type=int, default=3, help="repetitions for the medians")
    ap.add_argument("--cache-dir", default=str(Path(tempfile.gettempdir()) / "bench-data-path"))
    ap.add_argument("--keep", action="store_true", help="keep the project copy")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument(
        "--upto",
        choices=STAGES,
        default="split",
        help="run the stages up to this one only; below split, the DVC and batch parts are skipped",
    )
    ap.add_argument(
        "--stages-only", action="store_true", help="only the stages: no DVC, batch or GX parts"
    )
    ap.add_argument(
        "--scale-from",
        type=int,
        metavar="ROWS",
        help="also time the stages on ROWS rows first, and report the time and memory ratio "
        "(for 10M rows: --scale-from 1000000; goal <= 11x the time, peak < 3 GB)",
    )
    ap.add_argument("--gx-compare", type=int, metavar="RUNS", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def measure_scale_baseline(
    rows: int, runs: int, stages: tuple[str, ...], cache: Path, work: Path
) -> dict:
    """The stages on a smaller input in a copy of its own: the base of the scaling ratio."""
    small = make_input(rows, cache)
    small_repo = project_copy(work / "repo-small", small)
    print(f"scale baseline: {rows:,} rows, same stages, same runs")
    small_s, _, _, small_rss, _ = time_stages(small_repo, small, stages, runs)
    shutil.rmtree(small_repo, ignore_errors=True)
    return {"rows": rows, "s": small_s, "peak_rss_mib": small_rss}


def measure_stages(repo: Path, src: Path, stages: tuple[str, ...], runs: int) -> dict:
    """Part 1: the stages as plain subprocesses beside the pyarrow baseline, run by run."""
    path_s, med, rss, _, base = time_stages(repo, src, stages, runs)
    rows_out = {s: json.loads((repo / f"metrics/{s}.json").read_text()) for s in stages}
    return {
        "stages": {s: {"s": med[s], "peak_rss_mib": rss[s]} for s in stages},
        "data_path_s": path_s,
        "data_path_peak_rss_mib": max(rss.values()),
        "arrow_baseline": {
            "s": statistics.median(b[0] for b in base),
            "peak_rss_mib": max(b[1] for b in base),
        },
        "rows_out": {s: rows_out[s].get("rows_out") for s in stages},
    }


def measure_dvc(repo: Path, batch: Path, rows: int, runs: int) -> dict:
    """Parts 2 and 3: `dvc repro split` from scratch, no-op and after a 1% batch."""
    # 2. DVC: from scratch, then no-op; baseline `dvc --version`.
    clear_outputs(repo)
    dvc_full, _ = timed(["dvc", "repro", "split"], repo)
    noop = [timed(["dvc", "repro", "split"], repo)[0] for _ in range(runs)]
    dvc_ver = [timed(["dvc", "--version"], repo)[0] for _ in range(runs)]
    status = [timed(["dvc", "status"], repo)[0] for _ in range(runs)]
    # 3. A 1% batch: rerun of the data stages as a share of the from-scratch run.
    shutil.copyfile(batch, repo / "data/incoming" / batch.name)
    batch_s, _ = timed(["dvc", "repro", "split"], repo)
    return {
        "dvc_full_s": dvc_full,
        "dvc_noop_s": statistics.median(noop),
        "dvc_version_s": statistics.median(dvc_ver),
        "dvc_status_s": statistics.median(status),
        "batch_rows": max(1, rows // 100),
        "batch_s": batch_s,
        "batch_share": batch_s / dvc_full,
    }


def measure_gx(repo: Path, runs: int) -> dict:
    """Part 4: GX against pandas on the clean data (with the batch when it ran)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--gx-compare", str(runs)],
        cwd=repo,
        env=dict(env(), PYTHONPATH=str(repo)),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"GX comparison failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_stages(args: argparse.Namespace, stages: tuple[str, ...], fig: dict) -> None:
    """The stage table, the path's total against its goal and the pyarrow baseline."""
    ab, path_s = fig["arrow_baseline"], fig["data_path_s"]
    print(f"\n== data path on {args.rows:,} rows (medians of {args.runs}) ==")
    print(f"{'stage':12} {'time':>9} {'peak RSS':>10}")
    for s in stages:
        print(f"{s:12} {fmt_s(fig['stages'][s]['s'])} {fig['stages'][s]['peak_rss_mib']:8.0f} MiB")
    # The goal is for 1M rows; other sizes are held to it pro rata (linear scaling).
    goal = GOAL_1M_S * args.rows / 1e6
    verdict = "ok" if path_s <= goal and args.upto == "split" else "MISSED"
    if args.upto != "split":
        verdict = "n/a (partial path)"
    print(
        f"{'total':12} {fmt_s(path_s)} {fig['data_path_peak_rss_mib']:8.0f} MiB   goal <= "
        f"{goal:.1f} s ({GOAL_1M_S:.0f} s per 1M rows): {verdict}"
    )
    print(f"{'pyarrow csv->parquet':20} {fmt_s(ab['s'])} {ab['peak_rss_mib']:8.0f} MiB  (baseline)")


def print_scaling(rows: int, fig: dict) -> None:
    """Time and memory on `rows` rows against the smaller scale baseline."""
    sf, path_s = fig["scale_from"], fig["data_path_s"]
    ratio = path_s / sf["s"]
    limit = 11 * rows / sf["rows"] / 10
    mem_ok = "ok" if fig["data_path_peak_rss_mib"] < 3 * 1024 else "MISSED"
    print(
        f"scaling: {sf['rows']:,} rows {fmt_s(sf['s'])} {sf['peak_rss_mib']:6.0f} MiB -> "
        f"{rows:,} rows {fmt_s(path_s)} = {ratio:.1f}x the time; goal <= {limit:.0f}x: "
        f"{'ok' if ratio <= limit else 'MISSED'}; peak {fig['data_path_peak_rss_mib']:.0f} "
        f"MiB, goal < 3 GiB: {mem_ok}"
    )


def print_dvc(fig: dict) -> None:
    """DVC from scratch, no-op against its goal, and the 1% batch's share."""
    print(
        f"dvc repro split, from scratch: {fmt_s(fig['dvc_full_s'])}  "
        f"(stages {fig['data_path_s']:.1f} s + DVC)"
    )
    noop_ok = "ok" if fig["dvc_noop_s"] <= GOAL_NOOP_S else "MISSED"
    print(
        f"dvc repro split, no-op:        {fmt_s(fig['dvc_noop_s'])}  goal <= {GOAL_NOOP_S} s: "
        f"{noop_ok}; baseline dvc --version {fig['dvc_version_s']:.2f} s, "
        f"dvc status {fig['dvc_status_s']:.2f} s"
    )
    share_ok = "ok" if fig["batch_share"] <= GOAL_BATCH_SHARE else "MISSED"
    print(
        f"1% batch ({fig['batch_rows']:,} rows): {fmt_s(fig['batch_s'])} = "
        f"{fig['batch_share']:.0%} of the full run; goal <= {GOAL_BATCH_SHARE:.0%}: {share_ok}"
    )


def print_gx(g: dict) -> None:
    """The GX suite's time against the same checks in pandas."""
    print(f"GX suite ({g['checks']} checks, {g['rows']:,} rows, {g['partitions']} partitions): "
          f"{fmt_s(g['gx_s'])} (+context {g['gx_context_s']:.1f} s, +Data Docs "
          f"{g['gx_docs_s']:.1f} s); pandas same checks {fmt_s(g['pandas_s'])}; "
          f"ratio {g['gx_s'] / g['pandas_s']:.1f}x; disagreements {g['disagree']}")  # fmt: skip


def print_report(args: argparse.Namespace, stages: tuple[str, ...], fig: dict) -> None:
    """Every figure measured, each beside its goal and baseline."""
    print_stages(args, stages, fig)
    if "scale_from" in fig:
        print_scaling(args.rows, fig)
    if "dvc_full_s" in fig:
        print_dvc(fig)
    else:
        print(f"stages after {args.upto}, dvc repro and the 1% batch: skipped")
    if fig.get("gx"):
        print_gx(fig["gx"])
    print(f"load {os.getloadavg()}")


def main(argv: list[str] | None = None) -> None:
    """Measure the data path on a project copy and print the figures."""
    args = parse_args(argv)
    if args.gx_compare:
        gx_compare(args.gx_compare)
        return
    stages = STAGES[: STAGES.index(args.upto) + 1]
    cache = Path(args.cache_dir)
    src = make_input(args.rows, cache)
    batch = make_batch(max(1, args.rows // 100), cache)
    work = Path(tempfile.mkdtemp(prefix="bench-data-path-"))
    repo = project_copy(work / "repo", src)
    print(f"rows {args.rows:,}  input {src.stat().st_size / 1e6:.0f} MB  runs {args.runs}")
    print(f"machine: {platform.node()} nproc {os.cpu_count()}  load {os.getloadavg()}")
    fig: dict = {"rows": args.rows, "runs": args.runs, "nproc": os.cpu_count()}
    if args.scale_from:
        fig["scale_from"] = measure_scale_baseline(args.scale_from, args.runs, stages, cache, work)
    fig.update(measure_stages(repo, src, stages, args.runs))
    if args.upto == "split" and not args.stages_only:
        fig.update(measure_dvc(repo, batch, args.rows, args.runs))
    if not args.stages_only:
        fig["gx"] = measure_gx(repo, args.runs)
    print_report(args, stages, fig)
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2))
    if args.keep:
        print(f"project copy kept at {repo}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
