"""The training loop's parts: device and precision, the plan sized from the data, optimisers,
evaluation, checkpoint I/O and differential privacy (Opacus). stages/train.py holds the config,
the state, the loop and the stage.

Imports stay lean (torch, numpy, pandas, stages.lib): the GPU machine has neither Prefect, DVC
nor Great Expectations; Opacus is imported only when DP is on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stages.lib.config import TRAIN_RANGES  # noqa: F401  (moved; stages.train re-exports it)
from stages.lib.io import write_bytes_atomic
from stages.lib.model import HashedBag, Tensors, bag_grad_sample, forward
from stages.lib.params import ParamsError
from stages.lib.schema import AUGMENTED

if TYPE_CHECKING:
    from stages.lib.config import DPConfig, TrainConfig


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

    def sync(self) -> None:
        """Wait for the device (honest timings on a GPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def choose_device(cfg: TrainConfig) -> Runtime:
    """The one place that picks device, precision, determinism and the distributed setup."""
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ParamsError(
            "params.yaml train.device: 'cuda' was asked for but this machine has no CUDA device "
            f"(torch {torch.__version__}); set train.device to auto or cpu, or run on a GPU"
        )
    if cfg.dp.enabled and world > 1:
        raise ParamsError("params.yaml train.dp.enabled: DP training runs in one process only")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if want_cuda else "gloo")
    if want_cuda:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        bf16_ok = torch.cuda.is_bf16_supported()
        precision = "bf16" if cfg.precision in ("auto", "bf16") and bf16_ok else "fp32"
        if cfg.dp.enabled:  # Opacus' per-sample gradient hooks are fp32 code: no autocast
            precision = "fp32"
    else:
        device = torch.device("cpu")
        precision = "fp32"  # bf16 autocast on CPU is slow and gains nothing here
        torch.use_deterministic_algorithms(True)
    return Runtime(device, precision, rank, world, local)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy (every rank alike, so initial weights agree before DDP broadcasts)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


# ---------------------------------------------------------------- the plan: sizes from data


@dataclass(frozen=True)
class Plan:
    """Batch, steps, warm-up and patience for this many training rows (issue 13.6)."""

    batch_size: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    warmup_steps: int
    patience: int
    lr: float


def auto_batch(n_rows: int) -> int:
    """rows / 64 clipped to 32..4096, as a power of two: ~64 steps per epoch at any size."""
    b = min(4096, max(32, n_rows / 64))
    return 2 ** round(math.log2(b))


def plan(n_rows: int, cfg: TrainConfig, world: int = 1) -> Plan:
    """Sizes that work from ~500 rows to 10M: every epoch has many steps, small data more epochs."""
    batch = min(cfg.batch_size or auto_batch(n_rows), max(1, n_rows))
    batch = max(1, batch // world) * world  # equal slices per rank
    steps = max(1, n_rows // batch)  # drop the ragged tail: fixed shapes
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / steps))
    total = min(epochs * steps, cfg.max_steps or epochs * steps)
    warmup = max(1, round(cfg.warmup_fraction * total))
    patience = max(cfg.patience, math.ceil(cfg.patience_min_steps / steps))
    return Plan(batch, steps, epochs, total, warmup, patience, cfg.lr * math.sqrt(batch / 512))


def lr_at(step: int, p: Plan, min_lr_ratio: float) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio * lr (nanoGPT's schedule)."""
    if step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    progress = min(1.0, (step - p.warmup_steps) / max(1, p.total_steps - p.warmup_steps))
    return p.lr * (min_lr_ratio + 0.5 * (1 + math.cos(math.pi * progress)) * (1 - min_lr_ratio))


# ---------------------------------------------------------------- helpers of the loop


def class_weight_tensor(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights n / (k * count), 0 for a class absent from training."""
    counts = torch.bincount(y, minlength=n_classes).double()
    w = torch.where(counts > 0, y.numel() / (n_classes * counts.clamp(min=1)), 0.0)
    return w.float()


def prior_shift(train_df: pd.DataFrame, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """log(prior of the source rows) - log(prior trained on): undoes augment's oversampling.

    Added to the logits at prediction time (logit adjustment, Menon et al. 2021), so that the
    model trained on oversampled classes predicts with the data's own class balance.
    """
    source = (
        ~train_df[AUGMENTED].fillna(False).astype(bool).to_numpy()
        if AUGMENTED in train_df
        else None
    )
    if source is None or source.all():
        return torch.zeros(n_classes)
    seen = torch.bincount(y, minlength=n_classes).double() + 1
    real = torch.bincount(y[torch.from_numpy(source)], minlength=n_classes).double() + 1
    return (torch.log(real / real.sum()) - torch.log(seen / seen.sum())).float()


def source_rows(train_df: pd.DataFrame) -> pd.DataFrame:
    """The training rows without augment's added copies: under DP each record must be one row,
    or its copies would spend its privacy budget several times over (group privacy)."""
    if AUGMENTED not in train_df:
        return train_df
    return train_df[~train_df[AUGMENTED].fillna(False).astype(bool)]


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


def make_optimizers(model: nn.Module, cfg: TrainConfig, lr: float) -> list[torch.optim.Optimizer]:
    """AdamW (decay on matrices only, as in nanoGPT); plain SGD for sparse text tables."""
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, HashedBag) and m.sparse}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=lr)]
    tables = [p for p in model.parameters() if id(p) in sparse]
    if tables:
        # SGD as in fastText: only the rows a batch touches change (2^18 buckets cost nothing),
        # and a rare n-gram moves with its gradient, not by a full Adam step (noise stays small)
        scale = cfg.text_lr / cfg.lr
        opts.append(torch.optim.SGD([{"params": tables, "lr_scale": scale}], lr=lr * scale))
    return opts


def member_loss(
    logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of logits [n, classes], or the mean over members of [n, k, classes]
    (TabM trains each member on its own loss, not the ensemble's)."""
    if logits.dim() == 3:
        y = y.repeat_interleave(logits.shape[1])
        logits = logits.flatten(0, 1)
    return F.cross_entropy(logits, y, weight=weight, label_smoothing=label_smoothing)


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
    return float(loss_sum / wsum.clamp(min=1e-12)), float(correct) / max(1, len(data))


def tensors_digest(t: Tensors) -> str:
    """A content hash of the training tensors: resume only onto the same data."""
    h = hashlib.sha256()
    for x in [t.x_num, t.x_cat, *t.text_flat, *t.text_off, t.y]:
        if x is not None:
            h.update(x.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def save_torch(path: Path, obj: dict[str, Any]) -> None:
    """torch.save, atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(path, buf.getvalue())


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    """The config as plain JSON-able types."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _cpu(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies of a state dict."""
    return {k: v.detach().cpu().clone() for k, v in sd.items()}


# ---------------------------------------------------------------- differential privacy


@dataclass
class Privacy:
    """An Opacus PrivacyEngine attached to the run and the budget it targets."""

    engine: Any
    delta: float
    cfg: DPConfig

    def report(self) -> dict[str, Any]:
        """metrics/train.json's `dp`: the ε actually spent (at δ), clipping and noise."""
        return {
            "enabled": True,
            "epsilon": round(float(self.engine.get_epsilon(self.delta)), 4),
            "delta": self.delta,
            "max_grad_norm": self.cfg.max_grad_norm,
            "noise_multiplier": round(float(self.engine.optimizer_noise()), 6),
        }


NO_DP = {
    "enabled": False,
    "epsilon": None,
    "delta": None,
    "max_grad_norm": None,
    "noise_multiplier": None,
}


def make_private(
    model: nn.Module, opts: list[torch.optim.Optimizer], n_rows: int, p: Plan, cfg: TrainConfig
) -> tuple[nn.Module, list[torch.optim.Optimizer], Any, Privacy]:
    """DP-SGD: per-sample clipping and Gaussian noise sized for the target ε over the plan's
    epochs, Poisson-sampled batches of row indices (expected size: the plan's batch)."""
    from opacus import PrivacyEngine  # imported only when DP is on (it pulls in scipy)
    from opacus.grad_sample import register_grad_sampler

    register_grad_sampler(HashedBag)(bag_grad_sample)
    delta = cfg.dp.delta if cfg.dp.delta is not None else 1.0 / n_rows
    rows = torch.utils.data.TensorDataset(torch.arange(n_rows))
    loader = torch.utils.data.DataLoader(
        rows, batch_size=p.batch_size, generator=torch.Generator().manual_seed(cfg.seed)
    )
    engine = PrivacyEngine(accountant="rdp")
    model, opt, loader = engine.make_private_with_epsilon(
        module=model,
        optimizer=opts[0],
        data_loader=loader,
        target_epsilon=cfg.dp.epsilon,
        target_delta=delta,
        epochs=p.epochs,
        max_grad_norm=cfg.dp.max_grad_norm,
        poisson_sampling=True,
    )
    engine.optimizer_noise = lambda: opt.noise_multiplier
    return model, [opt], loader, Privacy(engine, delta, cfg.dp)
