"""One registry pattern for every axis the harness compares: methods, tasks and energy meters.

A plug-in is a module that calls ``<registry>.register(...)`` when imported. Three ways to get it imported, none of
which edits loraven:

- **built in**: every module of the axis's package (``loraven.adapters``, ``loraven.tasks.kinds``,
  ``loraven.meters``) is imported on first lookup (discovered, not listed);
- **an installed package**: an entry point in the group ``loraven.<axis>`` (e.g.
  ``[project.entry-points."loraven.adapters"] mymethod = "my_pkg.my_method"``) is imported on first lookup;
- **a config file**: the group's YAML names the module with ``_target_`` (``adapter: {name: mymethod, _target_:
  my_method}``); :func:`import_target` imports it from ``sys.path`` or from the folders given to Hydra with
  ``--config-dir`` (so a plug-in folder can hold its YAMLs and its code side by side).

Why not peft's registry or Hydra's ``instantiate``: peft registers only its own ``PeftType`` enum members, and
``instantiate`` builds objects but keeps no index of what exists (names for error messages, the labels and
metric declarations the records carry).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import pkgutil
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

from loraven.errors import ConfigError

T = TypeVar("T")

TARGET_KEY = "_target_"  # a plug-in module named in a group's YAML


class Registry(Generic[T]):
    """Name → spec for one axis, filled by the modules of ``package`` and the entry points of ``group``."""

    def __init__(self, axis: str, package: str, entry_point_group: str) -> None:
        self.axis = axis  # what the user types: "adapter", "task", "energy"
        self.package = package
        self.entry_point_group = entry_point_group
        self._specs: dict[str, T] = {}
        self._discovered = False

    def register(self, name: str, spec: T) -> T:
        """Add ``spec`` under ``name``; a second, different spec under the same name is a programming error."""
        old = self._specs.get(name)
        if old is not None and old is not spec and _origin(old) != _origin(spec):
            raise ValueError(f"{self.axis} {name!r} is registered twice ({_origin(old)} and {_origin(spec)})")
        self._specs[name] = spec
        return spec

    def get(self, name: str) -> T:
        """The spec named ``name``; an unknown name is one line listing the valid ones."""
        self.discover()
        if name not in self._specs:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(
                f"unknown {self.axis} {name!r}{hint}; valid choices: {', '.join(self.names())} "
                f"(a plug-in names its module with {self.axis}.{TARGET_KEY} or an entry point in "
                f"{self.entry_point_group!r})"
            )
        return self._specs[name]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._specs)

    def specs(self) -> list[T]:
        self.discover()
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._specs

    def __iter__(self) -> Iterator[T]:
        return iter(self.specs())

    def discover(self) -> None:
        """Import the built-in modules and the installed entry points (once per process)."""
        if self._discovered:
            return
        self._discovered = True
        _import_package_modules(self.package)
        for entry in _entry_points(self.entry_point_group):
            try:
                loaded = entry.load()
            except Exception as err:  # a broken third-party plug-in must not take the built-in ones down
                print(
                    f"warning: {self.entry_point_group} plug-in {entry.name!r} ({entry.value}) failed to "
                    f"import: {type(err).__name__}: {err}",
                    file=sys.stderr,
                )
                continue
            if callable(loaded) and not isinstance(loaded, type) and getattr(loaded, "__loraven_plugin__", False):
                loaded()  # a ``register()`` function the entry point names


def _origin(spec: Any) -> str:
    factory = getattr(spec, "factory", spec)
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', '?')}"


@functools.cache
def _import_package_modules(package: str) -> None:
    module = importlib.import_module(package)
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


def _entry_points(group: str) -> Iterable[importlib.metadata.EntryPoint]:
    try:
        return importlib.metadata.entry_points(group=group)
    except Exception:  # a broken distribution's metadata: no plug-ins from it
        return ()


def import_target(target: str, where: str, search_dirs: Iterable[str | Path] = ()) -> Any:
    """Import the module (or module attribute) ``target`` names, so its ``register`` calls run.

    ``target`` is a dotted path: a module (``my_method``) or an object in one (``my_pkg.methods.register``; a
    callable marked as a plug-in registration function is called). Looked up on ``sys.path`` first, then in
    ``search_dirs`` (the ``--config-dir`` folders) and their parents (a plug-in folder holding ``conf/`` and its
    module side by side). A failure is one line naming the key and the value.
    """
    if not isinstance(target, str) or not target.replace(".", "").replace("_", "").isalnum():
        raise ConfigError(f"{where}.{TARGET_KEY}={target!r}: a dotted Python module path, e.g. my_plugins.my_method")
    try:
        return _import_dotted(target)
    except ModuleNotFoundError as first:
        candidates = [p for d in search_dirs for p in (Path(d), Path(d).parent)]
        extra = list(dict.fromkeys(str(p) for p in candidates if p.is_dir() and str(p) not in sys.path))
        if not extra:
            raise ConfigError(f"{where}.{TARGET_KEY}={target!r}: cannot import it ({first})") from first
        sys.path[:0] = extra
        try:
            return _import_dotted(target)
        except ModuleNotFoundError as err:
            raise ConfigError(
                f"{where}.{TARGET_KEY}={target!r}: cannot import it ({err}); searched sys.path and {', '.join(extra)}"
            ) from err


def _import_dotted(target: str) -> Any:
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as err:
        module_name, _, attr = target.rpartition(".")
        if not module_name or err.name != target:
            raise
        obj = getattr(importlib.import_module(module_name), attr)
        if callable(obj) and getattr(obj, "__loraven_plugin__", False):
            obj()
        return obj


def plugin(fn: Any) -> Any:
    """Mark a function as a plug-in registration hook (called when an entry point or ``_target_`` names it)."""
    fn.__loraven_plugin__ = True
    return fn


def load_config_plugins(cfg: Mapping[str, Any], search_dirs: Iterable[str | Path] = ()) -> None:
    """Import every ``_target_`` the run's config names (``adapter._target_``, ``task._target_``,
    ``energy._target_``) before anything looks a name up."""
    dirs = list(search_dirs)
    for group in ("adapter", "task", "energy"):
        section = cfg.get(group)
        if isinstance(section, Mapping) and section.get(TARGET_KEY):
            import_target(section[TARGET_KEY], group, dirs)
