"""Benchmark: the project's training loop against the seed articles' loop, on UCI Adult.

Seed-style loop: a per-row torch Dataset through a DataLoader, batch 64, fp32, Adam, each batch
copied to the device. Previous net: the project loop with the network and features before
issue 16 (MLP 256-128, no numeric encodings, 4,096 text buckets). Project loop: stages.train.fit
(data resident on the device, large batches, bf16 autocast on a GPU). Same data. Prints training
samples per second of each (training steps only, validation excluded), the ratios, and test
accuracy and ROC-AUC of each; then what anonymization's generalisation costs.

    PYTHONPATH=. python benchmarks/bench_train.py --quick            # CPU, about 3 minutes
    PYTHONPATH=. python benchmarks/bench_train.py --device cuda      # on the GPU machine
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.adult import generalize, load_adult
from stages.lib.config import pipeline_params
from stages.lib.features import FeatureSpec, Policy, column_policies, feature_spec
from stages.lib.model import (
    Predictor,
    Tensors,
    build_net,
    cat_dim,
    fit_preprocessor,
    transform,
)
from stages.train import TrainConfig, fit


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC-AUC by the rank statistic (ties share their mean rank), numpy only."""
    y = np.asarray(y).astype(bool)
    order = np.argsort(score, kind="mergesort")
    _, inv, counts = np.unique(np.asarray(score)[order], return_inverse=True, return_counts=True)
    mean_rank = np.cumsum(counts) - (counts - 1) / 2
    ranks = np.empty(len(y))
    ranks[order] = mean_rank[inv]
    pos, neg = int(y.sum()), int((~y).sum())
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def test_metrics(pred: Predictor, test: pd.DataFrame) -> dict[str, float]:
    """Accuracy and ROC-AUC (positive class: the last of `classes`) on the test frame."""
    proba = pred.predict_proba(test)
    y = test[pred.spec.label].astype(str).map({c: i for i, c in enumerate(pred.classes)})
    y = y.to_numpy()
    return {
        "accuracy": float((proba.argmax(1) == y).mean()),
        "roc_auc": roc_auc(y == len(pred.classes) - 1, proba[:, -1]),
    }


# ---------------------------------------------------------------- the seed articles' loop


class RowDataset(Dataset):
    """One row at a time, as the seed articles do."""

    def __init__(self, t: Tensors):
        self.t = t

    def __len__(self) -> int:
        return len(self.t)

    def __getitem__(self, i: int):
        t = self.t
        texts = [f[o[i] : o[i + 1]] for f, o in zip(t.text_flat, t.text_off, strict=True)]
        return t.x_num[i], t.x_cat[i], texts, t.y[i]


def collate(items):
    """Stack rows into a batch; text bags become flat ids + offsets."""
    x_num = torch.stack([it[0] for it in items])
    x_cat = torch.stack([it[1] for it in items])
    flats, offs = [], []
    for c in range(len(items[0][2])):
        bags = [it[2][c] for it in items]
        lens = torch.tensor([len(b) for b in bags])
        flats.append(torch.cat(bags))
        offs.append(torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(lens, 0)]))
    return x_num, x_cat, flats, offs, torch.stack([it[3] for it in items])


def seed_style_fit(train_df, val_df, spec, cfg, device, epochs, patience):
    """The seed loop: DataLoader(batch 64), fp32, Adam 1e-3, early stopping on val loss."""
    torch.manual_seed(cfg.seed)
    state = fit_preprocessor(train_df, spec, cfg.prep())
    train, val = transform(train_df, state), transform(val_df, state)
    model = build_net(state, **cfg.net()).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(
        RowDataset(train),
        batch_size=64,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    val_loader = DataLoader(RowDataset(val), batch_size=1024, collate_fn=collate)
    best, best_state, bad, train_time, seen, epochs_run = math.inf, None, 0, 0.0, 0, 0
    for _epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x_num, x_cat, flats, offs, y in loader:
            x_num, x_cat, y = x_num.to(device), x_cat.to(device), y.to(device)
            flats = [f.to(device) for f in flats]
            offs = [o.to(device) for o in offs]
            loss = F.cross_entropy(model(x_num, x_cat, flats, offs), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t0
        epochs_run += 1
        model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for x_num, x_cat, flats, offs, y in val_loader:
                logits = model(
                    x_num.to(device),
                    x_cat.to(device),
                    [f.to(device) for f in flats],
                    [o.to(device) for o in offs],
                )
                total += F.cross_entropy(logits, y.to(device), reduction="sum").item()
                n += len(y)
        val_loss = total / n
        if val_loss < best - 1e-4:
            best, best_state, bad = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            bad += 1
            if bad >= patience:
                break
    model.load_state_dict(best_state)
    model.eval()
    pred = Predictor(model, state, spec, list(spec.classes), device)
    return pred, {
        "samples_per_s": seen / train_time,
        "epochs_run": epochs_run,
        "train_time_s": train_time,
    }


def project_fit(train_df, val_df, spec, cfg, device):
    """The project's loop: stages.train.fit."""
    res = fit(train_df, val_df, spec, cfg, log=lambda _m: None)
    pred = Predictor(res.model, res.state, spec, list(spec.classes), device)
    return pred, res.info


# ---------------------------------------------------------------- the model before issue 16


class PreviousNet(nn.Module):
    """The network before issue 16 (an MLP 256-128 over numbers, category embeddings and a
    4,096-bucket mean bag of character n-grams), kept here to measure the new one against."""

    def __init__(self, state: dict, cat_emb_dim: int = 16, text_dim: int = 8, **_ignored):
        super().__init__()
        cards = [len(v) for v in state["categorical"].values()]
        self.cat_emb = nn.ModuleList(nn.Embedding(c, cat_dim(c, cat_emb_dim)) for c in cards)
        self.text_emb = nn.ModuleList(
            nn.EmbeddingBag(state["text"]["buckets"], text_dim, include_last_offset=True)
            for _ in state["text"]["columns"]
        )
        width = 2 * len(state["numeric"]) + sum(e.embedding_dim for e in self.cat_emb)
        width += text_dim * len(self.text_emb)
        layers: list[nn.Module] = []
        for h in (256, 128):
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.GELU(), nn.Dropout(0.3)]
            width = h
        self.mlp = nn.Sequential(*layers, nn.Linear(width, len(state["classes"])))

    def forward(self, x_num, x_cat, text_flat, text_off):
        parts = [x_num] + [e(x_cat[:, i]) for i, e in enumerate(self.cat_emb)]
        parts += [e(f, o) for e, f, o in zip(self.text_emb, text_flat, text_off, strict=True)]
        return self.mlp(torch.cat(parts, dim=1))


def previous_config(cfg: TrainConfig) -> TrainConfig:
    """The params before issue 16: no numeric encodings, 4,096 character-n-gram buckets."""
    return dataclasses.replace(
        cfg, numeric_bins=0, text_buckets=4096, word_ngram_max=0, prior_correction=False
    )


def previous_fit(train_df, val_df, spec, cfg, device):
    """The project's loop with the network and features before issue 16."""
    res = fit(train_df, val_df, spec, previous_config(cfg), log=lambda _m: None, build=PreviousNet)
    pred = Predictor(res.model, res.state, spec, list(spec.classes), device)
    return pred, res.info


# ---------------------------------------------------------------- variants of the features


def anonymized(frames, spec: FeatureSpec, policies: dict[str, Policy]):
    """The frames as anonymize leaves them for the model: numeric columns banded per policy."""
    bands = {
        c: p.band
        for c, p in policies.items()
        if p.action == "generalize" and p.band and c in spec.categorical
    }
    return [generalize(f, bands) for f in frames], bands


def parse_args() -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="one repeat, short seed-style run")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--seed-epochs", type=int, default=None, help="max epochs, seed-style loop")
    ap.add_argument("--compile", action="store_true", help="torch.compile the project model")
    ap.add_argument("--skip-anonymization", action="store_true")
    ap.add_argument("--adult-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the results here")
    return ap.parse_args()


def adult_dir(given: str | None) -> Path:
    """The first folder holding adult.data: --adult-dir, $ADULT_DIR, then the shared copies."""
    candidates = [given, os.environ.get("ADULT_DIR"), "/work/shared/data/adult"]
    candidates.append("shared/data/adult")
    return next(Path(c) for c in candidates if c and (Path(c) / "adult.data").exists())


def pick_device(choice: str) -> torch.device:
    """cuda when asked for, or on auto when there is one; the CPU otherwise."""
    use_cuda = choice == "cuda" or (choice == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if use_cuda else "cpu")


def compare_loops(data, spec, cfg, device, repeats, seed_epochs, seed_patience) -> dict:
    """The three loops on the same anonymized frames, `repeats` seeds each: medians per loop."""
    a_train, a_val, a_test = data
    runs = {"seed": [], "previous": [], "project": []}
    keep = ("samples_per_s", "epochs_run", "train_time_s", "precision", "batch_size")
    for r in range(repeats):
        c = dataclasses.replace(cfg, seed=cfg.seed + r)
        pred, info = seed_style_fit(a_train, a_val, spec, c, device, seed_epochs, seed_patience)
        runs["seed"].append({**info, **test_metrics(pred, a_test)})
        print(f"  seed-style   #{r}: {runs['seed'][-1]}")
        pred, info = previous_fit(a_train, a_val, spec, c, device)
        runs["previous"].append({**{k: info[k] for k in keep}, **test_metrics(pred, a_test)})
        print(f"  previous net #{r}: {runs['previous'][-1]}")
        pred, info = project_fit(a_train, a_val, spec, c, device)
        runs["project"].append({**{k: info[k] for k in keep}, **test_metrics(pred, a_test)})
        print(f"  project loop #{r}: {runs['project'][-1]}")
    return {
        k: {
            m: statistics.median(x[m] for x in rs)
            for m in ("samples_per_s", "accuracy", "roc_auc", "train_time_s", "epochs_run")
        }
        for k, rs in runs.items()
    }


def print_loops(results: dict, repeats: int) -> None:
    """The table of the three loops, the speed-up and the epoch-time ratio; adds both ratios."""
    ratio = results["project"]["samples_per_s"] / results["seed"]["samples_per_s"]
    results["speedup"] = ratio

    print(f"\n{'loop':<14}{'samples/s':>12}{'train s':>9}{'epochs':>8}{'test acc':>10}{'AUC':>8}")
    for k, label in (("seed", "seed-style"), ("previous", "previous net"), ("project", "project")):
        m = results[k]
        print(
            f"{label:<14}{m['samples_per_s']:>12,.0f}{m['train_time_s']:>9.1f}"
            f"{m['epochs_run']:>8.0f}{m['accuracy']:>10.4f}{m['roc_auc']:>8.4f}"
        )
    print(f"speedup (project / seed-style samples/s): {ratio:.1f}x  (medians of {repeats})")
    per_epoch = results["previous"]["samples_per_s"] / results["project"]["samples_per_s"]
    results["epoch_time_vs_previous"] = per_epoch
    print(f"epoch time, project / previous net (same loop, same run): {per_epoch:.2f}x")


def anonymization_variants(schema, spec, frames, anonymized_frames, bands) -> dict:
    """Label -> (spec, train, val, test, bands): the params' anonymization, the features as-is
    and, when the params band nothing, an illustrative band of 10 on the numeric QIs."""
    raw_spec = feature_spec(schema, {c: Policy("keep") for c in schema.columns})
    raw_spec = dataclasses.replace(
        raw_spec,
        numeric=tuple(c for c in raw_spec.numeric if c in spec.numeric + spec.categorical),
        categorical=tuple(c for c in raw_spec.categorical if c in spec.categorical),
        text=spec.text,
    )
    variants = {"anonymized (params policies)": (spec, *anonymized_frames, bands)}
    variants["un-anonymized (features as-is)"] = (raw_spec, *frames, {})
    if not bands:
        # the params leave Adult's features as they are: show what a band would cost
        qi = [c for c in schema.quasi_identifiers if c in spec.numeric]
        illus = {c: 10 for c in qi}
        ispec = dataclasses.replace(
            spec,
            numeric=tuple(c for c in spec.numeric if c not in illus),
            categorical=spec.categorical + tuple(illus),
        )
        banded = [generalize(f, illus) for f in frames]
        variants[f"illustrative: {sorted(illus)} banded by 10"] = (ispec, *banded, illus)
    return variants


def anonymization_cost(variants: dict, cfg, device, repeats: int) -> dict:
    """What anonymization's generalisation costs: the project loop on each variant, medians."""
    print("\nanonymization cost (project loop, median over seeds):")
    costs = {}
    for label, (vspec, tr, va, te, b) in variants.items():
        accs, aucs = [], []
        for r in range(repeats):
            c = dataclasses.replace(cfg, seed=cfg.seed + r)
            pred, _ = project_fit(tr, va, vspec, c, device)
            m = test_metrics(pred, te)
            accs.append(m["accuracy"])
            aucs.append(m["roc_auc"])
        acc, auc = statistics.median(accs), statistics.median(aucs)
        costs[label] = {"accuracy": acc, "roc_auc": auc, "bands": b}
        print(f"  {label:<40} test acc {acc:.4f}  AUC {auc:.4f}  bands {b}")
    return costs


def main() -> None:
    """Run the benchmark and print the table."""
    args = parse_args()
    adult = adult_dir(args.adult_dir)
    repeats = args.repeats or (1 if args.quick else 3)
    seed_epochs = args.seed_epochs or (2 if args.quick else 30)
    seed_patience = 2 if args.quick else 4

    p = pipeline_params()
    cfg = dataclasses.replace(p.train, device=args.device, compile=args.compile, resume=False)
    schema = p.schema
    policies = column_policies(schema, p.anonymize.policies)
    spec = feature_spec(schema, policies)
    device = pick_device(args.device)
    frames = load_adult(adult)
    train, val, test = frames
    a_frames, bands = anonymized(frames, spec, policies)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"train {len(train)} / val {len(val)} / test {len(test)} rows; features {spec}")

    results = compare_loops(a_frames, spec, cfg, device, repeats, seed_epochs, seed_patience)
    print_loops(results, repeats)
    if not args.skip_anonymization:
        variants = anonymization_variants(schema, spec, frames, a_frames, bands)
        results["anonymization"] = anonymization_cost(variants, cfg, device, repeats)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
