"""The bad-input harness of tests/test_bad_input*.py: one of its module-wide baseline projects (a
good batch run through the first stages), a copy of it per case with the case's files and params
swapped in, a stage run as `python -m stages.X` runs it, and the checks every case makes: on a
stop, nothing downstream changed and no temporary or key left; on a pass, every row accounted
for (rows in = rows out + quarantined + duplicates).
"""

from __future__ import annotations

import gzip
import importlib
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from stages.lib.errors import run_stage
from stages.lib.reasons import Reason, kind_text
from stages.lib.schema import REASON, REASON_KIND, load_schema
from tests.conftest import TEST_KEY, source_frame, write_project
from tests.faultlib import dvc_stages, leftover_temporaries, stage_outputs, tree_hashes

N = 40  # rows of the good batch a case starts from
# The data stages the corpus runs, in the DAG's order.
STAGES = ("ingest", "clean", "validate", "anonymize")


def good(n: int = N) -> pd.DataFrame:
    """The good batch: `n` generated rows in the schema of params.yaml."""
    return source_frame(n)


def csv(frame: pd.DataFrame) -> bytes:
    """A frame as the CSV bytes of a batch file."""
    return frame.to_csv(index=False).encode("utf-8")


def gz(data: bytes) -> bytes:
    """Gzip with a fixed mtime: the same bytes every run."""
    return gzip.compress(data, mtime=0)


def with_values(**cells: dict[int, str]) -> Callable[[], dict[str, bytes]]:
    """A good batch with some cells replaced: with_values(age={3: 'abc'})."""

    def build() -> dict[str, bytes]:
        f = good()
        for col, rows in cells.items():
            for r, v in rows.items():
                f.loc[r, col] = v
        return {"batch.csv": csv(f)}

    return build


def stage_main(name: str) -> Callable[[], Any]:
    """A stage's entry point, imported on first use (validate and anonymize load GX)."""
    module = importlib.import_module(f"stages.{name}")
    if name == "anonymize":
        return lambda: module.main([])  # its own argv, not pytest's
    return module.main


def outputs_from(stage: str) -> list[str]:
    """Outputs of `stage` and of every stage after it in dvc.yaml."""
    names = list(dvc_stages())
    return [p for n in names[names.index(stage) :] for p in stage_outputs(dvc_stages()[n])]


def make_baseline(tmp: Path, frame: pd.DataFrame, last: str, **overrides: Any) -> Path:
    """A project in `tmp` where `frame` went through the stages up to `last` (write_project's
    `overrides` set params)."""
    write_project(tmp, frame, **overrides)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIPELINE_HMAC_KEY", TEST_KEY)
        mp.chdir(tmp)
        for name in STAGES[: STAGES.index(last) + 1]:
            stage_main(name)()
    return tmp


def set_params(project: Path, changes: dict[str, Any], sources: list[str]) -> None:
    """params.yaml with dotted keys set (None: deleted) and the given ingest sources."""
    p = yaml.safe_load((project / "params.yaml").read_text())
    p["ingest"]["sources"] = sources
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = p
        for part in path:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    (project / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def case_project(
    baseline: Path,
    dest: Path,
    files: dict[str, bytes] | None,
    params: dict[str, Any],
    sources: tuple[str, ...] | list[str],
) -> Path:
    """A copy of the baseline with data/in holding only `files` (None: the good batch kept)
    and params.yaml changed."""
    shutil.copytree(baseline, dest)
    if files is not None:
        shutil.rmtree(dest / "data/in")
        (dest / "data/in").mkdir()
        for name, data in files.items():
            (dest / "data/in" / name).write_bytes(data)
    set_params(dest, params, list(sources))
    return dest


def run(name: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """One stage as `python -m stages.NAME` runs it: (exit code, stderr)."""
    try:
        run_stage(stage_main(name))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def assert_stopped_cleanly(project: Path, kept: list[str], before: dict, message: str) -> None:
    """After a stop: the kept outputs byte for byte as before, no temporary, no key shown."""
    assert tree_hashes(project, kept) == before, "outputs changed although the run stopped"
    assert not leftover_temporaries(project)
    assert TEST_KEY not in message


def accounted_rows(project: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """clean's summary and the quarantine, once every row is shown accounted for."""
    c = json.loads((project / "metrics/clean.json").read_text())
    assert c["rows_in"] == c["rows_out"] + c["rows_quarantined"] + c["duplicates"]
    q = pd.read_parquet(project / "data/quarantine")
    assert len(q) == c["rows_quarantined"] + c["duplicates"]
    schema = load_schema(yaml.safe_load((project / "params.yaml").read_text()))
    assert_typed_reasons(q, schema.columns)
    return c, q


def assert_typed_reasons(q: pd.DataFrame, columns: Iterable[str]) -> None:
    """Every _reason_kind is a `Reason` composed with a schema column (or alone), and every
    _reason begins with its kind: no kind outside the enum, none a message's leftover."""
    known = {kind_text(k, c) for k in Reason for c in columns}
    assert set(q[REASON_KIND]) <= known, set(q[REASON_KIND]) - known
    for reason, kind in zip(q[REASON], q[REASON_KIND], strict=True):
        assert reason.startswith(kind), (reason, kind)
