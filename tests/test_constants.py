"""One home per constant (issue 15): no path or column name is defined, as a module-level
constant, in two modules of stages/; the others import it (paths from stages/lib/paths.py,
column names from stages/lib/schema.py)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _literal(value: ast.expr) -> str | None:
    """The text a constant is defined as: a str literal, or the argument of Path("...")."""
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    if (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "Path"
        and len(value.args) == 1
        and isinstance(value.args[0], ast.Constant)
    ):
        return f"Path({value.args[0].value!r})"
    return None


def module_constants(source: Path) -> dict[str, str]:
    """{UPPER_CASE name: its literal} for the module-level constants of one file."""
    found = {}
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        literal = _literal(node.value) if targets else None
        for target in targets:
            if literal is not None and isinstance(target, ast.Name) and target.id.isupper():
                found[target.id] = literal
    return found


def test_no_constant_is_defined_in_two_modules() -> None:
    homes: dict[str, list[str]] = defaultdict(list)
    for source in sorted((ROOT / "stages").rglob("*.py")):
        for name, literal in module_constants(source).items():
            homes[literal].append(f"{source.relative_to(ROOT)}:{name}")
    repeated = {literal: where for literal, where in homes.items() if len(where) > 1}
    assert not repeated, f"define each once in stages/lib and import it: {repeated}"


def test_the_scan_finds_a_repeated_constant(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text('from pathlib import Path\nOUT = Path("data/x")\nCOL: str = "_flag"\n')
    assert module_constants(source) == {"OUT": "Path('data/x')", "COL": "_flag"}
