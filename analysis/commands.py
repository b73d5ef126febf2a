"""The exact ``python run.py -m ...`` command that would add what a comparison is missing (more seeds, longer
training, a dense reference, an energy reading), built from the group's own recorded config.

Each recorded config is turned back into Hydra overrides: for every config group the option whose YAML (read
from ``loraven.CONF_DIR``, never the training code) differs least from the record, then ``group.key=value`` for
each recorded value that differs from that option. Keys the option does not have are left out (they were set
at run time, not by the user). Rows whose overrides differ in one key only are merged into one sweep
(``adapter=lora,dora``), so a command never asks for an adapter × scheduler pair that was not meant.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from loraven import CONF_DIR

# the config groups a run's command names, and the key that says which option it is
GROUPS = (
    ("adapter", "name"),
    ("scheduler", "name"),
    ("model", "kind"),
    ("task", "kind"),
    ("trainer", None),
    ("energy", "name"),
    ("tracking", "name"),
)
SEED_RANGE_FROM = 8
NOT_SWEPT = (
    "seed",
    "results_dir",
    "experiment_name",
)  # never merged into a comma list  # more seeds than this: seed=range(0,N) instead of a list


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(out.get(key), dict) and isinstance(value, Mapping) else value
    return out


@cache
def _load(path: Path) -> tuple[dict[str, Any], bool]:
    """A YAML's content (interpolations left as text) and whether it is a ``@package _global_`` file."""
    text = path.read_text()
    data = OmegaConf.to_container(OmegaConf.create(text), resolve=False) or {}
    is_global = any(line.strip() == "# @package _global_" for line in text.splitlines())
    return data, is_global  # type: ignore[return-value]


def option_values(group: str, name: str) -> dict[str, Any] | None:
    """The group section ``conf/<group>/<name>.yaml`` composes to (its defaults list followed), or None."""
    path = Path(CONF_DIR) / group / f"{name}.yaml"
    if not path.is_file():
        return None
    data, is_global = _load(path)
    data = dict(data)
    defaults = data.pop("defaults", []) or []
    own = data.get(group, {}) if is_global else data
    merged: dict[str, Any] = {}
    placed_self = False
    for entry in defaults:
        if entry == "_self_":
            merged, placed_self = _merge(merged, own), True
        elif isinstance(entry, str):
            ref = entry.split("@")[0]
            sub = option_values(*ref[1:].split("/", 1)) if ref.startswith("/") else option_values(group, ref)
            merged = _merge(merged, sub or {})
    return merged if placed_self else _merge(merged, own)


def natural_scheduler(adapter: str | None) -> str | None:
    """The scheduler ``conf/adapter/<adapter>.yaml`` picks (``override /scheduler: static``), or None."""
    path = Path(CONF_DIR) / "adapter" / f"{adapter}.yaml"
    if not adapter or not path.is_file():
        return None
    data, _ = _load(path)
    for entry in data.get("defaults", []) or []:
        if isinstance(entry, dict) and "override /scheduler" in entry:
            return str(entry["override /scheduler"])
    return None


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: obj}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) and "${" in a or isinstance(b, str) and "${" in b:
        return False  # an interpolation: say the value explicitly
    try:
        if isinstance(a, (int, float, str)) and isinstance(b, (int, float, str)) and not isinstance(a, bool):
            return float(a) == float(b)
    except (TypeError, ValueError):
        pass
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _differences(recorded: Mapping[str, Any], option: Mapping[str, Any]) -> dict[str, Any]:
    """Recorded values that differ from the option's (keys the option lacks are left out)."""
    rec, opt = _flat(recorded), _flat(option)
    return {k: v for k, v in rec.items() if k in opt and not _same(v, opt[k])}


def _best_option(group: str, ident: str | None, section: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The option of ``group`` closest to the recorded section (same identity key), and what differs from it."""
    best: tuple[int, str, dict[str, Any]] | None = None
    for path in sorted((Path(CONF_DIR) / group).glob("*.yaml")):
        values = option_values(group, path.stem)
        if values is None:
            continue
        if ident and str(values.get(ident)) != str(section.get(ident)):
            continue
        diff = _differences(section, values)
        diff.pop(ident, None) if ident else None
        if best is None or (len(diff), path.stem) < (best[0], best[1]):
            best = (len(diff), path.stem, diff)
    return (best[1], best[2]) if best else (None, {})


def hydra_value(value: Any) -> str:
    """A value as Hydra's override grammar reads it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return str(value)


def run_overrides(config: Mapping[str, Any], results_dir: str | None = None) -> dict[str, str]:
    """The overrides that reproduce a recorded config (without its seed), in the order a person writes them;
    ``results_dir`` (where the store is now) replaces the recorded one, so new runs land beside the old."""
    out: dict[str, str] = {}
    for group, ident in GROUPS:
        section = config.get(group)
        if not isinstance(section, Mapping):
            continue
        option, diff = _best_option(group, ident, section)
        if option is None:
            continue
        out[group] = option
        for key, value in diff.items():
            out[f"{group}.{key}"] = hydra_value(value)
    if config.get("experiment_name") not in (None, "default"):
        out["experiment_name"] = str(config["experiment_name"])
    where = results_dir or config.get("results_dir")
    if where not in (None, "results"):
        out["results_dir"] = str(where)
    return out


def seed_values(seeds: Iterable[Any], at_least: int) -> str:
    """``0,1,2`` (the seeds already run plus 0..at_least−1), or ``range(0,N)`` for many."""
    have = {int(s) for s in seeds if isinstance(s, (int, float)) and s == s}
    wanted = sorted(have | set(range(at_least)))
    if len(wanted) > SEED_RANGE_FROM and wanted == list(range(len(wanted))):
        return f"range(0,{len(wanted)})"
    return ",".join(str(s) for s in wanted)


def merge(commands: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Override sets that differ in exactly one key become one sweep over that key's values."""
    pending = [dict(c) for c in commands]
    merged = True
    while merged:
        merged = False
        for i in range(len(pending)):
            for j in range(i + 1, len(pending)):
                a, b = pending[i], pending[j]
                if list(a) != list(b):
                    continue
                diff = [k for k in a if a[k] != b[k]]
                if len(diff) == 1 and "[" not in a[diff[0]] + b[diff[0]] and diff[0] not in NOT_SWEPT:
                    key = diff[0]
                    values = [*a[key].split(","), *[v for v in b[key].split(",") if v not in a[key].split(",")]]
                    a[key] = ",".join(values)
                    del pending[j]
                    merged = True
                    break
            if merged:
                break
    return pending


def command_line(overrides: Mapping[str, str]) -> str:
    """``python run.py -m key=value ...``, each token shell-quoted where it needs it."""
    return "python run.py -m " + " ".join(shlex.quote(f"{k}={v}") for k, v in overrides.items())
