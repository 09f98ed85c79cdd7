"""Run a Great Expectations 1.x suite over a DataFrame, with Data Docs, and summarise results."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

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
}


@dataclass(frozen=True)
class Check:
    """One expectation with its family (for the severity lookup) and severity."""

    expectation: Any
    family: str
    severity: str


def run_checks(
    df: pd.DataFrame, checks: list[Check], suite_name: str, docs_dir: Path | None
) -> list[dict[str, Any]]:
    """Validate `df` against `checks` through a GX checkpoint; optionally build Data Docs.

    Returns one value-free result per check: no unexpected values are kept, since they may be
    personal data.
    """
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    ctx = gx.get_context(mode="ephemeral")
    actions = []
    if docs_dir is not None:
        # The ephemeral context already has a site called local_site.
        ctx.add_data_docs_site(
            site_name="pipeline_docs",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(Path(docs_dir).resolve()),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(UpdateDataDocsAction(name="data_docs", site_names=["pipeline_docs"]))
    batch_def = (
        ctx.data_sources.add_pandas(suite_name)
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("all_rows")
    )
    suite = ctx.suites.add(gx.ExpectationSuite(name=suite_name))
    for check in checks:
        check.expectation.meta = {"family": check.family, "severity": check.severity}
        suite.add_expectation(check.expectation)
    validation = ctx.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_def, suite=suite)
    )
    checkpoint = ctx.checkpoints.add(
        gx.Checkpoint(
            name=suite_name,
            validation_definitions=[validation],
            actions=actions,
            result_format={"result_format": "BASIC", "partial_unexpected_count": 0},
        )
    )
    # GX logs a Data Docs write failure (a full disk, say) and carries on: raise it instead,
    # so a half-written report never passes for a complete one.
    errors = _ErrorRecords()
    logging.getLogger("great_expectations").addHandler(errors)
    try:
        run = checkpoint.run(batch_parameters={"dataframe": df})
    finally:
        logging.getLogger("great_expectations").removeHandler(errors)
    errors.raise_docs_failure()
    results = []
    for vr in run.run_results.values():
        for r in vr.results:
            cfg = r.expectation_config
            kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
            observed = r.result.get("observed_value")
            results.append(
                {
                    "expectation": cfg.type,
                    "family": cfg.meta.get("family"),
                    "severity": cfg.meta.get("severity"),
                    "column": kwargs.pop("column", None),
                    "kwargs": kwargs,
                    "success": bool(r.success),
                    "unexpected_count": r.result.get("unexpected_count"),
                    "unexpected_percent": r.result.get("unexpected_percent"),
                    "element_count": r.result.get("element_count"),
                    # Aggregates (a dtype name, a count) only: never row values.
                    "observed": observed if isinstance(observed, int | float | str) else None,
                    "error": (r.exception_info or {}).get("exception_message")
                    if not r.success
                    else None,
                }
            )
    return results


class _ErrorRecords(logging.Handler):
    """Collects GX's ERROR log records about Data Docs."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "data docs" in message.lower():
            self.messages.append(message)

    def raise_docs_failure(self) -> None:
        """Re-raise the first Data Docs failure: as the OSError it was, when it was one."""
        if not self.messages:
            return
        message = self.messages[0]
        m = re.search(r"\[Errno (\d+)\] ([^:\"]+): '([^']+)'", message)
        if m:
            raise OSError(int(m.group(1)), m.group(2), m.group(3))
        cause = re.search(r'(\w+(?:Error|Exception): "[^"]*")', message)
        raise RuntimeError(
            f"Data Docs could not be built: {cause.group(1) if cause else message[:300]}"
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
