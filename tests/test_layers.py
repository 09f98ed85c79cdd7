"""Layering: DVC only through its public interface, stages never import flows, and a `pipeline
--help` that imports none of the heavy libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("stages", "flows", "tests", "benchmarks")
# DVC's public Python interface: dvc.api, and the Repo class (`Repo.index`, `Repo.reproduce`).
PUBLIC_DVC = {"dvc.api": None, "dvc.repo": {"Repo"}}
DVC_PACKAGES = ("dvc", "dvc_data", "dvc_objects")
HEAVY = ("prefect", "torch", "great_expectations", "dvc")


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in a file, `importlib.import_module("x")` too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [a.name for a in node.names]
            if node.module in DVC_PACKAGES:  # `from dvc import api` imports the module dvc.api
                found += [(node.lineno, f"{node.module}.{n}", []) for n in names]
            else:
                found.append((node.lineno, node.module, names))
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value), []))
    return found


def python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def private_dvc_imports(path: Path, root: Path = ROOT) -> list[str]:
    """Every import of a DVC name outside PUBLIC_DVC in a file, as 'path:line: module'."""
    bad = []
    for line, module, names in imports(path):
        if module.split(".")[0] not in DVC_PACKAGES:
            continue
        allowed = PUBLIC_DVC.get(module, set()) if module in PUBLIC_DVC else set()
        if module in PUBLIC_DVC and (allowed is None or set(names) <= allowed):
            continue
        shown = f"{module} ({', '.join(names)})" if names else module
        bad.append(f"{path.relative_to(root)}:{line}: {shown}")
    return bad


def test_no_private_dvc_name_is_imported_anywhere():
    bad = [b for p in python_files(*CODE_DIRS) for b in private_dvc_imports(p)]
    assert not bad, "private DVC / dvc_data imports (use dvc.api, Repo or the dvc CLI):\n" + (
        "\n".join(bad)
    )


def test_the_private_import_check_can_fail(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from dvc.repo import Repo\nimport dvc.api\nfrom dvc import api\n"
        "from dvc.stage.run import _make_cmd\nfrom dvc_data.hashfile.build import build\n"
        "from dvc.repo import lock_repo\nimportlib.import_module('dvc.rwlock')\n"
    )
    found = [b.split(": ", 1)[1] for b in private_dvc_imports(sample, tmp_path)]
    assert found == [
        "dvc.stage.run (_make_cmd)",
        "dvc_data.hashfile.build (build)",
        "dvc.repo (lock_repo)",
        "dvc.rwlock",
    ]


def test_stages_never_import_flows():
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {module}"
        for p in python_files("stages")
        for line, module, _ in imports(p)
        if module.split(".")[0] == "flows"
    ]
    assert not bad, "stages/ must not import flows/ (move the shared code into stages):\n" + (
        "\n".join(bad)
    )


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "sys.argv = ['pipeline', '--help']\n"
        "from stages.cli import app\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert "predict" in r.stdout and "lineage" in r.stdout and "forget" in r.stdout
    assert r.stderr.strip().splitlines()[-1] == "[]", r.stderr


@pytest.mark.parametrize("name", ["predict", "forget", "lineage"])
def test_lazy_commands_show_their_own_help_and_load_when_used(name):
    from stages import cli

    command = cli.load_command(name)
    own = (command.help or "").strip().splitlines()[0]
    assert cli.LAZY[name][2] == own  # the help line listed without importing is the real one
    result = CliRunner().invoke(cli.app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and "--install-completion" not in result.output
