"""Stage train: fit the tabular model on data/train_aug, early-stop on data/split/val.

One readable loop in the spirit of nanoGPT's train.py. Device and precision are chosen in one
place (`choose_device`); on a GPU the whole training set sits on the device when it fits and
batches are gathered there, with bf16 autocast; on CPU runs are seeded and deterministic.
Under torchrun (WORLD_SIZE > 1) each rank takes its share of every batch and the model is
DDP-wrapped; only rank 0 writes checkpoints, logs and outputs.

Imports are lean on purpose: torch, numpy, pandas, pyarrow, yaml and stages.lib only (the GPU
machine has neither Prefect, DVC nor Great Expectations).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stages.lib.features import FeatureSpec, column_policies, feature_spec
from stages.lib.io import read_dataset, write_bytes_atomic, write_text_atomic
from stages.lib.model import (
    PrepConfig,
    Tensors,
    build_net,
    fit_preprocessor,
    forward,
    spec_to_dict,
    transform,
)
from stages.lib.params import load_params, section
from stages.lib.schema import RECORD_ID, load_schema
from stages.lib.summary import StageSummary

TRAIN_DIR = Path("data/train_aug")
VAL_DIR = Path("data/split/val")
MODEL_PATH = Path("models/model.pt")
CHECKPOINT_DIR = Path("models/checkpoint")
CURVE_PATH = Path("plots/train_curve.csv")
AUGMENTED = "_augmented"


@dataclass(frozen=True)
class TrainConfig:
    """The `train` section of params.yaml."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on a GPU that has it
    epochs: int = 60  # upper bound; early stopping usually ends sooner
    max_steps: int = 0  # 0: no limit
    batch_size_cpu: int = 512
    batch_size_gpu: int = 4096
    lr: float = 2e-3  # at batch_size_cpu; other batch sizes scale it by sqrt(batch / that)
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    grad_clip: float = 1.0  # 0: off
    hidden: tuple[int, ...] = (256, 128)
    dropout: float = 0.1
    cat_emb_dim: int = 16  # cap on a category's embedding width
    cat_min_count: int = 5  # rarer values map to <unk>
    text_dim: int = 32
    text_buckets: int = 65536
    ngram_min: int = 1
    ngram_max: int = 3
    text_max_chars: int = 1000
    numeric_bins: int = 16  # quantile bins per numeric column, embedded beside its value; 0: off
    log1p_skew: float = 2.0  # log1p a non-negative numeric column whose train skew exceeds this
    patience: int = 6  # epochs without val-loss improvement before stopping
    class_weights: bool = False  # inverse-frequency loss weights
    compile: bool = False  # torch.compile on a GPU
    gpu_resident_fraction: float = 0.5  # keep data on the GPU when it takes < this of free memory
    resume: bool = True  # continue from models/checkpoint when config and data match

    def prep(self) -> PrepConfig:
        """The preprocessing part of the config."""
        return PrepConfig(
            cat_min_count=self.cat_min_count,
            log1p_skew=self.log1p_skew,
            text_buckets=self.text_buckets,
            ngram_min=self.ngram_min,
            ngram_max=self.ngram_max,
            text_max_chars=self.text_max_chars,
            numeric_bins=self.numeric_bins,
        )

    def net(self) -> dict[str, Any]:
        """The network-shape part of the config (NetConfig's optional knobs)."""
        return {
            "cat_emb_dim": self.cat_emb_dim,
            "text_dim": self.text_dim,
            "hidden": list(self.hidden),
            "dropout": self.dropout,
        }


# ---------------------------------------------------------------- device, precision, ranks


@dataclass(frozen=True)
class Runtime:
    """Where and how training runs: device, precision, distributed rank."""

    device: torch.device
    precision: Literal["fp32", "bf16"]
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def master(self) -> bool:
        """Whether this process writes checkpoints, logs and outputs."""
        return self.rank == 0

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on a GPU, nothing otherwise."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


def choose_device(cfg: TrainConfig) -> Runtime:
    """The one place that picks device, precision, determinism and the distributed setup."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is 'cuda' but no CUDA device is available")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if want_cuda else "gloo")
    if want_cuda:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        bf16_ok = torch.cuda.is_bf16_supported()
        precision = "bf16" if cfg.precision in ("auto", "bf16") and bf16_ok else "fp32"
    else:
        device = torch.device("cpu")
        precision = "fp32"  # bf16 autocast on CPU is slow and gains nothing here
        torch.use_deterministic_algorithms(True)
    return Runtime(device, precision, rank, world, local)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy (every rank alike, so initial weights agree before DDP broadcasts)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# ---------------------------------------------------------------- helpers of the loop


def lr_at(step: int, total: int, cfg: TrainConfig, base_lr: float) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * base_lr (nanoGPT's schedule)."""
    if step < cfg.warmup_steps:
        return base_lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    min_lr = base_lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (base_lr - min_lr)


def class_weight_tensor(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k * count), 0 for a class absent from training."""
    counts = torch.bincount(y, minlength=n_classes).double()
    w = torch.where(counts > 0, y.numel() / (n_classes * counts.clamp(min=1)), 0.0)
    return w.float()


def epoch_shard(
    n: int, batch_size: int, steps: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> torch.Tensor:
    """The rows `rank` trains on in `epoch`, batch after batch.

    A seeded permutation (seed + epoch: every rank, and a resumed run, draw the same one) cut
    into `steps` global batches; each rank takes its own slice of every batch, so the ranks'
    shards are disjoint and together are what one process would see.
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    per = batch_size // world
    batches = perm[: steps * batch_size].view(steps, batch_size)
    return batches[:, rank * per : (rank + 1) * per].reshape(-1)


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """AdamW; weight decay on matrices only (not on biases and norms), as in nanoGPT."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Tensors, rt: Runtime, weight: torch.Tensor | None, batch: int = 16384
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on `data` (moved to the device chunk by chunk)."""
    model.eval()
    loss_sum = torch.zeros((), device=rt.device, dtype=torch.float64)
    correct = torch.zeros((), device=rt.device, dtype=torch.int64)
    wsum = torch.zeros((), device=rt.device, dtype=torch.float64)
    for start in range(0, len(data), batch):
        rows = torch.arange(start, min(start + batch, len(data)), device=data.x_num.device)
        b = data.take(rows).to(rt.device, non_blocking=True)
        with rt.autocast():
            logits = forward(model, b).float()
        loss_sum += F.cross_entropy(logits, b.y, weight=weight, reduction="sum").double()
        wsum += weight[b.y].sum().double() if weight is not None else len(rows)
        correct += (logits.argmax(1) == b.y).sum()
    model.train()
    n = max(1, len(data))
    return float(loss_sum / wsum.clamp(min=1e-12)), float(correct) / n


def tensors_digest(t: Tensors) -> str:
    """A content hash of the training tensors: resume only onto the same data."""
    h = hashlib.sha256()
    for x in [t.x_num, t.x_cat, *t.text_flat, *t.text_off, t.y]:
        if x is not None:
            h.update(x.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


VOLATILE_INFO = ("train_time_s", "samples_per_s", "resumed_from")


def save_torch(path: Path, obj: dict[str, Any]) -> None:
    """torch.save, atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def _resumable(ckpt: dict[str, Any], cfg: TrainConfig, digest: str) -> bool:
    """A checkpoint continues this run when the config (bar epoch/step budgets) and data match."""
    ignore = {"epochs", "max_steps", "resume"}
    mine = {k: v for k, v in _config_dict(cfg).items() if k not in ignore}
    theirs = {k: v for k, v in ckpt["config"].items() if k not in ignore}
    return mine == theirs and ckpt.get("data_digest") == digest


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON-able types."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


@dataclass
class FitResult:
    """What `fit` returns: the best model, its preprocessing, the curve and run facts."""

    model: nn.Module
    state: dict[str, Any]
    history: list[dict[str, Any]]
    info: dict[str, Any]
    checkpoint: dict[str, Any]


# ---------------------------------------------------------------- the training loop


def fit(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    spec: FeatureSpec,
    cfg: TrainConfig,
    checkpoint_dir: Path | None = None,
    meta: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train on `train_df`, early-stop on `val_df`; frames are not modified.

    With `checkpoint_dir`, rank 0 writes `last.pt` after every epoch and a later call with the
    same config and data resumes from it.
    """
    rt = choose_device(cfg)
    seed_everything(cfg.seed)
    log = log if rt.master else (lambda _msg: None)

    # data: fit preprocessing on train only, then everything becomes tensors once
    state = fit_preprocessor(train_df, spec, cfg.prep())
    train, val = transform(train_df, state), transform(val_df, state)
    digest = tensors_digest(train)
    n_classes = len(state["classes"])
    resident = rt.device.type == "cpu"
    if rt.device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(rt.device)
        resident = train.nbytes() + val.nbytes() < cfg.gpu_resident_fraction * free
    train = train.to(rt.device) if resident else train.pin_memory()
    val = val.to(rt.device) if resident else val

    # model, optimizer, schedule
    batch_size = cfg.batch_size_gpu if rt.device.type == "cuda" else cfg.batch_size_cpu
    batch_size = min(batch_size, len(train))
    batch_size = max(1, batch_size // rt.world_size) * rt.world_size  # equal slices per rank
    per_rank = batch_size // rt.world_size
    base_lr = cfg.lr * math.sqrt(batch_size / cfg.batch_size_cpu)
    steps_per_epoch = max(1, len(train) // batch_size)  # drop the ragged tail: fixed shapes
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    model = build_net(state, **cfg.net()).to(rt.device)
    raw_model = model
    optimizer = make_optimizer(model, cfg, base_lr)
    weight = class_weight_tensor(train.y, n_classes).to(rt.device) if cfg.class_weights else None

    # resume
    step, epoch, best_loss, best_acc, bad_epochs, history = 0, 0, math.inf, 0.0, 0, []
    best_weights = copy.deepcopy(raw_model.state_dict())
    train_time, samples_seen, resumed_from = 0.0, 0, None
    last = checkpoint_dir / "last.pt" if checkpoint_dir else None
    if cfg.resume and last is not None and last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if _resumable(ckpt, cfg, digest):
            raw_model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            step, epoch = ckpt["step"], ckpt["epoch"]
            best_loss, best_acc = ckpt["best_val_loss"], ckpt["best_val_accuracy"]
            bad_epochs, history = ckpt["bad_epochs"], list(ckpt["history"])
            best_weights = ckpt["best_model"]
            train_time, samples_seen = ckpt["train_time_s"], ckpt["samples_seen"]
            torch.set_rng_state(ckpt["rng"])
            resumed_from = {"step": step, "epoch": epoch}
            log(f"resumed from {last} at epoch {epoch}, step {step}")
        else:
            log(f"{last} is from another config or data: starting afresh")

    if cfg.compile and rt.device.type == "cuda":
        model = torch.compile(model, dynamic=True)
    if rt.world_size > 1:
        ids = [rt.local_rank] if rt.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    log(
        f"train: {len(train)} rows, val: {len(val)} rows, device {rt.device} ({rt.precision}), "
        f"{'resident' if resident else 'streamed'}, batch {batch_size}, lr {base_lr:.2e}, "
        f"{steps_per_epoch} steps/epoch, world {rt.world_size}"
    )
    stop = (
        epoch >= cfg.epochs
        or (cfg.max_steps and step >= cfg.max_steps)
        or (bad_epochs >= cfg.patience)
    )
    first_epoch = True
    while not stop:
        # one epoch over this rank's shard of a seeded permutation
        model.train()
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        shard = epoch_shard(
            len(train), batch_size, steps_per_epoch, cfg.seed, epoch, rt.rank, rt.world_size
        )
        if rt.world_size > 1 and first_epoch:  # every rank says which rows it took
            sha = hashlib.sha256(shard.numpy().tobytes()).hexdigest()[:16]
            print(
                f"rank {rt.rank}/{rt.world_size}: epoch {epoch + 1} shard of "
                f"{len(shard)} rows, sha {sha}",
                flush=True,
            )
        first_epoch = False
        shard = shard.to(train.x_num.device)
        loss_sum = torch.zeros((), device=rt.device)
        epoch_rows = 0
        for i in range(steps_per_epoch):
            rows = shard[i * per_rank : (i + 1) * per_rank]
            batch = train.take(rows)
            if not resident:
                batch = batch.to(rt.device, non_blocking=True)
            lr = lr_at(step, total_steps, cfg, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with rt.autocast():
                logits = forward(model, batch)
            loss = F.cross_entropy(logits.float(), batch.y, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            epoch_rows += len(rows)
            loss_sum += loss.detach() * len(rows)  # no host sync inside the loop
            if cfg.max_steps and step >= cfg.max_steps:
                break
        if rt.device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        if rt.world_size > 1:  # the epoch's train loss over every rank's shard
            torch.distributed.all_reduce(loss_sum)
        epoch_rows *= rt.world_size
        train_time += dt
        samples_seen += epoch_rows
        epoch += 1

        # validate, early-stop, checkpoint
        val_loss, val_acc = evaluate(raw_model, val, rt, weight)
        train_loss = float(loss_sum) / max(1, epoch_rows)
        improved = val_loss < best_loss - 1e-4
        if improved:
            best_loss, best_acc, bad_epochs = val_loss, val_acc, 0
            best_weights = {k: v.detach().cpu().clone() for k, v in raw_model.state_dict().items()}
        else:
            bad_epochs += 1
        history.append(
            {
                "epoch": epoch,
                "step": step,
                "train_loss": round(train_loss, 6),
                "val_loss": round(val_loss, 6),
                "val_accuracy": round(val_acc, 6),
                "lr": lr,
            }
        )
        stop = (
            epoch >= cfg.epochs
            or bool(cfg.max_steps and step >= cfg.max_steps)
            or bad_epochs >= cfg.patience
        )
        if rt.world_size > 1:  # rank 0 decides, so that no rank waits alone in a collective
            flag = torch.tensor([float(stop)], device=rt.device)
            torch.distributed.broadcast(flag, src=0)
            stop = bool(flag.item())
        if rt.master and last is not None:
            save_torch(
                last,
                {
                    "model": raw_model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "epoch": epoch,
                    "best_val_loss": best_loss,
                    "best_val_accuracy": best_acc,
                    "bad_epochs": bad_epochs,
                    "best_model": best_weights,
                    "history": history,
                    "train_time_s": train_time,
                    "samples_seen": samples_seen,
                    "rng": torch.get_rng_state(),
                    "config": _config_dict(cfg),
                    "data_digest": digest,
                },
            )
        log(
            f"epoch {epoch:3d} step {step:6d} train {train_loss:.4f} val {val_loss:.4f} "
            f"acc {val_acc:.4f}{' *' if improved else ''} {epoch_rows / dt:,.0f} rows/s"
        )

    raw_model.load_state_dict(best_weights)
    raw_model.eval()
    info = {
        "device": str(rt.device),
        "device_name": torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else "cpu",
        "precision": rt.precision,
        "world_size": rt.world_size,
        "data_resident": resident,
        "batch_size": batch_size,
        "lr": base_lr,
        "epochs_run": epoch,
        "steps": step,
        "best_val_loss": round(best_loss, 6),
        "best_val_accuracy": round(best_acc, 6),
        "train_time_s": round(train_time, 3),
        "samples_per_s": round(samples_seen / train_time, 1) if train_time else 0.0,
        "resumed_from": resumed_from,
        "torch": str(torch.__version__),
        "seed": cfg.seed,
    }
    checkpoint = {
        "model": {k: v.detach().cpu() for k, v in raw_model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "step": step,
        "config": _config_dict(cfg),
        "net": cfg.net(),
        "preprocessor": state,
        "spec": spec_to_dict(spec),
        "classes": list(state["classes"]),
        "data_digest": digest,
        # Timings vary run to run; leaving them out keeps the model file byte-identical across
        # repeated CPU runs (they are in metrics/train.json).
        "info": {k: v for k, v in info.items() if k not in VOLATILE_INFO},
        **(meta or {}),
    }
    return FitResult(raw_model, state, history, info, checkpoint)


# ---------------------------------------------------------------- the stage


def curve_csv(history: list[dict[str, Any]]) -> str:
    """The training curve as CSV, for `dvc plots`."""
    cols = ["epoch", "step", "train_loss", "val_loss", "val_accuracy"]
    return pd.DataFrame(history, columns=cols).to_csv(index=False)


def schema_digest(params: dict[str, Any]) -> str:
    """A hash of the schema and policies the model's features come from."""
    blob = json.dumps(
        {"schema": params["schema"], "policies": params["anonymize"]["policies"]},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def main() -> None:
    """Read params and splits, train, write the model, checkpoint, curve and summary."""
    params = load_params()
    cfg = section(TrainConfig, "train", params)
    schema = load_schema(params)
    spec = feature_spec(schema, column_policies(schema, params["anonymize"]["policies"]))
    train_df = read_dataset(TRAIN_DIR).to_pandas()
    val_df = read_dataset(VAL_DIR).to_pandas()
    summary = StageSummary("train")
    summary.rows_in = summary.rows_out = len(train_df)
    meta = {"schema_digest": schema_digest(params)}
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
    summary.extra.update(
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
