"""validate: a Great Expectations suite derived from the schema runs over the clean data.

Results go to reports/validation/ (JSON and static Data Docs). A failed critical expectation
stops the pipeline, naming the expectation, the column and how many rows; warnings are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from stages.clean import EMAIL_RE
from stages.lib.errors import GateFailure, run_stage
from stages.lib.gx import TYPE_NAMES, Check, describe_failure, run_checks
from stages.lib.io import AtomicDir, read_dataset, write_json_atomic
from stages.lib.params import load_params, section
from stages.lib.schema import RECORD_ID, Schema, load_schema
from stages.lib.summary import StageSummary

CLEAN_DIR = Path("data/clean")
OUT_DIR = Path("reports/validation")
Severity = Literal["critical", "warning", "off"]
FAMILIES = (
    "key_unique",
    "key_not_null",
    "label_not_null",
    "label_in_set",
    "column_types",
    "numeric_ranges",
    "category_in_set",
    "email_format",
    "not_null_features",
    "class_balance",
)


@dataclass(frozen=True)
class ValidateConfig:
    """The `validate` section of params.yaml."""

    severity: dict[str, Severity] = field(default_factory=dict)
    max_null_share: float = 0.1
    min_class_share: float = 0.0
    max_class_share: float = 1.0


def build_checks(schema: Schema, cfg: ValidateConfig) -> list[Check]:
    """The expectations the schema and params imply, each with its severity."""
    import great_expectations.expectations as gxe

    unknown = sorted(set(cfg.severity) - set(FAMILIES))
    if unknown:
        from stages.lib.params import ParamsError

        raise ParamsError(f"validate.severity: unknown check(s) {unknown}; known: {list(FAMILIES)}")
    checks: list[Check] = []

    def add(family: str, expectation: Any) -> None:
        severity = cfg.severity.get(family, "critical")
        if severity != "off":
            checks.append(Check(expectation, family, severity))

    add("key_unique", gxe.ExpectColumnValuesToBeUnique(column=RECORD_ID))
    add("key_not_null", gxe.ExpectColumnValuesToNotBeNull(column=RECORD_ID))
    add("label_not_null", gxe.ExpectColumnValuesToNotBeNull(column=schema.label))
    add(
        "label_in_set",
        gxe.ExpectColumnValuesToBeInSet(column=schema.label, value_set=schema.classes),
    )
    features = schema.with_role("numeric", "categorical", "text")
    for name, col in schema.columns.items():
        add(
            "column_types",
            gxe.ExpectColumnValuesToBeInTypeList(column=name, type_list=TYPE_NAMES[col.type]),
        )
        if col.type in ("int", "float") and (col.min is not None or col.max is not None):
            add(
                "numeric_ranges",
                gxe.ExpectColumnValuesToBeBetween(
                    column=name, min_value=col.min, max_value=col.max
                ),
            )
        if col.values and col.role != "label":
            add(
                "category_in_set",
                gxe.ExpectColumnValuesToBeInSet(column=name, value_set=list(col.values)),
            )
        if col.format == "email":
            add("email_format", gxe.ExpectColumnValuesToMatchRegex(column=name, regex=EMAIL_RE))
        if name in features:
            add(
                "not_null_features",
                gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=1 - cfg.max_null_share),
            )
    return checks


def class_balance(labels: pd.Series, classes: list[str], cfg: ValidateConfig) -> dict[str, Any]:
    """Share of each class and whether all lie within the configured bounds.

    GX 1.x has no pandas expectation for per-value shares, so this one is computed here.
    """
    shares = labels.value_counts(normalize=True).reindex(classes, fill_value=0.0)
    ok = bool(((shares >= cfg.min_class_share) & (shares <= cfg.max_class_share)).all())
    return {
        "expectation": "class_share_between",
        "family": "class_balance",
        "severity": cfg.severity.get("class_balance", "warning"),
        "column": labels.name,
        "kwargs": {"min_value": cfg.min_class_share, "max_value": cfg.max_class_share},
        "success": ok,
        "unexpected_count": None,
        "unexpected_percent": None,
        "element_count": int(labels.notna().sum()),
        "observed": ", ".join(f"{k}: {v:.3f}" for k, v in shares.items()),
        "error": None,
    }


def main() -> None:
    """Validate data/clean and write reports/validation/{results.json,docs/}."""
    params = load_params()
    cfg = section(ValidateConfig, "validate", params)
    schema = load_schema(params)
    df = read_dataset(CLEAN_DIR).to_pandas()
    if df.empty:
        # Every expectation passes vacuously on no rows; training on nothing must not follow.
        raise GateFailure(
            f"validate: {CLEAN_DIR} has no rows: every source row was quarantined or removed as a "
            "duplicate; see data/quarantine (column _reason) and metrics/clean.json"
        )
    summary = StageSummary("validate", rows_in=len(df), rows_out=len(df))

    # Results and Data Docs appear together or not at all (a killed run leaves no half report).
    with AtomicDir(OUT_DIR) as out:
        results = run_checks(df, build_checks(schema, cfg), "clean_data", out.tmp / "docs")
        if cfg.severity.get("class_balance", "warning") != "off":
            results.append(class_balance(df[schema.label], schema.classes, cfg))
        write_json_atomic(out.tmp / "results.json", {"rows": len(df), "results": results})
    failed = [r for r in results if not r["success"]]
    critical = [r for r in failed if r["severity"] == "critical"]
    warnings = [r for r in failed if r["severity"] == "warning"]
    summary.extra.update(
        expectations=len(results),
        passed=len(results) - len(failed),
        failed_critical=len(critical),
        failed_warning=len(warnings),
        data_docs=str(OUT_DIR / "docs" / "index.html"),
    )
    summary.write()
    for r in warnings:
        print(f"validate: WARNING {describe_failure(r)}")
    passed = len(results) - len(failed)
    print(f"validate: {passed}/{len(results)} expectations passed on {len(df):,} rows")
    if critical:
        raise GateFailure(
            "validate: critical expectation(s) failed:\n  "
            + "\n  ".join(describe_failure(r) for r in critical)
            + "\nFix the source data or the schema in params.yaml; details in "
            + str(OUT_DIR / "docs" / "index.html")
        )


if __name__ == "__main__":
    run_stage(main)
