"""The one run identity: git state, the Prefect flow run, package versions, host.

Lineage's run records and the report's identity section both read it from here, so they agree
on what a dirty tree is, which Prefect run this is and which packages count.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import sys
import tomllib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from stages.lib.git import git_state, tree_text

PROJECT = "privacy-pipeline"


def prefect_flow_run_id() -> str | None:
    """The Prefect flow run this process belongs to: Prefect's runtime when it is already
    loaded (a flow in this process), else the id Prefect passes to the commands it starts."""
    if "prefect" in sys.modules:  # never import Prefect just to ask
        try:
            from prefect.runtime import flow_run

            if flow_run.id:
                return str(flow_run.id)
        except Exception:  # outside a flow run, or an older Prefect: fall back to the env
            pass
    return os.environ.get("PREFECT__FLOW_RUN_ID") or os.environ.get("PREFECT_FLOW_RUN_ID")


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]


def declared_packages(root: Path | str = ".") -> list[str]:
    """The project and its declared dependencies, by distribution name: from the project's
    pyproject.toml, else from the installed project's metadata (the same list)."""
    path = Path(root) / "pyproject.toml"
    if path.is_file():
        project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
        deps = project.get("dependencies", [])
        return [project.get("name", PROJECT), *(_name(d) for d in deps)]
    try:
        requires = importlib.metadata.requires(PROJECT) or []
    except importlib.metadata.PackageNotFoundError:
        return [PROJECT]
    return [PROJECT, *(_name(r) for r in requires if "extra ==" not in r)]


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Python's version and each distribution's installed version (None: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def pinned_environment() -> list[str]:
    """Every installed distribution as `name==version` (a pip freeze without pip)."""
    pins = {
        f"{d.metadata['Name']}=={d.version}"
        for d in importlib.metadata.distributions()
        if d.metadata["Name"]
    }
    return sorted(pins, key=str.lower)


def host() -> str:
    """The machine, in words."""
    return (
        f"{platform.node() or '?'}: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )


def run_identity(
    root: Path | str = ".", outputs: Iterable[str] = (), now: datetime | None = None
) -> dict:
    """When, git state (commit, branch, dirty = code changed), the tree in words, host,
    Prefect flow-run id and package versions, for the project at root."""
    state = git_state(root, outputs)
    return {
        "time": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
        "git": state,
        "tree": tree_text(state),
        "host": host(),
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "prefect_flow_run_id": prefect_flow_run_id(),
        "packages": package_versions(declared_packages(root)),
    }
