"""The predict command: same preparation as training, row accounting, schema errors, no identifiers.

A tiny real model is trained once on data that the real ingest, clean and anonymize stages
produced from a source file; predictions for rows of that file must then match the model's
output on the stages' own anonymized rows (same record_id, same features).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from stages import clean, ingest
from stages.anonymize import QUARANTINE, run
from stages.lib.features import column_policies, feature_spec
from stages.lib.io import read_dataset
from stages.lib.model import load_predictor
from stages.lib.params import load_params
from stages.lib.schema import RECORD_ID, SOURCE_ROW, load_schema
from stages.predict import NO_FEATURES, PREDICTED, PROBA_PREFIX, WARNING, app
from stages.train import fit, save_torch
from tests.conftest import TEST_KEY, anon_config, params, source_frame, write_project
from tests.test_train import SMALL

runner = CliRunner()


def _source(n: int) -> pd.DataFrame:
    """conftest's source table, with each row's own name and e-mail in its free text."""
    df = source_frame(n)
    schema = load_schema(params())
    (text,) = schema.with_role("text")
    name = next(c for c, col in schema.columns.items() if col.pii == "name")
    email = next(c for c, col in schema.columns.items() if col.pii == "email")
    df[text] = "Spoke with " + df[name] + ", reach at " + df[email] + " about hours"
    return df


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project where ingest, clean and anonymize ran on one batch, and a model trained on it."""
    work = tmp_path_factory.mktemp("predict")
    frame = _source(160)
    write_project(work, frame)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("PIPELINE_HMAC_KEY", TEST_KEY)
        params = load_params()
        schema = load_schema(params)
        policies = column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
        ingest.main()
        clean.main()
        cfg = anon_config(params["anonymize"]["policies"], k=None)
        run(clean.OUT_DIR, Path("data/anon"), QUARANTINE, cfg, schema, TEST_KEY.encode())
        anon = read_dataset("data/anon").to_pandas()
        result = fit(anon, anon, feature_spec(schema, policies), SMALL, log=lambda _m: None)
        save_torch(Path("models/model.pt"), result.checkpoint)
    return SimpleNamespace(
        work=work,
        frame=frame,
        schema=schema,
        raw=read_dataset(work / "data/raw").to_pandas(),
        anon=anon,
        predictor=load_predictor(work / "models/model.pt"),
    )


@pytest.fixture
def in_project(project, monkeypatch):
    monkeypatch.chdir(project.work)
    monkeypatch.setenv("PIPELINE_HMAC_KEY", TEST_KEY)
    return project


def _identifier_values(df: pd.DataFrame, schema) -> list[str]:
    cols = schema.with_role("identifier", "key")
    return sorted({v for c in cols for v in df[c].astype(str) if v})


def _proba_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith(PROBA_PREFIX)]


@pytest.mark.parametrize("with_label,ext", [(False, "csv"), (True, "parquet")])
def test_predictions_match_the_training_preparation(in_project, with_label, ext):
    p = in_project
    new = p.frame.head(40)
    if not with_label:
        new = new.drop(columns=[p.schema.label])  # new records come without a label
    new.to_csv("new.csv", index=False)

    res = runner.invoke(app, ["new.csv", f"out.{ext}"])
    assert res.exit_code == 0, res.output
    assert "40 rows in, 40 predicted" in res.output and "0 rejected" in res.output
    out = pd.read_csv("out.csv") if ext == "csv" else pd.read_parquet("out.parquet")
    rejected = Path(f"out.rejected.{ext}")
    assert rejected.exists()

    classes = list(p.schema.classes)
    assert list(out.columns) == [
        RECORD_ID, SOURCE_ROW, PREDICTED, *(PROBA_PREFIX + c for c in classes), WARNING
    ]  # fmt: skip
    assert out[WARNING].isna().all()  # every row has its features: no warning
    proba = out[_proba_columns(out)].to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert out[PREDICTED].tolist() == [classes[i] for i in proba.argmax(axis=1)]
    assert out[SOURCE_ROW].tolist() == list(range(1, 41))
    # record_id is what ingest gave the same source records under the same key
    ingested = p.raw.set_index(SOURCE_ROW)[RECORD_ID]
    assert out[RECORD_ID].tolist() == ingested.loc[1:40].tolist()
    # ... and the features are the ones training saw: same probabilities as on data/anon
    train_rows = p.anon.set_index(RECORD_ID).loc[out[RECORD_ID]].reset_index()
    np.testing.assert_allclose(proba, p.predictor.predict_proba(train_rows), atol=1e-6)
    # nothing of the input's identifiers (names, e-mails, phones, ids, keys) in the output
    text = Path(f"out.{ext}").read_bytes().decode("utf-8", "replace")
    text += out.astype(str).to_csv()
    leaked = [v for v in _identifier_values(new, p.schema) if v in text]
    assert leaked == []


def test_schema_mismatch_names_missing_and_extra_columns(in_project):
    p = in_project
    numeric = p.schema.with_role("numeric")[0]
    bad = p.frame.head(5).drop(columns=[numeric]).assign(loyalty_tier="gold")
    bad.to_csv("bad.csv", index=False)
    res = runner.invoke(app, ["bad.csv", "bad_out.csv"])
    assert res.exit_code == 2
    assert "missing column(s)" in res.output and repr(numeric) in res.output
    assert "unexpected column(s)" in res.output and "'loyalty_tier'" in res.output
    assert not Path("bad_out.csv").exists()


def test_schema_mismatch_in_json_lines_exits_2(in_project):
    """The same column check for a JSON Lines file: the missing key and the extra one named."""
    p = in_project
    numeric = p.schema.with_role("numeric")[0]
    bad = p.frame.head(3).drop(columns=[numeric]).assign(shoe_size="44")
    bad.to_json("bad.jsonl", orient="records", lines=True)
    res = runner.invoke(app, ["bad.jsonl", "bad_out.parquet"])
    assert res.exit_code == 2, res.output
    assert "bad.jsonl" in res.output and repr(numeric) in res.output
    assert "'shoe_size'" in res.output and "Traceback" not in res.output
    assert not Path("bad_out.parquet").exists()


def test_rows_without_feature_values_are_flagged(in_project):
    """A row whose features are all empty (or spell a missing value) still gets the model's
    answer, but flagged in `warning` and named on stderr; rows with any feature are not."""
    p = in_project
    schema = p.schema
    spec = p.predictor.spec
    features = [*spec.numeric, *spec.categorical, *spec.text]
    rows = p.frame.head(4).drop(columns=[schema.label]).copy()
    rows.loc[1, features] = ""
    rows.loc[2, features] = "?"  # clean's missing-value spelling: as empty
    rows.loc[3, features] = ""
    rows.loc[3, spec.numeric[0]] = "40"  # one feature left: a real (if weak) prediction
    rows.to_csv("sparse.csv", index=False)

    res = runner.invoke(app, ["sparse.csv", "sparse_out.csv"])
    assert res.exit_code == 0, res.output
    out = pd.read_csv("sparse_out.csv").set_index(SOURCE_ROW)
    assert len(out) == 4
    assert out[WARNING].isna().tolist() == [True, False, False, True]
    assert (out.loc[[2, 3], WARNING] == NO_FEATURES).all()
    assert "2 row(s) of sparse.csv have no feature values (source row(s) 2, 3)" in res.output
    # the probabilities are still the model's (the flag adds, it does not hide)
    assert np.allclose(out[_proba_columns(out)].sum(axis=1), 1.0, atol=1e-6)


def test_help_explains_the_warning_column():
    res = runner.invoke(app, ["--help"], terminal_width=200)
    assert res.exit_code == 0
    assert "warning" in res.output and "features are all missing" in res.output


def test_bad_rows_are_rejected_with_reasons(in_project):
    p = in_project
    schema = p.schema
    numeric = next(c for c in schema.with_role("numeric") if schema.columns[c].max is not None)
    other = next(c for c in schema.with_role("numeric") if c != numeric)
    rows = p.frame.head(10).copy()
    rows.loc[2, numeric] = "430000"
    rows.loc[4, other] = "abc"
    rows.loc[6, schema.key] = ""
    rows.loc[8] = rows.loc[0]  # the same record twice
    rows.to_csv("mixed.csv", index=False)

    res = runner.invoke(app, ["mixed.csv", "pred.csv", "--rejected", "why.csv"])
    assert res.exit_code == 0, res.output
    out, why = pd.read_csv("pred.csv"), pd.read_csv("why.csv")
    assert len(out) + len(why) == 10
    assert sorted(out[SOURCE_ROW]) == [1, 2, 4, 6, 8, 10]
    reasons = dict(zip(why[SOURCE_ROW], why["_reason_kind"], strict=True))
    assert reasons == {
        3: f"{numeric} out of range",
        5: f"{other} is not a number",
        7: f"missing {schema.key}",
        9: "exact duplicate",
    }
    assert "430000" in why.set_index(SOURCE_ROW).loc[3, "_reason"]
    assert "4 rejected" in res.output
    text = Path("why.csv").read_text() + Path("pred.csv").read_text()
    assert [v for v in _identifier_values(rows, schema) if v in text] == []


def test_missing_key_is_a_clear_error(in_project, monkeypatch):
    monkeypatch.delenv("PIPELINE_HMAC_KEY")
    in_project.frame.head(3).to_csv("few.csv", index=False)
    res = runner.invoke(app, ["few.csv", "few_out.csv"])
    assert res.exit_code == 2
    assert "PIPELINE_HMAC_KEY" in res.output
    assert not Path("few_out.csv").exists()


def test_unsupported_output_extension(in_project):
    in_project.frame.head(3).to_csv("few.csv", index=False)
    res = runner.invoke(app, ["few.csv", "few_out.xlsx"])
    assert res.exit_code == 2 and ".parquet or .csv" in res.output
