"""Hydra glue: what the composed config and Hydra's runtime say about this job (sweep or not, job dir, launcher
parallelism, config search path) and the job pointer a sweep's summary reads back."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("loraven")

JOB_POINTER = "loraven_job.json"  # written into Hydra's job dir so the sweep summary can find every result
PID_RESOLVER = "loraven_pid"


def register_resolvers() -> None:
    """``${loraven_pid:}``: the launcher's pid, in ``hydra.run.dir``/``hydra.sweep.dir`` after the time, so two runs or
    sweeps started in the same second get folders of their own (one sweep's summary listed the other's jobs).

    Cached (``use_cache``): Hydra copies a resolved config's cache into every job's config, and the cache is
    pickled with it, so workers (joblib, submitit, Slurm) see the launcher's value, as they do for ``${now:}``.
    """
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(PID_RESOLVER):
        OmegaConf.register_new_resolver(PID_RESOLVER, lambda: str(os.getpid()), use_cache=True)


register_resolvers()


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def job_dir() -> Path | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return None


def config_search_dirs() -> list[str]:
    """The folders on Hydra's config search path that are not loraven's own (``--config-dir``, ``--config-path``,
    ``hydra.searchpath``): a plug-in's code may sit beside its YAMLs there."""
    from hydra.core.hydra_config import HydraConfig

    try:
        sources = HydraConfig.get().runtime.config_sources
    except ValueError:
        return []
    out = []
    for source in sources:
        path = str(source.get("path", ""))
        if source.get("schema") == "file" and path:
            out.append(path.removeprefix("file://"))
    from loraven import CONF_DIR

    own = str(Path(CONF_DIR).resolve())
    return [p for p in out if str(Path(p).resolve()) != own]


def sweep_params() -> dict[str, Any]:
    """``hydra.sweeper.params`` of the composed config: non-empty for a named sweep (experiment=paper_energy)."""
    from hydra.core.hydra_config import HydraConfig

    try:
        params = HydraConfig.get().sweeper.get("params")
    except ValueError:
        return {}
    return dict(params or {})


def refuse_sweep_without_multirun(argv: list[str] | None = None) -> None:
    """A sweep config run without ``-m`` would run one arbitrary grid point: exit 2 with the command instead."""
    from hydra.core.hydra_config import HydraConfig

    params = sweep_params()
    if not params:
        return
    import shlex

    try:
        name = HydraConfig.get().runtime.choices.get("experiment")
    except ValueError:
        name = None
    args = sys.argv[1:] if argv is None else argv
    what = f"experiment={name}" if name and name != "null" else "this config"
    print(
        f"error: {what} is a sweep (over {', '.join(map(str, params))}); run it with: "
        f"python run.py -m {shlex.join(args)}",
        file=sys.stderr,
    )
    from loraven.cli.lifecycle import EXIT_CONFIG

    sys.exit(EXIT_CONFIG)


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


def write_pointer(result: dict[str, Any], cfg: dict[str, Any] | None = None) -> None:
    """The job's record, in short, in Hydra's job dir: the sweep summary collects them. ``result_path`` is the
    file the record was written to (None when it was not: a refused config, a failed write)."""
    where = job_dir()
    if where is None:
        return
    from loraven.cli.console import result_path, summary_row
    from loraven.track import atomic_write_text

    keep = {k: result.get(k) for k in ("run_id", "status", "reason", "experiment", "_resumed")}
    keep["summary"] = summary_row(result)
    path = result_path(result, cfg) if cfg is not None else None
    keep["result_path"] = str(path) if path is not None else None
    atomic_write_text(where / JOB_POINTER, json.dumps(keep, default=str))
