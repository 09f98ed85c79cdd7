"""Read params.yaml sections into frozen, strictly typed dataclasses, validated by pydantic.

The config dataclasses live in stages/lib/config.py, whose `pipeline_params()` the stages call.
Here pydantic checks a section against one in strict mode (no "3" for 3, no 1 for true, no 3.0
for an int, an int is fine for a float), refuses unknown keys at every depth, builds the (frozen)
dataclasses and runs their `__post_init__` checks. Its errors become one ParamsError line each,
naming the dotted key, the value given and what was expected.
"""

from __future__ import annotations

import copyreg
import dataclasses
import datetime
import functools
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from stages.lib.paths import PARAMS_FILE

T = TypeVar("T")


def readonly(mapping: dict) -> types.MappingProxyType:
    """A read-only view of a dict (what configs hold instead of dicts)."""
    return types.MappingProxyType(mapping)


# Tasks send configs to worker processes, so their read-only mappings must pickle.
copyreg.pickle(types.MappingProxyType, lambda m: (readonly, (dict(m),)))


class ParamsError(ValueError):
    """A params.yaml section has an unknown key, a missing key or a value of the wrong type."""


def load_params(path: Path | str = PARAMS_FILE) -> dict[str, Any]:
    """Load the whole params file as a dict."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path} not found: run from the repository root")
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def section(cls: type[T], name: str, params: dict[str, Any] | None = None) -> T:
    """Build the frozen config `cls` from section `name` of params.yaml, strictly."""
    params = load_params() if params is None else params
    if name not in params:
        raise ParamsError(f"params.yaml has no '{name}' section")
    return coerce(cls, params[name], name)


def coerce(tp: Any, value: Any, where: str) -> Any:
    """`value` (as read from YAML) validated as type `tp` (a config dataclass, or any type
    pydantic knows), its mappings read-only; else a ParamsError naming the key under `where`."""
    value = _plain(value, where)
    try:
        # Strict JSON mode: a YAML list is a valid tuple, a mapping a valid dataclass, and no
        # value is converted to another type. The one-element tuple carries the config.
        (result,) = _adapter(tp).validate_json(json.dumps([value]))
    except pydantic.ValidationError as e:
        raise ParamsError("\n".join(_describe(err, tp, where) for err in e.errors())) from None
    return _readonly_dicts(result, tp, value)


@functools.cache
def _adapter(tp: Any) -> pydantic.TypeAdapter:
    # A dataclass refuses a config of its own in TypeAdapter; the wrapping tuple passes it on.
    return pydantic.TypeAdapter(tuple[tp], config=pydantic.ConfigDict(extra="forbid", strict=True))


def _plain(value: Any, where: str) -> Any:
    """`value` with YAML dates as ISO text (an unquoted `2010-01-01` means that date); other
    values beyond JSON's (sets, binary) and non-string mapping keys are refused here, since
    pydantic validates the value's JSON text."""
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise ParamsError(
                    f"{where}: key {k!r} ({type(k).__name__}); expected a string key "
                    "(quote it in params.yaml)"
                )
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, datetime.date):
        return value.isoformat()
    if value is not None and not isinstance(value, str | int | float):
        raise ParamsError(
            f"{where}: got {value!r} (a YAML {type(value).__name__}); expected a string, number, "
            "boolean, null, list or mapping (quote it in params.yaml to make it a string)"
        )
    return value


# What a pydantic error type says was expected, in the words of params.yaml.
_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "dataclass_type": "a mapping",
    "none_required": "null",
}


def _describe(err: dict[str, Any], tp: Any, where: str) -> str:
    """One pydantic error as one line: the dotted key, the value given, what was expected."""
    loc = err["loc"][1:]  # [0] is the position in the one-element wrapping tuple
    key = where + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    kind = err["type"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        allowed = _field_names(_type_at(tp, loc[:-1]))
        return f"{key}: unknown key (given {err['input']!r}); allowed keys here: {allowed}"
    if kind in ("missing_argument", "missing"):
        return f"{key}: missing; this key is required"
    if kind == "value_error":  # a dataclass's __post_init__ check
        error = err.get("ctx", {}).get("error")
        return str(error) if isinstance(error, ParamsError) else f"{key}: {error}"
    expected_tp = _type_at(tp, loc)
    values = [a for a in typing.get_args(_strip_none(expected_tp)) if a is not None]
    if typing.get_origin(_strip_none(expected_tp)) is typing.Literal:
        expected = f"one of {values}"
    else:
        expected = _EXPECTED.get(kind) or err["msg"].removeprefix("Input should be ")
    if _strip_none(expected_tp) is not expected_tp:
        expected += " or null"
    return f"{key}: got {err['input']!r}; expected {expected}"


def _strip_none(tp: Any) -> Any:
    """`X` of `X | None` (Optional[X]); any other type as it is."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _type_at(tp: Any, loc: tuple) -> Any:
    """The declared type at a path of field names, mapping keys and list positions."""
    for part in loc:
        tp = _strip_none(tp)
        args = typing.get_args(tp)
        if dataclasses.is_dataclass(tp):
            tp = _hints(tp).get(part, Any)
        elif typing.get_origin(tp) is dict and args:
            tp = args[1]
        elif typing.get_origin(tp) in (tuple, list) and args:
            tp = args[0] if len(args) == 1 or args[1] is Ellipsis else args[part]
        else:
            return Any
    return tp


@functools.cache
def _hints(tp: type) -> dict[str, Any]:
    return typing.get_type_hints(tp)


def _field_names(tp: Any) -> list[str]:
    tp = _strip_none(tp)
    return sorted(f.name for f in dataclasses.fields(tp)) if dataclasses.is_dataclass(tp) else []


def _readonly_dicts(obj: Any, tp: Any, given: Any) -> Any:
    """`obj` with each mapping that params.yaml gave for a dict-typed field read-only (pydantic
    returns dicts); values typed Any stay as written, and defaults are left alone."""
    tp = _strip_none(tp)
    if dataclasses.is_dataclass(tp) and isinstance(given, dict):
        hints = _hints(tp)
        for name, raw in given.items():
            old = getattr(obj, name)
            new = _readonly_dicts(old, hints[name], raw)
            if new is not old:
                object.__setattr__(obj, name, new)  # the instance was built just now
        return obj
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is dict and isinstance(obj, dict):
        vt = args[1] if args else Any
        return readonly({k: _readonly_dicts(v, vt, given[k]) for k, v in obj.items()})
    if origin is tuple and args and args[-1] is Ellipsis and isinstance(obj, tuple):
        return tuple(_readonly_dicts(v, args[0], g) for v, g in zip(obj, given, strict=True))
    return obj
