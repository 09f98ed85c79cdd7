"""Artefact paths that more than one module names, defined once (stdlib only: cheap to import)."""

from __future__ import annotations

from pathlib import Path

# Written by the train stage; read by evaluate and predict.
MODEL_PATH = Path("models/model.pt")
