"""Pipeline stages: one module per DVC stage, plus shared helpers in stages.lib.

Stage commands in dvc.yaml say `python -m stages.<name>`: `python` is whichever one PATH finds.
A python without the project's packages (a fresh shell that did not activate .venv, running
`.venv/bin/dvc repro`) stops here with the fix, not with an import error deep in a stage.
"""

import importlib.util
import sys

if any(importlib.util.find_spec(m) is None for m in ("pyarrow", "yaml")):
    print(
        f"{sys.executable} has not the project's packages installed: activate the project's "
        "environment first (`source .venv/bin/activate`, then `dvc repro`), or run "
        "`.venv/bin/pipeline repro`, which runs the stages with its own interpreter.",
        file=sys.stderr,
    )
    sys.exit(2)
