"""Stage train: fit the tabular model on data/train_aug, early-stop on data/split/val.

One readable loop in the spirit of nanoGPT's train.py. Device and precision are chosen in one
place (`choose_device`); on a GPU the whole training set sits on the device when it fits and
batches are gathered there, with bf16 autocast; on CPU runs are seeded and deterministic.
Under torchrun (WORLD_SIZE > 1) each rank takes its share of every batch and the model is
DDP-wrapped; only rank 0 writes checkpoints, logs and outputs. Sizes (batch, steps, warm-up,
patience) follow the row count (`plan`); the run's state is a dataclass that is also the
checkpoint (`TrainState`); with `train.dp.enabled` Opacus makes the step DP-SGD and the ε spent
goes to metrics/train.json `dp`. The loop's parts live in stages/lib/training.py.

Imports are lean on purpose: torch, numpy, pandas, pyarrow, yaml and stages.lib only (the GPU
machine has neither Prefect, DVC nor Great Expectations).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stages.lib.config import (  # noqa: F401  (re-exported: tests and benchmarks use them)
    DP_TEXT_BUCKETS,
    DPConfig,
    PipelineParams,
    TrainConfig,
    pipeline_params,
)
from stages.lib.digest import canonical_digest
from stages.lib.features import FeatureSpec, column_policies, feature_spec
from stages.lib.io import read_dataset, write_text_atomic
from stages.lib.model import (
    Tensors,
    build_net,
    fit_preprocessor,
    forward,
    spec_to_dict,
    transform,
)
from stages.lib.paths import AUGMENTED_DIR as TRAIN_DIR
from stages.lib.paths import MODEL_PATH
from stages.lib.schema import RECORD_ID
from stages.lib.summaries import TrainFields
from stages.lib.summary import StageSummary
from stages.lib.training import (  # noqa: F401  (re-exported: tests and benchmarks use them)
    AUGMENTED,
    NO_DP,
    Plan,
    Privacy,
    Runtime,
    _config_dict,
    _cpu,
    auto_batch,
    choose_device,
    class_weight_tensor,
    epoch_shard,
    eval_logits,
    evaluate,
    fit_temperature,
    lr_at,
    make_optimizers,
    make_private,
    member_loss,
    plan,
    prior_shift,
    save_torch,
    seed_everything,
    set_text_idf,
    source_rows,
    tensors_digest,
    text_probe,
)

VAL_DIR = Path("data/split/val")
CHECKPOINT_DIR = Path("models/checkpoint")
CURVE_PATH = Path("plots/train_curve.csv")


# ---------------------------------------------------------------- state = checkpoint


@dataclass
class TrainState:
    """Everything a run has learnt so far; `asdict` of it is models/checkpoint/last.pt."""

    config: dict[str, Any]
    data_digest: str
    model: dict[str, torch.Tensor]
    best_model: dict[str, torch.Tensor]
    optimizers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    step: int = 0
    epoch: int = 0
    best_val_loss: float = math.inf
    best_val_accuracy: float = 0.0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    train_time_s: float = 0.0
    samples_seen: int = 0
    rng: torch.Tensor = dataclasses.field(default_factory=torch.get_rng_state)

    def as_checkpoint(self) -> dict[str, Any]:
        """Plain dict for torch.save (weights_only-loadable)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def resumes(self, cfg: TrainConfig, digest: str) -> bool:
        """Whether this state continues a run of `cfg` on data `digest` (budgets may differ)."""
        ignore = {"epochs", "max_steps", "resume", "min_steps"}
        mine = {k: v for k, v in _config_dict(cfg).items() if k not in ignore}
        theirs = {k: v for k, v in self.config.items() if k not in ignore}
        return mine == theirs and self.data_digest == digest and not cfg.dp.enabled

    def done(self, p: Plan) -> bool:
        """Out of epochs or steps, or no val-loss improvement for `patience` epochs."""
        return self.epoch >= p.epochs or self.step >= p.total_steps or self.bad_epochs >= p.patience


def load_state(
    path: Path | None, cfg: TrainConfig, digest: str, log: Callable
) -> TrainState | None:
    """The state in `path` when it continues this run, else None."""
    if not (cfg.resume and path is not None and path.exists()):
        return None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = (
        TrainState(**ckpt)
        if set(ckpt) == {f.name for f in dataclasses.fields(TrainState)}
        else None
    )
    if cfg.dp.enabled:
        log(f"{path}: a DP run starts afresh (its privacy accountant is not checkpointed)")
        return None
    if state is None or not state.resumes(cfg, digest):
        log(f"{path} is from another config or data: starting afresh")
        return None
    log(f"resumed from {path} at epoch {state.epoch}, step {state.step}")
    return state


@dataclass
class FitResult:
    """What `fit` returns: the best model, its preprocessing, the curve and run facts."""

    model: nn.Module
    state: dict[str, Any]
    history: list[dict[str, Any]]
    info: dict[str, Any]
    checkpoint: dict[str, Any]


def epoch_batches(train: Tensors, p: Plan, cfg: TrainConfig, rt: Runtime, epoch: int, loader: Any):
    """Row-index batches of one epoch: Poisson samples under DP, else this rank's shard."""
    if loader is not None:
        return [rows.to(train.x_num.device) for (rows,) in loader]
    shard = epoch_shard(
        len(train), p.batch_size, p.steps_per_epoch, cfg.seed, epoch, rt.rank, rt.world_size
    )
    if rt.world_size > 1 and epoch == 0:  # every rank says which rows it took
        sha = hashlib.sha256(shard.numpy().tobytes()).hexdigest()[:16]
        print(
            f"rank {rt.rank}/{rt.world_size}: epoch 1 shard of {len(shard)} rows, sha {sha}",
            flush=True,
        )
    return shard.to(train.x_num.device).view(p.steps_per_epoch, -1)


# ---------------------------------------------------------------- setup


def prepare(
    train_df: pd.DataFrame, val_df: pd.DataFrame, spec: FeatureSpec, cfg: TrainConfig, rt: Runtime
):
    """Preprocessing fitted on train only; tensors on the device when they fit there."""
    prep = fit_preprocessor(train_df, spec, cfg.prep())
    train, val = transform(train_df, prep), transform(val_df, prep)
    resident = rt.device.type == "cpu"
    if rt.device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(rt.device)
        resident = train.nbytes() + val.nbytes() < cfg.gpu_resident_fraction * free
    digest = tensors_digest(train)
    train = train.to(rt.device) if resident else train.pin_memory()
    return prep, train, val.to(rt.device) if resident else val, resident, digest


def wrap(model: nn.Module, cfg: TrainConfig, rt: Runtime) -> nn.Module:
    """torch.compile on a GPU when asked; DDP under torchrun."""
    if cfg.compile and rt.device.type == "cuda":
        model = torch.compile(model, dynamic=True)
    if rt.world_size > 1:
        ids = [rt.local_rank] if rt.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return model


def record_epoch(
    st: TrainState, raw: nn.Module, val_loss: float, val_acc: float, row: dict,
    by_accuracy: bool = False,
) -> bool:  # fmt: skip
    """Keep the best weights and count epochs without improvement; True when improved. Under DP
    by val accuracy: DP-SGD's noisy model is badly calibrated (params.yaml's DP table)."""
    improved = (
        val_acc > st.best_val_accuracy + 1e-4 if by_accuracy else val_loss < st.best_val_loss - 1e-4
    )
    if improved:
        st.best_val_loss, st.best_val_accuracy, st.bad_epochs = val_loss, val_acc, 0
        st.best_model = _cpu(raw.state_dict())
    else:
        st.bad_epochs += 1
    st.history.append(
        {
            "epoch": st.epoch,
            "step": st.step,
            **row,
            "val_loss": round(val_loss, 6),
            "val_accuracy": round(val_acc, 6),
        }
    )
    return improved


# ---------------------------------------------------------------- the run


@dataclass
class Run:
    """What the loop works with: device, plan, data, model, optimisers, state, privacy."""

    rt: Runtime
    cfg: TrainConfig
    p: Plan
    prep: dict[str, Any]
    train: Tensors
    val: Tensors
    resident: bool
    raw: nn.Module  # the network itself (for evaluation and state dicts)
    model: nn.Module  # what the loop calls: raw, or wrapped by DDP / torch.compile / Opacus
    opts: list[torch.optim.Optimizer]
    st: TrainState
    weight: torch.Tensor | None = None
    last: Path | None = None
    resumed_from: dict[str, int] | None = None
    loader: Any = None  # Poisson-sampling loader of row indices under DP
    privacy: Privacy | None = None
    text_probe: dict[str, Any] | None = None  # text_lr: auto's choice and its val losses

    def batch(self, rows: torch.Tensor) -> Tensors:
        """The rows' tensors on the device."""
        b = self.train.take(rows)
        return b if self.resident else b.to(self.rt.device, non_blocking=True)

    def set_lr(self, lr: float) -> None:
        """Scheduled rate on every group (text tables at their own scale); clear gradients."""
        for opt in self.opts:
            for group in opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            opt.zero_grad(set_to_none=True)

    def step(self) -> None:
        """Clip (globally; DP clips per sample itself) and step every optimiser."""
        if self.cfg.grad_clip > 0 and self.privacy is None:
            dense = [q for g in self.opts[0].param_groups for q in g["params"]]
            nn.utils.clip_grad_norm_(dense, self.cfg.grad_clip)
        for opt in self.opts:
            opt.step()

    def stop(self) -> bool:
        """Whether training ends now; under DDP rank 0 decides, so that no rank waits alone."""
        stop = self.st.done(self.p)
        if self.rt.world_size > 1:
            flag = torch.tensor([float(stop)], device=self.rt.device)
            torch.distributed.broadcast(flag, src=0)
            stop = bool(flag.item())
        return stop

    def save(self) -> None:
        """Rank 0 writes the TrainState as models/checkpoint/last.pt."""
        if self.rt.master and self.last is not None:
            self.st.model = _cpu(self.raw.state_dict())
            self.st.optimizers = [o.state_dict() for o in self.opts]
            self.st.rng = torch.get_rng_state()
            save_torch(self.last, self.st.as_checkpoint())


def setup(
    train_df: pd.DataFrame, val_df: pd.DataFrame, spec: FeatureSpec, cfg: TrainConfig,
    checkpoint_dir: Path | None, log: Callable[[str], None], build: Callable[..., nn.Module],
) -> Run:  # fmt: skip
    """Device, data, plan, model, optimisers, the resumed or a fresh state, DP or DDP."""
    rt = choose_device(cfg)
    seed_everything(cfg.seed)
    if cfg.dp.enabled:
        train_df = source_rows(train_df)
    prep, train, val, resident, digest = prepare(train_df, val_df, spec, cfg, rt)
    p = plan(len(train), cfg, rt.world_size)
    sparse = not cfg.dp.enabled and rt.world_size == 1  # Opacus and DDP want dense gradients
    raw = build(prep, **cfg.net(len(train)), sparse_text=sparse).to(rt.device)
    n_classes = len(prep["classes"])
    set_text_idf(raw, train, cfg)
    if cfg.prior_correction and hasattr(raw, "prior_shift"):
        raw.prior_shift.copy_(prior_shift(train_df, train.y.cpu(), n_classes))
    probe = text_probe(train, val, cfg, p, sparse, prep["text"]["buckets"])
    opts = make_optimizers(raw, cfg, p.lr, probe["text_lr"] if probe else None)
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    st = load_state(last, cfg, digest, log if rt.master else lambda _m: None)
    resumed_from = {"step": st.step, "epoch": st.epoch} if st else None
    if st is None:
        st = TrainState(_config_dict(cfg), digest, _cpu(raw.state_dict()), _cpu(raw.state_dict()))
    raw.load_state_dict(st.model)
    for opt, sd in zip(opts, st.optimizers, strict=False):
        opt.load_state_dict(sd)
    torch.set_rng_state(st.rng)
    run = Run(rt, cfg, p, prep, train, val, resident, raw, wrap(raw, cfg, rt), opts, st)
    run.weight = (
        class_weight_tensor(train.y, n_classes).to(rt.device) if cfg.class_weights else None
    )
    run.last, run.resumed_from, run.text_probe = last, resumed_from, probe
    if cfg.dp.enabled:
        run.model, run.opts, run.loader, run.privacy = make_private(raw, opts, len(train), p, cfg)
    return run


# ---------------------------------------------------------------- the training loop


def fit(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainConfig,
    checkpoint_dir: Path | None = None,
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
    build: Callable[..., nn.Module] = build_net,
) -> FitResult:
    """Train on `train_df`, early-stop on `val_df`; frames are not modified (`build`: the
    network for a fitted preprocessor; benchmarks pass earlier designs). With
    `checkpoint_dir`, rank 0 writes `last.pt` (the TrainState) after every epoch and a later
    call with the same config and data resumes from it."""
    run = setup(train_df, val_df, spec, cfg, checkpoint_dir, log, build)
    rt, p, st = run.rt, run.p, run.st
    log = log if rt.master else (lambda _msg: None)
    log(
        f"train: {len(run.train)} rows, val: {len(run.val)} rows, device {rt.device} "
        f"({rt.precision}), {'resident' if run.resident else 'streamed'}, batch {p.batch_size}, "
        f"lr {p.lr:.2e}, {p.steps_per_epoch} steps/epoch, up to {p.epochs} epochs, "
        f"world {rt.world_size}{f', DP target ε {cfg.dp.epsilon}' if run.privacy else ''}"
        f"{f', text_lr auto: {run.text_probe}' if run.text_probe else ''}"
    )
    stop = st.done(p)
    while not stop:
        run.model.train()
        rt.sync()
        t0, loss_sum, rows_seen = time.perf_counter(), torch.zeros((), device=rt.device), 0
        for rows in epoch_batches(run.train, p, cfg, rt, st.epoch, run.loader):
            batch = run.batch(rows)
            lr = lr_at(st.step, p, cfg.min_lr_ratio)
            run.set_lr(lr)
            with rt.autocast():
                logits = forward(run.model, batch)
            loss = member_loss(logits.float(), batch.y, run.weight, cfg.label_smoothing)
            loss.backward()
            run.step()
            st.step += 1
            rows_seen += len(rows)
            loss_sum += loss.detach() * len(rows)  # no host sync inside the loop
            if st.step >= p.total_steps:
                break
        rt.sync()
        dt = time.perf_counter() - t0
        if rt.world_size > 1:  # the epoch's train loss over every rank's shard
            torch.distributed.all_reduce(loss_sum)
        rows_seen *= rt.world_size
        st.epoch += 1
        st.train_time_s += dt
        st.samples_seen += rows_seen
        val_loss, val_acc = evaluate(run.raw, run.val, rt, run.weight)
        train_loss = float(loss_sum) / max(1, rows_seen)
        row = {"train_loss": round(train_loss, 6), "lr": lr}
        improved = record_epoch(st, run.raw, val_loss, val_acc, row, run.privacy is not None)
        stop = run.stop()
        run.save()
        log(
            f"epoch {st.epoch:3d} step {st.step:6d} train {train_loss:.4f} val {val_loss:.4f} "
            f"acc {val_acc:.4f}{' *' if improved else ''} {rows_seen / dt:,.0f} rows/s"
        )
    info = run_info(st, cfg, rt, p, run.resident, run.privacy, run.resumed_from)
    info |= {"text_lr": run.text_probe} if run.text_probe else {}
    if run.privacy:
        dp = info["dp"]
        log(f"DP: spent ε {dp['epsilon']} at δ {dp['delta']:.3g} (target {cfg.dp.epsilon})")
    run.raw.load_state_dict(st.best_model)
    info["calibration"] = calibrate(run.raw, run.val, rt) if cfg.calibrate else None
    return finish(run.raw, st, run.prep, spec, cfg, info, meta)


def calibrate(raw: nn.Module, val: Tensors, rt: Runtime) -> dict[str, float]:
    """Fit the model's temperature on val (its buffer; predictions' argmax and ranking stay):
    the val loss before and after, for metrics/train.json."""
    logits = eval_logits(raw, val, rt)
    y = val.y.to(logits.device)
    t = fit_temperature(logits, y)
    raw.temperature.fill_(t)
    before, after = (float(F.cross_entropy(logits.double() / s, y)) for s in (1.0, t))
    return {
        "temperature": t,
        "val_loss_before": round(before, 6),
        "val_loss_after": round(after, 6),
    }


VOLATILE_INFO = ("train_time_s", "samples_per_s", "resumed_from")


def run_info(
    st: TrainState, cfg: TrainConfig, rt: Runtime, p: Plan, resident: bool,
    privacy: Privacy | None, resumed_from: dict[str, int] | None,
) -> dict[str, Any]:  # fmt: skip
    """The run's facts for metrics/train.json."""
    cuda = rt.device.type == "cuda"
    return {
        "device": str(rt.device),
        "device_name": torch.cuda.get_device_name(rt.device) if cuda else "cpu",
        "precision": rt.precision,
        "world_size": rt.world_size,
        "data_resident": resident,
        "batch_size": p.batch_size,
        "lr": p.lr,
        "warmup_steps": p.warmup_steps,
        "patience_epochs": p.patience,
        "epochs_run": st.epoch,
        "steps": st.step,
        "best_val_loss": round(st.best_val_loss, 6),
        "best_val_accuracy": round(st.best_val_accuracy, 6),
        "train_time_s": round(st.train_time_s, 3),
        "samples_per_s": round(st.samples_seen / st.train_time_s, 1) if st.train_time_s else 0.0,
        "resumed_from": resumed_from,
        "torch": str(torch.__version__),
        "seed": cfg.seed,
        "dp": privacy.report() if privacy else dict(NO_DP),
    }


def finish(
    raw: nn.Module, st: TrainState, prep: dict[str, Any], spec: FeatureSpec, cfg: TrainConfig,
    info: dict[str, Any], meta: dict[str, Any] | None,
) -> FitResult:  # fmt: skip
    """The model file's contents (`raw` holds the best weights, calibrated)."""
    raw.eval()
    checkpoint = {
        "model": _cpu(raw.state_dict()),
        "step": st.step,
        "config": _config_dict(cfg),
        "net": {k: getattr(raw.cfg, k) for k in cfg.net()},  # as built (PLR follows rows)
        "preprocessor": prep,
        "spec": spec_to_dict(spec),
        "classes": list(prep["classes"]),
        "data_digest": st.data_digest,
        # Timings vary run to run; leaving them out keeps the model file byte-identical across
        # repeated CPU runs (they are in metrics/train.json).
        "info": {k: v for k, v in info.items() if k not in VOLATILE_INFO},
        **(meta or {}),
    }
    return FitResult(raw, prep, st.history, info, checkpoint)


# ---------------------------------------------------------------- the stage


def curve_csv(history: list[dict[str, Any]]) -> str:
    """The training curve as CSV, for `dvc plots`."""
    cols = ["epoch", "step", "train_loss", "val_loss", "val_accuracy"]
    return pd.DataFrame(history, columns=cols).to_csv(index=False)


def schema_digest(p: PipelineParams) -> str:
    """A hash of the schema and policies (as params.yaml writes them) the features come from."""
    written = {"schema": p.written("schema"), "policies": p.written("anonymize.policies")}
    return canonical_digest(written, 16)


def main() -> None:
    """Read params and splits, train, write the model, checkpoint, curve and summary."""
    p = pipeline_params()
    cfg, schema = p.train, p.schema
    spec = feature_spec(schema, column_policies(schema, p.anonymize.policies))
    train_df = read_dataset(TRAIN_DIR).to_pandas()
    val_df = read_dataset(VAL_DIR).to_pandas()
    summary = StageSummary("train")
    summary.rows_in = summary.rows_out = len(train_df)
    meta = {"schema_digest": schema_digest(p)}
    try:
        result = fit(train_df, val_df, spec, cfg, checkpoint_dir=CHECKPOINT_DIR, meta=meta)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", "0")) != 0:
        return
    save_torch(MODEL_PATH, result.checkpoint)
    write_text_atomic(CURVE_PATH, curve_csv(result.history))
    augmented = (
        int(train_df[AUGMENTED].fillna(False).astype(bool).sum()) if AUGMENTED in train_df else 0
    )
    summary.fields = TrainFields.model_validate(
        {
            "val_rows": len(val_df),
            "augmented_rows": augmented,
            "distinct_records": int(train_df[RECORD_ID].nunique())
            if RECORD_ID in train_df
            else None,
            "features": spec_to_dict(spec),
            "schema_digest": meta["schema_digest"],
            **result.info,
        }
    )
    summary.write()


if __name__ == "__main__":
    from stages.lib.errors import run_stage

    run_stage(main)
