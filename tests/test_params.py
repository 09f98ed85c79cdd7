"""params.py: sections validated by pydantic against the stages' config dataclasses, with one
clear ParamsError line per problem (dotted key, value given, what was expected)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import json
import os
import pickle
import re
import subprocess
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydantic
import pytest
import yaml

from stages.lib import config
from stages.lib.config import pipeline_params
from stages.lib.errors import EXIT_BAD_INPUT, run_stage
from stages.lib.features import Policy
from stages.lib.params import ParamsError, coerce, load_params, section
from stages.lib.schema import Schema
from tests.conftest import anon_config

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Inner:
    rate: float = 0.5
    label: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ParamsError(f"demo.inner.rate: {self.rate} is not in [0, 1]")


@dataclass(frozen=True)
class Demo:
    epochs: int = 3
    mode: Literal["fast", "slow"] = "fast"
    limit: int | None = None
    hidden: tuple[int, ...] = (8,)
    weights: dict[str, float] = field(default_factory=dict)
    inner: Inner = Inner()
    columns: dict[str, Inner] = field(default_factory=dict)
    flag: bool = False


def load(value: object) -> Demo:
    return section(Demo, "demo", {"demo": value})


def error(value: object) -> str:
    with pytest.raises(ParamsError) as e:
        load(value)
    return str(e.value)


def test_unknown_key_names_it_its_value_and_the_allowed_keys() -> None:
    msg = error({"epoch": 5})
    assert msg == (
        "demo.epoch: unknown key (given 5); allowed keys here: "
        "['columns', 'epochs', 'flag', 'hidden', 'inner', 'limit', 'mode', 'weights']"
    )


def test_unknown_key_in_a_nested_dataclass_has_the_full_dotted_key() -> None:
    assert error({"inner": {"rat": 0.1}}) == (
        "demo.inner.rat: unknown key (given 0.1); allowed keys here: ['label', 'rate']"
    )
    assert error({"columns": {"age": {"rate": 0.1, "x": 1}}}).startswith(
        "demo.columns.age.x: unknown key (given 1)"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"epochs": "20"}, "demo.epochs: got '20'; expected an integer"),
        ({"epochs": 20.0}, "demo.epochs: got 20.0; expected an integer"),
        ({"epochs": True}, "demo.epochs: got True; expected an integer"),
        ({"flag": 1}, "demo.flag: got 1; expected true or false"),
        ({"flag": "yes"}, "demo.flag: got 'yes'; expected true or false"),
        ({"inner": {"rate": "0.3"}}, "demo.inner.rate: got '0.3'; expected a number"),
        ({"inner": 3}, "demo.inner: got 3; expected a mapping"),
        ({"weights": [1]}, "demo.weights: got [1]; expected a mapping"),
        (5, "demo: got 5; expected a mapping"),
        (None, "demo: got None; expected a mapping"),
    ],
)
def test_wrong_type_is_one_line_with_key_value_and_expectation(value, message) -> None:
    assert error(value) == message


def test_no_pydantic_jargon_in_messages() -> None:
    msg = error({"epochs": "x", "mode": "medium", "zz": 1})
    assert msg.splitlines() == [
        "demo.epochs: got 'x'; expected an integer",
        "demo.mode: got 'medium'; expected one of ['fast', 'slow']",
        "demo.zz: unknown key (given 1); allowed keys here: "
        "['columns', 'epochs', 'flag', 'hidden', 'inner', 'limit', 'mode', 'weights']",
    ]
    assert not re.search(r"pydantic|validation error|Input should|errors\.pydantic", msg)


def test_tuple_from_a_list_and_its_element_positions() -> None:
    assert load({"hidden": [256, 128]}).hidden == (256, 128)
    assert error({"hidden": [256, "x"]}) == "demo.hidden[1]: got 'x'; expected an integer"
    assert error({"hidden": 256}) == "demo.hidden: got 256; expected a list"


def test_optional_takes_null_or_the_type() -> None:
    assert load({"limit": None}).limit is None
    assert load({"limit": 4}).limit == 4
    assert error({"limit": "4"}) == "demo.limit: got '4'; expected an integer or null"
    assert error({"inner": {"label": 1}}) == "demo.inner.label: got 1; expected a string or null"


def test_literal_names_its_values() -> None:
    assert load({"mode": "slow"}).mode == "slow"
    assert error({"mode": "Slow"}) == "demo.mode: got 'Slow'; expected one of ['fast', 'slow']"


def test_int_for_a_float_becomes_a_float() -> None:
    cfg = load({"inner": {"rate": 1}, "weights": {"a": 0}})
    assert cfg.inner.rate == 1.0 and isinstance(cfg.inner.rate, float)
    assert isinstance(cfg.weights["a"], float)


def test_nested_dataclasses_are_built_and_their_checks_run() -> None:
    cfg = load({"inner": {"rate": 0.25}, "columns": {"a": {"label": "x"}}})
    assert cfg.inner == Inner(rate=0.25)
    assert cfg.columns["a"] == Inner(rate=0.5, label="x")
    # A __post_init__ check's own ParamsError comes through as written.
    assert error({"inner": {"rate": 2.0}}) == "demo.inner.rate: 2.0 is not in [0, 1]"


def test_result_is_frozen_with_read_only_mappings_and_pickles() -> None:
    cfg = load({"weights": {"a": 1.5}, "columns": {"c": {}}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 4  # type: ignore[misc]
    assert isinstance(cfg.weights, types.MappingProxyType)
    assert isinstance(cfg.columns, types.MappingProxyType)
    with pytest.raises(TypeError):
        cfg.weights["b"] = 2.0  # type: ignore[index]
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    # Defaults stay as the dataclass declares them.
    assert load({}) == Demo()


def test_yaml_dates_are_iso_text_and_non_string_keys_are_refused() -> None:
    # An unquoted YAML date means that date: it is validated as its ISO text.
    assert error({"epochs": datetime.date(2024, 6, 1)}).startswith(
        "demo.epochs: got '2024-06-01'; expected an integer"
    )
    assert error({"epochs": {1, 2}}).startswith("demo.epochs: got {1, 2} (a YAML set)")
    assert error({"weights": {1: 0.5}}).startswith("demo.weights: key 1 (int); expected a string")


def test_missing_section_and_missing_required_key() -> None:
    with pytest.raises(ParamsError, match=r"params\.yaml has no 'demo' section"):
        section(Demo, "demo", {})

    @dataclass(frozen=True)
    class Needs:
        size: int

    with pytest.raises(ParamsError, match=r"^x\.size: missing; this key is required$"):
        coerce(Needs, {}, "x")


def test_bad_params_exit_2_with_the_message(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        run_stage(lambda: load({"epochs": "20"}))
    assert e.value.code == EXIT_BAD_INPUT
    assert "demo.epochs: got '20'; expected an integer" in capsys.readouterr().err


# Every section class of params.yaml (stages.lib.config.SECTIONS holds the same).
SECTIONS = [
    ("stages.lib.config", "IngestConfig", "ingest"),
    ("stages.lib.config", "IoConfig", "io"),
    ("stages.lib.config", "CleanConfig", "clean"),
    ("stages.lib.config", "ValidateConfig", "validate"),
    ("stages.lib.config", "AnonymizeConfig", "anonymize"),
    ("stages.lib.config", "SplitConfig", "split"),
    ("stages.lib.config", "AugmentConfig", "augment"),
    ("stages.lib.config", "TrainConfig", "train"),
    ("stages.lib.config", "EvaluateConfig", "evaluate"),
    ("stages.lib.config", "OrchestrationConfig", "orchestration"),
]


@pytest.mark.parametrize(("module", "cls", "name"), SECTIONS)
def test_every_stage_section_loads_params_yaml(module: str, cls: str, name: str) -> None:
    params = load_params(ROOT / "params.yaml")
    config = section(getattr(importlib.import_module(module), cls), name, params)
    assert dataclasses.is_dataclass(config)
    for key, value in params[name].items():
        got = getattr(config, key)
        if isinstance(value, list):
            assert got == tuple(value), key
        elif isinstance(value, int | float | str | bool) or value is None:
            assert got == value, key


def test_schema_and_policies_load_params_yaml() -> None:
    from stages.lib.features import column_policies
    from stages.lib.schema import load_schema

    params = load_params(ROOT / "params.yaml")
    schema = load_schema(params)
    assert isinstance(schema.columns, types.MappingProxyType)
    assert set(schema.columns) == set(params["schema"]["columns"])
    policies = column_policies(schema, anon_config(params["anonymize"]["policies"]).policies)
    assert policies["postcode"].action == "generalize"


# ---------------------------------------------------------------------------------------------
# PipelineParams: every section, typed, loaded once


def _write(path: Path, params: dict) -> Path:
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def test_pipeline_params_holds_every_section_typed_and_frozen() -> None:
    p = pipeline_params(ROOT / "params.yaml")
    assert pipeline_params(ROOT / "params.yaml") is p  # loaded once per process
    raw = load_params(ROOT / "params.yaml")
    assert set(raw) == {"schema", *config.SECTIONS}
    for name, cls in config.SECTIONS.items():
        assert isinstance(getattr(p, name), cls), name
    assert isinstance(p.schema, Schema) and p.schema.label == "income"
    assert p.anonymize.policies["email"] == Policy(action="pseudonymize")
    assert p.anonymize.policies["postcode"] == Policy(action="generalize", truncate=1)
    assert isinstance(p.anonymize.policies, types.MappingProxyType)
    with pytest.raises(pydantic.ValidationError):
        p.train = p.train  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):  # extra="forbid"
        config.PipelineParams(**{"schema": p.schema, "extra": 1})


def _fields(cls: type, prefix: str) -> dict[str, dataclasses.Field]:
    """Every field of a config dataclass and of the dataclasses it nests, by dotted key."""
    out = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        out[key] = f
        hints = typing.get_type_hints(cls)
        if dataclasses.is_dataclass(hints[f.name]):
            out |= _fields(hints[f.name], key)
    return out


def test_every_config_field_is_in_params_yaml_and_no_default_contradicts_it() -> None:
    """params.yaml is the one source of every tunable: each field of each section is set there
    (none is documented as optional), and a field that has a default in code (TrainConfig's,
    kept as the train stage wrote them) has params.yaml's value."""
    raw = load_params(ROOT / "params.yaml")
    for name, cls in config.SECTIONS.items():
        for key, f in _fields(cls, name).items():
            node = raw
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"{key} is not in params.yaml"
                node = node[part]
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            if default is dataclasses.MISSING or dataclasses.is_dataclass(default):
                continue
            assert default == node, f"{key}: code default {default!r}, params.yaml {node!r}"
    # Without a default, a key left out of params.yaml is an error, not a silent value.
    without = {**raw, "split": {"fractions": raw["split"]["fractions"]}}
    with pytest.raises(ParamsError, match=r"^split\.seed: missing; this key is required$"):
        config.parse_params(without)


def test_every_problem_of_every_section_is_one_line(tmp_path: Path) -> None:
    raw = load_params(ROOT / "params.yaml")
    raw["io"]["partition_rows"] = "many"
    raw["anonymize"]["policies"]["postcode"] = {"action": "generalize", "truncate": "x"}
    raw["anonymize"]["policies"]["phone"] = "shred"
    raw["extra_section"] = {"a": 1}
    del raw["orchestration"]
    with pytest.raises(ParamsError) as e:
        pipeline_params(_write(tmp_path / "params.yaml", raw))
    allowed = sorted(["schema", *config.SECTIONS])
    assert str(e.value).splitlines() == [
        f"extra_section: unknown section of params.yaml; allowed sections: {allowed}",
        "params.yaml has no 'orchestration' section",
        "io.partition_rows: got 'many'; expected an integer",
        "anonymize.policies.phone.action: got 'shred'; expected one of "
        "['drop', 'pseudonymize', 'generalize', 'mask', 'keep']",
        "anonymize.policies.postcode.truncate: got 'x'; expected an integer or null",
    ]


def test_a_changed_params_file_is_read_again(tmp_path: Path) -> None:
    raw = load_params(ROOT / "params.yaml")
    path = _write(tmp_path / "params.yaml", raw)
    first = pipeline_params(path)
    raw["split"]["seed"] = "split-v2"
    _write(path, raw)
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)  # a later mtime, whatever the clock's grain
    assert pipeline_params(path).split.seed == "split-v2" != first.split.seed


def test_written_keeps_what_params_yaml_says_for_digests() -> None:
    """train's schema_digest (in the model file) is the project's one canonical digest of the
    schema and policies as params.yaml writes them (the raw sections, not the typed ones)."""
    from stages.lib.digest import canonical_digest
    from stages.train import schema_digest

    raw = load_params(ROOT / "params.yaml")
    written = {"schema": raw["schema"], "policies": raw["anonymize"]["policies"]}
    p = pipeline_params(ROOT / "params.yaml")
    assert schema_digest(p) == canonical_digest(written, 16)
    copy_ = p.written("anonymize.policies")
    copy_["email"] = "keep"  # a copy: the loaded params do not change
    assert p.written("anonymize.policies")["email"] == "pseudonymize"


def test_plain_gives_cache_key_parts() -> None:
    """The typed configs become cache-key parts through the partition cache's one `plain`."""
    from stages.lib.partitions import plain

    p = pipeline_params(ROOT / "params.yaml")
    clean = plain(p.clean)
    assert clean["missing_values"] == list(p.clean.missing_values)
    assert clean["label_aliases"] == dict(p.clean.label_aliases)
    assert json.loads(json.dumps(plain(p.schema)))["columns"]["age"]["min"] == 17.0


def test_config_module_does_not_load_torch() -> None:
    code = "import sys, stages.lib.config; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_stages_read_params_only_through_pipeline_params() -> None:
    """No stage module loads params.yaml as a dict or builds a section of its own (issue 15):
    stages.lib.config is the one reader (stages.lib.schema's load_schema serves it)."""
    readers = {"stages/lib/params.py", "stages/lib/config.py", "stages/lib/schema.py"}
    offenders = [
        f"{path.relative_to(ROOT)}: {call}"
        for path in sorted([*ROOT.glob("stages/*.py"), *ROOT.glob("stages/lib/*.py")])
        if path.relative_to(ROOT).as_posix() not in readers
        for call in re.findall(r"\b(load_params\(|section\(\w+Config)", path.read_text())
    ]
    assert not offenders, offenders
