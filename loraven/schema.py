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
    errors = err.errors()
    first = errors[0]
    loc = _field_path(cls, first["loc"])
    union = [e for e in errors if _field_path(cls, e["loc"]) == loc and len(e["loc"]) > len(loc)]
    key = ".".join([where, *loc] if where else loc) if loc else where
    kind = first["type"]
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        fields = _fields_at(cls, loc[:-1])
        close = difflib.get_close_matches(loc[-1], fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parent = key.rsplit(".", 1)[0] if "." in key else "the top level"
        option = raw.get("kind") or raw.get("name") if len(loc) == 1 and where else None
        what = f"an option of {where}={option}" if option else f"a known key under {parent}"
        return f"{key} is not {what}{hint}; valid: {', '.join(fields)}"
    if kind == "missing":
        return f"{key} is required (it has no default here; set it in the config or on the command line)"
    if not loc or (where and message.startswith(f"{where}.")):  # a rule whose message names the keys itself
        return message
    if message.startswith((f"{key}=", f"{key}.")):  # a nested check that already named the key and value
        return message
    value = first.get("input")
    ctx = first.get("ctx") or {}
    if len(union) > 1:  # a value that fits no member of a union (int | 'full', str | list[str]...)
        members = [_member(str(e["loc"][len(loc)])) for e in union]
        return f"{key}={value!r}; valid: {' or '.join(dict.fromkeys(members))}"
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"{key}={value!r}; valid choices: {choices}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{key}={value!r}; valid: true, false"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        allowed = _range_text(cls, loc)
        if allowed:
            return f"{key}={value!r} is out of range; valid: {allowed}"
    return f"{key}={value!r}: {_plain(message)}"


def _range_text(cls: type[BaseModel], loc: list[str]) -> str | None:
    """A field's declared bounds as an interval, e.g. ``(0, 1]`` or ``>= 1``."""
    model: Any = cls
    for part in loc[:-1]:
        model = _model_in(getattr(getattr(model, "model_fields", {}).get(part), "annotation", None))
        if model is None:
            return None
    field = getattr(model, "model_fields", {}).get(loc[-1])
    if field is None:
        return None
    low = high = None
    low_open = high_open = False
    for item in field.metadata:
        for attr, is_low, is_open in (
            ("gt", True, True),
            ("ge", True, False),
            ("lt", False, True),
            ("le", False, False),
        ):
            bound = getattr(item, attr, None)
            if bound is not None:
                if is_low:
                    low, low_open = bound, is_open
                else:
                    high, high_open = bound, is_open
    if low is not None and high is not None:
        return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return None


def _field_path(cls: type[BaseModel], loc: tuple) -> list[str]:
    """The part of an error location that names keys (pydantic appends union-member tags such as ``int`` or
    ``literal['full']`` and list indices after a field; an unknown key ends the path)."""
    model: Any = cls
    path: list[str] = []
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if fields is None or not isinstance(part, str):
            break
        path.append(part)
        if part not in fields:
            break
        model = _model_in(fields[part].annotation)
    return path


MEMBER_WORDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true/false", "none": "null"}


def _member(tag: str) -> str:
    if tag.startswith("literal["):
        return tag[len("literal[") : -1].replace("'", "'")
    if tag.startswith("list["):
        return "a list"
    if tag.startswith("dict["):
        return "a mapping"
    return MEMBER_WORDS.get(tag, tag)


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
