"""Train under torchrun: two CPU processes (gloo) match one process, and only rank 0 writes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
import torch
import yaml

from stages.lib.io import write_dataset
from stages.train import TrainConfig, epoch_shard
from tests.conftest import venv_env
from tests.test_train import CATEGORICAL, NUMERIC, frame, schema_params

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"

# numbers and a category, no text: the label is noisy, so accuracy (~0.85) has room to differ
CFG = TrainConfig(
    seed=11,
    device="cpu",
    epochs=6,
    min_steps=0,
    batch_size=128,
    lr=0.01,
    warmup_fraction=0.1,
    width=32,
    blocks=1,
    cat_min_count=2,
    numeric_bins=8,
    patience=10,
    patience_min_steps=0,
)
N_TRAIN, N_VAL = 3000, 1500


def make_project(root: Path) -> None:
    """A project directory with params.yaml, data/train_aug and data/split/val."""
    params = schema_params({**NUMERIC, **CATEGORICAL})
    params["train"] = json.loads(json.dumps(dataclasses.asdict(CFG)))
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for name, df in [("train_aug", frame(N_TRAIN, 1)), ("split/val", frame(N_VAL, 2))]:
        table = pa.Table.from_pandas(df, preserve_index=False)
        write_dataset(root / "data" / name, [("part-0.parquet", table)])


def run(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run the stage in `cwd` with this worktree's `stages`, one thread per process."""
    env = venv_env(OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT)  # this worktree's stages, not the editable install's
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=150)
    dt = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, dt


def outputs(root: Path) -> list[str]:
    """Every file in the project but its inputs."""
    inputs = {"params.yaml", "data"}
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).parts[0] not in inputs
    )


def test_two_gloo_processes_match_one_process(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    make_project(single)
    make_project(ddp)
    _, t_one = run([sys.executable, "-m", "stages.train"], single)
    # --standalone: torchrun rendezvous on a free local port of its own (no MASTER_PORT to pick)
    two, t_two = run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "stages.train"], ddp
    )
    log = two.stdout + two.stderr

    # both wrote the same set of files once: no per-rank copies, no temporaries left behind
    expected = [
        "metrics/train.json",
        "models/checkpoint/last.pt",
        "models/model.pt",
        "plots/train_curve.csv",
    ]
    assert outputs(single) == outputs(ddp) == expected
    ckpt = torch.load(ddp / "models/model.pt", weights_only=True)  # loads: not corrupt
    assert ckpt["info"]["world_size"] == 2
    assert len(pd.read_csv(ddp / "plots/train_curve.csv")) == CFG.epochs
    # rank 0 alone logs the epochs
    assert len(re.findall(r"^epoch ", log, flags=re.M)) == CFG.epochs

    # each rank trained on its own half of every batch: the shards it reports are disjoint
    # and together are exactly the rows one process sees in that epoch
    shards = {
        int(m[1]): (int(m[2]), m[3])
        # not anchored at a line start: two ranks' prints can land on one line of the log
        for m in re.finditer(r"rank (\d)/2: epoch 1 shard of (\d+) rows, sha ([0-9a-f]{16})", log)
    }
    assert sorted(shards) == [0, 1], log[-3000:]
    steps = N_TRAIN // CFG.batch_size
    mine = [epoch_shard(N_TRAIN, CFG.batch_size, steps, CFG.seed, 0, r, 2) for r in (0, 1)]
    whole = epoch_shard(N_TRAIN, CFG.batch_size, steps, CFG.seed, 0, 0, 1)
    assert not set(mine[0].tolist()) & set(mine[1].tolist())
    assert sorted(mine[0].tolist() + mine[1].tolist()) == sorted(whole.tolist())
    assert len(whole) == steps * CFG.batch_size
    for r in (0, 1):
        assert shards[r] == (
            len(whole) // 2,
            hashlib.sha256(mine[r].numpy().tobytes()).hexdigest()[:16],
        )

    # the same accuracy, and the same amount of data seen
    a = json.loads((single / "metrics/train.json").read_text())
    b = json.loads((ddp / "metrics/train.json").read_text())
    assert (a["world_size"], b["world_size"]) == (1, 2)
    assert a["steps"] == b["steps"] and a["epochs_run"] == b["epochs_run"]
    assert a["best_val_accuracy"] > 0.8
    assert abs(a["best_val_accuracy"] - b["best_val_accuracy"]) <= 0.02
    print(
        f"single: acc {a['best_val_accuracy']:.4f} in {t_one:.1f}s; "
        f"ddp x2: acc {b['best_val_accuracy']:.4f} in {t_two:.1f}s",
        file=sys.stderr,
    )
