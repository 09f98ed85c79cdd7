"""Prefect flows that run the DVC pipeline: one task per dvc.yaml stage, sharing DVC's cache."""

import os

# Offline by default: no telemetry from Prefect's server, DVC or Great Expectations. Set before
# Prefect is imported (it reads its settings at import); an explicit setting still wins.
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}.items():
    os.environ.setdefault(_name, _value)
