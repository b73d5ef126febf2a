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
    multirun = _is_multirun()
    if multirun:  # joblib/loky workers: W&B's default process start fails ("cannot find context for 'loky'")
        os.environ.setdefault("WANDB_START_METHOD", "thread")
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    configure_hub_access(resolved)
    main_process = init_distributed() == 0
    try:
        if resolved.get("job", "train") == "bench":
            from loraven.bench.job import run_bench_job

            result = run_bench_job(resolved)
        else:
            from loraven.job import run_job

            result = run_job(resolved, multirun=multirun, progress=sys.stderr.isatty() or not multirun,
                             parallel_jobs=parallel_jobs())
    except ConfigError as err:
        if multirun:
            result = _record_config_error(resolved, err)
        else:
            print(f"error: {err}", file=sys.stderr)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.exit(2)
    if not main_process:  # data-parallel ranks > 0: rank 0 writes the result, the pointer and the table
        return None
    _write_pointer(result)
    print_summary(result)
    if not multirun and result.get("status") == "failed":  # a failed single run must fail the shell too
        print(f"error: run {result.get('run_id')} failed: {result.get('reason')}", file=sys.stderr)
        sys.exit(1)
    return objective(result)


def init_distributed() -> int:
    """This process's rank; joins the process group when launched by ``accelerate launch``/torchrun.

    accelerate's :class:`PartialState` reads the environment the launcher set (RANK, WORLD_SIZE,
    MASTER_ADDR) and initialises torch.distributed (gloo on CPU, nccl on GPU). On a CPU-only machine
    accelerate 1.x starts several processes only with ``--multi_gpu`` (``--cpu`` means one process), so
    the CPU recipe is ``accelerate launch --multi_gpu --num_processes 2 run.py`` (or torchrun).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()
    if not dist.is_initialized():  # accelerate leaves plain CPU launches to us
        dist.init_process_group(backend="nccl" if torch_cuda_available() else "gloo")
    return int(dist.get_rank())


def torch_cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def parallel_jobs() -> int:
    """How many jobs of this sweep run at once (joblib n_jobs, submitit array parallelism), else 1.

    Recorded as ``energy.parallel_jobs``: codecarbon's process mode splits CPU/RAM energy by this
    process's share, so concurrent jobs are visible in the numbers.
    """
    from hydra.core.hydra_config import HydraConfig

    try:
        launcher = HydraConfig.get().launcher
    except ValueError:
        return 1
    target = str(launcher.get("_target_", ""))
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or 1)
        return max(1, (os.cpu_count() or 1) + 1 + n_jobs) if n_jobs < 0 else n_jobs  # joblib: -1 = all cores
    if "submitit" in target.lower() and "Local" in target:
        return int(launcher.get("array_parallelism") or 1)
    return 1


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
