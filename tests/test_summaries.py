"""The typed stage summaries (stages/lib/summaries.py): strict, exact, and what StageSummary
writes."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from stages.lib import summaries as sm
from stages.lib.io import write_json_atomic
from stages.lib.summary import StageSummary


def clean_fields(**given: object) -> sm.CleanFields:
    """clean's fields, changed by `given`."""
    base = {"rows_replaced": 0, "values_nulled": {}, "batches_without_labels": []}
    return sm.CleanFields.model_validate({**base, **given})


def test_a_misspelt_or_mistyped_key_fails_validation():
    with pytest.raises(ValidationError, match="rows_replace"):
        clean_fields(rows_replace=0)
    with pytest.raises(ValidationError, match="rows_replaced"):
        clean_fields(rows_replaced="many")


def test_an_optional_field_not_given_is_not_written(tmp_path):
    absent = StageSummary("clean", 3, 3, fields=clean_fields()).write(tmp_path / "a.json")
    data = json.loads((tmp_path / "a.json").read_text())
    assert "duplicates_by_kind" not in data and absent.duplicates_by_kind is None
    StageSummary(
        "clean", 3, 2, duplicates=1, fields=clean_fields(duplicates_by_kind={"exact": 1})
    ).write(tmp_path / "b.json")
    found = sm.read_summary(tmp_path / "b.json", "clean")
    assert isinstance(found, sm.CleanSummary) and found.duplicates_by_kind == {"exact": 1}


def test_write_refuses_fields_of_another_stage(tmp_path):
    with pytest.raises(ValidationError):
        StageSummary("ingest", 1, 1, fields=clean_fields()).write(tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


def test_numbers_keep_their_json_type_through_a_round_trip(tmp_path):
    lift = {"accuracy": 0.01, "roc_auc": None, "macro_f1": 0.0, "accuracy_points": 1.0}
    found = sm.Lift.model_validate_json(json.dumps(lift))
    assert json.dumps(sm.dump(found), sort_keys=True) == json.dumps(lift, sort_keys=True)
    assert sm.dump(sm.Lift()) == {}  # no logistic baseline: written as {}


def test_load_summary_says_why_instead_of_raising(tmp_path):
    assert sm.load_summary(tmp_path / "train.json") == (
        None,
        f"{tmp_path}/train.json does not exist",
    )
    (tmp_path / "train.json").write_text("{not json")
    found, why = sm.load_summary(tmp_path / "train.json")
    assert found is None and "does not match its model" in why and "Invalid JSON" in why


def test_scan_and_validation_reports_round_trip_to_the_same_bytes(tmp_path):
    """reports/privacy/scan.json and reports/validation/results.json, written through their
    models as the stages write them, read back to the same model and the same bytes."""
    finding = {"record_id": "r1", "column": "notes", "entity": "EMAIL", "check": "gx_regex"}
    scan = sm.ScanReport(
        passed=False, findings=3, by_entity={"EMAIL": 3}, checks=["gx_regex"], details=[finding]
    )
    result = {
        "expectation": "expect_column_values_to_be_of_type",
        "family": "type",
        "severity": "critical",
        "column": "age",
        "kwargs": {"column": "age", "type_": "int64"},
        "success": True,
        "element_count": 10,
        "unexpected_count": None,
        "unexpected_percent": None,
        "observed": "int64",
        "error": None,
    }
    validation = sm.ValidationReport(
        rows=10, partitions=1, results=[result, {**result, "observed": 7}]
    )
    for name, model in (("scan.json", scan), ("results.json", validation)):
        path = tmp_path / name
        write_json_atomic(path, sm.dump(model))
        found, why = sm.load_model(path, type(model))
        assert why is None and found == model
        assert json.dumps(sm.dump(found), indent=2, sort_keys=True) + "\n" == path.read_text()
    assert validation.results[1].observed == 7 and isinstance(validation.results[1].observed, int)
    assert scan.verdict() == sm.ScanSummary(
        passed=False, findings=3, by_entity={"EMAIL": 3}, checks=["gx_regex"]
    )


def test_a_scan_finding_holds_where_never_a_value():
    finding = {"record_id": "r1", "column": "notes", "entity": "EMAIL", "check": "number"}
    with pytest.raises(ValidationError, match="value"):
        sm.ScanFinding.model_validate({**finding, "value": "a@b.example"})
    with pytest.raises(ValidationError, match="check"):
        sm.ScanFinding.model_validate({k: v for k, v in finding.items() if k != "check"})
