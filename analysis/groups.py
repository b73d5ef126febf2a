"""Groups that never mix different work, and the configurations compared inside each.

A *group* is every completed run scored on the same model, task (and task family), split and metric, whose
energy was read by the same method: only inside a group are two numbers comparable. Inside a group a *row* is
one configuration: the method and scheduler the user chose plus every config value that differs between the
group's runs (a learning rate, a rank, a step count...), so two learning rates of one method are never averaged
into one number. Seeds are what a row averages over.

Everything is read from the records (``analysis.load.run_row``); nothing here knows a method by name.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from analysis.stats import completed_training

GROUP_KEYS = ("model", "task", "family", "split", "metric", "energy_method")

# config keys that never distinguish two configurations: labels, places, the seed (what rows average over) and
# settings recorded for bookkeeping
_NOT_A_SETTING = (
    "seed",
    "experiment_name",
    "results_dir",
    "tracking",
    "rerun",
    "device",
    "tuning",
    "method_settings",
    "job",
    "hydra",
    "energy.name",
)


def _flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """``{"trainer": {"lr": 3e-4}}`` → ``{"trainer.lr": "0.0003"}``; lists kept whole (as JSON text)."""
    out: dict[str, str] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    out[prefix[:-1]] = json.dumps(obj, sort_keys=True, default=str)
    return out


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in _NOT_A_SETTING)


def flat_settings(config: Mapping[str, Any]) -> dict[str, str]:
    """The run's settings as dotted keys → JSON text: what its run id hashes (``loraven.track.semantic_config``:
    not the thread count, checkpoints, labels or paths), without the seed."""
    from loraven.track import semantic_config

    return {k: v for k, v in _flatten(semantic_config(config or {})).items() if not _ignored(k)}


def differing_settings(runs: pd.DataFrame) -> list[str]:
    """Config keys whose values differ between runs of the group: outside ``adapter.*``/``scheduler.*`` across all
    runs; a method's own keys only between runs of that method (LoRA's ``r`` is not LoRAven's), a scheduler's only
    between runs of that scheduler."""
    flats = [flat_settings(c) for c in runs["config"]]
    keys: set[str] = set()

    def differs(items: list[dict[str, str]], chosen: Iterable[str]) -> set[str]:
        found = set()
        for key in chosen:
            if len({item.get(key) for item in items}) > 1:
                found.add(key)
        return found

    every = set().union(*flats) if flats else set()
    general = [k for k in every if not k.startswith(("adapter.", "scheduler."))]
    keys |= differs(flats, general)
    for column, prefix in (("adapter_type", "adapter."), ("scheduler", "scheduler.")):
        for _, part in runs.groupby(column, dropna=False):
            items = [flats[runs.index.get_loc(i)] for i in part.index]
            own = {k for item in items for k in item if k.startswith(prefix) and k not in (f"{prefix}name",)}
            keys |= differs(items, own)
    return sorted(keys)


def short_key(key: str) -> str:
    """A column name for a setting: ``trainer.lr`` → ``lr``, ``adapter.r_max`` → ``r_max``; others stay dotted."""
    for prefix in ("trainer.", "adapter."):
        if key.startswith(prefix) and "." not in key[len(prefix) :]:
            return key[len(prefix) :]
    return key


def show_setting(text: str | None) -> str:
    """A setting's JSON text as a person writes it on the command line (``null`` for unset)."""
    if text is None:
        return "-"
    value = json.loads(text)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _norm(text: Any) -> str:
    return "".join(ch for ch in str(text).lower() if ch.isalnum())


def method_name(label: Any, adapter_type: Any) -> str:
    """The method as recorded (``adapter.label``), with the name the user typed when the label does not already
    say it (``dense (adapter=none)``, ``full LoRAven (adapter=loraven)``)."""
    label = str(label) if label is not None and label == label else str(adapter_type)
    if adapter_type is None or _norm(label) == _norm(adapter_type):
        return label
    return f"{label} (adapter={adapter_type})"


def group_title(key: Mapping[str, Any]) -> str:
    """The heading of a group: model · task (family) · split · metric · energy method."""
    family = key.get("family")
    task = f"{key.get('task')}" + (f" ({family})" if family not in (None, "") and family == family else "")
    energy = key.get("energy_method")
    return " · ".join(
        [
            f"model {key.get('model')}",
            f"task {task}",
            f"{key.get('split')} split",
            f"metric {key.get('metric')}",
            f"energy {energy if energy is not None and energy == energy else 'not recorded'}",
        ]
    )


def comparable_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Completed training runs on the test split (not microbenchmarks, not search trials on validation)."""
    if frame.empty:
        return frame
    return completed_training(frame)


def groups(frame: pd.DataFrame) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """(group key, its completed runs) for every group, in a stable order (model, task, energy method)."""
    runs = comparable_runs(frame)
    if runs.empty:
        return []
    out = []
    for key, part in runs.groupby(list(GROUP_KEYS), dropna=False, sort=False):
        out.append((dict(zip(GROUP_KEYS, key, strict=True)), part))
    return sorted(out, key=lambda kv: tuple(str(kv[0][k]) for k in GROUP_KEYS))


def row_keys(runs: pd.DataFrame) -> tuple[list[str], pd.Series]:
    """The settings that differ inside the group and each run's configuration key (method, scheduler, those
    settings, and whether it is a re-scored adapter)."""
    rescored = runs["rescore_source"].map(is_set) if "rescore_source" in runs else pd.Series(False, index=runs.index)
    trained = runs[~rescored]
    settings = differing_settings(trained) if len(trained) else []
    keys = []
    for index, run in runs.iterrows():
        flat = flat_settings(run["config"]) if not rescored[index] else {}
        keys.append(
            (
                str(run["adapter_type"]),
                str(run["scheduler"]),
                str(run["level"]),
                "rescored" if rescored[index] else "",
                *(flat.get(k) for k in settings),
            )
        )
    return settings, pd.Series(keys, index=runs.index, name="row_key")


def is_set(value: Any) -> bool:
    """A cell that holds something (not None, not NaN)."""
    return value is not None and not (isinstance(value, float) and math.isnan(value))
