"""Read the results store (``<results>/<experiment>/<run_id>/result.json``) into records and one tidy frame.

Analysis depends on the store's contract only (docs/design.md), never on the training code, so it works on a
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


def torch_threads(result: Mapping[str, Any]) -> float:
    """The run's torch thread count (``env.torch_threads``; records before it: ``env.cpu_threads``); NaN if absent."""
    return _num(_get(result, "env.torch_threads") or _get(result, "env.cpu_threads"))


def cpu_share(result: Mapping[str, Any]) -> float:
    """How much of its threads' time a CPU run's training got: train CPU seconds ÷ (train wall seconds × threads).
    About 1 on a quiet machine, lower when other processes shared the cores (its times, and the energy estimated
    from them, then measure the load too). NaN for GPU runs and records without the numbers."""
    device = str(_get(result, "env.device") or "")
    cpu_s, wall_s = _num(_get(result, "time.train_cpu_s")), _num(_get(result, "time.train_s"))
    threads = torch_threads(result)
    if not device.startswith("cpu") or not (cpu_s > 0 and wall_s > 0 and threads > 0):
        return math.nan
    return cpu_s / (wall_s * threads)


def tuned_params(result: Mapping[str, Any]) -> str | None:
    """The hyperparameters a search chose for this run, as ``key=value`` text (``config.tuning.searched``)."""
    keys = _get(result, "config.tuning.searched") or []
    if not keys:
        return None
    return ", ".join(f"{k}={_short(_get(result, f'config.{k}'))}" for k in keys)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def seed_of(result: Mapping[str, Any]) -> Any:
    seed = result.get("seed")
    return _get(result, "config.seed") if seed is None else seed


def chance_of(result: Mapping[str, Any]) -> float:
    """The task's chance accuracy from explicit data only: ``metrics.chance`` (null: no chance level, e.g.
    regression), else ``1 / n_choices`` when the record names its choices (metrics, or the run's task config);
    NaN = unknown (older records). Never guessed from the task's name or its accuracy."""
    metrics = _get(result, "metrics")
    if not isinstance(metrics, Mapping):
        return math.nan
    if "chance" in metrics:
        return _num(metrics["chance"])
    choices = _num(metrics.get("n_choices", _get(result, "config.task.n_choices")))
    return 1.0 / choices if choices and choices > 0 else math.nan


def chance_known(result: Mapping[str, Any]) -> bool:
    """True when the record states its chance level (a number, or null for tasks that have none), or the
    number of choices of a multiple-choice task (``metrics.n_choices`` or the run's ``config.task.n_choices``)."""
    metrics = _get(result, "metrics")
    if not isinstance(metrics, Mapping):
        return False
    return "chance" in metrics or "n_choices" in metrics or _get(result, "config.task.n_choices") is not None


def steps_of(result: Mapping[str, Any]) -> float:
    """Optimiser steps actually taken (``time.steps``), else the configured ``trainer.steps``."""
    steps = _num(_get(result, "time.steps"))
    return steps if math.isfinite(steps) else _num(_get(result, "config.trainer.steps"))


def phase_energy(result: Mapping[str, Any], phase: str) -> Mapping[str, Any]:
    """A phase's energy reading: the training phase is the energy section itself, the others are under
    ``energy.phases`` (each value is written once)."""
    energy = _get(result, "energy") or {}
    if phase == "train":
        return energy
    return _get(energy, f"phases.{phase}") or {}


def below_resolution(result: Mapping[str, Any], phase: str) -> bool:
    """The meter's own verdict on the phase (``below_resolution``, set by the meter from its sampling interval)."""
    return phase_energy(result, phase).get("below_resolution") is True


def per_unit(result: Mapping[str, Any], phase: str, key: str, units_key: str) -> float:
    """Energy per unit of work: the recorded figure, else the phase's kWh ÷ the recorded units (records made
    before the key existed); NaN when the phase is below meter resolution or either number is missing."""
    if below_resolution(result, phase):
        return math.nan
    value = _num(_get(result, key))
    if math.isfinite(value):
        return value
    kwh, units = _num(phase_energy(result, phase).get("kwh")), _num(_get(result, units_key))
    return kwh * 3.6e6 / units if math.isfinite(kwh) and math.isfinite(units) and units > 0 else math.nan


def is_bench(result: Mapping[str, Any]) -> bool:
    """Microbenchmark runs (Table 5.1) carry ``bench`` rows and no training metrics."""
    return bool(result.get("bench")) or _get(result, "config.job") == "bench"


def run_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One run as the canonical columns every table groups and averages over, read from its record only (labels,
    order, baseline, task family and energy evidence are written by the harness into every record)."""
    adapter_type = _get(r, "adapter.type") or _get(r, "config.adapter.name")
    mode = _get(r, "adapter.mode")
    if mode is None:  # a method with modes (LoRAven: adapter | replace) records its mode in its config
        mode = _get(r, "config.adapter.mode")
    return {
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
        "eval_n": _num(_get(r, "metrics.n")),
        "chance": chance_of(r),
        "chance_known": chance_known(r),
        "base_accuracy": _num(_get(r, "metrics.base_accuracy")),
        "base_accuracy_stderr": _num(_get(r, "metrics.base_accuracy_stderr")),
        "steps": steps_of(r),
        "mse": _num(_get(r, "metrics.mse")),
        "adapter_type": adapter_type,
        "scheduler": _get(r, "adapter.scheduler") or _get(r, "config.scheduler.name"),
        "mode": mode,
        "level": _get(r, "adapter.label") or str(adapter_type),
        "level_order": _num(_get(r, "adapter.order")),
        "baseline": _get(r, "adapter.baseline") is True,
        "size_key": _get(r, "adapter.size.key"),
        "size": _get(r, "adapter.size.value"),
        "family": _get(r, "task.family"),
        "higher_is_better": _get(r, "task.higher_is_better"),
        "energy_kwh": _num(_get(r, "energy.kwh")),
        "energy_method": _get(r, "energy.method"),
        "energy_evidence": _get(r, "energy.evidence") or "not measured",
        "energy_below_resolution": below_resolution(r, "train"),
        "energy_eval_kwh": _num(phase_energy(r, "eval").get("kwh")),
        "j_per_train_unit": per_unit(r, "train", "energy.j_per_train_unit", "time.train_tokens"),
        "j_per_eval_example": per_unit(r, "eval", "energy.j_per_eval_example", "metrics.n"),
        "train_s": _num(_get(r, "time.train_s")),
        "eval_s": _num(_get(r, "time.eval_s")),
        "step_ms": _num(_get(r, "time.step_ms_median")),
        "torch_threads": torch_threads(r),
        "cpu_share": cpu_share(r),
        "tokens_per_s": _num(_get(r, "time.tokens_per_s")),
        "peak_mb": _num(_get(r, "memory.peak_mb")),
        "memory_device": _get(r, "memory.device"),
        "memory_scope": _get(r, "memory.scope"),
        "r_min": _num(_get(r, "adapter.r_min")),
        "r_max": _num(_get(r, "adapter.r_max")),
        "n_decisions": _num(_get(r, "adapter.n_decisions")),
        "trainable_params": _num(_get(r, "model.trainable_params")),
        "total_params": _num(_get(r, "model.total_params")),
        "n_tasks": len(_get(r, "metrics.per_task") or {}) or 1,
        "per_task": _get(r, "metrics.per_task") or {},
        "base_per_task": _get(r, "metrics.base_per_task") or {},
        "at_chance": _get(r, "metrics.at_chance"),
        "retention": _num(_get(r, "metrics.retention.mean_change")),
        "retention_lo": _num(_get(r, "metrics.retention.mean_change_lo")),
        "retention_hi": _num(_get(r, "metrics.retention.mean_change_hi")),
        "retention_tasks": ",".join(sorted(_get(r, "metrics.retention.tasks") or {})) or None,
        "rescore_source": _get(r, "rescore.source_run_id"),
        "rescore_experiment": _get(r, "rescore.source_experiment"),
        "split": _get(r, "metrics.split") or "test",  # records before issue 17 were all test
        "lr": _num(_get(r, "config.trainer.lr")),
        "tuning_role": _get(r, "config.tuning.role"),
        "tuned_params": tuned_params(r),
        **{f"env_{k}": _get(r, f"env.{k}") for k in (*VERSION_KEYS, "device")},
        "bench": is_bench(r),
        "run_dir": r.get(RUN_DIR_KEY),
        "config": _get(r, "config") if isinstance(_get(r, "config"), Mapping) else {},
    }


COLUMNS = tuple(run_row({}))  # the frame's columns: derived from the row itself, never kept in sync by hand


def runs_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per run (:func:`run_row`)."""
    frame = pd.DataFrame([run_row(r) for r in records], columns=list(COLUMNS))
    _label_modes(frame)
    return frame


def _label_modes(frame: pd.DataFrame) -> None:
    """A method's modes are different methods (LoRAven: adapter vs replace): name the mode once a method's
    runs use more than one."""
    if frame.empty:
        return
    for _, rows in frame.groupby("adapter_type"):
        modes = rows["mode"]
        if modes.dropna().nunique() > 1:
            frame.loc[rows.index, "level"] = rows["level"] + " (" + modes.fillna("mode unrecorded").astype(str) + ")"


def warn_mixed_versions(frame: pd.DataFrame, what: str) -> None:
    """One table should compare runs made with one software stack; say so when it doesn't."""
    for key in VERSION_KEYS:
        values = sorted({str(v) for v in frame.get(f"env_{key}", pd.Series(dtype=object)).dropna()})
        if len(values) > 1:
            warnings.warn(f"{what}: runs mix {key} versions {', '.join(values)}", AnalysisWarning, stacklevel=2)


def read_csv_beside(run_dir: str | None, name: str) -> pd.DataFrame | None:
    """A run's side table (rank_trace.csv, a method's *_allocation.csv); None (with a warning) if unreadable."""
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
