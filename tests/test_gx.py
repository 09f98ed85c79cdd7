"""stages/lib/gx.py: the one GX context, the library constant it sets (checked against the
installed GX) and the Data Docs write check that replaced reading GX's log."""

from __future__ import annotations

import builtins
import errno
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stages.lib.anon_scan import gx_scan
from stages.lib.errors import EXIT_WRITE_FAILED, run_stage
from stages.lib.gx import (
    Check,
    build_docs,
    context,
    docs_site_name,
    require_complete_pages,
    run_checks,
    skip_batch_fingerprint,
)

FINGERPRINT = "pandas_data_fingerprint"
_NAMES = itertools.count()


def _batch_markers(df: pd.DataFrame) -> dict:
    """The markers GX gives a batch of `df`, through its public batch API."""
    name = f"test_gx_{next(_NAMES)}"
    batch_def = (
        context()
        .data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("whole")
    )
    return dict(batch_def.get_batch(batch_parameters={"dataframe": df}).batch_markers)


def test_installed_gx_has_the_constant_the_pipeline_sets() -> None:
    import great_expectations.execution_engine.pandas_execution_engine as engine

    assert isinstance(engine.HASH_THRESHOLD, int | float)


def test_the_context_skips_gx_hashing_every_cell_and_gx_would_otherwise(monkeypatch) -> None:
    """The patch has its effect: no fingerprint with it; one without it (so it is still needed)."""
    import great_expectations.execution_engine.pandas_execution_engine as engine

    df = pd.DataFrame({"a": range(1000), "b": ["x"] * 1000})
    assert FINGERPRINT not in _batch_markers(df)
    monkeypatch.setattr(engine, "HASH_THRESHOLD", 1e9)  # GX's own default, restored after
    assert FINGERPRINT in _batch_markers(df)


def test_a_gx_without_the_constant_stops_with_a_clear_error(monkeypatch) -> None:
    import great_expectations.execution_engine.pandas_execution_engine as engine

    monkeypatch.delattr(engine, "HASH_THRESHOLD")
    with pytest.raises(RuntimeError, match=r"HASH_THRESHOLD.*great_expectations version pinned"):
        skip_batch_fingerprint()


def test_validate_and_the_anonymize_scan_share_one_context() -> None:
    a, b = gx_scan(["x_col"]), gx_scan(["y_col", "z_col"])
    assert a.ctx is context() and b.ctx is context()
    df = pd.DataFrame({"record_id": ["r1", "r2"], "x_col": ["ok", "mail me at a@b.org"]})
    assert [(f["record_id"], f["entity"]) for f in a.run(df)] == [("r2", "EMAIL")]


def _docs(tmp_path: Path) -> tuple[list[tuple[Check, dict]], Path]:
    checks = [Check.of("ExpectColumnValuesToNotBeNull", "completeness", "critical", column="a")]
    results = run_checks(pd.DataFrame({"a": [1, 2, None]}), checks)
    return list(zip(checks, results, strict=True)), tmp_path / "docs"


def test_docs_pages_are_written_complete(tmp_path) -> None:
    results, docs = _docs(tmp_path)
    build_docs(results, docs, "test_suite", {"rows": 3})
    assert docs_site_name(docs, "test_suite") in context().get_site_names()
    pages = sorted(p.relative_to(docs).parts[0] for p in docs.rglob("*.html"))
    assert pages == ["expectations", "index.html", "validations"]
    assert all(p.read_text().rstrip().endswith("</html>") for p in docs.rglob("*.html"))


def test_the_docs_site_name_is_the_same_in_every_process() -> None:
    """Python's hash() of a str changes with PYTHONHASHSEED; the site name must not."""
    code = "from stages.lib.gx import docs_site_name; print(docs_site_name('out/docs', 'suite'))"
    names = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert names == {docs_site_name(Path("out/docs"), "suite")}


def test_a_docs_page_gx_could_not_write_is_a_write_error_exit_74(
    tmp_path, monkeypatch, capsys
) -> None:
    """A full disk under validations/: GX logs its failed write and carries on; the stage stops."""
    results, docs = _docs(tmp_path)
    real_open = builtins.open

    def full_disk(file, mode="r", *args, **kwargs):
        if "w" in str(mode) and str(docs / "validations") in str(file):
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk)
    with pytest.raises(SystemExit) as stop:
        run_stage(lambda: build_docs(results, docs, "test_suite", {"rows": 3}))
    assert stop.value.code == EXIT_WRITE_FAILED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ERROR: cannot write ") and "the disk is full" in err, err


def test_a_page_cut_short_in_a_writable_directory_is_a_runtime_error(tmp_path) -> None:
    whole, cut = tmp_path / "whole.html", tmp_path / "cut.html"
    whole.write_text("<html><body>ok</body></html>\n")
    cut.write_text("<html><body>o")
    require_complete_pages([whole])
    with pytest.raises(RuntimeError, match=r"1 page.*cut\.html"):
        require_complete_pages([whole, cut])
    with pytest.raises(RuntimeError, match="missing"):
        require_complete_pages([tmp_path / "absent.html"])
