"""Artefact paths that more than one module names, defined once (stdlib only: cheap to import)."""

from __future__ import annotations

from pathlib import Path

# The project's configuration: params read by every stage, the DAG that init and ingest edit.
PARAMS_FILE = Path("params.yaml")
DVC_YAML = Path("dvc.yaml")

# Stage outputs, each written by one stage and read by the next (as dvc.yaml wires them).
RAW_DIR = Path("data/raw")  # ingest -> clean
CLEAN_DIR = Path("data/clean")  # clean -> validate, anonymize
ANON_DIR = Path("data/anon")  # anonymize -> split
TRAIN_SPLIT_DIR = Path("data/split/train")  # split -> augment, evaluate (its baselines)
AUGMENTED_DIR = Path("data/train_aug")  # augment -> train
# Written by the train stage; read by evaluate, predict and lineage (its default target).
MODEL_PATH = Path("models/model.pt")
METRICS_DIR = Path("metrics")  # every stage's summary -> report
PLOTS_DIR = Path("plots")  # evaluate -> report
