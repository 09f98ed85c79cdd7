"""Read params.yaml sections into frozen, strictly typed dataclasses."""

from __future__ import annotations

import copyreg
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
PARAMS_FILE = Path("params.yaml")


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
    """Check `value` against type `tp` (dataclasses, lists, dicts, unions, literals, scalars)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ParamsError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(fields)}")
        kwargs = {}
        for fname, f in fields.items():
            if fname in value:
                kwargs[fname] = coerce(hints[fname], value[fname], f"{where}.{fname}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ParamsError(f"{where}: missing required key '{fname}'")
        return tp(**kwargs)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return coerce(arg, value, where)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(f"{where}: {value!r} matches none of {tp}: {'; '.join(errors)}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ParamsError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {type(value).__name__}")
        (arg, *_) = typing.get_args(tp) or (Any,)
        return tuple(coerce(arg, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return types.MappingProxyType(
            {coerce(kt, k, where): coerce(vt, v, f"{where}.{k}") for k, v in value.items()}
        )
    if tp is type(None):
        if value is not None:
            raise ParamsError(f"{where}: expected null, got {value!r}")
        return None
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise ParamsError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    raise ParamsError(f"{where}: unsupported type {tp}")
