"""Run a Great Expectations 1.x suite over DataFrames (partition by partition), build Data Docs.

GX costs: importing it and creating a context take seconds, so each process creates one context
and one validation definition per suite and reuses them for every partition it validates. Each
run goes through `ValidationDefinition.run` (no checkpoint, no actions); the Data Docs are built
once, from the results aggregated over all partitions (`build_docs`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from stages.lib.digest import canonical_digest

# Offline by design: GX must not try to send usage statistics.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
# GX draws a progress bar per validation; in stage logs it is noise, not progress.
os.environ.setdefault("TQDM_DISABLE", "1")

# GX reports a column's pandas dtype by its class name for extension types, by its numpy name
# otherwise; accept both spellings of each schema type.
TYPE_NAMES = {
    "int": ["Int64Dtype", "int64", "Int64"],
    "float": ["Float64Dtype", "float64", "Float64"],
    "string": ["StringDtype", "str", "string", "object"],
    "category": ["StringDtype", "str", "string", "object"],
    "date": ["date", "object", "datetime64[ns]", "datetime64[s]"],
    "timestamp": [
        "datetime64[us]",
        "datetime64[ns]",
        "datetime64[ms]",
        "datetime64[s]",
        "Timestamp",
        "datetime",
        "object",
    ],
    # A bool column with nulls comes to pandas as object (Python bools and None).
    "bool": ["bool", "boolean", "BooleanDtype", "object"],
}


@dataclass(frozen=True)
class Check:
    """One expectation (GX class name and arguments) with its family and severity.

    Plain values only (lists as tuples), so a Check pickles to worker processes, hashes as the
    key of a process's cached GX suite, and costs no GX import to build.
    """

    kind: str
    family: str
    severity: str
    kwargs: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def of(kind: str, family: str, severity: str, **kwargs: Any) -> Check:
        """A Check from keyword arguments (lists become tuples)."""
        # None means "no bound" to GX, which leaves such arguments out of its results: so do we.
        frozen = {
            k: tuple(v) if isinstance(v, list | tuple) else v
            for k, v in kwargs.items()
            if v is not None
        }
        return Check(kind, family, severity, tuple(sorted(frozen.items())))

    @property
    def args(self) -> dict[str, Any]:
        """The expectation's arguments as GX takes them (tuples back to lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.kwargs}

    @property
    def column(self) -> str | None:
        return self.args.get("column")

    @property
    def type(self) -> str:
        """GX's snake-case name of the expectation (ExpectColumnX -> expect_column_x)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.kind).lower()

    def expectation(self) -> Any:
        """A fresh GX expectation object for this check."""
        import great_expectations.expectations as gxe

        return getattr(gxe, self.kind)(**self.args, meta={"family": self.family})


_CONTEXT: Any = None
_SUITES: dict[tuple[Check, ...], Any] = {}


def context() -> Any:
    """This process's one ephemeral GX context, created on first use (a fixed cost of seconds).

    Every GX user in the project (validate's checks and Data Docs, anonymize's regex scan) takes
    its context from here: analytics off, GX's logging at ERROR, no progress bars, and GX's
    per-batch fingerprint skipped (`skip_batch_fingerprint`).
    """
    global _CONTEXT
    if _CONTEXT is None:
        import contextlib

        import great_expectations as gx

        logging.getLogger("great_expectations").setLevel(logging.ERROR)
        skip_batch_fingerprint()
        _CONTEXT = gx.get_context(mode="ephemeral")
        # Progress bars are cosmetic; a config that refuses the setting is fine.
        with contextlib.suppress(Exception):
            _CONTEXT.variables.progress_bars = {"globally": False}
    return _CONTEXT


def skip_batch_fingerprint() -> None:
    """Make GX skip hashing every cell of each pandas batch; fail loudly if GX moved the knob.

    GX fingerprints every batch smaller than `pandas_execution_engine.HASH_THRESHOLD` bytes
    (pandas.util.hash_pandas_object over all cells) only to label the batch, a label never used
    here. Measured on a 100K-row partition of the bundled sample (GX 1.24, 2 shared cores): the
    hash takes about 0.1 s, and run_checks 0.8-1.0 s with the patch vs 0.95-1.35 s without;
    wider or object-typed frames hash slower (an earlier note measured 1.2 s per partition).
    GX 1.x has no public setting for it (GX 1.24's source reads the constant in one place,
    PandasExecutionEngine.get_batch_data_and_markers; no context, data source, batch or result
    format option reaches it; its docs name none), so the module constant is set to 0.
    A GX without the constant would silently make every run slower: raise instead, and
    tests/test_gx.py checks that the constant exists and that setting it removes the
    fingerprint.
    """
    import great_expectations as gx
    import great_expectations.execution_engine.pandas_execution_engine as engine

    if not isinstance(getattr(engine, "HASH_THRESHOLD", None), int | float):
        raise RuntimeError(
            f"great_expectations {gx.__version__} has no "
            "execution_engine.pandas_execution_engine.HASH_THRESHOLD: stages/lib/gx.py sets it "
            "to 0 so that GX does not hash every cell of each batch it validates. "
            "Find GX's new way to skip the batch fingerprint and use it in "
            "skip_batch_fingerprint(), or install the great_expectations version pinned in "
            "pyproject.toml."
        )
    engine.HASH_THRESHOLD = 0


def _validation(checks: tuple[Check, ...]) -> Any:
    """The validation definition for `checks`, built once per process."""
    if checks not in _SUITES:
        import great_expectations as gx

        ctx = context()
        name = f"suite_{len(_SUITES)}"
        batch = (
            ctx.data_sources.add_pandas(name)
            .add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("partition")
        )
        suite = ctx.suites.add(gx.ExpectationSuite(name=name))
        for i, check in enumerate(checks):
            e = check.expectation()
            e.meta = {"family": check.family, "severity": check.severity, "index": i}
            suite.add_expectation(e)
        _SUITES[checks] = ctx.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite)
        )
    return _SUITES[checks]


def run_checks(df: pd.DataFrame, checks: Sequence[Check]) -> list[dict[str, Any]]:
    """Validate `df` against `checks` with GX: one value-free result per check, in their order.

    No unexpected values are kept, since they may be personal data; `missing_count` (nulls GX
    skipped, absent for the not-null expectation) is kept so counts can be summed over partitions.
    """
    checks = tuple(checks)
    if not checks:
        return []
    run = _validation(checks).run(
        batch_parameters={"dataframe": df},
        result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
    )
    results: list[dict[str, Any] | None] = [None] * len(checks)
    for r in run.results:
        i = r.expectation_config.meta["index"]
        observed = r.result.get("observed_value")
        results[i] = {
            **named(checks[i]),
            "success": bool(r.success),
            "unexpected_count": r.result.get("unexpected_count"),
            "unexpected_percent": r.result.get("unexpected_percent"),
            "element_count": r.result.get("element_count"),
            "missing_count": r.result.get("missing_count"),
            # Aggregates (a dtype name, a count) only: never row values.
            "observed": observed if isinstance(observed, int | float | str) else None,
            "error": (r.exception_info or {}).get("exception_message") if not r.success else None,
        }
    missing = [checks[i].type for i, r in enumerate(results) if r is None]
    if missing:
        raise RuntimeError(f"GX returned no result for {missing}")
    return results  # type: ignore[return-value]


def named(check: Check) -> dict[str, Any]:
    """The fields of a result that name the check."""
    kwargs = check.args
    return {
        "expectation": check.type,
        "family": check.family,
        "severity": check.severity,
        "column": kwargs.pop("column", None),
        "kwargs": kwargs,
    }


def build_docs(
    results: Sequence[tuple[Check, dict[str, Any]]],
    docs_dir: Path,
    suite_name: str,
    meta: dict[str, Any],
) -> None:
    """Write GX Data Docs under `docs_dir` for one validation result made of `results` (each
    check with its result, e.g. aggregated over every partition), as GX renders a checkpoint's.

    The GX context of this process is reused; the docs are built once, not per partition.
    """
    import datetime

    import great_expectations as gx
    from great_expectations.core import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    ctx = context()
    site = _docs_site(ctx, docs_dir, suite_name)
    suite = gx.ExpectationSuite(name=suite_name)
    evrs = []
    for check, res in results:
        e = check.expectation()
        e.meta = {"family": check.family, "severity": check.severity}
        suite.add_expectation_configuration(e.configuration)
        evrs.append(_expectation_result(e.configuration, res))
    if suite_name in [s.name for s in ctx.suites.all()]:
        ctx.suites.delete(suite_name)
    ctx.suites.add(suite)
    run_id = RunIdentifier(run_time=datetime.datetime.now(datetime.UTC))
    run_meta = {**meta, "run_id": run_id, "validation_time": run_id.run_time}
    validation = _suite_result(suite_name, evrs, run_meta)
    suite_id = ExpectationSuiteIdentifier(name=suite_name)
    result_id = ValidationResultIdentifier(
        expectation_suite_identifier=suite_id, run_id=run_id, batch_identifier="all_partitions"
    )
    ctx.validation_results_store.set(result_id, validation)
    built = ctx.build_data_docs(site_names=[site], resource_identifiers=[result_id, suite_id])
    # GX logs a page it could not write (a full disk, say) and carries on: check that every
    # page is there and complete, so a half-written report never passes for a complete one.
    pages = [_local_path(built[site])] + [
        _local_path(url["site_url"])
        for rid in (result_id, suite_id)
        for url in ctx.get_docs_sites_urls(
            resource_identifier=rid, site_name=site, only_if_exists=False
        )
    ]
    require_complete_pages(pages)


def _local_path(url: str) -> Path:
    """The file a Data Docs site's file:// URL points to."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(url).path))


def _ends_html(page: Path) -> bool:
    """Whether the file's last bytes close its HTML (a page cut short by a write fault does not)."""
    with open(page, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 64))
        return f.read().rstrip().endswith(b"</html>")


def require_complete_pages(pages: Sequence[Path]) -> None:
    """Raise unless every page exists and ends its HTML: GX does not report a failed write.

    A page found missing or cut short is written to again, here, by a probe: a write fault
    (full disk, read-only or forbidden directory) then raises as the WriteError it is (exit 74);
    anything else (GX failed to render the page, its ERROR log says why) is a RuntimeError.
    """
    from stages.lib.io import writing

    broken = [p for p in pages if not (p.is_file() and _ends_html(p))]
    if not broken:
        return
    page = broken[0]
    with writing(page):
        page.parent.mkdir(parents=True, exist_ok=True)
        probe = page.parent / f".write-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            probe.unlink(missing_ok=True)
    raise RuntimeError(
        f"Data Docs could not be built: GX left {len(broken)} page(s) missing or incomplete, "
        f"first {page}; GX's ERROR message above says why"
    )


def docs_site_name(docs_dir: Path, suite_name: str) -> str:
    """The Data Docs site name for a docs directory and suite: a digest, the same in every
    process (Python's hash() of a str changes with PYTHONHASHSEED)."""
    return f"docs_{canonical_digest([str(docs_dir), suite_name], 16)}"


def _docs_site(ctx: Any, docs_dir: Path, suite_name: str) -> str:
    """The name of the context's Data Docs site writing to `docs_dir`, added on first use."""
    site = docs_site_name(docs_dir, suite_name)
    if site not in (ctx.get_site_names() or []):
        ctx.add_data_docs_site(
            site_name=site,
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    return site


# The two result builders below make GX result objects themselves, through GX's public classes
# (great_expectations.core), because the Data Docs show one result for the whole dataset: the
# per-partition results GX returned, summed (counts) and combined (success), which GX has no API
# to merge. run_checks reads GX's own result objects; only this aggregate is built here.
def _expectation_result(configuration: Any, res: dict[str, Any]) -> Any:
    """GX's result object for one expectation, from our (possibly aggregated) result dict."""
    from great_expectations.core import ExpectationValidationResult

    result = {
        k: res.get(k)
        for k in ("element_count", "unexpected_count", "unexpected_percent", "missing_count")
        if res.get(k) is not None
    }
    if res.get("observed") is not None:
        result["observed_value"] = res["observed"]
    if "unexpected_count" in result:
        result["partial_unexpected_list"] = []
    return ExpectationValidationResult(
        success=bool(res["success"]),
        expectation_config=configuration,
        result=result,
        exception_info={
            "raised_exception": res.get("error") is not None,
            "exception_message": res.get("error"),
            "exception_traceback": None,
        },
    )


def _suite_result(suite_name: str, evrs: list[Any], meta: dict[str, Any]) -> Any:
    """GX's result object for the whole suite, with its statistics, from the expectations'."""
    from great_expectations.core import ExpectationSuiteValidationResult

    successful = sum(r.success for r in evrs)
    return ExpectationSuiteValidationResult(
        success=successful == len(evrs),
        results=evrs,
        suite_name=suite_name,
        statistics={
            "evaluated_expectations": len(evrs),
            "successful_expectations": successful,
            "unsuccessful_expectations": len(evrs) - successful,
            "success_percent": 100.0 * successful / len(evrs) if evrs else None,
        },
        meta=meta,
    )


def describe_failure(result: dict[str, Any]) -> str:
    """One line saying which expectation failed on which column, and for how many rows."""
    where = f"column '{result['column']}'" if result["column"] else "the table"
    n, total = result.get("unexpected_count"), result.get("element_count")
    extent = (
        f"{n:,} of {total:,} rows"
        if n is not None and total
        else f"observed {result.get('observed')}"
    )
    args = {
        k: v
        for k, v in result["kwargs"].items()
        if k in ("value_set", "min_value", "max_value", "type_list", "regex", "mostly")
    }
    return f"{result['expectation']} on {where} ({args}): {extent} [{result['severity']}]"
