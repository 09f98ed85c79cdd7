"""The typed contract of metrics/<stage>.json: one pydantic model per stage summary.

A stage builds its `...Fields` model (the facts beyond row accounting) and hands it to
`StageSummary.write`, which checks the accounting and writes the stage's `...Summary` (accounting
+ fields); the report, lineage and the tests read the files back through the same models
(`read_summary`). `extra="forbid"` everywhere: a misspelt or unknown key fails validation instead
of reaching a reader that guesses. A field that a stage writes only sometimes defaults to None
and is left out of the file when not set (`dump`), so the JSON holds exactly what was given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class Model(BaseModel):
    """A strict part of a summary: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Summary(Model):
    """The row accounting every stage writes: in = out + quarantined + duplicates - added."""

    stage: str
    rows_in: int
    rows_out: int
    rows_quarantined: int
    quarantined_by_reason: dict[str, int]
    duplicates: int
    rows_added: int
    duration_s: float
    peak_memory_mb: float


# ---------------------------------------------------------------------------------- ingest


class IngestBatch(Model):
    """One batch file ingested (or reused): its id, source, hash, rows and partitions."""

    batch: str
    file: str
    sha256: str
    rows: int
    partitions: int
    reused: bool


class SkippedFile(Model):
    """A file of a source folder that is not data, and why it was not read."""

    file: str
    reason: str


class IngestFields(Model):
    """ingest: the batches, the key id, how record ids were made, files skipped."""

    batches: list[IngestBatch]
    key_id: str
    record_id: str
    skipped_files: list[SkippedFile]


class IngestSummary(Summary, IngestFields):
    """metrics/ingest.json."""


# ---------------------------------------------------------------------------------- clean


class CleanFields(Model):
    """clean: duplicates by kind (only when there were some), replacements, nulled values,
    batches none of whose rows has a label."""

    duplicates_by_kind: dict[str, int] | None = Field(None, exclude_if=lambda v: v is None)
    rows_replaced: int
    values_nulled: dict[str, int]
    batches_without_labels: list[str]


class CleanSummary(Summary, CleanFields):
    """metrics/clean.json."""


# ---------------------------------------------------------------------------------- validate


class ValidateFields(Model):
    """validate: expectations run, passed and failed by severity; the data docs' path."""

    expectations: int
    passed: int
    failed_critical: int
    failed_warning: int
    partitions: int
    data_docs: str


class ValidateSummary(Summary, ValidateFields):
    """metrics/validate.json."""


class ExpectationResult(Model):
    """One expectation's outcome over the whole dataset (aggregates only, never a value)."""

    expectation: str
    family: str
    severity: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    # GX's observed value: a dtype name, a count or a share (exact types kept as written).
    observed: bool | int | float | str | None
    error: str | None


class ValidationReport(Model):
    """reports/validation/results.json: rows, partitions and every expectation's outcome."""

    rows: int
    partitions: int
    results: list[ExpectationResult]


# ---------------------------------------------------------------------------------- anonymize


class ScanSummary(Model):
    """The independent scan's verdict (reports/privacy/scan.json without its details)."""

    passed: bool
    findings: int
    by_entity: dict[str, int]
    checks: list[str]


class ScanFinding(Model):
    """One identifier the scan found in the output: where, what and which check; never a value."""

    record_id: str
    column: str
    entity: str
    check: str


class ScanReport(ScanSummary):
    """reports/privacy/scan.json: the verdict and the first findings."""

    details: list[ScanFinding]

    def verdict(self) -> ScanSummary:
        """The verdict without the details (what metrics/anonymize.json records)."""
        return ScanSummary.model_validate(self.model_dump(exclude={"details"}))


class SizeBin(Model):
    """Equivalence classes (and their rows) of one class-size band."""

    size: str
    classes: int
    rows: int


class Risk(Model):
    """Re-identification risk: smallest class (k), share of unique rows, class-size histogram."""

    k: int | None
    unique_share: float
    classes: int
    histogram: list[SizeBin]


class AnonymizeFields(Model):
    """anonymize: key id, policies in words, entities replaced, scan, k and risk."""

    key_id: str
    policies: dict[str, str]
    entity_counts: dict[str, dict[str, int]]
    scan: ScanSummary
    quasi_identifiers: list[str]
    k_threshold: int | None  # null: k-anonymity only measured
    risk_before_suppression: Risk
    risk_after_suppression: Risk


class AnonymizeSummary(Summary, AnonymizeFields):
    """metrics/anonymize.json."""


# ---------------------------------------------------------------------------------- split


class ClassShare(Model):
    """Rows of one class in one split, and their share."""

    rows: int
    share: float


class SplitBalance(Model):
    """One split's rows and class balance."""

    rows: int
    classes: dict[str, ClassShare]


class SplitFields(Model):
    """split: fractions asked and got, seed, overlap check, feature duplicates, balance."""

    fractions: dict[str, float]
    seed: str
    actual_fractions: dict[str, float]
    overlap_checked: bool
    feature_duplicates: dict[str, int]
    class_balance: dict[str, SplitBalance]


class SplitSummary(Summary, SplitFields):
    """metrics/split.json."""


# ---------------------------------------------------------------------------------- augment


class ShortOfTarget(Model):
    """Classes that max_copies_per_row held below the oversampling target."""

    target: int
    rows: dict[str, int]


class AugmentFields(Model):
    """augment: method, seed, class counts before and after, copies; the optional notes."""

    balance: str
    seed: int
    class_counts_before: dict[str, int]
    class_counts_after: dict[str, int]
    augmented_by_class: dict[str, int]
    distinct_sources: int
    max_copies_per_row: int
    most_copies_of_one_row: int
    short_of_target: ShortOfTarget | None = None
    class_weights: dict[str, float] | None = None
    classes_without_rows: list[str] | None = None


class AugmentSummary(Summary, AugmentFields):
    """metrics/augment.json."""


# ---------------------------------------------------------------------------------- train


class Features(Model):
    """The features the model sees (FeatureSpec as lists)."""

    numeric: list[str]
    categorical: list[str]
    text: list[str]
    label: str
    classes: list[str]


class DPReport(Model):
    """Differential privacy: off, or the ε spent at δ, the clipping norm and the noise."""

    enabled: bool
    epsilon: float | None
    delta: float | None
    max_grad_norm: float | None
    noise_multiplier: float | None
    not_covered: str | None = None  # what ε does not cover (the preprocessing), when DP is on


class TextProbe(Model):
    """`text_lr: auto`: the rate chosen and the probe's val loss at each rate tried."""

    text_lr: float
    val_loss: dict[str, float]


class ResumedFrom(Model):
    """The checkpoint a run resumed from."""

    step: int
    epoch: int


class Calibration(Model):
    """train's temperature scaling: the temperature fitted on val and val loss around it."""

    temperature: float
    val_loss_before: float
    val_loss_after: float


class TrainFields(Model):
    """train: data, features, device, schedule, results, time and differential privacy."""

    val_rows: int
    augmented_rows: int
    distinct_records: int | None
    features: Features
    schema_digest: str
    device: str
    device_name: str
    precision: str
    world_size: int
    data_resident: bool
    batch_size: int
    lr: float
    warmup_steps: int
    patience_epochs: int
    epochs_run: int
    steps: int
    best_val_loss: float
    best_val_accuracy: float
    train_time_s: float
    samples_per_s: float
    resumed_from: ResumedFrom | None
    torch: str
    seed: int
    dp: DPReport
    text_lr: TextProbe | None = None  # written when text_lr: auto was resolved by the probe
    calibration: Calibration | None = None  # None: train.calibrate is off


class TrainSummary(Summary, TrainFields):
    """metrics/train.json."""


# ---------------------------------------------------------------------------------- evaluate


class MacroClasses(Model):
    """How many classes the macro averages cover, and which are absent from the test split."""

    present: int
    total: int
    absent: list[str]


class Scores(Model):
    """Headline scores of a model or baseline (NaN written as null)."""

    n: int
    accuracy: float | None
    macro_precision: float | None
    macro_recall: float | None
    macro_f1: float | None
    macro_classes: MacroClasses
    roc_auc: float | None
    pr_auc: float | None
    log_loss: float | None
    roc_auc_micro: float | None = None
    pr_auc_micro: float | None = None


class ClassScores(Model):
    """Precision, recall, F1 and support of one class."""

    precision: float | None
    recall: float | None
    f1: float | None
    support: int


class Gap(Model):
    """A fairness gap over one column's groups, or why it was not measured."""

    value: float | None
    groups: int
    reason: str | None


class Fairness(Model):
    """The fairness gaps by column."""

    demographic_parity_diff: dict[str, Gap]
    equal_opportunity_diff: dict[str, Gap]


class Membership(Model):
    """A loss-threshold membership-inference audit."""

    attack: str
    members: int
    non_members: int
    auc: float | None
    advantage: float | None


class MajorityBaseline(Scores):
    """Always the most frequent training class."""

    class_: str = Field(alias="class")


class LogisticBaseline(Scores):
    """Logistic regression on the same features, with its gaps and audit."""

    fairness: Fairness
    membership: Membership | None = None


class Baselines(Model):
    """The baselines beside the model."""

    majority: MajorityBaseline
    logistic_regression: LogisticBaseline | None = None


class Lift(Model):
    """The model's gain over logistic regression (empty without that baseline)."""

    accuracy: float | None = None
    roc_auc: float | None = None
    macro_f1: float | None = None
    accuracy_points: float | None = None


class Gate(Model):
    """The gate's verdict and the thresholds it applied (null ones left out)."""

    passed: bool
    failures: list[str]
    skipped: list[str]
    thresholds: dict[str, float]


class EvaluateFields(Scores):
    """evaluate: scores, per class, calibration, fairness, audit, baselines, lift, gate."""

    per_class: dict[str, ClassScores]
    positive_class: str
    calibration: str
    ece: float | None
    fairness: Fairness
    membership: Membership | None = None
    baselines: Baselines
    lift_over_logistic_regression: Lift
    gate: Gate


class EvaluateSummary(Summary, EvaluateFields):
    """metrics/evaluate.json."""


# ---------------------------------------------------------------------------------- reading

SUMMARIES: dict[str, type[Summary]] = {
    "ingest": IngestSummary,
    "clean": CleanSummary,
    "validate": ValidateSummary,
    "anonymize": AnonymizeSummary,
    "split": SplitSummary,
    "augment": AugmentSummary,
    "train": TrainSummary,
    "evaluate": EvaluateSummary,
}

STAGE_OF: dict[type[Summary], str] = {model: stage for stage, model in SUMMARIES.items()}


def summary_model(stage: str) -> type[Summary]:
    """The model of a stage's summary; a stage without fields of its own has the base model."""
    return SUMMARIES.get(stage, Summary)


def dump(model: BaseModel) -> dict[str, Any]:
    """The JSON-ready dict of a summary: the keys given (optional ones left unset stay out)."""
    return model.model_dump(by_alias=True, exclude_unset=True)


def read_summary(path: Path | str, stage: str | None = None) -> Summary:
    """metrics/<stage>.json through its model; raises OSError or pydantic.ValidationError."""
    path = Path(path)
    return summary_model(stage or path.stem).model_validate_json(path.read_bytes())


def load_summary(path: Path | str, stage: str | None = None) -> tuple[Summary | None, str | None]:
    """A summary, or (None, why) when the file is missing or does not match its model."""
    return load_model(path, summary_model(stage or Path(path).stem))


M = TypeVar("M", bound=BaseModel)


def load_model(path: Path | str, model: type[M]) -> tuple[M | None, str | None]:
    """A JSON file through its model (a summary, ScanReport, ValidationReport), or (None, why)
    when the file is missing, not JSON or does not match the model."""
    try:
        return model.model_validate_json(Path(path).read_bytes()), None
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except ValidationError as e:
        return None, f"{path} does not match its model: {_short(e)}"
    except OSError as e:
        return None, f"{path} could not be read: {e}"


def _short(error: ValidationError) -> str:
    """The first few problems of a validation error on one line: wrong and unknown keys before
    missing ones (a misspelt key is both)."""
    found = sorted(error.errors(), key=lambda e: e["type"] == "missing")[:4]
    parts = [f"{'.'.join(map(str, e['loc'])) or '(file)'}: {e['msg']}" for e in found]
    more = error.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")
