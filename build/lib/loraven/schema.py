"""Config schemas: one typed class per config group, validated once, before anything starts.

Each group's class (trainer, task kind, method, scheduler, meter, tracking, model kind, top level) declares types,
ranges and cross-field rules with pydantic; unknown keys, NaN and inf are refused everywhere. The YAML files under
``conf/`` stay the one source of default values: a schema declares no defaults of its own for keys its YAML sets,
and :func:`with_defaults` completes a partial mapping (a test, a notebook, the benchmarks) from that YAML.

Why pydantic and not Hydra's structured configs: those check types but not ranges, cross-field rules or NaN, and
their errors are several lines; here every bad value is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from loraven.errors import ConfigError

S = TypeVar("S", bound="Section")


class Section(BaseModel):
    """A config group's typed view: unknown keys, NaN/inf and lax type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_assignment=True)
    where: ClassVar[str] = "config"  # the key prefix users type for this group (messages name keys as typed)

    def __init__(self, **data: Any) -> None:
        """Direct construction (tests, benchmarks) reports problems like :func:`parse`: one ConfigError line."""
        _refuse_non_finite(data, self.where)
        try:
            super().__init__(**data)
        except ValidationError as err:
            raise ConfigError(describe(err, type(self), self.where, data)) from None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="python")


def parse(cls: type[S], data: Mapping[str, Any] | None, where: str, drop: tuple[str, ...] = ()) -> S:
    """Validate ``data`` as ``cls``; the first problem becomes one :class:`ConfigError` line.

    ``where`` is the key prefix users type (``trainer``, ``adapter``, ``scheduler.budget``); ``drop`` lists keys
    that belong to the harness rather than the schema (``_target_``).
    """
    raw = {str(k): v for k, v in (data or {}).items() if str(k) not in drop}
    _refuse_non_finite(raw, where)
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(describe(err, cls, where, raw)) from None


def describe(err: ValidationError, cls: type[BaseModel], where: str, raw: Mapping[str, Any]) -> str:
    """One line for the first error: ``<key>=<value>: <what is allowed>`` (or the rule a cross-field check broke)."""
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    key = ".".join([where, *loc]) if loc else where
    kind = first["type"]
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        fields = _fields_at(cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{key} is not a known key{hint}; valid keys under {key.rsplit('.', 1)[0]}: {', '.join(fields)}"
    if kind == "missing":
        return f"{key} is required (it has no default here; set it in the config or on the command line)"
    if not loc or message.startswith(f"{where}."):  # a rule whose message names the keys itself
        return message
    value = first.get("input")
    return f"{key}={value!r}: {_plain(message)}"


def _plain(message: str) -> str:
    """pydantic's wording, shortened: 'Input should be greater than 0' → 'must be greater than 0'."""
    for old, new in (("Input should be ", "must be "), ("Input should have ", "must have ")):
        if message.startswith(old):
            return new + message[len(old) :]
    return message


def _fields_at(cls: type[BaseModel], path: list[str]) -> list[str]:
    model: Any = cls
    for part in path:
        field = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        model = _model_in(annotation)
        if model is None:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _refuse_non_finite(obj: Any, where: str) -> None:
    """NaN and inf anywhere (also under keys typed ``Any``) are refused: no config value is meant to be either."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ConfigError(f"{where}={obj!r}: NaN and inf are not valid values")
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _refuse_non_finite(value, f"{where}.{key}")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _refuse_non_finite(value, f"{where}[{i}]")


@functools.lru_cache(maxsize=64)
def _yaml_defaults(group: str, option: str) -> dict[str, Any]:
    from loraven import CONF_DIR

    path = CONF_DIR / group / f"{option}.yaml"
    if not path.is_file():
        return {}
    data = _load_with_includes(path)
    if group in data and isinstance(data[group], dict) and path.read_text().lstrip().startswith("# @package _global_"):
        data = data[group]  # a `_global_` file (an adapter picking its scheduler) keeps its keys under the group
    return data


def _load_with_includes(path: Any) -> dict[str, Any]:
    """A config file with the shared option files its defaults list pulls in (``/task_options/lm@_here_`` or
    ``@task``) merged under its own keys, as Hydra composes them; group selections (``override /trainer``) and
    relative entries are not defaults of this file's keys and are left to Hydra."""
    from omegaconf import OmegaConf

    from loraven import CONF_DIR

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    if not isinstance(data, dict):
        return {}
    merged: dict[str, Any] = {}
    for entry in data.pop("defaults", None) or []:
        if not isinstance(entry, str) or not entry.startswith("/"):
            continue
        ref, _, package = entry.partition("@")
        included = _load_with_includes(CONF_DIR / f"{ref.lstrip('/')}.yaml")
        merged = _merge(merged, included if package in ("", "_here_") else {package: included})
    return _merge(merged, data)


def yaml_defaults(group: str, option: str) -> dict[str, Any]:
    """``conf/<group>/<option>.yaml`` as a dict (its group's keys for ``_global_`` files); {} if there is none."""
    return dict(_yaml_defaults(group, option))


def with_defaults(group: str, option: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` completed with the option's YAML defaults for every key it does not set (nested mappings merged)."""
    return _merge(yaml_defaults(group, option), data)


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
