"""A small self-contained git + DVC repository for the flow tests and the flow benchmark.

Four stages in a diamond (prepare -> left, right -> report), each a tiny script that writes
metrics/<name>.json, so the flows are tested without the real pipeline's stages:
- prepare counts the batch files under data/incoming (where the new-data flow adds batches);
- left and right sleep `sleep_s` seconds; with $TOY_BARRIER_DIR set each then waits (up to 60 s)
  for the other to start, so their run times overlap exactly when they run concurrently (a slow,
  loaded machine cannot make the concurrency check flaky); when $TOY_TIMING_DIR is
  set, every stage appends its name to attempts.log there and records its start and end times
  (outside the repository, so outputs stay deterministic);
- left exits 75 (EX_TEMPFAIL) once when $TOY_FLAKY_DIR is set and holds no marker yet (a
  transient I/O failure);
- right exits 3 with "GATE FAILED: ..." when params `right.fail` is true (a gate failure);
- with $TOY_FAIL=<stage>:<code>, that stage prints "ERROR: ..." and exits with that code at once;
- report writes reports/summary.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    '''
    """Toy stage: python toy_stage.py <name>."""
    import json, os, sys, time
    from pathlib import Path

    import yaml

    name = sys.argv[1]
    params = yaml.safe_load(open("params.yaml"))
    timing = os.environ.get("TOY_TIMING_DIR")
    start = time.time()
    if timing:
        with open(Path(timing) / "attempts.log", "a") as log:
            log.write(name + "\\n")
    fail_stage, _, fail_code = os.environ.get("TOY_FAIL", "").partition(":")
    if fail_stage == name:
        print(f"ERROR: {name}: data/incoming/batch0.csv, line 2, column b: expected an integer, "
              "found 'x'; fix the file and run again", file=sys.stderr)
        sys.exit(int(fail_code))
    Path("metrics").mkdir(exist_ok=True)
    Path("data").mkdir(exist_ok=True)
    summary = {"stage": name}
    if name == "prepare":
        files = sorted(p.name for p in Path("data/incoming").glob("*") if p.suffix == ".csv")
        rows = sum(len(open(Path("data/incoming") / f).read().splitlines()) for f in files)
        rows *= params["prepare"]["factor"]
        Path("data/prepared.json").write_text(json.dumps({"files": files, "rows": rows}))
        summary.update(rows_in=rows, rows_out=rows, files=len(files))
    elif name in ("left", "right"):
        prepared = json.loads(Path("data/prepared.json").read_text())
        time.sleep(params["sleep_s"])
        barrier = os.environ.get("TOY_BARRIER_DIR")
        if barrier:  # wait (up to 60 s) until the other side has started too: run concurrently
            (Path(barrier) / name).touch()
            other = Path(barrier) / ("right" if name == "left" else "left")
            deadline = time.time() + 60
            while not other.exists() and time.time() < deadline:
                time.sleep(0.05)
        flaky = os.environ.get("TOY_FLAKY_DIR")
        if name == "left" and flaky and not (Path(flaky) / "failed-once").exists():
            (Path(flaky) / "failed-once").write_text("x")
            print("ERROR: simulated I/O error reading the batch store", file=sys.stderr)
            sys.exit(75)
        if name == "right" and params["right"]["fail"]:
            print("GATE FAILED: right: score 0.10 below threshold 0.50", file=sys.stderr)
            sys.exit(3)
        Path(f"data/{name}.json").write_text(json.dumps({"rows": prepared["rows"], "side": name}))
        summary.update(rows_in=prepared["rows"], rows_out=prepared["rows"])
    elif name == "report":
        left = json.loads(Path("data/left.json").read_text())
        right = json.loads(Path("data/right.json").read_text())
        Path("reports").mkdir(exist_ok=True)
        Path("reports/summary.md").write_text(
            f"# Toy report\\n\\n| side | rows |\\n|---|---|\\n"
            f"| left | {left['rows']} |\\n| right | {right['rows']} |\\n"
        )
        summary.update(rows_in=left["rows"], rows_out=right["rows"])
    Path(f"metrics/{name}.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    if timing:
        Path(timing, f"{name}.txt").write_text(f"{start} {time.time()}")
    '''
)


def dvc_yaml(python: str) -> str:
    """The toy dvc.yaml; stage commands run `python` = the interpreter given."""

    def stage(name: str, deps: list[str], outs: list[str], params: list[str]) -> str:
        lines = [f"  {name}:", f"    cmd: {python} toy_stage.py {name}", "    deps:"]
        lines += [f"      - {d}" for d in ["toy_stage.py", *deps]]
        if params:
            lines.append("    params:")
            lines += [f"      - {p}" for p in params]
        lines.append("    outs:")
        lines += [f"      - {o}" for o in outs]
        lines += ["    metrics:", f"      - metrics/{name}.json:", "          cache: false"]
        return "\n".join(lines)

    return "stages:\n" + "\n".join(
        [
            stage("prepare", ["data/incoming"], ["data/prepared.json"], ["prepare.factor"]),
            stage("left", ["data/prepared.json"], ["data/left.json"], ["sleep_s"]),
            stage("right", ["data/prepared.json"], ["data/right.json"], ["sleep_s", "right.fail"]),
            stage("report", ["data/left.json", "data/right.json"], ["reports/summary.md"], []),
        ]
    )


PARAMS = "prepare:\n  factor: 1\nsleep_s: 0.0\nright:\n  fail: false\n"


def run(cmd: list[str], cwd: Path) -> str:
    """Run a command in `cwd`, raising with its output on failure."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if p.returncode:
        raise RuntimeError(f"{cmd} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout


def make_toy_repo(root: Path, sleep_s: float = 0.0, python: str = sys.executable) -> Path:
    """Create the toy repository at `root` (git init, dvc init, one commit) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "toy_stage.py").write_text(SCRIPT)
    (root / "dvc.yaml").write_text(dvc_yaml(python))
    (root / "params.yaml").write_text(PARAMS.replace("sleep_s: 0.0", f"sleep_s: {sleep_s}"))
    incoming = root / "data" / "incoming"
    incoming.mkdir(parents=True)
    (incoming / "batch0.csv").write_text("a,b\n1,2\n3,4\n")
    run(["git", "init", "-q", "-b", "main"], root)
    run(["git", "config", "user.email", "toy@example.invalid"], root)
    run(["git", "config", "user.name", "toy"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    run([sys.executable, "-m", "dvc", "config", "core.autostage", "true"], root)
    run([sys.executable, "-m", "dvc", "add", "-q", "data/incoming/batch0.csv"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-q", "-m", "toy pipeline"], root)
    return root


def dvc(root: Path, *args: str) -> str:
    """Run the dvc CLI in `root` and return its stdout."""
    return run([sys.executable, "-m", "dvc", *args], root)
