"""Read the results store (``<results>/<experiment>/<run_id>/result.json``) into records and one tidy frame.

Analysis depends on the store's contract only (DESIGN.md), never on the training code, so it works on a
copied or exported results folder. Broken files are reported with a warning naming them and skipped.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.paper import level_of
from loraven.contract import contract_violations

RUN_DIR_KEY = "_run_dir"  # added to each record: where its rank_trace.csv etc. live (None for W&B runs)
VERSION_KEYS = ("torch", "transformers", "peft")


class AnalysisWarning(UserWarning):
    """Something in the results store the reader should know about (corrupt file, mixed versions...)."""


def load_results(results_dir: str | Path) -> list[dict[str, Any]]:
    """Every valid result.json under ``results_dir`` (recursively), each with ``_run_dir`` added.

    A record that breaks the contract (:mod:`loraven.contract`) is skipped with a warning naming the file:
    ``{"status": "completed"}`` alone is not a completed run. Copies of one run (the same ``run_id``, e.g. a
    results folder copied inside another) count once: the completed, most recent copy is kept.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory {str(root)!r} does not exist")
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("result.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            warnings.warn(f"skipping unreadable {path}: {err}", AnalysisWarning, stacklevel=2)
            continue
        if not isinstance(result, dict) or "status" not in result:
            warnings.warn(f"skipping {path}: not a result object (no 'status')", AnalysisWarning, stacklevel=2)
            continue
        problems = contract_violations(result)
        if problems:
            more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
            warnings.warn(
                f"skipping {path}: breaks the results contract: {'; '.join(problems[:2])}{more}",
                AnalysisWarning,
                stacklevel=2,
            )
            continue
        result.setdefault("experiment", path.parent.parent.name)
        result.setdefault("run_id", path.parent.name)
        result[RUN_DIR_KEY] = str(path.parent)
        key = str(result["run_id"])
        if key in records:
            kept, dropped = _prefer(records[key], result)
            warnings.warn(
                f"run {key} appears twice ({kept[RUN_DIR_KEY]} and {dropped[RUN_DIR_KEY]}); counting it once "
                f"(keeping {kept[RUN_DIR_KEY]})",
                AnalysisWarning,
                stacklevel=2,
            )
            records[key] = kept
        else:
            records[key] = result
    return list(records.values())


def _prefer(a: dict[str, Any], b: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(kept, dropped) of two copies of one run: completed beats not completed, then the newer record."""

    def rank(r: Mapping[str, Any]) -> tuple[bool, str]:
        return r.get("status") == "completed", str(r.get("created_at") or "")

    return (a, b) if rank(a) >= rank(b) else (b, a)


def steps_of(result: Mapping[str, Any]) -> float:
    """Optimizer steps the run trained for (``time.steps``; older records: ``config.trainer.steps``).

    Runs of different lengths must not share one verdict; this column lets the tables refuse to mix them.
    """
    steps = _get(result, "time.steps")
    return _num(_get(result, "config.trainer.steps") if steps is None else steps)


def _get(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def seed_of(result: Mapping[str, Any]) -> Any:
    seed = result.get("seed")
    return _get(result, "config.seed") if seed is None else seed


def is_bench(result: Mapping[str, Any]) -> bool:
    """Microbenchmark runs (Table 5.1) carry ``bench`` rows and no training metrics."""
    return bool(result.get("bench")) or _get(result, "config.job") == "bench"


def runs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run with the canonical columns every table groups and averages over."""
    rows = []
    for r in records:
        adapter_type = _get(r, "adapter.type") or _get(r, "config.adapter.name")
        scheduler = _get(r, "adapter.scheduler") or _get(r, "config.scheduler.name")
        mode = _get(r, "adapter.mode")
        if mode is None and adapter_type == "loraven":
            mode = _get(r, "config.adapter.mode")
        rows.append(
            {
                "experiment": r.get("experiment") or _get(r, "config.experiment_name"),
                "run_id": r.get("run_id"),
                "status": r.get("status"),
                "reason": r.get("reason"),
                "seed": seed_of(r),
                "model": _get(r, "model.name"),
                "task": _get(r, "metrics.task"),
                "metric": _get(r, "metrics.metric"),
                "accuracy": _num(_get(r, "metrics.accuracy")),
                "accuracy_stderr": _num(_get(r, "metrics.accuracy_stderr")),
                "mse": _num(_get(r, "metrics.mse")),
                "adapter_type": adapter_type,
                "scheduler": scheduler,
                "mode": mode,
                "level": level_of(adapter_type, scheduler),
                "energy_kwh": _num(_get(r, "energy.kwh")),
                "energy_method": _get(r, "energy.method"),
                "train_s": _num(_get(r, "time.train_s")),
                "step_ms": _num(_get(r, "time.step_ms_median")),
                "tokens_per_s": _num(_get(r, "time.tokens_per_s")),
                "peak_mb": _num(_get(r, "memory.peak_mb")),
                "trainable_params": _num(_get(r, "model.trainable_params")),
                "steps": steps_of(r),
                **{f"env_{k}": _get(r, f"env.{k}") for k in (*VERSION_KEYS, "device")},
                "bench": is_bench(r),
                "run_dir": r.get(RUN_DIR_KEY),
            }
        )
    frame = pd.DataFrame(rows, columns=list(_COLUMNS) if not rows else None)
    _label_modes(frame)
    return frame


_COLUMNS = (
    "experiment",
    "run_id",
    "status",
    "reason",
    "seed",
    "model",
    "task",
    "metric",
    "accuracy",
    "accuracy_stderr",
    "mse",
    "adapter_type",
    "scheduler",
    "mode",
    "level",
    "energy_kwh",
    "energy_method",
    "train_s",
    "step_ms",
    "tokens_per_s",
    "peak_mb",
    "trainable_params",
    "steps",
    "env_torch",
    "env_transformers",
    "env_peft",
    "env_device",
    "bench",
    "run_dir",
)


def _label_modes(frame: pd.DataFrame) -> None:
    """LoRAven's adapter and replace modes are different methods: name the mode once both occur."""
    if frame.empty:
        return
    loraven = frame["adapter_type"] == "loraven"
    if frame.loc[loraven, "mode"].dropna().nunique() > 1:
        frame.loc[loraven, "level"] = (
            frame.loc[loraven, "level"] + " (" + frame.loc[loraven, "mode"].fillna("adapter").astype(str) + ")"
        )


def warn_mixed_versions(frame: pd.DataFrame, what: str) -> None:
    """One table should compare runs made with one software stack; say so when it doesn't."""
    for key in VERSION_KEYS:
        values = sorted({str(v) for v in frame.get(f"env_{key}", pd.Series(dtype=object)).dropna()})
        if len(values) > 1:
            warnings.warn(f"{what}: runs mix {key} versions {', '.join(values)}", AnalysisWarning, stacklevel=2)


def read_csv_beside(run_dir: str | None, name: str) -> pd.DataFrame | None:
    """A run's side table (rank_trace.csv, lora_ar_allocation.csv); None (with a warning) if unreadable."""
    if not run_dir:
        return None
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        warnings.warn(f"skipping unreadable {path}: {err}", AnalysisWarning, stacklevel=2)
        return None
