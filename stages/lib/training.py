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

from stages.lib.io import write_bytes_atomic
from stages.lib.model import HashedBag, Tensors, bag_grad_sample, bag_idf, forward
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


# Under DP, batch 0 means ~8 steps per epoch, not ~64: DP-SGD's noise is added once per step
# whatever the batch, so larger batches carry less noise per row (De et al. 2022). Measured on the
# sample at epsilon 8 (params.yaml's DP table): batch 512, 20 epochs 0.8422; batch 2048 0.8500.
DP_STEPS_PER_EPOCH = 8


def auto_batch(n_rows: int, steps_per_epoch: int = 64) -> int:
    """rows / steps_per_epoch clipped to 32..4096, as a power of two."""
    b = min(4096, max(32, n_rows / steps_per_epoch))
    return 2 ** round(math.log2(b))


def plan(n_rows: int, cfg: TrainConfig, world: int = 1) -> Plan:
    """Sizes that work from ~500 rows to 10M: every epoch has many steps, small data more epochs."""
    auto = auto_batch(n_rows, DP_STEPS_PER_EPOCH if cfg.dp.enabled else 64)
    batch = min(cfg.batch_size or auto, max(1, n_rows))
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


class TextSGD(torch.optim.Optimizer):
    """Plain SGD for the sparse text tables, as in fastText: only the rows a batch touches
    change (2^18 buckets cost nothing). Each table's first `deep` columns (the deep part's
    embedding) step at the group's rate, its last columns (the wide part's linear logits) at
    `wide_ratio` times it: a linear model over TF-IDF bags wants a far larger rate than an
    embedding fed to an MLP, which memorises the training texts at that rate."""

    def __init__(self, params: list[nn.Parameter], lr: float, deep: int, wide_ratio: float):
        super().__init__(params, {"lr": lr, "deep": deep, "wide_ratio": wide_ratio})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        """One SGD step of every table that has a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                rate = torch.full((p.shape[1],), -group["lr"], device=p.device, dtype=p.dtype)
                rate[group["deep"] :] *= group["wide_ratio"]
                if p.grad.is_sparse:
                    # index_add_ sums repeated rows itself: coalescing first (a sort of every
                    # n-gram id in the batch) was 40 % of a CPU epoch on the sample
                    g = p.grad
                    p.index_add_(0, g._indices()[0], g._values() * rate)
                else:
                    p.add_(p.grad * rate)


def make_optimizers(
    model: nn.Module, cfg: TrainConfig, lr: float, text_lr: float | None = None
) -> list[torch.optim.Optimizer]:
    """AdamW (decay on matrices only, as in nanoGPT); TextSGD for sparse text tables, the wide
    columns at `text_lr` (cfg.text_lr unless given: `auto` is resolved by `probe_text_lr`)."""
    sparse = {id(m.weight) for m in model.modules() if isinstance(m, HashedBag) and m.sparse}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in sparse]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    opts: list[torch.optim.Optimizer] = [torch.optim.AdamW(groups, lr=lr)]
    tables = [p for p in model.parameters() if id(p) in sparse]
    if tables:
        wide = text_lr if text_lr is not None else cfg.text_lr
        wide = cfg.text_deep_lr if wide == "auto" else wide
        scale = cfg.text_deep_lr / cfg.lr  # rates follow the schedule (and the batch size)
        opt = TextSGD(tables, lr * scale, cfg.text_dim, wide / cfg.text_deep_lr)
        opt.param_groups[0]["lr_scale"] = scale
        opts.append(opt)
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


TEXT_LR_GRID = (0.1, 1.0, 10.0, 100.0)  # text_lr: auto tries these (at batch 512) ...
PROBE_EPOCHS = 3  # ... for this many epochs each ...
PROBE_MIN_GAIN = 0.01  # ... and takes a larger one only when it lowers val loss by 1 % or more


def probe_text_lr(
    train: Tensors, val: Tensors, cfg: TrainConfig, p: Plan, buckets: int
) -> dict[str, Any]:
    """`text_lr: auto`: the rate of TEXT_LR_GRID at which the wide part alone (linear logits
    over the TF-IDF bags, the classes' log prior as bias) reaches the lowest val loss in a short
    SGD run. Text that carries no label signal gains nothing at any rate and keeps the smallest
    (a large rate would only memorise the training rows' texts); real text takes a large one."""
    dev = train.y.device
    n_classes = int(max(train.y.max(), val.y.max())) + 1
    prior = torch.bincount(train.y, minlength=n_classes).double() + 1
    bias = torch.log(prior / prior.sum()).float().to(dev)
    # The same idf for every rate tried: once per text column (None: binary bags, all ones).
    idfs = [bag_idf(f, buckets, len(train)) if cfg.text_idf else None for f in train.text_flat]
    results = {}
    for rate in TEXT_LR_GRID:
        g = torch.Generator().manual_seed(cfg.seed)
        bags = [HashedBag(buckets, n_classes, True, n_classes).to(dev) for _ in train.text_flat]
        for bag, idf in zip(bags, idfs, strict=True):
            if idf is not None:
                bag.idf.copy_(idf.to(dev))
        opt = TextSGD([b.weight for b in bags], rate * math.sqrt(p.batch_size / 512), 0, 1.0)
        best = math.inf
        for _ in range(PROBE_EPOCHS):
            perm = torch.randperm(len(train), generator=g)[: p.steps_per_epoch * p.batch_size]
            for rows in perm.to(dev).view(p.steps_per_epoch, -1):
                b = train.take(rows)
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(_wide_logits(bags, b, bias), b.y).backward()
                opt.step()
            best = min(best, _probe_val_loss(bags, val, bias))
        results[rate] = round(best, 6)
    chosen = TEXT_LR_GRID[0]
    for rate in TEXT_LR_GRID[1:]:
        if results[rate] < results[chosen] * (1 - PROBE_MIN_GAIN):
            chosen = rate
    return {"text_lr": chosen, "val_loss": {str(k): v for k, v in results.items()}}


def text_probe(
    train: Tensors, val: Tensors, cfg: TrainConfig, p: Plan, sparse: bool, buckets: int
) -> dict[str, Any] | None:
    """Resolve `text_lr: auto` by a short probe (sparse text tables only: under DP or DDP the
    tables step with AdamW and text_lr is not used); None when there is nothing to resolve."""
    if cfg.text_lr != "auto" or not sparse or not train.text_flat:
        return None
    with torch.random.fork_rng(devices=[]):  # the probe leaves the run's random stream alone
        return probe_text_lr(train, val, cfg, p, buckets)


@torch.no_grad()
def _probe_val_loss(bags: list[HashedBag], val: Tensors, bias: torch.Tensor) -> float:
    """Mean cross-entropy of the probe on `val`, chunk by chunk on the probe's device."""
    total = 0.0
    for start in range(0, len(val), 16384):
        rows = torch.arange(start, min(start + 16384, len(val)), device=val.y.device)
        b = val.take(rows).to(bias.device)
        total += float(F.cross_entropy(_wide_logits(bags, b, bias), b.y, reduction="sum"))
    return total / max(1, len(val))


def _wide_logits(bags: list[HashedBag], t: Tensors, bias: torch.Tensor) -> torch.Tensor:
    """The probe's logits: the class log prior plus each text column's linear part."""
    out = bias.expand(len(t), -1)
    for bag, flat, off in zip(bags, t.text_flat, t.text_off, strict=True):
        out = out + bag(flat, off[1:] - off[:-1])
    return out


@torch.no_grad()
def set_text_idf(model: nn.Module, train: Tensors, cfg: TrainConfig) -> None:
    """Each text table's idf from the training bags (`train.text_idf`). Not under DP: idf is a
    statistic of the training rows that DP-SGD's noise would not cover, so DP keeps ones."""
    bags = [m for m in model.modules() if isinstance(m, HashedBag)]
    if not cfg.text_idf or cfg.dp.enabled or len(bags) != len(train.text_flat):
        return  # (a network of another design, as benchmarks pass, has no such tables)
    for bag, flat in zip(bags, train.text_flat, strict=True):
        bag.idf.copy_(bag_idf(flat, bag.idf.numel(), len(train)).to(bag.idf.device))


@torch.no_grad()
def eval_logits(model: nn.Module, data: Tensors, rt: Runtime, batch: int = 16384) -> torch.Tensor:
    """`model`'s eval logits on `data` [n, classes], float32 on the run's device (the data moves
    there chunk by chunk)."""
    model.eval()
    out = []
    for start in range(0, len(data), batch):
        rows = torch.arange(start, min(start + batch, len(data)), device=data.x_num.device)
        b = data.take(rows).to(rt.device, non_blocking=True)
        with rt.autocast():
            out.append(forward(model, b).float())
    model.train()
    return torch.cat(out) if out else torch.zeros(0, 0, device=rt.device)


def evaluate(
    model: nn.Module, data: Tensors, rt: Runtime, weight: torch.Tensor | None
) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on `data`."""
    logits = eval_logits(model, data, rt)
    y = data.y.to(logits.device)
    w = weight.to(logits.device) if weight is not None else None
    loss = F.cross_entropy(logits.double(), y, weight=w.double() if w is not None else None)
    return float(loss), float((logits.argmax(1) == y).sum()) / max(1, len(data))


TEMPERATURE_RANGE = (0.05, 20.0)  # a temperature outside it means the val set is degenerate


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, iters: int = 60) -> float:
    """The temperature T minimising the cross-entropy of logits / T (temperature scaling, Guo
    et al. 2017): golden-section search over log T, which that loss is unimodal in. T > 1
    softens overconfident probabilities; argmax and ranking are unchanged."""
    x, y = logits.double().cpu(), y.cpu()

    def loss(log_t: float) -> float:
        return float(F.cross_entropy(x / math.exp(log_t), y))

    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(iters):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return round(math.exp((lo + hi) / 2), 6)


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
            "not_covered": DP_NOT_COVERED,
        }


# ε bounds what the weights reveal given the preprocessing; that preprocessing is fitted on the
# training rows outside DP-SGD (issue 16), which metrics/train.json says rather than hides.
DP_NOT_COVERED = (
    "preprocessing fitted on the training rows outside DP-SGD: numeric medians, scaling, "
    "log1p choice and bin edges (tree or quantile), category vocabularies (cat_min_count); "
    "text idf is off under DP; the validation rows (best epoch, text_lr probe, temperature) "
    "are not training rows and are outside epsilon too"
)


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
