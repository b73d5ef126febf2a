"""Sweep-level summary (a Hydra callback): one table of every job, failures with reasons, an honest exit code.

Each job leaves ``loraven_job.json`` in its Hydra job dir (see :mod:`loraven.cli`); this reads them back,
so it works the same for the basic, joblib and submitit launchers. The process exits non-zero only if a
job *failed*; ``skipped`` (incompatible pairs) and already-completed jobs are not failures.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from loraven.cli.console import console, fmt
from loraven.cli.hydra_glue import JOB_POINTER
from loraven.errors import ConfigError
from loraven.search import is_optuna

log = logging.getLogger("loraven.sweep")


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for pointer in sorted(sweep_dir.glob(f"*/{JOB_POINTER}"), key=lambda p: _job_num(p.parent.name)):
        try:
            rows.append(json.loads(pointer.read_text()))
        except (OSError, ValueError) as err:
            log.warning("unreadable job record %s: %s", pointer, err)
    return rows


def _why(jobs: list[dict[str, Any]]) -> str:
    """Why the trials failed, most common reason first (``3 × diverged: ...``)."""
    if not jobs:
        return "no trial ran"
    reasons = Counter(f"{j.get('status')}: {str(j.get('reason') or 'no reason recorded')[:160]}" for j in jobs)
    return "; ".join(f"{n} × {reason}" for reason, n in reasons.most_common(3))


def _job_num(name: str) -> int:
    return int(name) if name.isdigit() else 10**9


def where_lines(config: DictConfig, jobs: list[dict[str, Any]]) -> list[str]:
    """Where this sweep's results are (each job's own result file), how to analyse them, and the ``wandb sync``
    command for this sweep's offline W&B runs only (their run folders, not every run of the experiment)."""
    import shlex

    root = str(config.get("results_dir") or "results")
    paths = [(i, job.get("result_path")) for i, job in enumerate(jobs)]
    lines = ["results of this sweep:"] if any(p for _, p in paths) else []
    lines += [f"  #{i} {p}" for i, p in paths if p]
    if any(p for _, p in paths):
        lines.append(f"tables and figures: python -m analysis --results {shlex.quote(root)} --out reports")
    tracking = config.get("tracking") or {}
    if tracking.get("name") == "wandb" and (os.environ.get("WANDB_MODE") or tracking.get("mode")) == "offline":
        folders = [shlex.quote(str(Path(p).parent / "wandb")) + "/offline-run-*" for _, p in paths if p]
        if folders:
            lines.append(f"upload this sweep's offline W&B runs: wandb sync {' '.join(folders)}")
    return lines


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Probe W&B once for the whole sweep: unreachable → every job logs offline, said once, not per job.

        ``WANDB_MODE=offline`` set here is inherited by the launcher's workers (joblib/loky, submitit local).
        """
        from loraven.cli.lifecycle import SWEEP_STATE
        from loraven.track import _wandb_logged_in, wandb_reachable

        if OmegaConf.select(config, "hydra.sweep.dir") is not None:
            SWEEP_STATE["dir"] = Path(str(config.hydra.sweep.dir))  # an interrupted sweep's last line reads it
            from loraven.sweep_check import check_sweep

            try:
                check_sweep(config)  # every job's config, before the first job starts (a bad one stops it: exit 2)
            except ConfigError as err:  # Hydra would turn a callback's exception into a warning and go on
                from loraven.cli.precheck import stop_from_callback

                stop_from_callback(err)
        tracking = config.get("tracking") or {}
        mode = os.environ.get("WANDB_MODE") or str(tracking.get("mode", "offline"))
        if tracking.get("name") == "wandb" and mode == "online" and _wandb_logged_in():
            wandb_reachable()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rich.table import Table

        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = collect(sweep_dir)
        expected = sum(1 for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()) if sweep_dir.is_dir() else 0
        counts = Counter(j["status"] + (" (resumed)" if j.get("_resumed") else "") for j in jobs)
        table = Table(title=f"sweep {sweep_dir}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
        shown = ("model", "adapter", "scheduler", "seed", "lr", "split", "n", "accuracy", "stderr")
        after = ("mse", "train_s", "kwh")
        for col in ("#", "status", "run_id", *shown, "at chance", *after, "reason"):
            table.add_column(col)
        for i, job in enumerate(jobs):
            s = job.get("summary", {})
            table.add_row(
                str(i),
                str(job["status"]) + (" (resumed)" if job.get("_resumed") else ""),
                str(job.get("run_id") or "-"),
                *(fmt(s.get(k)) for k in shown),
                {True: "yes", False: "no"}.get(s.get("at_chance"), "-"),
                *(fmt(s.get(k)) for k in after),
                # a terminal gets the first 80 characters of a reason; a log file keeps all of it
                (job.get("reason") or "")[: 80 if sys.stderr.isatty() else None],
            )
        console().print(table)  # in a log file: full width, no cell wrapped or cut
        # one plain line as well: a narrow log file wraps the table's title mid-word
        print("loraven sweep summary: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())), file=sys.stderr)
        for line in where_lines(config, jobs):
            print(line, file=sys.stderr)
        failed = [j for j in jobs if j["status"] == "failed"]
        missing = expected - len(jobs)
        if missing > 0:
            log.error("%d job(s) left no record (crashed before writing one)", missing)
        if is_optuna(OmegaConf.select(config, "hydra.sweeper")) and not missing:
            # a search expects some trials to fail (a rate too high diverges): each was told to Optuna as FAIL
            # and the search went on; the search itself failed only if no trial completed
            if failed:
                print(
                    f"loraven search: {len(failed)} trial(s) failed and were recorded FAIL in the study",
                    file=sys.stderr,
                )
            if not any(j["status"] == "completed" for j in jobs):
                print(f"loraven search: no trial completed, so there is no best trial; {_why(jobs)}", file=sys.stderr)
                raise SystemExit(1)
            return
        if failed or missing > 0:
            raise SystemExit(1)
