"""`pipeline forget BATCH`: erase one batch from the inputs, every cache and every output.

Steps, in this order (a dry run stops after the plan):
1. resolve BATCH: a batch name as ingest records it in `_batch` (`<file stem>-<sha256[:10]>`),
   a batch file ingest reads, or a source file named in params.yaml `ingest.sources`;
2. remove the input: `dvc remove --outs` of its .dvc file (how `pipeline add-batch` tracks it),
   or re-`dvc add` a directory tracked as a whole; a file named in `ingest.sources` loses its
   entry there and in dvc.yaml's deps, since ingest and DVC would fail on a missing file;
3. drop the stored partition results: ingest's entry for the batch, and every stage's cache
   downstream of ingest whole (dedup and anonymize chain entries across batches, so only a full
   drop is sure to leave none of the batch's values);
4. drop DVC's run cache (`<cache>/runs`: it points at outputs that held the batch), atomic-write
   temporaries and outputs DVC does not cache (training checkpoints), then `dvc repro` the
   stages that dvc.lock records, and append a run record;
5. `dvc gc --workspace --force`: every DVC object the workspace no longer uses goes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import typer
import yaml

from stages.lib.dvclock import dvc_yaml_stages, lock_stages, read_lock
from stages.lib.errors import EXIT_BAD_INPUT, EXIT_WRITE_FAILED, InputError
from stages.lib.io import describe_write_error, file_hash, write_text_atomic
from stages.lib.keys import MissingKeyError, load_key
from stages.lib.params import ParamsError
from stages.lib.partitions import CACHE_ENV, DEFAULT_CACHE
from stages.lib.paths import DVC_YAML
from stages.lib.paths import PARAMS_FILE as PARAMS
from stages.lib.schema import BATCH

if TYPE_CHECKING:
    from stages.lib.config import IngestConfig

INGEST_STAGE = "ingest"
# Names of the temporaries of stages.lib.io's atomic writes (`.<name>.tmp-<pid>-…`, `.old-<pid>`).
TEMPORARY = re.compile(r"^\..+\.(tmp|old)-\d+")
# Never walked for temporaries: git's store, DVC's cache, virtual environments.
SKIP_DIRS = {".git", ".dvc", ".venv"}


class UnknownBatch(InputError):
    """BATCH names no batch file, no ingested batch and no stored partition result."""


@dataclass(frozen=True)
class Batch:
    """A resolved batch: its ingest name and, while it still exists, its file and how it is kept."""

    name: str
    file: Path | None = None
    dvc_file: Path | None = None  # `<file>.dvc`: tracked alone, as add-batch does
    dir_dvc_file: Path | None = None  # `<dir>.dvc`: a directory tracked as a whole
    source_entry: str | None = None  # the file is itself an entry of params ingest.sources
    in_git: bool = False


@dataclass
class Plan:
    """Everything forget removes for one batch (paths relative to the repository root)."""

    batch: Batch
    raw_rows: int
    ingest_entries: list[Path] = field(default_factory=list)
    stage_caches: dict[str, int] = field(default_factory=dict)  # stage -> stored entries
    cache_root: Path = DEFAULT_CACHE
    run_cache: Path | None = None
    run_cache_entries: int = 0
    temporaries: list[Path] = field(default_factory=list)
    uncached_outs: list[Path] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)  # dvc.lock's stages, rerun in DAG order


def _n(count: int, one: str, many: str) -> str:
    """`count` and the noun, singular or plural."""
    return f"{count} {one if count == 1 else many}"


def _rel(path: Path | str) -> Path:
    """`path` relative to the repository root (the working directory), normalised."""
    return Path(os.path.relpath(Path(path).resolve(), Path.cwd().resolve()))


def _ingest_config() -> IngestConfig:
    """params.yaml's `ingest` section, through ingest's own typed config."""
    from stages.lib.config import pipeline_params

    return pipeline_params().ingest


def _batch_files(cfg: IngestConfig) -> list[Path]:
    """Ingest's batch files, found as ingest finds them (ingest.format included: files without
    an extension); a source that is already missing is skipped, not an error here."""
    from stages.lib.sources import find_batch_files

    present = tuple(s for s in cfg.sources if Path(s).exists())
    return [_rel(p) for p in find_batch_files(present, cfg.format)] if present else []


def _raw_dir(name: str) -> Path:
    from stages.ingest import OUT_DIR

    return OUT_DIR / name


def _raw_rows(name: str) -> int:
    """Rows of batch `name` in ingest's output (0 when it was never ingested)."""
    return sum(pq.read_metadata(p).num_rows for p in sorted(_raw_dir(name).rglob("*.parquet")))


def cache_root() -> Path:
    """The partition cache's root, as stages.lib.partitions.CacheDir finds it."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def _entry_batches(entry: Path) -> set[str]:
    """The `_batch` values of a stored ingest result (empty when it holds no Parquet)."""
    names: set[str] = set()
    for part in sorted(entry.glob("*.parquet")):
        names.update(pq.read_table(part, columns=[BATCH]).column(BATCH).to_pylist())
    return names


def _describe(name: str, path: Path, sources: tuple[str, ...]) -> Batch:
    """How the batch file `path` is kept: alone under DVC, in a DVC directory, in params, in git."""
    dvc_file = path.with_name(path.name + ".dvc")
    dir_dvc = next(
        (d.parent / f"{d.name}.dvc" for d in path.parents if d.name and Path(f"{d}.dvc").is_file()),
        None,
    )
    entry = next((s for s in sources if _rel(s) == path), None)
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", str(path)], capture_output=True, check=False
    )
    return Batch(
        name=name,
        file=path,
        dvc_file=dvc_file if dvc_file.is_file() else None,
        dir_dvc_file=None if dvc_file.is_file() else dir_dvc,
        source_entry=entry,
        in_git=tracked.returncode == 0,
    )


def resolve(text: str) -> Batch:
    """The batch that `text` names; UnknownBatch (saying what exists) when there is none."""
    from stages.lib.sources import batch_id

    cfg = _ingest_config()
    sources = cfg.sources
    files = _batch_files(cfg)
    if Path(text).is_file():
        path = _rel(text)
        if path not in files:
            raise UnknownBatch(
                f"{text}: not a batch file that ingest reads (ingest.sources: {list(sources)}); "
                "give a file under one of them or a batch name"
            )
        return _describe(batch_id(path, file_hash(path)), path, sources)
    for path in files:
        if batch_id(path, file_hash(path)) == text:
            return _describe(text, path, sources)
    # Its file is gone already, but its rows may still sit in data/raw or in the caches.
    ingest_cache = cache_root() / INGEST_STAGE
    if _raw_dir(text).is_dir() or (
        ingest_cache.is_dir()
        and any(text in _entry_batches(e) for e in ingest_cache.iterdir() if e.is_dir())
    ):
        return Batch(name=text)
    known = sorted({batch_id(p, file_hash(p)) for p in files})
    raise UnknownBatch(
        f"unknown batch {text!r}: no such file, no batch of that name in ingest.sources, "
        f"{_raw_dir('')} or the partition cache. Known batches: {', '.join(known) or 'none'}. "
        "Give a batch name as above (as in `_batch`, `pipeline lineage show`) or a batch file"
    )


def _uncached_outs() -> list[Path]:
    """Outputs dvc.yaml declares with `cache: false` (checkpoints): DVC keeps no old copies."""
    found = []
    for stage in dvc_yaml_stages().values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict):
                for path, opts in out.items():
                    if (opts or {}).get("cache") is False and Path(path).exists():
                        found.append(Path(path))
    return found


def _temporaries() -> list[Path]:
    """Atomic-write temporaries anywhere in the project (a killed stage's half outputs)."""
    found = []
    for top, dirs, files in os.walk("."):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in [*dirs, *files]:
            if TEMPORARY.match(name):
                found.append(_rel(Path(top) / name))
        dirs[:] = [d for d in dirs if not TEMPORARY.match(d)]
    return found


def _dvc_cache_dir() -> Path:
    """DVC's local cache directory (`dvc cache dir`: it can live outside .dvc/)."""
    out = subprocess.run(
        [sys.executable, "-m", "dvc", "cache", "dir"], capture_output=True, text=True, check=True
    )
    return Path(out.stdout.strip().splitlines()[-1])


def count_files(path: Path | None) -> int:
    """Files under `path` (0 when it does not exist)."""
    if path is None or not path.exists():
        return 0
    return sum(len(files) for _, _, files in os.walk(path))


def make_plan(batch: Batch) -> Plan:
    """What forgetting `batch` removes; reads only."""
    others = [f for f in _batch_files(_ingest_config()) if f != batch.file]
    if batch.file is not None and not others:
        raise InputError(
            f"{batch.file} is the only batch of ingest.sources: without it ingest has nothing to "
            "read and the rerun would fail. Add the next batch first (`pipeline add-batch`)"
        )
    plan = Plan(batch=batch, raw_rows=_raw_rows(batch.name), cache_root=cache_root())
    if plan.cache_root.is_dir():
        for stage in sorted(p for p in plan.cache_root.iterdir() if p.is_dir()):
            if stage.name == INGEST_STAGE:
                # Ingest stores one entry per batch file: drop this batch's and half-written ones.
                plan.ingest_entries = [
                    e
                    for e in sorted(stage.iterdir())
                    if e.name.startswith(".") or (e.is_dir() and batch.name in _entry_batches(e))
                ]
            else:
                plan.stage_caches[stage.name] = sum(1 for _ in stage.iterdir())
    plan.run_cache = _dvc_cache_dir() / "runs"
    plan.run_cache_entries = count_files(plan.run_cache)
    plan.temporaries = _temporaries()
    plan.uncached_outs = _uncached_outs()
    plan.stages = list(lock_stages(read_lock()))
    return plan


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _dvc(*args: str) -> None:
    """A DVC command through this interpreter; its own output goes to the terminal."""
    from stages.lib.env import interpreter_env

    subprocess.run([sys.executable, "-m", "dvc", *args], check=True, env=interpreter_env())


def drop_source_entry(entry: str) -> None:
    """Remove `entry` from params.yaml ingest.sources and from every stage's deps in dvc.yaml.

    Line edits, not a YAML round trip, so that every comment and layout stays as written; the
    result is re-read and compared, and anything unexpected is refused, not written.
    """
    quoted = rf"""["']?{re.escape(entry)}["']?"""
    params_text = PARAMS.read_text(encoding="utf-8")
    before = yaml.safe_load(params_text)
    # A flow list ([a, b]) or a block list (- a), as params.yaml may write either.
    new_params = re.sub(rf"(?m)^\s*-\s*{quoted}\s*(#.*)?\n", "", params_text)
    new_params = re.sub(rf"(\[\s*){quoted}\s*,\s*|,\s*{quoted}(\s*\])", r"\1\2", new_params)
    after = yaml.safe_load(new_params)
    expected = [s for s in before["ingest"]["sources"] if s != entry]
    if after["ingest"]["sources"] != expected or {**after, "ingest": None} != {
        **before,
        "ingest": None,
    }:
        raise InputError(
            f"{PARAMS}: cannot remove {entry!r} from ingest.sources safely; remove it by hand "
            "(and from dvc.yaml's deps), then run forget again with the batch name"
        )
    dag_text = DVC_YAML.read_text(encoding="utf-8")
    new_dag = re.sub(rf"(?m)^\s*-\s*{quoted}\s*(#.*)?\n", "", dag_text)
    write_text_atomic(PARAMS, new_params)
    if new_dag != dag_text:
        write_text_atomic(DVC_YAML, new_dag)


def remove_input(batch: Batch) -> list[str]:
    """Take the batch file out of the inputs; return what was done, one line each."""
    done: list[str] = []
    path = batch.file
    if path is None:
        return done
    if batch.source_entry is not None:
        # First: a params.yaml that cannot be edited safely stops forget before anything goes.
        drop_source_entry(batch.source_entry)
        done.append(f"removed {batch.source_entry!r} from params.yaml ingest.sources and dvc.yaml")
    if batch.dvc_file is not None:
        _dvc("remove", "--outs", str(batch.dvc_file))
        done.append(f"removed {path} and {batch.dvc_file} (dvc remove --outs)")
    if path.exists():
        path.unlink()
        done.append(f"removed {path}")
    if batch.dir_dvc_file is not None:
        directory = batch.dir_dvc_file.with_suffix("")
        _dvc("add", str(directory))
        done.append(f"re-added {directory} without it (dvc add)")
    return done


def apply(plan: Plan) -> tuple[list[str], int]:
    """Remove everything the plan lists, rerun and collect garbage; (lines, exit status)."""
    from stages import lineage

    lines = remove_input(plan.batch)
    for path in plan.ingest_entries:
        _remove(path)
    for stage in plan.stage_caches:
        _remove(plan.cache_root / stage)
    if plan.ingest_entries or plan.stage_caches:
        lines.append(f"removed {cache_summary(plan)}")
    for path in [*plan.temporaries, *plan.uncached_outs]:
        _remove(path)
        lines.append(f"removed {path}")
    if plan.run_cache is not None and plan.run_cache.exists():
        shutil.rmtree(plan.run_cache)
        lines.append(f"removed DVC's run cache: {_n(plan.run_cache_entries, 'entry', 'entries')}")
    if plan.stages:
        # The stages dvc.lock records, no more: forgetting works whatever stages have run.
        rc = lineage.repro_and_record(plan.stages, trigger="pipeline forget")
        if rc != 0:
            lines.append(
                f"`dvc repro {' '.join(plan.stages)}` failed (exit {rc}): outputs and DVC's cache "
                "still hold the batch. Fix the cause, then run `pipeline repro` and "
                "`dvc gc --workspace --force` to finish the erasure"
            )
            return lines, rc
        lines.append(f"reproduced {', '.join(plan.stages)} without the batch (dvc repro)")
    cache = _dvc_cache_dir()
    before = count_files(cache)
    _dvc("gc", "--workspace", "--force")
    after = count_files(cache)
    gone = _n(before - after, "DVC object", "DVC objects")
    lines.append(f"dvc gc --workspace --force: removed {gone} from {cache}")
    return lines, 0


def cache_summary(plan: Plan) -> str:
    """The partition-cache part of the plan, in words."""
    per_stage = ", ".join(f"{s} {n}" for s, n in plan.stage_caches.items())
    return (
        f"{_n(len(plan.ingest_entries), 'ingest cache entry', 'ingest cache entries')} of the "
        f"batch and the whole partition cache of {_n(len(plan.stage_caches), 'stage', 'stages')} "
        f"downstream of ingest ({_n(sum(plan.stage_caches.values()), 'entry', 'entries')}"
        f"{': ' + per_stage if per_stage else ''}) under {plan.cache_root}"
    )


def describe_plan(plan: Plan) -> list[str]:
    """The dry run's lines: what forget would remove."""
    b = plan.batch
    lines = [
        f"would forget batch {b.name}: {_n(plan.raw_rows, 'row', 'rows')} in {_raw_dir(b.name)}"
    ]
    if b.file is not None:
        how = (
            f"dvc remove --outs {b.dvc_file}"
            if b.dvc_file
            else f"delete, then dvc add {b.dir_dvc_file.with_suffix('')}"
            if b.dir_dvc_file
            else "delete"
        )
        lines.append(f"would remove {b.file} ({how})")
    if b.source_entry is not None:
        lines.append(
            f"would remove {b.source_entry!r} from params.yaml ingest.sources and dvc.yaml"
        )
    lines.append(f"would remove {cache_summary(plan)}")
    lines += [f"would remove {p}" for p in [*plan.temporaries, *plan.uncached_outs]]
    lines.append(f"would remove DVC's run cache: {_n(plan.run_cache_entries, 'entry', 'entries')}")
    if plan.stages:
        lines.append(f"would rerun {', '.join(plan.stages)} (dvc repro)")
    lines.append("would run dvc gc --workspace --force (objects counted after the rerun)")
    return lines


def kept_line(plan: Plan) -> str:
    """The last line: what stays, and what forget cannot reach."""
    others = {
        p.name: _raw_rows(p.name)
        for p in sorted(_raw_dir("").glob("*"))
        if p.is_dir() and p.name != plan.batch.name
    }
    reach = [
        "copies pushed to a DVC remote (`dvc gc --workspace --cloud`)",
        "git history",
        "lineage/runs.jsonl (batch names, no row values)",
    ]
    if plan.batch.in_git:
        reach[1] = f"git: {plan.batch.file} is committed (git rm, commit, rewrite history)"
    listed = ", ".join(f"{b} {_n(n, 'row', 'rows')}" for b, n in others.items())
    return (
        f"kept: {_n(len(others), 'other batch', 'other batches')} ({listed or 'none'}) "
        "with their ingest cache entries, and the DVC objects the workspace uses. "
        f"Not reached: {'; '.join(reach)}"
    )


def forget(
    batch: str = typer.Argument(..., help="Batch name (as in `_batch`), or its file"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List what would be removed; change nothing"
    ),
) -> None:
    """Erase a batch: its file, its cached partition results and DVC objects, then rerun."""
    if not DVC_YAML.is_file():
        typer.echo(
            f"ERROR: no {DVC_YAML} here: run `pipeline forget` from the repository root", err=True
        )
        raise typer.Exit(EXIT_BAD_INPUT)
    try:
        plan = make_plan(resolve(batch))
        if dry_run:
            for line in describe_plan(plan):
                typer.echo(line)
            return
        if plan.stages:
            load_key()  # fail before deleting anything when the rerun could not run
        lines, rc = apply(plan)
    except (InputError, ParamsError, MissingKeyError) as e:
        typer.echo(f"ERROR: {e}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from e
    except subprocess.CalledProcessError as e:
        typer.echo(
            f"ERROR: `{' '.join(map(str, e.cmd[1:]))}` failed (exit {e.returncode})", err=True
        )
        raise typer.Exit(EXIT_WRITE_FAILED) from e
    except OSError as e:
        typer.echo(f"ERROR: {describe_write_error(e, e.filename or 'a file')}", err=True)
        raise typer.Exit(EXIT_WRITE_FAILED) from e
    for line in lines:
        typer.echo(line)
    if rc:
        raise typer.Exit(rc)
    typer.echo(
        f"forgot batch {plan.batch.name}: {_n(plan.raw_rows, 'row', 'rows')} of it were in "
        f"{_raw_dir('')}"
    )
    typer.echo(kept_line(plan))
