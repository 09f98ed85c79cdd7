"""params.py: sections validated by pydantic against the stages' config dataclasses, with one
clear ParamsError line per problem (dotted key, value given, what was expected)."""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from stages.lib.errors import EXIT_BAD_INPUT, run_stage
from stages.lib.params import ParamsError, coerce, load_params, section

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


# Every section class a stage builds from params.yaml (grep 'section(' across stages/).
SECTIONS = [
    ("stages.ingest", "IngestConfig", "ingest"),
    ("stages.ingest", "IoConfig", "io"),
    ("stages.clean", "CleanConfig", "clean"),
    ("stages.validate", "ValidateConfig", "validate"),
    ("stages.anonymize", "AnonymizeConfig", "anonymize"),
    ("stages.split", "SplitConfig", "split"),
    ("stages.augment", "AugmentConfig", "augment"),
    ("stages.train", "TrainConfig", "train"),
    ("stages.evaluate", "EvaluateConfig", "evaluate"),
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
    policies = column_policies(schema, params["anonymize"]["policies"])
    assert policies["postcode"].action == "generalize"
