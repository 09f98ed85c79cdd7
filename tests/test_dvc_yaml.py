"""dvc.yaml names, for every stage, its module and every project module that module imports,
and for ingest the sources params.yaml names, so that DVC sees the user's data change."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from stages import lineage, report
from tests.conftest import project_copy, run_module, source_frame

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def module_files(name: str) -> list[Path]:
    """A module's source: its .py file, or a package's __init__.py (the __init__.py files of the
    packages above it, stages/ and stages/lib/, hold no code and are not listed)."""
    path = ROOT.joinpath(*name.split("."))
    return [f for f in (path.with_suffix(".py"), path / "__init__.py") if f.is_file()]


def project_imports(module: Path, seen: set[Path] | None = None) -> set[Path]:
    """The project's own source files a module imports, transitively."""
    seen = set() if seen is None else seen
    for node in ast.walk(ast.parse(module.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from stages.report import plots` imports the submodule stages.report.plots;
            # `from stages.report import main`, a name of the package's __init__.py
            subs = [f"{node.module}.{a.name}" for a in node.names]
            names = [m for m in subs if module_files(m)]
            if len(names) < len(subs):
                names.append(node.module)
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if not name.startswith("stages."):
                continue
            for path in module_files(name):
                if path not in seen:
                    seen.add(path)
                    project_imports(path, seen)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_project_module_is_a_dependency(stage: str) -> None:
    spec = STAGES[stage]
    module = spec["cmd"].split("-m ", 1)[1].split()[0]
    package_main = ROOT.joinpath(*module.split("."), "__main__.py")  # `python -m a_package`
    sources = set(module_files(module)) | ({package_main} if package_main.is_file() else set())
    deps = {d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])}
    needed = set()
    for source in sources:
        needed |= {p.relative_to(ROOT).as_posix() for p in project_imports(source) | {source}}
    assert sources, f"{stage}: no source file for module {module}"
    assert needed <= deps, f"{stage}: add to its deps in dvc.yaml: {sorted(needed - deps)}"


def test_ingest_deps_are_the_sources_in_params():
    """DVC cannot expand params.yaml's ingest.sources into deps, so dvc.yaml lists them: the
    same files, or DVC would not see the user's data change (or would need files not read)."""
    sources = yaml.safe_load((ROOT / "params.yaml").read_text())["ingest"]["sources"]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in STAGES["ingest"]["deps"]]
    data = [d for d in deps if not d.startswith("stages/")]
    assert sorted(data) == sorted(sources), "make ingest's data deps in dvc.yaml ingest.sources"


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run_module(root, "dvc", *args)


@pytest.mark.slow
def test_dvc_sees_a_changed_source_named_in_params(tmp_path):
    """Bring your own data: a source that is not the sample, named in params.yaml and (as the
    README says) in ingest's deps; after it changes, DVC, `lineage why` and the report see it."""
    root = project_copy(tmp_path / "p")
    mine = "data/mine/customers.csv"
    (root / mine).parent.mkdir(parents=True)
    source_frame(40).to_csv(root / mine, index=False)
    params = yaml.safe_load((root / "params.yaml").read_text())

    # params.yaml alone: ingest refuses to run rather than read data DVC cannot see.
    params["ingest"]["sources"] = [mine]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = _dvc(root, "repro", "ingest")
    assert done.returncode != 0
    assert f"['{mine}'], which dvc.yaml does not list as deps of the ingest stage" in done.stderr

    dag = (root / "dvc.yaml").read_text()
    dag = dag.replace("- data/sample/customers_batch1.csv.gz\n      - data/incoming", f"- {mine}")
    (root / "dvc.yaml").write_text(dag)
    done = _dvc(root, "repro", "ingest")
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(_dvc(root, "status", "--json", "ingest").stdout) == {}

    lines = (root / mine).read_text().splitlines(keepends=True)
    (root / mine).write_text("".join(lines[:-10]))  # the user deletes 10 rows
    status = json.loads(_dvc(root, "status", "--json", "ingest").stdout)
    assert status == {"ingest": [{"changed deps": {mine: "modified"}}]}, status
    why = {r["stage"]: r["causes"] for r in lineage.why(root)}
    assert any(mine in json.dumps(c) for c in why["ingest"]), why
    lock = lineage.read_lock(root)
    deps = {d["path"] for s in report.lineage_section(lock)["stages"] for d in s["deps"]}
    assert mine in deps and "data/sample/customers_batch1.csv.gz" not in deps
