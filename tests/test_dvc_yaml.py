"""dvc.yaml names, for every stage, its module and every project module that module imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def project_imports(module: Path, seen: set[Path] | None = None) -> set[Path]:
    """The project's own source files a module imports, transitively."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if not name.startswith("stages."):
                continue
            path = ROOT / (name.replace(".", "/") + ".py")
            if path.is_file() and path not in seen:
                seen.add(path)
                project_imports(path, seen)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_project_module_is_a_dependency(stage: str) -> None:
    spec = STAGES[stage]
    module = spec["cmd"].split("-m ", 1)[1].split()[0]
    source = ROOT / (module.replace(".", "/") + ".py")
    deps = {d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])}
    needed = {p.relative_to(ROOT).as_posix() for p in project_imports(source) | {source}}
    assert needed <= deps, f"{stage}: add to its deps in dvc.yaml: {sorted(needed - deps)}"
