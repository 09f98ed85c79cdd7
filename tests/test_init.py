"""`pipeline init`: what it infers for each shape of user table, what it writes, what it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app
from stages.init import rewrite_sources
from stages.lib.keys import DEMO_KEY_FILE, KEY_ENV

ROOT = Path(__file__).resolve().parents[1]
BYOD = ROOT / "tests/fixtures/byod"
HAND_WRITTEN = yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> Path:
    """A directory with the project's params.yaml and dvc.yaml and the fixtures, as cwd."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(BYOD, tmp_path / "byod", ignore=shutil.ignore_patterns("*.py"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def init(*args: str) -> tuple[int, str, dict]:
    """Run `pipeline init ARGS` in the current directory; (exit code, output, params)."""
    done = CliRunner().invoke(app, ["init", *args], env={"COLUMNS": "200"})
    params = yaml.safe_load(Path("params.yaml").read_text())
    return done.exit_code, done.output, params


def roles(params: dict) -> dict[str, tuple]:
    return {
        n: (c["role"], c.get("pii"), bool(c.get("quasi")), bool(c.get("sensitive")))
        for n, c in params["schema"]["columns"].items()
    }


def test_headerless_sms_tsv(project: Path) -> None:
    code, out, p = init("byod/sms.tsv", "--columns", "label,text", "--force")
    assert code == 0, out
    cols = p["schema"]["columns"]
    assert cols["label"] == {"type": "category", "role": "label", "values": ["ham", "spam"]}
    assert cols["text"]["role"] == "text"
    assert not any(c["role"] == "key" for c in cols.values())
    assert p["ingest"] == {"sources": ["byod/sms.tsv"], "format": None, "header": False}
    assert p["evaluate"]["positive_class"] == "spam"
    shares = p["validate"]
    assert 0 < shares["min_class_share"] < 0.15 < 0.85 < shares["max_class_share"] < 1
    dag = yaml.safe_load(Path("dvc.yaml").read_text())
    data_deps = [d for d in dag["stages"]["ingest"]["deps"] if not d.startswith("stages/")]
    assert data_deps == ["byod/sms.tsv"]
    # Every inferred schema line says why.
    text = Path("params.yaml").read_text()
    assert "text: {type: string, role: text}  # init: free text" in text


def test_csv_without_id_finds_identifiers_by_content(project: Path) -> None:
    code, out, p = init("byod/customers.csv", "--force")
    assert code == 0, out
    r = roles(p)
    assert r["name"] == ("identifier", "name", False, False)
    assert r["email"] == ("identifier", "email", False, False)
    assert r["date_of_birth"][0] == "attribute" and r["date_of_birth"][2]
    assert r["gender"] == ("categorical", None, True, True)
    assert r["postcode"][2] and r["churned"][0] == "label"
    # yes/no stay strings for YAML 1.1 readers (PyYAML would read them as booleans).
    assert sorted(p["schema"]["columns"]["churned"]["values"]) == ["no", "yes"]
    assert not any(v[0] == "key" for v in r.values())
    pol = p["anonymize"]["policies"]
    assert pol["name"] == pol["email"] == "drop"
    assert pol["date_of_birth"] in ("drop", {"action": "generalize", "date": "year"})
    assert pol["postcode"]["action"] in ("generalize",) or pol["postcode"] == "drop"
    assert p["schema"]["columns"]["date_of_birth"]["type"] == "date"


def test_chinese_reviews_gz(project: Path) -> None:
    code, out, p = init("byod/reviews_zh.csv.gz", "--force")
    assert code == 0, out
    cols = p["schema"]["columns"]
    assert cols["review"]["role"] == "text"
    assert cols["label"]["role"] == "label" and sorted(cols["label"]["values"]) == ["0", "1"]
    assert p["ingest"]["sources"] == ["byod/reviews_zh.csv.gz"]


def test_small_titanic_table(project: Path) -> None:
    code, out, p = init("byod/titanic.csv", "--label", "survived", "--force")
    assert code == 0, out
    r = roles(p)
    assert r["name"][:2] == ("identifier", "name")
    assert r["ticket"][0] == "identifier"  # id-like codes: dropped, not a feature
    assert r["sex"] == ("categorical", None, True, True)
    assert r["age"][0] == "numeric" and r["age"][2]
    assert r["fare"][0] == r["pclass"][0] == "numeric"
    assert r["embarked"][0] == "categorical"
    gate = p["evaluate"]["gate"]
    # The data's own survival gap by sex (~0.4) is above the 0.30 bound: not gated, said so.
    assert gate["max_demographic_parity_diff"] is None
    assert "not gated" in Path("params.yaml").read_text()
    assert 0.5 < gate["min_accuracy"] < 0.7


def test_refuses_to_overwrite_without_force(project: Path) -> None:
    assert init("byod/customers.csv", "--force")[0] == 0
    before = Path("params.yaml").read_bytes()
    code, out, _ = init("byod/titanic.csv", "--label", "survived")
    assert code == 2 and "--force" in out
    assert Path("params.yaml").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["byod/missing.csv", "--force"], "no such file"),
        (["byod/titanic.csv", "--label", "nope", "--force"], "--label nope: no such column"),
        (["byod/sms.tsv", "--columns", "a,b,c", "--force"], "names 3 columns"),
        (["byod/sms.tsv", "--force"], "looks like data, not a header"),
        (["byod/one_class.csv", "--force"], "1 class(es)"),
        (["byod/noext", "--force"], "--format"),
    ],
)
def test_bad_input_exits_2(project: Path, args: list[str], message: str) -> None:
    Path("byod/one_class.csv").write_text("x,label\n1,a\n2,a\n3,a\n")
    Path("byod/noext").write_text("x,label\n1,a\n2,b\n")
    before = Path("params.yaml").read_bytes()
    code, out, _ = init(*args)
    assert code == 2, out
    assert message in out.replace("\n", " ")
    assert "Traceback" not in out
    assert Path("params.yaml").read_bytes() == before


def test_format_option_reads_an_extensionless_file(project: Path) -> None:
    shutil.copy("byod/titanic.csv", "byod/passengers")
    code, out, p = init("byod/passengers", "--format", "csv", "--label", "survived", "--force")
    assert code == 0, out
    assert p["ingest"]["format"] == "csv"


def test_creates_a_demo_key_only_without_one(project: Path, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    code, out, _ = init("byod/customers.csv", "--force")
    assert code == 0, out
    assert DEMO_KEY_FILE.exists() and "NOT for real data" in out
    made = DEMO_KEY_FILE.read_bytes()
    code, out, _ = init("byod/customers.csv", "--force")
    assert DEMO_KEY_FILE.read_bytes() == made and "DEMO key" not in out


def test_no_demo_key_when_a_key_is_set(project: Path) -> None:
    code, out, _ = init("byod/customers.csv", "--force")
    assert code == 0, out
    assert not DEMO_KEY_FILE.exists()


def test_rewrite_sources_keeps_every_other_byte() -> None:
    text = (ROOT / "dvc.yaml").read_text()
    new = rewrite_sources(text, ["data/mine/a b.csv", "x: y.csv"])
    lines = new.splitlines()
    i = next(i for i, line in enumerate(lines) if "# The sources:" in line)
    j = next(k for k in range(i, len(lines)) if not lines[k].lstrip().startswith("#"))
    assert lines[j : j + 3] == ["      - data/mine/a b.csv", '      - "x: y.csv"', "    params:"]
    assert rewrite_sources(new, ["data/sample/customers_batch1.csv.gz", "data/incoming"]) == text


def test_sample_agrees_with_the_hand_written_schema(project: Path) -> None:
    """init on the bundled sample (first 2,000 rows) against params.yaml's hand-written schema."""
    sample = str(ROOT / "data/sample/customers_batch1.csv.gz")
    code, out, p = init(sample, "--rows", "2000", "--force")
    assert code == 0, out
    mine, theirs = roles(p), roles(HAND_WRITTEN)
    assert list(mine) == list(theirs)
    same_role = [n for n in theirs if mine[n][0] == theirs[n][0]]
    same_all = [n for n in theirs if mine[n] == theirs[n]]
    differ = {n: [mine[n], theirs[n]] for n in theirs if mine[n] != theirs[n]}
    print(
        f"\nroles agree on {len(same_role)}/{len(theirs)} columns, role+pii+quasi+sensitive "
        f"on {len(same_all)}/{len(theirs)}; differ: {json.dumps(differ)}"
    )
    assert len(same_role) == len(theirs)
    assert len(same_all) >= len(theirs) - 2


@pytest.mark.slow
def test_dvc_sees_the_source_init_wrote(tmp_path: Path) -> None:
    """Real DVC on a git+dvc copy: after init, a change to the source marks ingest changed."""
    from tests.conftest import project_copy, run_module

    root = project_copy(tmp_path / "p")
    shutil.copy(BYOD / "titanic.csv", root / "data/titanic.csv")
    done = run_module(root, "stages.cli", "init", "data/titanic.csv", "--label", "survived")
    assert done.returncode == 0, done.stdout + done.stderr  # params.yaml as committed: no --force
    # Record the ingest stage's deps in dvc.lock without running it (its outputs faked).
    (root / "data/raw").mkdir(parents=True)
    (root / "data/raw/x").write_text("x")
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics/ingest.json").write_text("{}")
    done = run_module(root, "dvc", "commit", "-f", "ingest")
    assert done.returncode == 0, done.stderr
    status = json.loads(run_module(root, "dvc", "status", "--json", "ingest").stdout)
    assert status == {}, status
    with (root / "data/titanic.csv").open("a") as f:
        f.write('0,3,"Doe, Mr. John",male,30,7.25,S,A/5 1\n')
    status = json.loads(run_module(root, "dvc", "status", "--json", "ingest").stdout)
    assert status == {"ingest": [{"changed deps": {"data/titanic.csv": "modified"}}]}, status


def test_a_large_file_is_sampled_and_said_so(project: Path) -> None:
    code, out, _ = init("byod/titanic.csv", "--label", "survived", "--rows", "300", "--force")
    assert code == 0, out
    assert "the first 300 rows (the file holds more: a sample)" in out.replace("\n", " ")
    assert "from the first 300 rows" in Path("params.yaml").read_text()


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_give_the_same_schema(project: Path, fmt: str) -> None:
    import pandas as pd

    frame = pd.read_csv("byod/titanic.csv", dtype=str, keep_default_na=False)
    if fmt == "jsonl":
        frame.to_json("byod/titanic.jsonl", orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet("byod/titanic.parquet")
    code, out, p = init(f"byod/titanic.{fmt}", "--label", "survived", "--force")
    assert code == 0, out
    _, _, from_csv = init("byod/titanic.csv", "--label", "survived", "--force")
    assert roles(p) == roles(from_csv)


def test_init_reads_the_file_as_ingest_will(project: Path) -> None:
    """init reads through ingest's readers: an Excel `sep=;` first line sets the delimiter and a
    header name is normalised (NFKC, stripped), so the schema init writes names the columns
    ingest will find."""
    from stages.lib.readers import read_batches
    from stages.lib.sources import norm_name

    rows = [f"{i};{20 + i % 50};{'yes' if i % 3 else 'no'}" for i in range(60)]
    Path("byod/excel.csv").write_text("sep=;\nid; Ａge ;churned\n" + "\n".join(rows) + "\n")
    code, out, p = init("byod/excel.csv", "--label", "churned", "--force")
    assert code == 0, out
    (batch,) = read_batches(Path("byod/excel.csv"), "csv", 1000)
    ingest_names = [norm_name(n) for n in batch.schema.names]
    assert list(p["schema"]["columns"]) == ["id", "Age", "churned"] == ingest_names
    assert sorted(p["schema"]["columns"]["churned"]["values"]) == ["no", "yes"]


def test_a_malformed_row_in_the_sample_is_named_by_its_line(project: Path) -> None:
    """The sample is checked as ingest checks the whole file: a short row is named, not
    profiled around (init stops reading after the sample, ingest reads on)."""
    Path("byod/short.csv").write_text("x,label\n1,a\n2\n3,b\n" + "4,a\n5,b\n" * 50)
    before = Path("params.yaml").read_bytes()
    code, out, _ = init("byod/short.csv", "--rows", "10", "--force")
    assert code == 2, out
    assert "1 malformed row(s): line 3 has 1 fields, expected 2" in out.replace("\n", " ")
    assert Path("params.yaml").read_bytes() == before


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_the_readers_stop_after_a_sample(tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    from stages.lib.readers import read_batches

    path = tmp_path / f"t.{fmt}"
    frame = pd.DataFrame({"x": [str(i) for i in range(20)]})
    if fmt == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    sample = list(read_batches(path, fmt, 2, max_rows=5))
    assert sum(b.num_rows for b in sample) == {"jsonl": 5, "parquet": 6}[fmt]  # whole blocks
    assert sum(b.num_rows for b in read_batches(path, fmt, 2)) == 20
