"""lineage: answer an auditor from dvc.lock (the ledger) and the run records, by command.

- run records (lineage/runs.jsonl, in git): who and what ran the pipeline, one JSON line a run;
- show: the chain of stages that produced an artefact, back to the raw batches;
- verify: re-hash what dvc.lock lists and name every missing or altered file;
- why: for every stage that would rerun now, the input, params key or code file that changed;
- trace: where one record_id came from and where it went, without printing identifiers;
- export: one archive for an auditor, with a manifest of SHA-256 digests.

Hashes always come from dvc.lock and DVC's documented hashes (MD5 of a file's bytes; of the .dir
manifest for a directory), computed with hashlib;
the run records keep only what dvc.lock said at the time (digests), never hashes of their own.
"""

from __future__ import annotations

import getpass
import hashlib
import importlib.metadata
import io
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import time
import tomllib
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
import yaml

from stages.lib.io import file_hash

RECORDS = Path("lineage/runs.jsonl")
LOCK = Path("dvc.lock")
DEFAULT_TARGET = "models/model.pt"
CODE_SUFFIXES = (".py", ".sh", ".sql", ".ipynb", ".r", ".jl")
# Lineage columns trace may read; source columns (identifiers among them) are never read.
TRACE_COLUMNS = ("record_id", "_batch", "_source_file", "_source_row", "_reason_kind", "_reason")
AUGMENTED = "_augmented"
RECORD_ID = "record_id"
# Summary text of a params section with more leaves than this (the schema) in `show`.
MAX_PARAM_LEAVES = 20


# ---------------------------------------------------------------------------------------------
# Pure functions over dvc.lock (a dict as loaded from YAML) and run records
# ---------------------------------------------------------------------------------------------


def canonical_digest(obj: Any) -> str:
    """SHA-256 of an object's canonical JSON (sorted keys): a stable digest of a lock entry."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def lock_stages(lock: dict) -> dict[str, dict]:
    """The `stages` mapping of a dvc.lock, in file order."""
    return dict((lock or {}).get("stages") or {})


def stage_digests(lock: dict) -> dict[str, str]:
    """Each stage's lock-entry digest: equal digests mean the same command, deps, params, outs."""
    return {name: canonical_digest(entry) for name, entry in lock_stages(lock).items()}


def is_code(path: str) -> bool:
    """Whether a dependency is code (its changes are reported as code, not data)."""
    return path.lower().endswith(CODE_SUFFIXES)


def _hash(entry: dict) -> str | None:
    return entry.get("md5") or entry.get("etag") or entry.get("checksum")


def _under(path: str, parent: str) -> bool:
    path, parent = path.rstrip("/"), parent.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def producer_of(lock: dict, path: str) -> tuple[str, str] | None:
    """(stage, output path) of the stage whose output is `path` or a directory holding it."""
    path = path.rstrip("/")
    for name, entry in lock_stages(lock).items():
        for out in entry.get("outs") or []:
            if _under(path, out["path"]):
                return name, out["path"]
    return None


def _params_leaves(obj: Any, prefix: str) -> dict[str, Any]:
    if isinstance(obj, dict) and obj:
        leaves: dict[str, Any] = {}
        for k, v in obj.items():
            leaves.update(_params_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return leaves
    return {prefix: obj}


def params_diff(old: Any, new: Any, prefix: str = "") -> list[dict]:
    """Leaf-level differences between two params values: [{key, old, new}] (missing = None)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[dict] = []
        for k in list(old) + [k for k in new if k not in old]:
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in new:
                out.append({"key": key, "old": old[k], "new": None, "change": "removed"})
            elif k not in old:
                out.append({"key": key, "old": None, "new": new[k], "change": "added"})
            else:
                out.extend(params_diff(old[k], new[k], key))
        return out
    if old != new:
        return [{"key": prefix, "old": old, "new": new, "change": "modified"}]
    return []


def stage_entry(name: str, entry: dict, lock: dict) -> dict:
    """One stage of the ledger, described: command, code, params, inputs and outputs by hash."""
    code, inputs = [], []
    for dep in entry.get("deps") or []:
        item = {"path": dep["path"], "md5": _hash(dep), "size": dep.get("size")}
        if is_code(dep["path"]):
            code.append(item)
            continue
        if dep.get("nfiles") is not None:
            item["nfiles"] = dep["nfiles"]
        made = producer_of(lock, dep["path"])
        item["produced_by"] = made[0] if made else None
        inputs.append(item)
    outputs = []
    for out in entry.get("outs") or []:
        item = {"path": out["path"], "md5": _hash(out), "size": out.get("size")}
        if out.get("nfiles") is not None:
            item["nfiles"] = out["nfiles"]
        outputs.append(item)
    return {
        "stage": name,
        "cmd": entry.get("cmd"),
        "digest": canonical_digest(entry),
        "code": code,
        "params": dict(entry.get("params") or {}),
        "inputs": inputs,
        "outputs": outputs,
    }


def stage_chain(lock: dict, target: str) -> list[dict]:
    """The stages that produced `target` (an output path, a file inside one, or a stage name),
    upstream first, each as `stage_entry` describes it; [] when no stage produces it."""
    stages = lock_stages(lock)
    if target in stages:
        start = target
    else:
        made = producer_of(lock, target)
        if made is None:
            return []
        start = made[0]
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting:
            return
        visiting.add(name)
        for dep in stages[name].get("deps") or []:
            made = producer_of(lock, dep["path"])
            if made and made[0] != name:
                visit(made[0])
        order.append(name)

    visit(start)
    return [stage_entry(name, stages[name], lock) for name in order]


def default_target(lock: dict) -> str | None:
    """The model when the ledger has one, else the first output of the last sink stage."""
    stages = lock_stages(lock)
    if producer_of(lock, DEFAULT_TARGET):
        return DEFAULT_TARGET
    used = {d["path"] for e in stages.values() for d in e.get("deps") or []}
    sinks = [
        n for n, e in stages.items() if not any(o["path"] in used for o in e.get("outs") or [])
    ]
    for name in reversed(sinks or list(stages)):
        outs = stages[name].get("outs") or []
        # A dataset or model over a metrics summary.
        outs = sorted(outs, key=lambda o: o["path"].startswith("metrics/"))
        if outs:
            return outs[0]["path"]
    return None


def side_checks(lock: dict, chain: list[str]) -> list[str]:
    """Stages outside a chain that read its data without feeding it (validation): not upstream
    of the target, not downstream of the target's stage, but reading a chain stage's output."""
    stages = lock_stages(lock)
    if not chain:
        return []
    ups = {
        name: {
            made[0]
            for d in e.get("deps") or []
            if (made := producer_of(lock, d["path"])) and made[0] != name
        }
        for name, e in stages.items()
    }
    after_target = set(downstream(ups, [chain[-1]]))
    return [
        name
        for name in stages
        if name not in chain and name not in after_target and ups[name] & set(chain)
    ]


def producing_record(records: list[dict], stage: str, digest: str) -> dict | None:
    """The earliest run record whose ledger held this exact stage entry: the run that made it."""
    for record in records:
        if (record.get("stages") or {}).get(stage, {}).get("digest") == digest:
            return record
    return None


def downstream(lock_or_graph: dict[str, set[str]], roots: Iterable[str]) -> list[str]:
    """Stages reachable from `roots` in a {stage: {stages it depends on}} graph, roots excluded."""
    seen: list[str] = []
    frontier = list(roots)
    while frontier:
        cur = frontier.pop(0)
        for name, ups in lock_or_graph.items():
            if cur in ups and name not in seen and name not in roots:
                seen.append(name)
                frontier.append(name)
    return seen


# ---------------------------------------------------------------------------------------------
# Reading the project: lock, records, metrics, git, environment
# ---------------------------------------------------------------------------------------------


def read_lock(root: Path | str = ".") -> dict:
    """dvc.lock as a dict ({} when the pipeline never ran)."""
    path = Path(root) / LOCK
    return yaml.safe_load(path.read_text()) or {} if path.exists() else {}


def read_records(root: Path | str = ".") -> list[dict]:
    """Every run record, oldest first."""
    path = Path(root) / RECORDS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def git_state(root: Path, lock: dict) -> dict:
    """Commit, branch and dirty flag; files DVC writes (dvc.lock, outputs) don't count as dirty."""
    commit = (_git(root, "rev-parse", "HEAD") or "").strip() or None
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    status = _git(root, "status", "--porcelain", "--untracked-files=all") or ""
    managed = [str(LOCK), str(RECORDS)] + [
        o["path"] for e in lock_stages(lock).values() for o in e.get("outs") or []
    ]
    dirty = []
    for line in status.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        # DVC's own files (.gitignore entries, .dvc pointers of added data) are not code.
        if path.endswith((".gitignore", ".dvc")) or any(_under(path, m) for m in managed):
            continue
        dirty.append(path)
    return {"commit": commit, "branch": branch, "dirty": bool(dirty), "dirty_files": dirty[:50]}


def project_packages(root: Path) -> dict[str, str | None]:
    """Installed versions of the project's declared dependencies (pyproject.toml), and Python."""
    names: list[str] = []
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        deps = tomllib.loads(pyproject.read_text()).get("project", {}).get("dependencies", [])
        names = [re.split(r"[\s\[<>=!~;]", d, maxsplit=1)[0] for d in deps]
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def pinned_environment() -> list[str]:
    """Every installed distribution as `name==version` (a pip freeze without pip)."""
    pins = {
        f"{d.metadata['Name']}=={d.version}"
        for d in importlib.metadata.distributions()
        if d.metadata["Name"]
    }
    return sorted(pins, key=str.lower)


def metrics_files(lock: dict) -> list[str]:
    """Metrics JSON files listed in dvc.lock (outputs under metrics/ ending in .json)."""
    return [
        o["path"]
        for e in lock_stages(lock).values()
        for o in e.get("outs") or []
        if o["path"].endswith(".json") and o["path"].startswith("metrics/")
    ]


def headline_metrics(root: Path, lock: dict) -> dict[str, dict]:
    """The top-level scalar values of every metrics file: the numbers a run is judged by."""
    out: dict[str, dict] = {}
    for rel in metrics_files(lock):
        data = _read_json(root / rel)
        scalars = {
            k: v
            for k, v in data.items()
            if isinstance(v, int | float | bool) or (isinstance(v, str) and len(v) <= 80)
        }
        if scalars:
            out[rel] = scalars
    return out


def _find_value(sources: list[dict], key: str) -> Any:
    for source in sources:
        if isinstance(source, dict) and source.get(key) is not None:
            return source[key]
    return None


def _current_prefect_run_id() -> str | None:
    # Only when this process already runs inside Prefect: never import it for this.
    if "prefect" not in sys.modules:
        return None
    try:
        from prefect.runtime import flow_run

        return str(flow_run.id) if flow_run.id else None
    except Exception:  # Prefect absent or outside a flow run: no id
        return None


# ---------------------------------------------------------------------------------------------
# DVC: open the repo, hash paths with or without DVC's state cache
# ---------------------------------------------------------------------------------------------


def open_repo(root: Path | str = "."):
    """A dvc.repo.Repo for the project at root."""
    from dvc.repo import Repo

    return Repo(str(root))


def cache_files_dir(root: Path | str) -> Path:
    """Where DVC's cache keeps file objects by MD5: `<dvc cache dir>/files/md5`, as DVC documents
    its cache layout (the cache dir from the public `dvc cache dir` command)."""
    key = str(Path(root).resolve())
    if key not in _CACHE_DIRS:
        done = subprocess.run(
            [sys.executable, "-m", "dvc", "cache", "dir"],
            cwd=key,
            capture_output=True,
            text=True,
            check=False,
        )
        found = done.stdout.strip() if done.returncode == 0 else ""
        _CACHE_DIRS[key] = Path(key, found or ".dvc/cache") / "files" / "md5"
    return _CACHE_DIRS[key]


_CACHE_DIRS: dict[str, Path] = {}
# Names DVC never hashes inside a directory output (its default ignore list).
_DVC_SKIPPED = {".git", ".hg", ".dvc"}


def cached_object(root: Path | str, oid: str) -> Path:
    """The path of an object in DVC's cache: files/md5/<first two hex digits>/<the rest>."""
    return cache_files_dir(root) / oid[:2] / oid[2:]


def dir_md5(files: dict[str, str]) -> str:
    """DVC's hash of a directory: the MD5 of its .dir manifest (the JSON list of {md5, relpath}
    sorted by relpath, keys sorted), with ".dir" appended."""
    manifest = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(files.items())]
    return hashlib.md5(json.dumps(manifest, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def hash_path(repo, path: str, full: bool = False) -> tuple[str | None, dict[str, str] | None]:
    """(DVC's md5 of a workspace path or None when missing, {relpath: md5} of a directory's files).

    Plain MD5 of the bytes, the hash DVC 3 records (`hash: md5`); `full` is kept for callers:
    every byte is read either way.
    """
    abspath = Path(repo.root_dir) / path
    if abspath.is_file():
        return file_hash(abspath, "md5"), None
    if not abspath.is_dir():
        return None, None
    files = {}
    for dirpath, dirnames, filenames in os.walk(abspath):
        dirnames[:] = sorted(d for d in dirnames if d not in _DVC_SKIPPED)
        for name in filenames:
            full_path = Path(dirpath) / name
            files[full_path.relative_to(abspath).as_posix()] = file_hash(full_path, "md5")
    return dir_md5(files), files


def recorded_files(repo, oid: str) -> dict[str, str] | None:
    """{relpath: md5} of a directory as dvc.lock recorded it: its .dir manifest in DVC's cache
    (None when absent: never pulled, or garbage-collected)."""
    try:
        manifest = json.loads(cached_object(repo.root_dir, oid).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {entry["relpath"]: entry["md5"] for entry in manifest}


def file_changes(old: dict[str, str] | None, new: dict[str, str] | None) -> list[dict]:
    """Per-file differences of two {relpath: md5} listings: missing, altered, added."""
    if old is None or new is None:
        return []
    changes = [{"file": f, "change": "missing"} for f in old if f not in new]
    changes += [{"file": f, "change": "altered"} for f in old if f in new and old[f] != new[f]]
    changes += [{"file": f, "change": "added"} for f in new if f not in old]
    return sorted(changes, key=lambda c: c["file"])


def _entry_hash_name(entry: dict) -> str | None:
    return entry.get("hash") or ("md5" if "md5" in entry else None)


# ---------------------------------------------------------------------------------------------
# Run records
# ---------------------------------------------------------------------------------------------


def make_run_record(
    root: Path | str = ".",
    *,
    trigger: str = "manual",
    flow_run_id: str | None = None,
    check_status: bool = True,
    extra: dict | None = None,
) -> dict:
    """A run record for the project's current state: time, git, packages, device, seed,
    Prefect flow-run id, the dvc.lock digest, each stage's lock-entry digest and outputs,
    the stages whose entries changed since the previous record, and the headline metrics."""
    root = Path(root).resolve()
    lock_path = root / LOCK
    lock_text = lock_path.read_text() if lock_path.exists() else ""
    lock = yaml.safe_load(lock_text) or {} if lock_text else {}
    previous = read_records(root)
    last = (previous[-1].get("stages") or {}) if previous else {}
    digests = stage_digests(lock)
    train = _read_json(root / "metrics/train.json")
    ingest = _read_json(root / "metrics/ingest.json")
    params = (
        yaml.safe_load((root / "params.yaml").read_text())
        if (root / "params.yaml").exists()
        else {}
    )
    up_to_date = None
    if check_status and lock:
        try:
            with open_repo(root) as repo:
                up_to_date = not repo.status()
        except Exception as e:  # a record must still be written; say why status is unknown
            up_to_date = f"unknown: {type(e).__name__}"
    record = {
        "run_id": uuid.uuid4().hex[:16],
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "trigger": trigger,
        "user": _user(),
        "prefect_flow_run_id": flow_run_id or _current_prefect_run_id(),
        "git": git_state(root, lock),
        "dvc_lock_sha256": hashlib.sha256(lock_text.encode()).hexdigest() if lock_text else None,
        "up_to_date": up_to_date,
        "ran": [n for n, d in digests.items() if last.get(n, {}).get("digest") != d],
        "stages": {
            name: {
                "digest": digests[name],
                "outs": {o["path"]: _hash(o) for o in entry.get("outs") or []},
            }
            for name, entry in lock_stages(lock).items()
        },
        "packages": project_packages(root),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "device": _find_value([train], "device"),
        "seed": _find_value([train, params.get("train") or {}, params], "seed"),
        "key_id": ingest.get("key_id"),
        "batches": [b.get("batch") for b in ingest.get("batches") or []],
        "metrics": headline_metrics(root, lock),
    }
    if extra:
        record["extra"] = extra
    return record


def _user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None


def append_run_record(
    root: Path | str = ".",
    *,
    trigger: str = "manual",
    flow_run_id: str | None = None,
    extra: dict | None = None,
) -> dict:
    """Append a run record to lineage/runs.jsonl (call it after a successful run); return it."""
    record = make_run_record(root, trigger=trigger, flow_run_id=flow_run_id, extra=extra)
    path = Path(root) / RECORDS
    path.parent.mkdir(parents=True, exist_ok=True)
    # One line, one write, O_APPEND: concurrent appenders never interleave within a record.
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
    return record


def repro_and_record(
    targets: list[str] | None = None, force: bool = False, trigger: str = "pipeline repro"
) -> int:
    """Reproduce stage by stage, then a run record: the project's way to run the pipeline.

    Returns the failing stage's own exit code (2 bad input, 3 gate, 74/75 I/O), not DVC's 255,
    after its message and the restore of its previous outputs (see stages/repro.py).
    """
    from stages.repro import PipelineBusy, StageFailed, pipeline_lock, repro

    try:
        with pipeline_lock("."):
            repro(".", targets, force)
    except StageFailed as e:
        typer.echo(f"pipeline: stage '{e.stage}' failed (exit {e.code}): {e.message}", err=True)
        typer.echo(f"pipeline: {e.restored}", err=True)
        return e.code
    except (PipelineBusy, ValueError) as e:
        typer.echo(f"pipeline: {e}", err=True)
        return 75 if isinstance(e, PipelineBusy) else 2
    record = append_run_record(".", trigger=trigger)
    typer.echo(f"lineage: run {record['run_id']} recorded in {RECORDS}", err=True)
    return 0


# ---------------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------------


def describe(root: Path | str = ".", target: str | None = None) -> dict:
    """What produced `target`: its stage chain, each stage's producing run, the raw batches."""
    root = Path(root)
    lock = read_lock(root)
    target = target or default_target(lock)
    if not lock or target is None:
        raise LookupError("dvc.lock has no stages: run the pipeline (dvc repro) first")
    chain = stage_chain(lock, target)
    if not chain:
        raise LookupError(
            f"{target}: no stage in dvc.lock produces it; outputs are: "
            + ", ".join(o["path"] for e in lock_stages(lock).values() for o in e.get("outs") or [])
        )
    records = read_records(root)
    for stage in chain:
        rec = producing_record(records, stage["stage"], stage["digest"])
        stage["run"] = _run_summary(rec) if rec else None
    batches = []
    for stage in chain:
        for out in stage["outputs"]:
            if out["path"].endswith(".json"):
                batches += _read_json(root / out["path"]).get("batches") or []
    lock_text = (root / LOCK).read_text()
    checks = [
        stage_entry(n, lock_stages(lock)[n], lock)
        for n in side_checks(lock, [s["stage"] for s in chain])
    ]
    for stage in checks:
        rec = producing_record(records, stage["stage"], stage["digest"])
        stage["run"] = _run_summary(rec) if rec else None
    return {
        "target": target,
        "dvc_lock_sha256": hashlib.sha256(lock_text.encode()).hexdigest(),
        "checks": checks,
        "raw_batches": batches,
        "sources": [i for s in chain for i in s["inputs"] if i.get("produced_by") is None],
        "stages": chain,
    }


def _run_summary(rec: dict) -> dict:
    git = rec.get("git") or {}
    return {
        "run_id": rec.get("run_id"),
        "time": rec.get("time"),
        "trigger": rec.get("trigger"),
        "commit": git.get("commit"),
        "dirty": git.get("dirty"),
        "prefect_flow_run_id": rec.get("prefect_flow_run_id"),
    }


def _short(value: Any, width: int = 90) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 3] + "..."


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def format_show(info: dict) -> str:
    """`describe` as text."""
    lines = [f"Lineage of {info['target']}  (dvc.lock sha256 {info['dvc_lock_sha256'][:12]})", ""]
    lines.append("Raw batches:")
    for b in info["raw_batches"] or []:
        lines.append(
            f"  {b.get('batch')}  {b.get('file')}  sha256 {str(b.get('sha256'))[:12]}  "
            f"{b.get('rows')} rows"
        )
    if not info["raw_batches"]:
        lines.append("  (no batch list in the chain's metrics)")
    for i, s in enumerate(info["stages"] + info.get("checks", []), 1):
        lines.append("")
        if i == len(info["stages"]) + 1:
            lines += ["Checks on the chain's data (stages that read it without feeding it):", ""]
        run = s.get("run")
        made = (
            f"run {run['run_id']} at {run['time']} ({run['trigger']}), commit "
            f"{(run['commit'] or '?')[:10]}{' dirty' if run['dirty'] else ''}"
            + (
                f", Prefect flow run {run['prefect_flow_run_id']}"
                if run["prefect_flow_run_id"]
                else ""
            )
            if run
            else "no run record matches this entry (record one: `pipeline lineage record`)"
        )
        lines.append(f"[{i}] {s['stage']}  made by {made}")
        lines.append(f"    cmd     {s['cmd']}")
        for c in s["code"]:
            lines.append(f"    code    {c['path']}  {c['md5']}")
        for file, values in s["params"].items():
            for section, value in values.items():
                leaves = _params_leaves(value, section)
                if len(leaves) > MAX_PARAM_LEAVES:
                    lines.append(
                        f"    params  {file}:{section}  ({len(leaves)} values, digest "
                        f"{canonical_digest(value)[:12]}; --json lists them)"
                    )
                else:
                    for k, v in leaves.items():
                        lines.append(f"    params  {file}:{k} = {_short(v)}")
        for d in s["inputs"]:
            by = f"  <- {d['produced_by']}" if d.get("produced_by") else "  (source)"
            lines.append(f"    in      {d['path']}  {d['md5']}{by}")
        for o in s["outputs"]:
            files = f", {o['nfiles']} files" if o.get("nfiles") is not None else ""
            lines.append(f"    out     {o['path']}  {o['md5']}  ({_size(o.get('size'))}{files})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------------------------


def verify(root: Path | str = ".", full: bool = False) -> dict:
    """Re-hash every output and dependency dvc.lock lists (and the raw batch files, whose SHA-256
    ingest recorded) and compare; every missing or altered path, named down to the file."""
    root = Path(root)
    started = time.perf_counter()
    lock = read_lock(root)
    if not lock_stages(lock):
        raise LookupError("dvc.lock has no stages: run the pipeline (dvc repro) first")
    problems: list[dict] = []
    checked = 0
    seen: set[str] = set()
    params_now: dict[str, dict] = {}
    with open_repo(root) as repo:
        for stage, entry in lock_stages(lock).items():
            items = [("output", o) for o in entry.get("outs") or []]
            items += [
                ("code" if is_code(d["path"]) else "input", d) for d in entry.get("deps") or []
            ]
            for kind, item in items:
                path = item["path"]
                if path in seen or _entry_hash_name(item) != "md5":
                    continue
                seen.add(path)
                checked += 1
                if kind == "input" and producer_of(lock, path):
                    continue  # an upstream output: checked as that stage's output
                kind = "source" if kind == "input" else kind
                now, files = hash_path(repo, path, full)
                if now == item["md5"]:
                    continue
                problem = {"stage": stage, "kind": kind, "path": path}
                if now is None:
                    problem["change"] = "missing"
                else:
                    problem["change"] = "altered"
                    if item["md5"].endswith(".dir"):
                        old = recorded_files(repo, item["md5"])
                        problem["files"] = file_changes(old, files)
                        if old is None:
                            problem["note"] = "the recorded file list is not in the DVC cache"
                problems.append(problem)
            for file, values in (entry.get("params") or {}).items():
                if file not in params_now:
                    p = root / file
                    params_now[file] = yaml.safe_load(p.read_text()) or {} if p.exists() else {}
                for section, value in values.items():
                    checked += 1
                    # dvc.yaml may list a dotted sub-key (anonymize.policies): dvc.lock keys
                    # it by that dotted name, so look it up as a path into the nested params.
                    diff = params_diff(value, _params_value(params_now[file], section), section)
                    if diff:
                        problems.append(
                            {
                                "stage": stage,
                                "kind": "params",
                                "path": f"{file}:{section}",
                                "change": "altered",
                                "params": diff,
                            }
                        )
    # The raw batch files: ingest recorded their SHA-256; where they were hashed above (MD5
    # against dvc.lock), their SHA-256 is re-checked only in --full mode.
    batches = _read_json(root / "metrics/ingest.json").get("batches") or []
    for b in batches:
        path = root / str(b.get("file"))
        rel = str(b.get("file"))
        if not full and any(_under(rel, s) for s in seen):
            continue  # hashed above (a dependency, or inside one) against dvc.lock
        checked += 1
        if not path.exists():
            if not any(p["path"] == rel for p in problems):
                problems.append(
                    {"stage": "ingest", "kind": "raw batch", "path": rel, "change": "missing"}
                )
            continue
        if _sha256(path) != b.get("sha256"):
            problems.append(
                {
                    "stage": "ingest",
                    "kind": "raw batch",
                    "path": rel,
                    "change": "altered",
                    "note": f"SHA-256 differs from batch {b.get('batch')} in metrics/ingest.json",
                }
            )
    unlocked = _unlocked_stages(root, lock)
    return {
        "ok": not problems,
        "mode": "MD5 and raw batches' SHA-256" if full else "MD5 against dvc.lock",
        "checked": checked,
        "raw_batches": len(batches),
        "problems": problems,
        "stages_not_in_lock": unlocked,
        "seconds": round(time.perf_counter() - started, 3),
    }


def _sha256(path: Path) -> str:
    return file_hash(path)


def _unlocked_stages(root: Path, lock: dict) -> list[str]:
    path = root / "dvc.yaml"
    if not path.exists():
        return []
    declared = (yaml.safe_load(path.read_text()) or {}).get("stages") or {}
    return [s for s in declared if s not in lock_stages(lock)]


def format_verify(result: dict) -> str:
    """`verify` as text."""
    lines = []
    for p in result["problems"]:
        head = f"{p['change'].upper():8} {p['kind']:9} {p['path']}  (stage {p['stage']})"
        lines.append(head)
        for f in p.get("files") or []:
            lines.append(f"         {f['change']:8} {p['path'].rstrip('/')}/{f['file']}")
        for d in p.get("params") or []:
            lines.append(f"         {d['key']}: {_short(d['old'], 40)} -> {_short(d['new'], 40)}")
        if p.get("note"):
            lines.append(f"         {p['note']}")
    for s in result["stages_not_in_lock"]:
        lines.append(f"NOTE     stage {s} is in dvc.yaml but has never run (not in dvc.lock)")
    verdict = (
        "OK: disk matches dvc.lock"
        if result["ok"]
        else (f"FAILED: {len(result['problems'])} mismatch(es) with dvc.lock")
    )
    lines.append(
        f"{verdict}; {result['checked']} entries checked ({result['mode']}) "
        f"in {result['seconds']:.2f} s"
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# why
# ---------------------------------------------------------------------------------------------


def why(root: Path | str = ".") -> list[dict]:
    """Each stage that would rerun now, with its causes (from DVC's status, made specific:
    params keys old -> new, code files, inputs down to the file); then the stages downstream."""
    root = Path(root)
    lock = read_lock(root)
    with open_repo(root) as repo:
        # Status keys are stage addresses relative to the cwd ('dvc.yaml:ingest' elsewhere).
        # Only pipeline stages rerun; .dvc files of added data have no name and never run.
        pipeline = [s for s in repo.index.stages if getattr(s, "name", None)]
        names = {s.addressing: s.name for s in pipeline}
        status = {names[k]: v for k, v in repo.status().items() if k in names}
        graph = {
            s.name: {
                made[0]
                for d in s.deps
                if (made := producer_of(lock, str(d.def_path))) and made[0] != s.name
            }
            for s in pipeline
        }
        params_now: dict[str, dict] = {}
        result = []
        for stage, changes in status.items():
            entry = lock_stages(lock).get(stage) or {}
            causes: list[dict] = []
            for change in changes:
                if isinstance(change, str):
                    causes.append({"kind": change.replace("changed ", ""), "detail": change})
                    continue
                for what, paths in change.items():
                    for path, state in paths.items():
                        causes.extend(
                            _explain(repo, root, lock, entry, what, path, state, params_now)
                        )
            if not entry:
                causes = [{"kind": "new stage", "detail": "not in dvc.lock: it has never run"}]
            result.append({"stage": stage, "causes": causes})
    direct = [r["stage"] for r in result]
    for stage in downstream(graph, direct):
        ups = sorted(
            u for u in graph.get(stage, ()) if u in direct or u in downstream(graph, direct)
        )
        result.append(
            {
                "stage": stage,
                "causes": [
                    {
                        "kind": "upstream",
                        "detail": f"reruns if {', '.join(ups)} changes its outputs",
                    }
                ],
            }
        )
    return result


def _explain(repo, root, lock, entry, what, path, state, params_now) -> list[dict]:
    if isinstance(state, dict):  # a params file: {key: 'modified' | 'new' | 'deleted'}
        if path not in params_now:
            p = root / path
            params_now[path] = yaml.safe_load(p.read_text()) or {} if p.exists() else {}
        old_all = (entry.get("params") or {}).get(path, {})
        out = []
        for key in state:
            old, new = _dotted(old_all, key), _dotted(params_now[path], key)
            diff = params_diff(old, new, key) or [
                {"key": key, "old": old, "new": new, "change": state[key]}
            ]
            out += [
                {
                    "kind": "params",
                    "path": path,
                    "key": d["key"],
                    "old": d["old"],
                    "new": d["new"],
                    "detail": f"{path}:{d['key']}: "
                    f"{_short(d['old'], 60)} -> {_short(d['new'], 60)}",
                }
                for d in diff
            ]
        return out
    if what == "changed outs":
        kind = "output"
    else:
        kind = "code" if is_code(path) else "input"
    cause = {"kind": kind, "path": path, "change": state}
    recorded = next(
        (d for d in (entry.get("outs" if kind == "output" else "deps") or []) if d["path"] == path),
        None,
    )
    detail = f"{path} {state}"
    if kind == "output":
        detail = f"output {path} {state} on disk (tampered or deleted since the run)"
    elif kind == "code":
        detail = f"code file {path} {state}"
    if recorded and str(recorded.get("md5", "")).endswith(".dir") and state == "modified":
        _, files = hash_path(repo, path)
        old = recorded_files(repo, recorded["md5"])
        # DVC keeps no file list of a source directory (a dependency): ingest's batch list is it.
        cause["files"] = file_changes(old, files) if old else _batch_dir_changes(root, path)
        if cause["files"]:
            shown = ", ".join(f"{f['change']} {f['file']}" for f in cause["files"][:5])
            more = len(cause["files"]) - 5
            detail += f": {shown}" + (f" and {more} more" if more > 0 else "")
    cause["detail"] = detail
    return [cause]


def _batch_dir_changes(root: Path, path: str) -> list[dict]:
    """New, missing or altered batch files under a source directory, against metrics/ingest.json."""
    batches = _read_json(root / "metrics/ingest.json").get("batches") or []
    recorded = {b["file"]: b.get("sha256") for b in batches if _under(str(b.get("file")), path)}
    base = root / path
    current = {
        p.relative_to(root).as_posix(): p
        for p in (sorted(base.rglob("*")) if base.is_dir() else [])
        if p.is_file()
        and not p.name.startswith(".")
        and not p.name.endswith((".dvc", ".md", ".txt"))
    }
    changes = [{"file": f, "change": "missing"} for f in recorded if f not in current]
    for f, p in current.items():
        if f not in recorded:
            changes.append({"file": f, "change": "new batch"})
        elif _sha256(p) != recorded[f]:
            changes.append({"file": f, "change": "altered"})
    return sorted(changes, key=lambda c: c["file"])


def _params_value(params: dict, key: str) -> Any:
    """The value of a params key as dvc.lock names it: a top-level key or a dotted sub-key."""
    if key in params:
        return params[key]
    return _dotted(params, key)


def _dotted(obj: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def format_why(result: list[dict]) -> str:
    """`why` as text."""
    if not result:
        return "Nothing would rerun: every stage matches dvc.lock."
    lines = []
    for r in result:
        lines.append(f"{r['stage']} would rerun:")
        for c in r["causes"]:
            lines.append(f"  {c['kind']:8} {c['detail']}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# trace
# ---------------------------------------------------------------------------------------------


def _record_dataset_outs(lock: dict, root: Path) -> list[tuple[str, str]]:
    """(stage, directory output) pairs in DAG (lock) order: where rows may be."""
    return [
        (name, o["path"])
        for name, e in lock_stages(lock).items()
        for o in e.get("outs") or []
        if str(o.get("md5", "")).endswith(".dir") and (root / o["path"]).is_dir()
    ]


def _read_matches(file: Path | str, record_id: str) -> list[dict] | None:
    """Rows of one Parquet file with this record_id, lineage columns only (None: no record_id)."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(file)
    except Exception:  # not a Parquet file (Data Docs, plots): no rows here
        return None
    names = set(schema.names)
    if RECORD_ID not in names:
        return None
    cols = [c for c in (*TRACE_COLUMNS, AUGMENTED) if c in names]
    table = pq.read_table(file, columns=cols, filters=[(RECORD_ID, "==", record_id)])
    return table.to_pylist()


def _split_name(out: str, rel: str) -> str | None:
    parts = [*out.split("/"), *rel.split("/")]
    for i, part in enumerate(parts[:-1]):
        if part == "split" and i + 1 < len(parts) - 1:
            return parts[i + 1]
    return None


def trace(root: Path | str, record_id: str) -> dict:
    """Where a record came from (raw batch, source file, row), where it went (clean or quarantine
    and why, its split, its augmented copies) and which runs' models trained on it.
    Reads only the lineage columns: no source value (no identifier) is read or returned."""
    root = Path(root)
    lock = read_lock(root)
    found: list[dict] = []
    for stage, out in _record_dataset_outs(lock, root):
        base = root / out
        for file in sorted(base.rglob("*.parquet")):
            if file.name.startswith("."):
                continue
            rows = _read_matches(file, record_id)
            if not rows:
                continue
            rel = file.relative_to(base).as_posix()
            for row in rows:
                row.pop(RECORD_ID, None)
                found.append({"stage": stage, "dataset": out, "file": rel, **row})
    sources = [
        {
            "batch": r.get("_batch"),
            "source_file": r.get("_source_file"),
            "source_row": r.get("_source_row"),
        }
        for r in found
        if r["stage"] == "ingest" or r["dataset"] == "data/raw"
    ]
    quarantined = [
        {
            "dataset": r["dataset"],
            "reason_kind": r.get("_reason_kind"),
            "reason": r.get("_reason"),
            "batch": r.get("_batch"),
            "source_row": r.get("_source_row"),
        }
        for r in found
        if r.get("_reason") is not None or r.get("_reason_kind") is not None
    ]
    splits = sorted({s for r in found if (s := _split_name(r["dataset"], r["file"]))})
    augmented = [r for r in found if r.get(AUGMENTED) is True]
    originals = [r for r in found if r.get(AUGMENTED) is False]
    by_dataset: dict[str, int] = {}
    for r in found:
        by_dataset[r["dataset"]] = by_dataset.get(r["dataset"], 0) + 1
    return {
        "record_id": record_id,
        "found": bool(found),
        "sources": _unique(sources),
        "datasets": by_dataset,
        "quarantined": quarantined,
        "split": splits,
        "augmented_rows": len(augmented),
        "augmented_from_training_rows": len(originals),
        "occurrences": found,
        "trained_on_by": _training_runs(root, lock, record_id),
    }


def _unique(items: list[dict]) -> list[dict]:
    out: list[dict] = []
    for item in items:
        if item not in out:
            out.append(item)
    return out


def _train_stage(lock: dict) -> str | None:
    for name, entry in lock_stages(lock).items():
        for out in entry.get("outs") or []:
            if out["path"].startswith("models/") or out["path"].endswith((".pt", ".pth")):
                return name
    return None


def _training_runs(root: Path, lock: dict, record_id: str) -> list[dict]:
    """The runs (current ledger and every run record) whose model trained on the record: the
    training inputs each run's ledger names are read back from DVC's cache by content hash."""
    train = _train_stage(lock)
    if train is None:
        return []
    # The training data: the train stage's inputs that other stages produce, each as (its path,
    # the producing stage, that stage's output holding it). A dependency may be a sub-path of a
    # directory output (train reads data/split/val, split outputs data/split): DVC caches only
    # the output's .dir manifest, never one for the dependency's own hash, and run records keep
    # output hashes only; so the data is found through the output's manifest, narrowed to the
    # dependency's files.
    inputs = [
        (d["path"].rstrip("/"), *made)
        for d in lock_stages(lock)[train].get("deps") or []
        if not is_code(d["path"]) and (made := producer_of(lock, d["path"]))
    ]
    runs: list[tuple[str, dict, dict]] = []  # (label, {input path: (out md5, subpath)}, summary)
    runs.append(("current dvc.lock", _input_hashes(lock_stages(lock), inputs, lock=True), {}))
    for rec in read_records(root):
        stages = rec.get("stages") or {}
        if train not in stages:
            continue
        runs.append((f"run {rec.get('run_id')}", _input_hashes(stages, inputs), _run_summary(rec)))
    memo: dict[tuple[str, str], bool | None] = {}
    out = []
    with open_repo(root) as repo:
        for label, hashes, summary in runs:
            verdict: bool | None = False
            via: list[str] = []
            for path, (oid, sub) in hashes.items():
                if not oid:
                    verdict = None if verdict is False else verdict
                    continue
                if (oid, sub) not in memo:
                    memo[oid, sub] = _in_cached_dataset(repo, oid, record_id, sub)
                if memo[oid, sub]:
                    verdict = True
                    via.append(path)
                elif memo[oid, sub] is None and verdict is False:
                    verdict = None
            out.append({"run": label, "trained_on": verdict, "via": via, **summary})
    return out


def _input_hashes(
    stages: dict, inputs: list[tuple[str, str, str]], lock: bool = False
) -> dict[str, tuple[str | None, str]]:
    """{input path: (hash of the output holding it, the input's path inside that output)}, from
    dvc.lock stages (lock=True) or a run record's stages ({stage: {outs: {path: hash}}})."""
    hashes = {}
    for path, producer, out_path in inputs:
        outs = (stages.get(producer) or {}).get("outs") or ({} if not lock else [])
        if lock:
            oid = next((_hash(o) for o in outs if o["path"] == out_path), None)
        else:
            oid = outs.get(out_path)
        hashes[path] = (oid, path[len(out_path) :].strip("/"))
    return hashes


def _in_cached_dataset(repo, oid: str, record_id: str, sub: str = "") -> bool | None:
    """Whether a dataset version in DVC's cache holds the record (None: unknown). oid is an
    output's hash (a .dir manifest for a directory); sub narrows it to a path inside it."""
    if oid.endswith(".dir"):
        files = recorded_files(repo, oid)
        if files is None:
            return None
        oids = [o for rel, o in files.items() if not sub or _under(rel, sub)]
    else:
        oids = [oid]
    for file_oid in oids:
        path = cached_object(repo.root_dir, file_oid)
        if not os.path.exists(path):
            return None
        rows = _read_matches(path, record_id)
        if rows:
            return True
    return False


def format_trace(t: dict) -> str:
    """`trace` as text (no identifier, no source value)."""
    if not t["found"]:
        return "No dataset in dvc.lock holds this record_id (wrong id, or a different key?)."
    lines = ["Came from:"]
    for s in t["sources"]:
        lines.append(f"  batch {s['batch']}  file {s['source_file']}  row {s['source_row']}")
    lines.append("Went through:")
    for dataset, n in t["datasets"].items():
        lines.append(f"  {dataset}: {n} row(s)")
    if t["quarantined"]:
        for q in t["quarantined"]:
            lines.append(f"Quarantined in {q['dataset']}: {q['reason_kind']} ({q['reason']})")
    else:
        lines.append("Quarantined: no")
    lines.append(f"Split: {', '.join(t['split']) or 'none (not in a split dataset)'}")
    lines.append(f"Augmented rows made from it: {t['augmented_rows']}")
    lines.append("Models trained on it:")
    if not t["trained_on_by"]:
        lines.append("  (no train stage in dvc.lock)")
    for r in t["trained_on_by"]:
        verdict = {True: "yes", False: "no", None: "unknown (data not in the DVC cache)"}[
            r["trained_on"]
        ]
        if r.get("via"):
            verdict += f" (in {', '.join(r['via'])})"

        when = f" at {r['time']}, commit {(r.get('commit') or '?')[:10]}" if r.get("time") else ""
        lines.append(f"  {r['run']}{when}: {verdict}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

EXPORT_FILES = (
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    str(RECORDS),
    "pyproject.toml",
    "reports/validation/results.json",
    "reports/report.html",
    "reports/summary.md",
)
# Privacy scan and k-anonymity results: wherever the anonymize stage writes them.
EXPORT_GLOBS = ("metrics/*.json", "reports/privacy/*.json", "reports/privacy*.json", "plots/*.json")


def export(root: Path | str = ".", out: Path | str | None = None) -> dict:
    """One .tar.gz for an auditor: ledger, params, run records, pinned environment, validation,
    privacy and metrics results, the report, lineage of the model and a verify result, plus
    MANIFEST.json with each member's SHA-256."""
    root = Path(root)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = Path(out) if out else root / f"audit-{stamp}.tar.gz"
    members: dict[str, bytes] = {}
    for rel in EXPORT_FILES:
        if (root / rel).is_file():
            members[rel] = (root / rel).read_bytes()
    for pattern in EXPORT_GLOBS:
        for p in sorted(root.glob(pattern)):
            if p.is_file():
                members[p.relative_to(root).as_posix()] = p.read_bytes()
    env = {"python": sys.version, "platform": platform.platform(), "packages": pinned_environment()}
    members["environment/requirements.txt"] = ("\n".join(env["packages"]) + "\n").encode()
    members["environment/platform.json"] = _json_bytes({k: env[k] for k in ("python", "platform")})
    lock = read_lock(root)
    if lock_stages(lock):
        try:
            members["lineage/show.json"] = _json_bytes(describe(root))
        except LookupError as e:
            members["lineage/show.json"] = _json_bytes({"error": str(e)})
        members["lineage/verify.json"] = _json_bytes(verify(root))
    expected = [*EXPORT_FILES, "metrics/anonymize.json"]
    manifest = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": git_state(root, lock),
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in sorted(members.items())
        },
        "absent": [rel for rel in expected if rel not in members],
    }
    members["MANIFEST.json"] = _json_bytes(manifest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    with tarfile.open(tmp, "w:gz") as tar:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(f"audit/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, out)
    return {"archive": str(out), "members": sorted(members), "absent": manifest["absent"]}


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# The `lineage` command (mounted as `pipeline lineage`)
# ---------------------------------------------------------------------------------------------

app = typer.Typer(
    help="Lineage and audit: run records, show, verify, why, trace, export.",
    no_args_is_help=True,
)


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command("record")
def record_cmd(
    trigger: str = typer.Option("manual", help="What ran the pipeline (e.g. 'dvc repro')."),
    flow_run_id: str = typer.Option(None, help="The Prefect flow-run id, when there is one."),
) -> None:
    """Append a run record for the current state (after a bare `dvc repro`)."""
    rec = append_run_record(".", trigger=trigger, flow_run_id=flow_run_id)
    dirty = " (dirty)" if rec["git"]["dirty"] else ""
    typer.echo(
        f"run {rec['run_id']} recorded in {RECORDS}: commit {(rec['git']['commit'] or '?')[:10]}"
        f"{dirty}, dvc.lock {str(rec['dvc_lock_sha256'])[:12]}, "
        f"stages changed since the last record: {', '.join(rec['ran']) or 'none'}"
    )
    if rec["up_to_date"] is not True:
        typer.secho(
            "warning: the workspace does not match dvc.lock (see `pipeline lineage why`)",
            fg=typer.colors.YELLOW,
            err=True,
        )


@app.command("show")
def show_cmd(
    artefact: str = typer.Argument(None, help="Output path or stage (default: the model)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """The chain of stages that produced an artefact, back to the raw batches."""
    try:
        info = describe(".", artefact)
    except LookupError as e:
        _fail(str(e))
    typer.echo(json.dumps(info, indent=2, default=str) if as_json else format_show(info))


@app.command("verify")
def verify_cmd(
    full: bool = typer.Option(
        False, "--full", help="Also re-check every raw batch's SHA-256 (metrics/ingest.json)."
    ),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """Re-hash everything dvc.lock lists and the raw batches; exit 1 on any mismatch."""
    try:
        result = verify(".", full=full)
    except LookupError as e:
        _fail(str(e))
    typer.echo(json.dumps(result, indent=2) if as_json else format_verify(result))
    if not result["ok"]:
        raise typer.Exit(1)


@app.command("why")
def why_cmd(as_json: bool = typer.Option(False, "--json", help="JSON instead of text.")) -> None:
    """For every stage that would rerun now: which input, params key or code file changed."""
    result = why(".")
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_why(result))


@app.command("trace")
def trace_cmd(
    record_id: str = typer.Argument(..., help="A record_id (pseudonymous row key)."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of text."),
) -> None:
    """Where a record came from, whether it was quarantined, its split, augmented copies, and
    which runs' models trained on it. Prints no identifier."""
    result = trace(".", record_id)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else format_trace(result))
    if not result["found"]:
        raise typer.Exit(1)


@app.command("export")
def export_cmd(
    out: Path = typer.Option(None, "--out", help="Archive path (default audit-<time>.tar.gz)."),
) -> None:
    """One archive for an auditor, with a SHA-256 manifest."""
    result = export(".", out)
    typer.echo(f"{result['archive']}: {len(result['members'])} files")
    if result["absent"]:
        typer.echo(f"not produced yet (absent): {', '.join(result['absent'])}")


if __name__ == "__main__":
    app()
