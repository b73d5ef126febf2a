"""``python run.py`` / ``loraven``: a composed config → one job, its summary, clean errors and exit codes.

This module only orchestrates: Hydra facts come from :mod:`.hydra_glue`, process handling from :mod:`.lifecycle`,
output from :mod:`.console`; the job itself is :func:`loraven.job.run_job`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from loraven import CONF_DIR
from loraven.cli import hydra_glue, lifecycle
from loraven.cli.console import print_summary

log = logging.getLogger("loraven")


def run_from_hydra(cfg: DictConfig) -> float | None:
    """Run the job; a config error is one line with exit 2 in a single run, a failed job entry in a sweep."""
    multirun = hydra_glue.is_multirun()
    if not multirun:
        hydra_glue.refuse_sweep_without_multirun()  # before anything is imported or loaded

    os.environ.setdefault("WANDB_MODE", str(cfg.get("tracking", {}).get("mode", "offline")))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if multirun:  # joblib/loky workers: W&B's default process start fails ("cannot find context for 'loky'")
        os.environ.setdefault("WANDB_START_METHOD", "thread")
    worker = multirun and lifecycle.in_launcher_worker()
    if worker:
        lifecycle.install_worker_handlers()
        lifecycle.worker_busy(True)
        if os.getppid() == int(os.environ[lifecycle.LAUNCHER_PID_ENV]):
            lifecycle.watch_parent()  # a joblib/local worker ends when its launcher dies, even by SIGKILL
    try:
        return _run_job_from_hydra(cfg, multirun)
    finally:
        if worker:
            lifecycle.worker_busy(False)  # a signal held meanwhile ends the worker now, its pointer written


def _run_job_from_hydra(cfg: DictConfig, multirun: bool) -> float | None:
    from loraven.errors import ConfigError
    from loraven.hub import configure_hub_access
    from loraven.locks import LockError
    from loraven.search import check_trial, current_sweeper

    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    try:
        check_trial(resolved, current_sweeper() if multirun else None)  # an Optuna search must stop, not score test
        configure_hub_access(resolved)
        main_process = lifecycle.init_distributed() == 0
        result = _run(resolved, multirun)
    except KeyboardInterrupt as err:  # recorded as interrupted by run_job; here: how this process ends
        record = getattr(err, "record", None)
        if multirun and isinstance(record, dict):  # the sweep's table and the launcher's last line read it
            try:
                hydra_glue.write_pointer(record)
            except OSError as write_err:
                log.error("could not write the sweep's job record: %s", write_err)
        if multirun and lifecycle.in_launcher_worker():  # a joblib/loky worker: stop now, the launcher reports it
            lifecycle.exit_worker(err)  # (nothing else to hold: the record and its pointer are written)
        raise
    except ConfigError as err:
        if not multirun:
            print(f"error: {err}", file=sys.stderr)
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            sys.exit(lifecycle.EXIT_CONFIG)
        result, main_process = _config_error_entry(resolved, err), True
    except LockError as err:  # a lock that cannot be verified: reported with the command that clears it
        if not multirun:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(lifecycle.EXIT_FAILED)
        result, main_process = _config_error_entry(resolved, err, "not run"), True
    if not main_process:  # data-parallel ranks > 0: rank 0 writes the result, the pointer and the table
        return None
    try:
        hydra_glue.write_pointer(result, resolved)
    except OSError as err:
        log.error("could not write the sweep's job record: %s", err.strerror or err)
    print_summary(result, resolved)
    if not multirun and result.get("_unsaved"):  # the metrics are in the table above; the file is not
        print(
            f"error: run {result.get('run_id')} finished but its result was not saved: {result['_unsaved']}",
            file=sys.stderr,
        )
        sys.exit(lifecycle.EXIT_FAILED)
    if not multirun and result.get("status") == "failed":  # a failed single run must fail the shell too
        print(f"error: run {result.get('run_id')} failed: {result.get('reason')}", file=sys.stderr)
        sys.exit(lifecycle.EXIT_FAILED)
    return objective(result)


def _run(resolved: dict[str, Any], multirun: bool) -> dict[str, Any]:
    if resolved.get("job", "train") == "bench":
        from loraven.bench.job import run_bench_job

        return run_bench_job(resolved, search_dirs=hydra_glue.config_search_dirs())
    from loraven.job import run_job

    return run_job(
        resolved,
        multirun=multirun,
        progress=sys.stderr.isatty() or not multirun,
        parallel_jobs=hydra_glue.parallel_jobs(),
        search_dirs=hydra_glue.config_search_dirs(),
        on_record=hydra_glue.write_pointer if multirun else None,  # listed for the sweep before W&B finishes
    )


def _config_error_entry(cfg: dict[str, Any], err: Exception, what: str = "config error") -> dict[str, Any]:
    """A sweep job whose config is bad: a failed entry in the sweep's table (no record in the results store,
    whose own path may be what is bad; no W&B run; nothing loaded)."""
    from loraven.track import run_id_for

    return {
        "run_id": run_id_for(cfg),
        "status": "failed",
        "reason": f"{what}: {err}",
        "experiment": cfg.get("experiment_name"),
        "seed": cfg.get("seed"),
        "adapter": {
            "type": (cfg.get("adapter") or {}).get("name"),
            "scheduler": (cfg.get("scheduler") or {}).get("name"),
        },
        "_unsaved": "not recorded: the config was refused before anything ran",
    }


def objective(result: dict[str, Any]) -> float | None:
    """What a Hydra sweeper (Optuna) reads: see :func:`loraven.search.objective` (None = a failed trial)."""
    from loraven.search import objective as search_objective

    return search_objective(result)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float | None:
    return run_from_hydra(cfg)


def main() -> None:
    """The ``loraven`` console command and ``python run.py``: the same entry, the same checks.

    Before Hydra writes anything, :mod:`.precheck` composes the config as Hydra will and refuses credentials and
    composition errors (one line, exit 2); while Hydra runs, its own config errors are one line with exit 2 too.
    """
    from loraven.cli import precheck

    try:
        precheck.check(sys.argv[1:])
    except KeyboardInterrupt:
        print("interrupted (SIGINT) before anything started: nothing was written; exit 130", file=sys.stderr)
        sys.exit(lifecycle.EXIT_SIGINT)
    with precheck.one_line_hydra_errors():
        lifecycle.run_guarded(hydra_main)
