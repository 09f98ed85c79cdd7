"""The environment for commands the pipeline starts (dvc, stage commands)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path


def interpreter_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) with this interpreter's bin dir first on PATH.

    Stage commands say `python -m stages.<name>`; started from a virtual environment that is
    not activated, they must still find that environment's python and its packages.
    """
    env = dict(os.environ if base is None else base)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env
