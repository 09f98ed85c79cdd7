"""The tabular model: preprocessing state, tensors, network and the Predictor used downstream.

Imports stay lean on purpose (torch, numpy, pandas, stdlib, stages.lib.features): the train
stage runs on GPU machines that have neither Prefect, DVC nor Great Expectations.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from stages.lib.config import PrepConfig
from stages.lib.errors import InputError
from stages.lib.features import (
    FeatureSpec,
    numeric_values,
    unique_bags,
)
from stages.lib.text_bags import text_buckets, text_ngrams

UNK, NULL = 0, 1  # reserved categorical indices: unseen/rare value, missing value
CAT_RESERVED = ("<unk>", "<null>")
PREPROCESSOR_VERSION = 3  # 3: text n-grams hashed through mix64 (2's ids differ)
MIN_ROWS_PER_BIN = 500  # a piecewise-linear bin per this many training rows at most


# ---------------------------------------------------------------- preprocessing: fit


def _numeric(series: pd.Series) -> np.ndarray:
    """A column as float64 with NaN for nulls, whatever its dtype (dates: days since epoch)."""
    return numeric_values(series)


def _strings(series: pd.Series) -> pd.Series:
    """A column as nullable strings, so ints, categories and text compare the same way."""
    return series.astype("string")


def tree_edges(x: np.ndarray, labels: pd.Series, bins: int) -> list[float]:
    """Bin edges where a decision tree on this column alone splits the label (Gorishniy et al.
    2022's target-aware bins): a zero-inflated column (capital gain) gets its thresholds where
    the label changes, not where its quantiles collapse onto 0."""
    from sklearn.tree import DecisionTreeClassifier  # imported only for tree bins

    y = _strings(labels).fillna("").to_numpy()
    tree = DecisionTreeClassifier(
        max_leaf_nodes=bins, min_samples_leaf=max(1, len(x) // (4 * bins)), random_state=0
    ).fit(x[:, None], y)
    cuts = tree.tree_.threshold[tree.tree_.feature >= 0]
    return np.unique([x.min(), *cuts, x.max()]).tolist()


def fit_preprocessor(df: pd.DataFrame, spec: FeatureSpec, cfg: PrepConfig) -> dict[str, Any]:
    """Learn scalers, vocabularies and label mapping from the training frame (plain dicts)."""
    numeric = {}
    for col in spec.numeric:
        x = _numeric(df[col])
        seen = x[~np.isnan(x)]
        median = float(np.median(seen)) if seen.size else 0.0
        filled = np.where(np.isnan(x), median, x)
        # log1p for heavy-tailed non-negative columns (capital gains and the like), from train stats
        std0 = filled.std()
        skew = float(((filled - filled.mean()) ** 3).mean() / std0**3) if std0 > 0 else 0.0
        log = bool(seen.size and seen.min() >= 0 and skew > cfg.log1p_skew)
        z = np.log1p(filled) if log else filled
        std = float(z.std())
        # quantile bin edges: an MLP learns thresholds (capital gain > x) more easily from them
        # and no more bins than the rows can fill: small tables overfit thin bins (issue 13.6)
        bins = min(cfg.numeric_bins, len(df) // MIN_ROWS_PER_BIN)
        qs = np.linspace(0, 1, bins + 1)[1:-1] if bins > 1 else []
        if cfg.bin_edges == "tree" and len(qs) and spec.label in df:
            edges = tree_edges(filled, df[spec.label], bins)
        else:
            edges = np.unique(np.quantile(seen, [0.0, *qs, 1.0])).tolist() if seen.size else []
        numeric[col] = {
            "median": median,
            "log1p": log,
            "mean": float(z.mean()),
            "std": std if std > 0 else 1.0,
            "edges": [float(e) for e in edges] if len(qs) else [],  # min, quantiles, max
        }
    categorical = {}
    for col in spec.categorical:
        counts = _strings(df[col]).dropna().value_counts()
        kept = counts[counts >= cfg.cat_min_count]
        # order by frequency then value, so the vocabulary does not depend on row order
        vocab = sorted(kept.index.tolist(), key=lambda v: (-int(kept[v]), v))
        categorical[col] = list(CAT_RESERVED) + vocab
    return {
        "version": PREPROCESSOR_VERSION,
        "numeric": numeric,
        "categorical": categorical,
        "text": {
            "columns": list(spec.text),
            "buckets": text_buckets(df, spec.text, cfg),
            "ngram_min": cfg.ngram_min,
            "ngram_max": cfg.ngram_max,
            "word_ngram_max": cfg.word_ngram_max,
            "max_chars": cfg.text_max_chars,
        },
        "clip": cfg.clip,
        "label": spec.label,
        "classes": list(spec.classes),
    }


# ---------------------------------------------------------------- preprocessing: transform


@dataclass
class Tensors:
    """A table as model inputs: numbers, category indices, text bags (flat + offsets), labels."""

    x_num: torch.Tensor  # [n, ...] float32: per numeric column its standardised value, missing
    #                      indicator and piecewise-linear encoding (one entry per quantile bin)
    x_cat: torch.Tensor  # [n, categorical] int64
    text_flat: list[torch.Tensor]  # per text column: [total n-grams] int64 bucket ids
    text_off: list[torch.Tensor]  # per text column: [n + 1] int64 offsets into text_flat
    y: torch.Tensor | None = None  # [n] int64

    def __len__(self) -> int:
        return self.x_num.shape[0]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Tensors:
        """The same tensors on `device`."""

        def mv(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Tensors(
            mv(self.x_num),
            mv(self.x_cat),
            [mv(t) for t in self.text_flat],
            [mv(t) for t in self.text_off],
            None if self.y is None else mv(self.y),
        )

    def pin_memory(self) -> Tensors:
        """Page-locked copies, for fast non-blocking host-to-GPU copies."""
        return Tensors(
            self.x_num.pin_memory(),
            self.x_cat.pin_memory(),
            [t.pin_memory() for t in self.text_flat],
            [t.pin_memory() for t in self.text_off],
            None if self.y is None else self.y.pin_memory(),
        )

    def take(self, rows: torch.Tensor) -> Tensors:
        """The rows `rows` (a 1-D index tensor on the same device), text bags included."""
        flats, offs = [], []
        for flat, off in zip(self.text_flat, self.text_off, strict=True):
            starts, lens = off[rows], off[rows + 1] - off[rows]
            new_off = torch.zeros(len(rows) + 1, dtype=off.dtype, device=off.device)
            torch.cumsum(lens, 0, out=new_off[1:])
            total = int(new_off[-1])  # one host sync per text column and batch
            shift = torch.repeat_interleave(starts - new_off[:-1], lens, output_size=total)
            flats.append(flat[torch.arange(total, device=flat.device) + shift])
            offs.append(new_off)
        return Tensors(
            self.x_num[rows],
            self.x_cat[rows],
            flats,
            offs,
            None if self.y is None else self.y[rows],
        )

    def nbytes(self) -> int:
        """Memory the tensors take."""
        ts = [self.x_num, self.x_cat, *self.text_flat, *self.text_off]
        ts += [] if self.y is None else [self.y]
        return sum(t.numel() * t.element_size() for t in ts)


def transform(df: pd.DataFrame, state: dict[str, Any], with_label: bool = True) -> Tensors:
    """A frame as model tensors, using the fitted `state`; the frame is not modified."""
    n = len(df)
    cols = []
    for col, st in state["numeric"].items():
        x = _numeric(df[col])
        missing = np.isnan(x)
        x = np.where(missing, st["median"], x)
        if st["log1p"]:
            x = np.log1p(np.maximum(x, 0.0))  # negative values were not seen in train
        z = np.clip((x - st["mean"]) / st["std"], -state["clip"], state["clip"])
        cols += [z[:, None], missing[:, None].astype("float64")]
        cols.append(
            piecewise_linear(np.where(missing, st["median"], _numeric(df[col])), st["edges"])
        )
    x_num = np.concatenate(cols, axis=1) if cols else np.zeros((n, 0))
    cats = []
    for col, vocab in state["categorical"].items():
        index = {v: i for i, v in enumerate(vocab)}
        s = _strings(df[col])
        idx = s.map(index).astype("float64").fillna(UNK).to_numpy().astype(np.int64)
        cats.append(np.where(s.isna().to_numpy(), NULL, idx))
    x_cat = np.stack(cats, axis=1) if cats else np.zeros((n, 0), dtype=np.int64)
    t = state["text"]
    flats, offs = [], []
    for col in t["columns"]:
        flat, off = unique_bags(*text_ngrams(df[col], t["buckets"], t))
        flats.append(torch.from_numpy(flat))
        offs.append(torch.from_numpy(off))
    y = None
    if with_label:
        y = encode_labels(df[state["label"]], state["classes"])
    return Tensors(
        torch.from_numpy(x_num.astype(np.float32)),
        torch.from_numpy(x_cat),
        flats,
        offs,
        y,
    )


def piecewise_linear(x: np.ndarray, edges: list[float]) -> np.ndarray:
    """Piecewise-linear encoding [n, bins] (Gorishniy et al. 2022): how far x fills each bin.

    Bin t spans edges[t]..edges[t + 1]; its entry is 0 below, 1 above and linear inside, so the
    network sees thresholds (capital gain above x) and the position within a bin alike.
    """
    if len(edges) < 2:
        return np.zeros((len(x), 0))
    lo, hi = np.asarray(edges[:-1]), np.asarray(edges[1:])
    return np.clip((x[:, None] - lo) / (hi - lo), 0.0, 1.0)


def encode_labels(labels: pd.Series, classes: list[str]) -> torch.Tensor:
    """Label values as class indices; a value outside `classes` is an error, not a guess."""
    index = {c: i for i, c in enumerate(classes)}
    s = _strings(labels)
    mapped = s.map(index)
    bad = mapped.isna()
    if bad.any():
        examples = sorted(set(s[bad].fillna("<null>").tolist()))[:5]
        raise ValueError(f"{int(bad.sum())} label(s) outside the classes {classes}: {examples}")
    return torch.from_numpy(mapped.to_numpy(dtype=np.int64).copy())


# ---------------------------------------------------------------- the network


@dataclass(frozen=True)
class NetConfig:
    """Shape of the network."""

    n_numeric: int  # input width of the numeric block (values, missing flags, encodings)
    cat_cards: tuple[int, ...]
    n_text: int
    n_classes: int
    text_buckets: int
    cat_emb_dim: int = 16
    text_dim: int = 8
    width: int = 256
    blocks: int = 2
    dropout: float = 0.1
    sparse_text: bool = False  # sparse gradients for the text tables (SparseAdam steps them)
    # issue 16 (off by default: model files written before them load unchanged)
    plr_dim: int = 0  # per numeric column: its standardised value -> PLR vector; 0: none
    plr_frequencies: int = 16
    plr_sigma: float = 0.1  # scale of the initial frequencies (standardised inputs)
    ensemble: int = 1  # k members sharing the MLP (TabM-mini); 1: a single network
    numeric_z: tuple[int, ...] = ()  # where each column's standardised value sits in x_num


def cat_dim(card: int, max_dim: int) -> int:
    """Embedding width for a category with `card` values (fastai's rule of thumb, capped)."""
    return max(2, min(max_dim, round(1.6 * card**0.56)))


def bag_weights(flat: torch.Tensor, lens: torch.Tensor, idf: torch.Tensor) -> torch.Tensor:
    """Per n-gram weight idf / (the bag's L2 norm of idf): a bag's sum becomes an L2-normalised
    TF-IDF vector of its (binary) n-grams, as TF-IDF + logistic regression sees a text."""
    v = idf[flat]
    rows = torch.repeat_interleave(torch.arange(lens.numel(), device=flat.device), lens)
    norm2 = torch.zeros(lens.numel(), device=flat.device, dtype=v.dtype).index_add_(0, rows, v * v)
    return v * norm2.clamp(min=1e-12).rsqrt()[rows]


def bag_idf(flat: torch.Tensor, buckets: int, n_rows: int) -> torch.Tensor:
    """Smoothed idf of each bucket over `n_rows` training bags of distinct ids (scikit-learn's
    log((1 + n) / (1 + df)) + 1): frequent n-grams (a Chinese particle, "the") weigh less."""
    df = torch.bincount(flat.cpu(), minlength=buckets).double()
    return (torch.log((1.0 + n_rows) / (1.0 + df)) + 1.0).float()


class HashedBag(nn.Module):
    """A table of `buckets` vectors; a row's vector is the weighted sum over its n-gram ids.

    Takes bag lengths [n] rather than offsets [n + 1] so that the last input is batch-sized,
    as Opacus expects; `bag_grad_sample` gives its per-sample gradients for DP training. The
    frozen `idf` (ones: plain L2-normalised binary bags) is set from the training bags by
    train (`train.text_idf`) and saved with the weights.
    """

    def __init__(self, buckets: int, dim: int, sparse: bool = False, wide: int = 0):
        super().__init__()
        # deep columns start small and random, the last `wide` (linear logits) at zero
        self.weight = nn.Parameter(torch.randn(buckets, dim) * 0.1)
        with torch.no_grad():
            self.weight[:, dim - wide :] = 0.0
        # a frozen parameter, not a buffer: Opacus refuses trainable layers that have buffers
        self.idf = nn.Parameter(torch.ones(buckets), requires_grad=False)
        self.sparse = sparse

    def forward(self, flat: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """[n, dim]."""
        off = F.pad(torch.cumsum(lens, 0), (1, 0))
        w = bag_weights(flat, lens, self.idf)
        return F.embedding_bag(
            flat, self.weight, off, mode="sum", per_sample_weights=w,
            include_last_offset=True, sparse=self.sparse,
        )  # fmt: skip


def bag_grad_sample(
    layer: HashedBag, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of a HashedBag [n, buckets, dim] (an Opacus grad sampler)."""
    flat, lens = activations[0], activations[1]
    n = lens.shape[0]
    gs = torch.zeros(n, *layer.weight.shape, device=flat.device, dtype=backprops.dtype)
    rows = torch.repeat_interleave(torch.arange(n, device=flat.device), lens)
    w = bag_weights(flat, lens, layer.idf).to(backprops.dtype)
    gs.index_put_((rows, flat), backprops[rows] * w[:, None], accumulate=True)
    return {layer.weight: gs}


class ResBlock(nn.Module):
    """Pre-norm residual MLP block (the ResNet of Gorishniy et al. 2021)."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.f = nn.Sequential(
            nn.LayerNorm(width),
            nn.Linear(width, 2 * width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(2 * width, width),
            nn.Dropout(dropout),
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h + f(h)."""
        return h + self.f(h)


class PeriodicEmbedding(nn.Module):
    """PLR (Gorishniy et al. 2022): per column ReLU(linear(sin, cos(2 pi f x))), f learnt."""

    def __init__(self, columns: int, frequencies: int, dim: int, sigma: float):
        super().__init__()
        self.freq = nn.Parameter(torch.randn(columns, frequencies) * sigma)
        bound = (2 * frequencies) ** -0.5  # nn.Linear's init, one map per column
        w = torch.empty(columns, 2 * frequencies, dim)
        self.weight = nn.Parameter(w.uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(columns, dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n, columns * dim]."""
        v = 2 * math.pi * self.freq * x[..., None]  # [n, columns, frequencies]
        h = torch.einsum("ncf,cfd->ncd", torch.cat([torch.sin(v), torch.cos(v)], -1), self.weight)
        return F.relu(h + self.bias).flatten(1)


class EnsembleAdapter(nn.Module):
    """TabM-mini's input adapters: member i sees x * r_i, r_i random +-1 signs (diverse)."""

    def __init__(self, k: int, width: int):
        super().__init__()
        self.r = nn.Parameter(torch.randint(0, 2, (k, width)).float() * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[n, k, width]."""
        return x[:, None, :] * self.r


class EnsembleLinear(nn.Module):
    """k independent linear heads, one per member: [n, k, width] -> [n, k, out]."""

    def __init__(self, k: int, width: int, out: int):
        super().__init__()
        bound = width**-0.5
        self.weight = nn.Parameter(torch.empty(k, width, out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(k, out).uniform_(-bound, bound))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """[n, k, out]."""
        return torch.einsum("nkw,kwo->nko", h, self.weight) + self.bias


class TabularNet(nn.Module):
    """Wide and deep: a residual MLP over numbers (with piecewise-linear encodings), category
    embeddings and text bags, plus a wide linear part over the hashed word and character
    n-grams of each text column (fastText / TF-IDF-like), trained jointly; logits add up.

    Optional: periodic embeddings of the numbers (PLR); TabM-mini (`ensemble` k > 1: k input
    adapters, one shared MLP, k heads), whose training logits are [n, k, classes] (training's
    `member_loss`) and eval logits the log of the members' mean probability [n, classes]."""

    def __init__(self, cfg: NetConfig):
        super().__init__()
        self.cfg = cfg
        self.cat_emb = nn.ModuleList(
            nn.Embedding(c, cat_dim(c, cfg.cat_emb_dim)) for c in cfg.cat_cards
        )
        # One table per text column: its first text_dim columns feed the deep part, the last
        # n_classes are the wide linear part's logits (one lookup, one sparse update for both).
        self.text = nn.ModuleList(
            HashedBag(
                cfg.text_buckets, cfg.text_dim + cfg.n_classes, cfg.sparse_text, cfg.n_classes
            )
            for _ in range(cfg.n_text)
        )
        width = cfg.n_numeric + sum(e.embedding_dim for e in self.cat_emb)
        width += cfg.text_dim * cfg.n_text
        self.plr = None
        if cfg.plr_dim and cfg.numeric_z:
            shape = (cfg.plr_frequencies, cfg.plr_dim, cfg.plr_sigma)
            self.plr = PeriodicEmbedding(len(cfg.numeric_z), *shape)
            self.register_buffer("numeric_z", torch.tensor(cfg.numeric_z, dtype=torch.int64))
            width += cfg.plr_dim * len(cfg.numeric_z)
        self.adapter = EnsembleAdapter(cfg.ensemble, width) if cfg.ensemble > 1 else nn.Identity()
        self.stem = nn.Linear(width, cfg.width)
        self.blocks = nn.Sequential(*(ResBlock(cfg.width, cfg.dropout) for _ in range(cfg.blocks)))
        out = EnsembleLinear(cfg.ensemble, cfg.width, cfg.n_classes) if cfg.ensemble > 1 else None
        self.head = nn.Sequential(
            nn.LayerNorm(cfg.width), nn.GELU(), out or nn.Linear(cfg.width, cfg.n_classes)
        )
        # log class-prior ratio added at prediction time (train's prior_correction sets it)
        self.register_buffer("prior_shift", torch.zeros(cfg.n_classes))
        # eval logits are divided by it (train's `calibrate` fits it on val; 1: untouched)
        self.register_buffer("temperature", torch.ones(()))

    def forward(
        self,
        x_num: torch.Tensor,
        x_cat: torch.Tensor,
        text_flat: list[torch.Tensor],
        text_off: list[torch.Tensor],
    ) -> torch.Tensor:
        """Logits [n, n_classes]."""
        parts = [x_num]
        if self.plr is not None:
            parts.append(self.plr(x_num[:, self.numeric_z]))
        parts += [emb(x_cat[:, i]) for i, emb in enumerate(self.cat_emb)]
        bags = [
            t(f, o[1:] - o[:-1]) for t, f, o in zip(self.text, text_flat, text_off, strict=True)
        ]
        parts += [b[:, : self.cfg.text_dim] for b in bags]
        logits = self.head(self.blocks(self.stem(self.adapter(torch.cat(parts, dim=1)))))
        wide = [b[:, self.cfg.text_dim :] for b in bags]  # shared by every member
        logits = logits + sum(w[:, None] if logits.dim() == 3 else w for w in wide)
        if not self.training:
            logits = logits + self.prior_shift
            if logits.dim() == 3:  # log of the members' mean probability
                k = logits.shape[1]
                logits = torch.logsumexp(F.log_softmax(logits.float(), -1), 1) - math.log(k)
            logits = logits / self.temperature
        return logits


def build_net(state: dict[str, Any], **shape: Any) -> TabularNet:
    """The network that fits a fitted preprocessor `state` (shape: NetConfig's optional knobs)."""
    widths = [2 + max(0, len(s["edges"]) - 1) for s in state["numeric"].values()]
    cfg = NetConfig(
        n_numeric=sum(widths),
        numeric_z=tuple(int(sum(widths[:i])) for i in range(len(widths))),  # transform's order
        cat_cards=tuple(len(v) for v in state["categorical"].values()),
        n_text=len(state["text"]["columns"]),
        n_classes=len(state["classes"]),
        text_buckets=state["text"]["buckets"],
        **shape,
    )
    return TabularNet(cfg)


def forward(model: nn.Module, batch: Tensors) -> torch.Tensor:
    """Run `model` on a batch of Tensors."""
    return model(batch.x_num, batch.x_cat, batch.text_flat, batch.text_off)


# ---------------------------------------------------------------- prediction


@dataclass
class Predictor:
    """Everything needed to score a frame: preprocessing state, network, spec, classes."""

    model: TabularNet
    state: dict[str, Any]
    spec: FeatureSpec
    classes: list[str]
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 8192

    @torch.no_grad()
    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """Class probabilities [n, n_classes], columns in the order of `classes`."""
        data = transform(df, self.state, with_label=False)
        self.model.eval()
        out = []
        for start in range(0, len(data), self.batch_size):
            rows = torch.arange(start, min(start + self.batch_size, len(data)))
            batch = data.take(rows).to(self.device)
            out.append(torch.softmax(forward(self.model, batch).double(), dim=1).cpu())
        if not out:
            return np.zeros((0, len(self.classes)))
        # Softmax in float64 so rows sum to 1 within 1e-12 (metrics check that they do).
        return torch.cat(out).numpy()

    def predict(self, df: pd.DataFrame) -> list[str]:
        """The most probable class of each row."""
        return [self.classes[i] for i in self.predict_proba(df).argmax(axis=1)]


def spec_to_dict(spec: FeatureSpec) -> dict[str, Any]:
    """A FeatureSpec as plain lists (safe to store with weights_only checkpoints)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def spec_from_dict(d: dict[str, Any]) -> FeatureSpec:
    """The inverse of spec_to_dict."""
    return FeatureSpec(
        tuple(d["numeric"]),
        tuple(d["categorical"]),
        tuple(d["text"]),
        d["label"],
        tuple(d["classes"]),
    )


def load_predictor(path: Path | str, device: str | torch.device = "cpu") -> Predictor:
    """Load models/model.pt (written by the train stage) as a Predictor."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt["preprocessor"]
    if state["text"]["columns"] and state.get("version", 1) < PREPROCESSOR_VERSION:
        raise InputError(
            f"{path}: the model hashes its text columns with preprocessor version "
            f"{state.get('version', 1)}, this code with {PREPROCESSOR_VERSION}; its text features "
            "would be wrong. Retrain it: dvc repro train"
        )
    model = build_net(state, **ckpt["net"])
    weights = {"temperature": torch.ones(()), **ckpt["model"]}  # models from before calibration
    model.load_state_dict(weights)
    model.to(device).eval()
    return Predictor(
        model, state, spec_from_dict(ckpt["spec"]), list(ckpt["classes"]), torch.device(device)
    )
