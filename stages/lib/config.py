"""Every section of params.yaml as one frozen, typed config, and `PipelineParams`, all of them
loaded and checked once per process (`pipeline_params()`).

Stages read `p = pipeline_params()` and then `p.split`, `p.anonymize.policies`, ...; none reads
params.yaml as a dict. A section is validated by stages.lib.params (pydantic, strict, unknown keys
refused) into the dataclass below, whose `__post_init__` checks ranges; its errors are one line
each, naming the dotted key, the value given and what was expected.

No config class has a default of its own where params.yaml states the value: params.yaml is the
one source of every tunable (tests/test_params.py checks that each field is in params.yaml).
The exceptions are TrainConfig and DPConfig, kept as the train stage wrote them, whose defaults
equal params.yaml (tests/test_train_plan.py asserts it), and PrepConfig's `clip`, no params key.
Nothing here imports torch.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from stages.lib.features import Policy
from stages.lib.params import PARAMS_FILE, ParamsError, coerce, load_params
from stages.lib.schema import Schema, load_schema

# ---------------------------------------------------------------------------------------------
# io, ingest, clean, validate

# A batch file's format (stages.lib.sources reads them).
Format = Literal["csv", "tsv", "jsonl", "parquet"]


@dataclass(frozen=True)
class IoConfig:
    """The `io` section of params.yaml."""

    partition_rows: int

    def __post_init__(self) -> None:
        if self.partition_rows < 1:
            raise ParamsError(
                f"io.partition_rows: {self.partition_rows} is not a row count; expected a whole "
                "number >= 1 (rows per Parquet partition file; 100000 is the default)"
            )


@dataclass(frozen=True)
class IngestConfig:
    """The `ingest` section of params.yaml."""

    sources: tuple[str, ...]
    format: Format | None
    header: bool


@dataclass(frozen=True)
class CleanConfig:
    """The `clean` section of params.yaml."""

    missing_values: tuple[str, ...]
    date_formats: tuple[str, ...]
    label_aliases: dict[str, str]
    reject_bad_format_in: tuple[str, ...]
    on_existing_key: Literal["quarantine", "replace"]


Severity = Literal["critical", "warning", "off"]


@dataclass(frozen=True)
class ValidateConfig:
    """The `validate` section of params.yaml."""

    # An expectation family not listed here is critical.
    severity: dict[str, Severity]
    max_null_share: float
    min_class_share: float
    max_class_share: float


# ---------------------------------------------------------------------------------------------
# anonymize, split, augment


def _policy_form(value: Any) -> Any:
    """A policy as params.yaml writes it: a bare action (`drop`) is short for {action: drop}."""
    return {"action": value} if isinstance(value, str) else value


# A column's policy: `drop` or a mapping such as {action: generalize, truncate: 3}.
PolicyParam = Annotated[Policy, pydantic.BeforeValidator(_policy_form)]


@dataclass(frozen=True)
class AnonymizeConfig:
    """The `anonymize` section of params.yaml."""

    # Per column; a column not listed gets its role's default (stages.lib.features).
    policies: dict[str, PolicyParam]
    # Rows in equivalence classes (over the quasi-identifiers) smaller than k are suppressed to
    # quarantine; null only measures.
    k: int | None
    # Free text: runs of this many digits or more that no pattern classified are masked as
    # <NUMBER> (null: off). See params.yaml for what it costs.
    min_digit_run: int | None

    def __post_init__(self) -> None:
        if self.k is not None and self.k < 1:
            raise ParamsError(
                f"anonymize.k: expected 1 or more (or null to only measure), got {self.k}"
            )
        if self.min_digit_run is not None and not 5 <= self.min_digit_run <= 20:
            raise ParamsError(
                f"anonymize.min_digit_run: expected 5..20 (or null to switch the rule off), "
                f"got {self.min_digit_run}"
            )


@dataclass(frozen=True)
class SplitConfig:
    """The `split` section of params.yaml."""

    fractions: dict[str, float]
    # Mixed into the hash: changing it reshuffles every record deliberately.
    seed: str


@dataclass(frozen=True)
class TextAugment:
    """Per-token probabilities of the text perturbations."""

    p_delete: float  # drop a token
    p_swap: float  # expected share of tokens moved by a random swap
    p_char_noise: float  # per character: drop, double or transpose it

    def __post_init__(self) -> None:
        for name in ("p_delete", "p_swap", "p_char_noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ParamsError(f"augment.text.{name}: {value} is not a probability in [0, 1]")


@dataclass(frozen=True)
class AugmentConfig:
    """The `augment` section of params.yaml."""

    seed: int
    # oversample: add perturbed copies of minority-class rows; weights: add nothing and let train
    # weight the classes (its own class_weights switch); none: no balancing.
    balance: Literal["oversample", "weights", "none"]
    # Oversample each class up to this share of the majority class's count (1.0 = equal counts).
    target_ratio: float
    # Further perturbed copies of randomly drawn rows (any class), as a share of the split.
    extra_fraction: float
    # The most perturbed copies of one source row, oversampling and extra copies together: a
    # class of two rows must not become a thousand near-copies of them.
    max_copies_per_row: int
    text: TextAugment
    # Relative noise on numeric features of added rows: x * (1 + jitter * N(0, 1)), rounded for
    # integer columns and clipped to the schema's min/max. Relative, so that zeros (most
    # capital_gain values) stay zero. 0 turns it off.
    numeric_jitter: float

    def __post_init__(self) -> None:
        if not 0.0 < self.target_ratio <= 1.0:
            raise ParamsError(f"augment.target_ratio: {self.target_ratio} is not in (0, 1]")
        if self.extra_fraction < 0.0:
            raise ParamsError(f"augment.extra_fraction: {self.extra_fraction} is negative")
        if self.numeric_jitter < 0.0:
            raise ParamsError(f"augment.numeric_jitter: {self.numeric_jitter} is negative")
        if self.max_copies_per_row < 0:
            raise ParamsError(f"augment.max_copies_per_row: {self.max_copies_per_row} is negative")


# ---------------------------------------------------------------------------------------------
# evaluate, orchestration


@dataclass(frozen=True)
class GateConfig:
    """Thresholds the model must meet; null switches a check off."""

    min_accuracy: float | None
    min_roc_auc: float | None
    min_macro_f1: float | None
    max_ece: float | None
    max_demographic_parity_diff: float | None
    max_equal_opportunity_diff: float | None
    # Accuracy points (0-100 scale) the model must gain over logistic regression on the same split.
    min_lift_over_baseline: float | None
    # Highest ROC-AUC a loss-threshold membership-inference attack may reach (0.5 = no leak).
    max_membership_auc: float | None


@dataclass(frozen=True)
class EvaluateConfig:
    """The `evaluate` section of params.yaml."""

    # Columns to slice by; empty means the schema's sensitive columns.
    slices: tuple[str, ...]
    # The class whose rate the fairness gaps and the ROC/PR curves use; null means the last class.
    positive_class: str | None
    calibration_bins: int
    # A group enters a gap only with at least this many rows (for equal opportunity: rows of the
    # positive class), so that a handful of records cannot swing the gate.
    min_slice_size: int
    gate: GateConfig

    def __post_init__(self) -> None:
        if self.calibration_bins < 1:
            raise ParamsError("evaluate.calibration_bins must be at least 1")
        if self.min_slice_size < 1:
            raise ParamsError("evaluate.min_slice_size must be at least 1")


@dataclass(frozen=True)
class OrchestrationConfig:
    """The `orchestration` section of params.yaml (flows/deploy.py)."""

    # Cron (UTC) of the scheduled full run; null: flows.deploy's own (Mondays 03:00 UTC).
    cron: str | None


# ---------------------------------------------------------------------------------------------
# train


@dataclass(frozen=True)
class PrepConfig:
    """The knobs of preprocessing (a subset of the train params, built by TrainConfig.prep:
    no defaults of its own, so params.yaml stays their one source)."""

    cat_min_count: int
    log1p_skew: float
    text_buckets: int  # 0: auto (the model's text_buckets)
    text_buckets_cap: int | None  # the most buckets allowed (DP); None: no cap
    ngram_min: int
    ngram_max: int
    word_ngram_max: int  # word 1..n-grams hashed beside the character n-grams; 0: none
    text_max_chars: int
    numeric_bins: int  # bins per numeric column for its piecewise-linear encoding
    bin_edges: str  # quantile | tree (target-aware: a decision tree's thresholds)
    clip: float = 10.0  # standardised numbers are clipped to +-clip (not a params setting)


# The range each number of the train section must lie in: (check, what params.yaml should say).
TRAIN_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: v >= 1, "1.. (at least one epoch)"),
    "min_steps": (lambda v: v >= 0, "0.."),
    "max_steps": (lambda v: v >= 0, "0.. (0: no limit)"),
    "batch_size": (lambda v: v >= 0, "0.. (0: auto)"),
    "lr": (lambda v: v > 0, "above 0"),
    "min_lr_ratio": (lambda v: 0 <= v <= 1, "0..1"),
    "warmup_fraction": (lambda v: 0 <= v < 1, "0..1 (below 1)"),
    "weight_decay": (lambda v: v >= 0, "0.."),
    "grad_clip": (lambda v: v >= 0, "0.. (0: off)"),
    "width": (lambda v: v >= 1, "1.."),
    "blocks": (lambda v: v >= 0, "0.."),
    "dropout": (lambda v: 0 <= v < 1, "0..1 (a probability below 1)"),
    "cat_emb_dim": (lambda v: v >= 1, "1.."),
    "cat_min_count": (lambda v: v >= 1, "1.."),
    "text_dim": (lambda v: v >= 1, "1.."),
    "text_lr": (lambda v: v == "auto" or v > 0, "above 0, or auto"),
    "text_deep_lr": (lambda v: v > 0, "above 0"),
    "text_buckets": (lambda v: v >= 0, "0 (auto) or 1.."),
    "ngram_min": (lambda v: v >= 1, "1.."),
    "word_ngram_max": (lambda v: v >= 0, "0.. (0: none)"),
    "text_max_chars": (lambda v: v >= 1, "1.."),
    "numeric_bins": (lambda v: v >= 0, "0.. (0: none)"),
    "patience": (lambda v: v >= 1, "1.."),
    "patience_min_steps": (lambda v: v >= 0, "0.."),
    "gpu_resident_fraction": (lambda v: 0 < v <= 1, "0..1 (above 0)"),
    "plr_dim": (lambda v: v >= 0, "0.. (0: none)"),
    "plr_frequencies": (lambda v: v >= 1, "1.."),
    "plr_sigma": (lambda v: v > 0, "above 0"),
    "ensemble": (lambda v: v >= 1, "1.. (1: one network)"),
    "label_smoothing": (lambda v: 0 <= v < 1, "0..1 (below 1)"),
}


# Periodic embeddings overfit small tables: a Titanic-sized one (623 training rows) lost 1.2
# points against none (tests/test_train_plan.py), while 2,000 Adult rows gained 0.45 and the
# sample's 22,178 gained 0.8 (params.yaml's PLR table). Below this many rows train leaves them out.
PLR_MIN_ROWS = 2000
DP_TEXT_BUCKETS = 4096  # under DP: batch x 4096 x (text_dim + classes) floats per step


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy (DP-SGD with Opacus): per-sample clipping, noise, Poisson batches."""

    enabled: bool = False
    epsilon: float = 8.0  # the target: the noise is set so that the run spends at most this
    delta: float | None = None  # None: 1 / training rows
    max_grad_norm: float = 1.0  # per-sample gradient clipping norm


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml (tests/test_train.py asserts the defaults equal it)."""

    seed: int = 20240601
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on a GPU that has it
    epochs: int = 20  # upper bound; early stopping usually ends sooner
    min_steps: int = 1000  # small data: more epochs, so that training takes at least this
    max_steps: int = 0  # 0: no limit
    batch_size: int = 0  # 0: rows / 64, clipped to 32..4096, rounded to a power of two
    lr: float = 0.002  # at batch 512; other batch sizes scale it by sqrt(batch / 512)
    min_lr_ratio: float = 0.1
    warmup_fraction: float = 0.05  # share of the planned steps spent warming up
    weight_decay: float = 0.05
    grad_clip: float = 1.0  # 0: off (DP clips per sample instead)
    width: int = 32
    blocks: int = 1
    dropout: float = 0.3
    cat_emb_dim: int = 16
    cat_min_count: int = 5
    text_dim: int = 8
    text_lr: float | Literal["auto"] = "auto"  # SGD's rate for the sparse text tables, at batch 512
    text_buckets: int = 0  # 0: auto, from the training texts' distinct n-grams
    ngram_min: int = 1
    ngram_max: int = 3
    word_ngram_max: int = 2
    text_max_chars: int = 1000
    numeric_bins: int = 32
    bin_edges: Literal["quantile", "tree"] = "tree"
    log1p_skew: float = 2.0
    patience: int = 6  # epochs without val-loss improvement before stopping ...
    patience_min_steps: int = 300  # ... and at least this many optimiser steps
    class_weights: bool = False
    prior_correction: bool = True
    compile: bool = False
    gpu_resident_fraction: float = 0.5
    resume: bool = True
    dp: DPConfig = dataclasses.field(default_factory=DPConfig)
    # issue 16 (model): periodic numeric embeddings, TabM-mini ensembling, label smoothing
    plr_dim: int = 16  # PLR embedding width per numeric column; 0: none
    plr_frequencies: int = 16
    plr_sigma: float = 10.0
    ensemble: int = 4  # TabM-mini members sharing the MLP; 1: one network
    label_smoothing: float = 0.0
    calibrate: bool = True  # fit a temperature on val after training (argmax, ranking unchanged)
    # issue 16 (text/DP)
    text_idf: bool = True  # weigh n-grams by their train idf (TF-IDF bags); never under DP
    text_deep_lr: float = 0.1  # SGD's rate for the text embeddings of the deep part, batch 512

    def __post_init__(self) -> None:
        """Out-of-range settings are a params error naming the key, not a torch traceback later."""
        bad = [
            f"train.{name}: {getattr(self, name)!r} is outside {text}"
            for name, (ok, text) in TRAIN_RANGES.items()
            if not ok(getattr(self, name))
        ]
        if self.ngram_min > self.ngram_max:
            bad.append(f"train.ngram_min: {self.ngram_min} is above ngram_max {self.ngram_max}")
        if bad:
            raise ParamsError("; ".join(bad) + " (fix params.yaml's train section)")

    def prep(self) -> PrepConfig:
        """The preprocessing part of the config."""
        return PrepConfig(
            cat_min_count=self.cat_min_count,
            log1p_skew=self.log1p_skew,
            # DP needs dense per-sample gradients [batch, buckets, dim] of the text tables
            text_buckets=self.text_buckets,
            text_buckets_cap=DP_TEXT_BUCKETS if self.dp.enabled else None,
            ngram_min=self.ngram_min,
            ngram_max=self.ngram_max,
            word_ngram_max=self.word_ngram_max,
            text_max_chars=self.text_max_chars,
            numeric_bins=self.numeric_bins,
            bin_edges=self.bin_edges,
        )

    def net(self, n_rows: int | None = None) -> dict[str, Any]:
        """The network-shape part of the config (NetConfig's optional knobs); given the training
        rows, without PLR below PLR_MIN_ROWS."""
        keys = ("cat_emb_dim", "text_dim", "width", "blocks", "dropout")
        keys += ("plr_dim", "plr_frequencies", "plr_sigma", "ensemble")
        shape = {k: getattr(self, k) for k in keys}
        if n_rows is not None and n_rows < PLR_MIN_ROWS:
            shape["plr_dim"] = 0
        return shape


# ---------------------------------------------------------------------------------------------
# All sections together


class PipelineParams(pydantic.BaseModel):
    """params.yaml: one typed, frozen config per section; no other key is allowed."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    schema_: Schema = pydantic.Field(alias="schema")
    io: IoConfig
    ingest: IngestConfig
    clean: CleanConfig
    validate_: ValidateConfig = pydantic.Field(alias="validate")
    anonymize: AnonymizeConfig
    split: SplitConfig
    augment: AugmentConfig
    evaluate: EvaluateConfig
    orchestration: OrchestrationConfig
    train: TrainConfig
    # The sections as params.yaml wrote them, for digests of what the user wrote (train's
    # schema_digest); never read for a setting.
    _written: dict[str, Any] = pydantic.PrivateAttr(default_factory=dict)

    # `schema` and `validate` are BaseModel attributes: the fields take their names as aliases.
    @property
    def schema(self) -> Schema:  # type: ignore[override]
        """The `schema` section (stages.lib.schema.Schema, checked by load_schema)."""
        return self.schema_

    @property
    def validate(self) -> ValidateConfig:  # type: ignore[override]
        """The `validate` section."""
        return self.validate_

    def written(self, dotted: str) -> Any:
        """A copy of a part of params.yaml as written (`anonymize.policies`), for digests."""
        node: Any = self._written
        for part in dotted.split("."):
            node = node[part]
        return copy.deepcopy(node)


SECTIONS: dict[str, Any] = {
    "io": IoConfig,
    "ingest": IngestConfig,
    "clean": CleanConfig,
    "validate": ValidateConfig,
    "anonymize": AnonymizeConfig,
    "split": SplitConfig,
    "augment": AugmentConfig,
    "evaluate": EvaluateConfig,
    "orchestration": OrchestrationConfig,
    "train": TrainConfig,
}


def parse_params(raw: Mapping[str, Any], where: str = "params.yaml") -> PipelineParams:
    """PipelineParams from params.yaml's content; every problem of every section in one
    ParamsError, one line each."""
    allowed = ["schema", *SECTIONS]
    problems = [
        f"{name}: unknown section of {where}; allowed sections: {sorted(allowed)}"
        for name in raw
        if name not in allowed
    ]
    problems += [f"{where} has no '{name}' section" for name in allowed if name not in raw]
    sections: dict[str, Any] = {}
    for name in allowed:
        if name not in raw:
            continue
        try:
            if name == "schema":
                sections[name] = load_schema({"schema": raw[name]})
            else:
                sections[name] = coerce(SECTIONS[name], raw[name], name)
        except ParamsError as e:
            problems.append(str(e))
    if problems:
        raise ParamsError("\n".join(problems))
    params = PipelineParams(**sections)
    params._written = copy.deepcopy(dict(raw))
    return params


def pipeline_params(path: Path | str = PARAMS_FILE) -> PipelineParams:
    """params.yaml (relative to the working directory) as PipelineParams, parsed and checked
    once per process: again only when the file's modification time or size changed (tests
    write new ones)."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
        stamp: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except FileNotFoundError:
        stamp = None  # load_params says what is missing
    return _cached(str(path), stamp)


@functools.lru_cache(maxsize=8)
def _cached(path: str, stamp: tuple[int, int] | None) -> PipelineParams:
    return parse_params(load_params(path), Path(path).name)
