"""predict: score a file of new records in the raw schema with a trained model.

Not a DVC stage: a command (`pipeline predict NEW.csv OUT.parquet`). Each record goes through
the project's own functions, in the order the pipeline applies them to training data: ingest's
column check and lineage (record_id is the same keyed HMAC, so an auditor can join predictions
to training records with the same key), clean's `clean_partition`, anonymize's policies and
known-name scrub, then the model's own preprocessing inside `Predictor.predict_proba`.

Rows that clean rejects come back with their reason: rows in = predicted + rejected. Neither
output holds identifiers: predictions are record_id, source row, predicted class, one
probability per class and a warning (set on a row with no feature values: the model answers for
an empty record there, so the prediction is flagged rather than passed off as evidence);
rejections are record_id, source row and the (value-free for identifiers) reason.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import unicodedata
from pathlib import Path
from typing import Annotated

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import typer

from stages.lib.anon_index import build_index
from stages.lib.anon_policies import anonymize_frame
from stages.lib.clean_rows import clean_partition, to_arrow
from stages.lib.config import CleanConfig, pipeline_params
from stages.lib.errors import InputError, run_stage
from stages.lib.features import FeatureSpec, Policy, column_policies, feature_spec
from stages.lib.io import file_hash, write_bytes_atomic, write_text_atomic
from stages.lib.keys import SAMPLE_KEY, key_id, load_key
from stages.lib.paths import METRICS_DIR, MODEL_PATH
from stages.lib.readers import read_batches
from stages.lib.record_ids import add_lineage
from stages.lib.schema import REASON, REASON_KIND, RECORD_ID, SOURCE_ROW, Schema
from stages.lib.sources import batch_id, check_columns, check_content, file_format
from stages.lib.summaries import AnonymizeSummary, load_summary

PREDICTED = "predicted"
PROBA_PREFIX = "proba_"
WARNING = "warning"
# The model still answers for a record it knows nothing about (every feature missing): its
# output there is what it learnt for an empty record, often with high confidence, not evidence.
NO_FEATURES = (
    "no feature values: the prediction is the model's answer for an empty record, "
    "not evidence about this one"
)
OUTPUT_FORMATS = (".parquet", ".csv")
ANON_METRICS = METRICS_DIR / "anonymize.json"


def _normalized(names: list[str]) -> list[str]:
    """Header names as ingest compares them (NFKC, trimmed)."""
    return [unicodedata.normalize("NFKC", str(n)).strip() for n in names]


def optional_label(schema: Schema) -> Schema:
    """The schema with the label nullable: new records usually have none, and clean must not
    reject them for it (a label given is cleaned as usual, and ignored by the model)."""
    label = schema.label
    return Schema(
        {**schema.columns, label: dataclasses.replace(schema.columns[label], nullable=True)}
    )


def input_schema(schema: Schema, names: list[str]) -> Schema:
    """The columns a prediction file must have: the schema's, the label column optional."""
    if schema.label in _normalized(names):
        return schema
    return Schema({n: c for n, c in schema.columns.items() if n != schema.label})


def prepare_frame(
    raw: pd.DataFrame,
    schema: Schema,
    clean_cfg: CleanConfig,
    policies: dict[str, Policy],
    key: bytes,
    source: str = "<frame>",
    batch: str = "predict",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Raw source rows as the model saw its training data: (anonymized frame, rejected rows).

    Raises InputError naming missing and unexpected columns when the header does not match the
    schema (the label column may be absent). k-anonymity suppression is deliberately NOT applied:
    it is a release control over a whole dataset, predictions release no quasi-identifiers, and
    suppressing a record would leave it without a prediction.
    """
    expected = input_schema(schema, list(raw.columns))
    check_columns(Path(source), list(raw.columns), expected)
    raw = raw.set_axis(_normalized(list(raw.columns)), axis=1)[list(expected.columns)]
    table = pa.Table.from_pandas(raw.astype("string"), preserve_index=False)
    table = add_lineage(table, key, schema.key, batch, source, 1)
    # As clean reads data/raw: every column a string, the source row an integer.
    frame = table.to_pandas(types_mapper=pd.ArrowDtype)
    frame = frame.astype({c: "string" for c in frame.columns if c != SOURCE_ROW})
    for name in schema.columns:
        if name not in frame.columns:  # the label, left out of the file
            frame[name] = pd.Series(pd.NA, index=frame.index, dtype="string")
    result = clean_partition(frame, optional_label(schema), clean_cfg, seen={})
    # As anonymize reads data/clean: through the clean data contract's Arrow types.
    clean = to_arrow(result.clean, schema).to_pandas()
    names = build_index(clean, schema, policies).names
    anon, _ = anonymize_frame(clean, schema, policies, key, names)
    # anonymize releases no source positions; predictions answer the user with their own rows.
    anon[SOURCE_ROW] = clean[SOURCE_ROW]
    anon = pa.Table.from_pandas(anon.reset_index(drop=True), preserve_index=False).to_pandas()
    rejected = result.quarantine[[RECORD_ID, SOURCE_ROW, REASON_KIND, REASON]].reset_index(
        drop=True
    )
    return anon, rejected


def predict_frame(
    raw: pd.DataFrame,
    predictor,
    schema: Schema,
    clean_cfg: CleanConfig,
    policies: dict[str, Policy],
    key: bytes,
    source: str = "<frame>",
    batch: str = "predict",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions for raw source rows: (record_id, source row, class, proba_<class>), rejected.

    Cleaning, anonymization (same key) and preprocessing are the pipeline's own; see
    `prepare_frame` (no k-anonymity suppression for predictions). Rows in = predicted + rejected.
    """
    anon, rejected = prepare_frame(raw, schema, clean_cfg, policies, key, source, batch)
    proba = predictor.predict_proba(anon)
    classes = list(predictor.classes)
    out = pd.DataFrame(
        {
            RECORD_ID: anon[RECORD_ID].astype("string"),
            SOURCE_ROW: anon[SOURCE_ROW].astype("int64"),
            PREDICTED: pd.Series(
                [classes[i] for i in proba.argmax(axis=1)] if len(anon) else [], dtype="string"
            ),
        }
    )
    for i, c in enumerate(classes):
        out[f"{PROBA_PREFIX}{c}"] = proba[:, i]
    out[WARNING] = feature_warnings(anon, feature_spec(schema, policies))
    if len(out) + len(rejected) != len(raw):
        raise RuntimeError(
            f"predict: {len(raw)} rows in but {len(out)} predicted + {len(rejected)} rejected"
        )
    return out, rejected


def feature_warnings(anon: pd.DataFrame, spec: FeatureSpec) -> pd.Series:
    """Per row: NO_FEATURES when every feature the model uses is missing (null, or empty text),
    else null."""
    features = [*spec.numeric, *spec.categorical, *spec.text]
    present = pd.Series(False, index=anon.index)
    for name in features:
        col = anon[name]
        filled = col.notna()
        if name in spec.text or name in spec.categorical:
            filled &= col.astype("string").str.strip().fillna("").ne("")
        present |= filled.fillna(False).astype(bool)
    return pd.Series([None if p else NO_FEATURES for p in present], dtype="string").reset_index(
        drop=True
    )


def read_input(path: Path, block_rows: int) -> tuple[pd.DataFrame, str]:
    """A batch file (any format ingest reads) as a frame of strings, and its batch id."""
    fmt = file_format(path)
    check_content(path, fmt)
    tables = [pa.Table.from_batches([rb]) for rb in read_batches(path, fmt, block_rows)]
    if not tables or sum(t.num_rows for t in tables) == 0:
        raise InputError(f"{path}: has a header but no data rows")
    table = pa.concat_tables(tables, promote_options="default")
    raw = table.to_pandas(types_mapper=pd.ArrowDtype).astype("string")
    return raw, batch_id(path, file_hash(path))


def write_frame(df: pd.DataFrame, path: Path) -> None:
    """Parquet or CSV by the file's extension, atomically."""
    if path.suffix.lower() == ".parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), buf, compression="zstd")
        write_bytes_atomic(path, buf.getvalue())
    else:
        write_text_atomic(path, df.to_csv(index=False))


def _check_output(path: Path) -> None:
    if path.suffix.lower() not in OUTPUT_FORMATS:
        raise InputError(f"{path}: output must end in {' or '.join(OUTPUT_FORMATS)}")


def rejected_path(output: Path) -> Path:
    """Where rejected rows go when no path is given: beside the output."""
    return output.with_name(f"{output.stem}.rejected{output.suffix}")


def run_predict(model: Path, input: Path, output: Path, rejected: Path | None) -> None:
    """Read params, key, model and input; write predictions and rejected rows; print counts."""
    from stages.lib.model import load_predictor  # torch: imported only when predicting

    rejected = rejected or rejected_path(output)
    for path in (output, rejected):
        _check_output(path)
    p = pipeline_params()
    schema, clean_cfg, io_cfg = p.schema, p.clean, p.io
    policies = column_policies(schema, p.anonymize.policies)
    # The published demo key only for a model trained on the bundled sample under that key.
    key = load_key(sample=trained_key_id() == key_id(SAMPLE_KEY))
    if not model.exists():
        raise FileNotFoundError(f"{model}: no such model; train one with `pipeline repro train`")
    predictor = load_predictor(model)
    if predictor.spec != feature_spec(schema, policies):
        raise InputError(
            f"{model} was trained on other features than params.yaml's schema and anonymize "
            f"policies give ({predictor.spec} vs {feature_spec(schema, policies)}); retrain it"
        )
    _warn_on_other_key(key)
    raw, batch = read_input(input, io_cfg.partition_rows)
    preds, rej = predict_frame(
        raw, predictor, schema, clean_cfg, policies, key, source=str(input), batch=batch
    )
    write_frame(preds, output)
    write_frame(rej, rejected)
    print(
        f"predict: {input} -> {len(raw):,} rows in, {len(preds):,} predicted ({output}), "
        f"{len(rej):,} rejected ({rejected}); key {key_id(key)}"
    )
    if len(rej):
        kinds = rej[REASON_KIND].value_counts()
        print("  rejected: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
    empty = preds.loc[preds[WARNING].notna(), SOURCE_ROW]
    if len(empty):
        rows = ", ".join(str(r) for r in empty.head(10)) + (", ..." if len(empty) > 10 else "")
        print(
            f"WARNING: predict: {len(empty):,} row(s) of {input} have no feature values (source "
            f"row(s) {rows}): their predictions are flagged in column '{WARNING}'; fill the "
            "features or drop those rows",
            file=sys.stderr,
        )


def trained_key_id() -> str | None:
    """The id of the key the training data was pseudonymized with (anonymize's summary)."""
    summary, _why = load_summary(ANON_METRICS, "anonymize")
    return summary.key_id if isinstance(summary, AnonymizeSummary) else None


def _warn_on_other_key(key: bytes) -> None:
    """Say so when the training data was pseudonymized with another key (ids will not join)."""
    trained = trained_key_id()
    if trained and trained != key_id(key):
        print(
            f"WARNING: the key (id {key_id(key)}) is not the one the training data was "
            f"pseudonymized with (id {trained} in {ANON_METRICS}): record_ids will not join",
            file=sys.stderr,
        )


def predict(
    input: Annotated[
        Path,
        typer.Argument(
            help="New records in the raw schema (csv, tsv, jsonl, parquet; optionally .gz); "
            "the label column may be left out."
        ),
    ],
    output: Annotated[Path, typer.Argument(help="Predictions: .parquet or .csv.")],
    model: Annotated[Path, typer.Option(help="The trained model.")] = MODEL_PATH,
    rejected: Annotated[
        Path | None,
        typer.Option(help="Rows clean rejects, with the reason (default: OUTPUT.rejected.EXT)."),
    ] = None,
) -> None:
    """Predict classes and probabilities for new records, prepared exactly as training data was.

    Output columns: record_id, source row, predicted, proba_<class> for each class, and
    warning: empty for a normal row; for a row whose features are all missing (null or empty
    after cleaning) it says so, since the model then answers for an empty record, possibly with
    high confidence. Rows that clean rejects go to the rejected file with their reason. A file
    whose columns differ from the schema (the label may be left out) exits 2 naming the missing
    and unexpected columns.
    """
    run_stage(lambda: run_predict(model, input, output, rejected))


app = typer.Typer(add_completion=False)
app.command()(predict)

if __name__ == "__main__":
    app()
