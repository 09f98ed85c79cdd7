"""Prefect flows that run the DVC pipeline: one task per dvc.yaml stage, sharing DVC's cache."""
