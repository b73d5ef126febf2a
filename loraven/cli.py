"""What ``run.py`` does with a composed config: one job, its summary table, and clean errors."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("loraven")

JOB_POINTER = "loraven_job.json"  # written into Hydra's job dir so the sweep summary can find every result


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _job_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


def run_from_hydra(cfg: DictConfig) -> float | None:
    """Run the job; in a single run a config error exits 2 with one line, in a sweep it is recorded."""
    from loraven.adapters.base import ConfigError
    from loraven.hub import configure_hub_access

    os.environ.setdefault("WANDB_MODE", str(cfg.get("tracking", {}).get("mode", "offline")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    configure_hub_access(resolved)
    multirun = _is_multirun()
    try:
        if resolved.get("job", "train") == "bench":
            from loraven.bench.job import run_bench_job

            result = run_bench_job(resolved)
        else:
            from loraven.job import run_job

            result = run_job(resolved, multirun=multirun, progress=sys.stderr.isatty() or not multirun)
    except ConfigError as err:
        if multirun:
            result = _record_config_error(resolved, err)
        else:
            print(f"error: {err}", file=sys.stderr)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.exit(2)
    _write_pointer(result)
    print_summary(result)
    return objective(result)


def _record_config_error(cfg: dict[str, Any], err: Exception) -> dict[str, Any]:
    from loraven.job import experiment_name, skeleton
    from loraven.track import ResultsStore, run_id_for

    result = skeleton(cfg, run_id_for(cfg), "failed", f"config error: {err}")
    try:
        ResultsStore(cfg.get("results_dir", "results")).write(experiment_name(cfg), result)
    except OSError as write_err:
        log.error("could not record the failure: %s", write_err)
    return result


def _write_pointer(result: dict[str, Any]) -> None:
    job_dir = _job_dir()
    if job_dir is None:
        return
    from loraven.track import atomic_write_text

    keep = {k: result.get(k) for k in ("run_id", "status", "reason", "experiment", "_resumed")}
    keep["summary"] = summary_row(result)
    atomic_write_text(job_dir / JOB_POINTER, json.dumps(keep, default=str))


def objective(result: dict[str, Any]) -> float | None:
    """What a Hydra sweeper (Optuna) maximises: accuracy, or −MSE for regression."""
    metrics = result.get("metrics") or {}
    if result.get("status") != "completed":
        return None
    if metrics.get("accuracy") is not None:
        return float(metrics["accuracy"])
    if metrics.get("mse") is not None:
        return -float(metrics["mse"])
    return None


def summary_row(result: dict[str, Any]) -> dict[str, Any]:
    metrics, time_, energy = result.get("metrics") or {}, result.get("time") or {}, result.get("energy") or {}
    adapter = result.get("adapter") or {}
    return {
        "run": result.get("run_id"), "status": result.get("status"),
        "adapter": adapter.get("type"), "scheduler": adapter.get("scheduler"), "seed": result.get("seed"),
        "task": metrics.get("task"), "accuracy": metrics.get("accuracy"), "stderr": metrics.get("accuracy_stderr"),
        "base": metrics.get("base_accuracy"), "mse": metrics.get("mse"),
        "train_s": time_.get("train_s"), "step_ms": time_.get("step_ms_median"),
        "kwh": energy.get("kwh"), "energy_method": energy.get("method"), "reason": result.get("reason"),
        "resumed": bool(result.get("_resumed")),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 and value != 0 else f"{value:.4f}".rstrip("0").rstrip(".")
    return str(value)


def print_summary(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    row = summary_row(result)
    table = Table(title=f"loraven run {row['run']} — {row['status']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value")
    for key in ("adapter", "scheduler", "task", "accuracy", "stderr", "base", "mse", "train_s", "step_ms", "kwh",
                "energy_method", "reason"):
        if row.get(key) is not None:
            table.add_row(key, _fmt(row[key]))
    if row["resumed"]:
        table.add_row("note", "already completed earlier; not re-run (rerun=true forces)")
    Console(stderr=True).print(table)
