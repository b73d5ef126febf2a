"""Every job of a sweep validated before the first one starts.

Decision (issue 26): a bad value in any grid point stops the whole sweep before anything runs, with one line naming
the job's overrides and the value (exit 2). Recording it as a failed row and going on would run the other jobs for
hours and leave a hole in the grid that a rerun with the fixed value must fill anyway; a sweep is one command, so it
is checked as one. An adapter × scheduler pair a method refuses is not an error: it stays a ``skipped`` row.

The grid is expanded as Hydra's basic sweeper expands it (``hydra.sweeper.params`` then the command line,
:meth:`BasicSweeper.split_arguments`) and every job's config is composed as the launcher will compose it
(``load_sweep_config``), then validated by :func:`loraven.run_config.validate_run_config`. An Optuna search cannot be
enumerated: its fixed values are checked with every searched key at each end of its range (and each choice), so a
search whose every trial would be refused (no validation split, a learning-rate interval reaching 0) stops before
the first trial. Cost: one composition per job (~0.1 s).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from loraven.errors import ConfigError

log = logging.getLogger("loraven.sweep")


def job_overrides(config: DictConfig) -> tuple[str, list[list[str]]]:
    """(what the jobs are called, every job's overrides) for the sweeper this config uses; no jobs for a sweeper
    this module does not know (it checks its own)."""
    from loraven.search import is_optuna

    sweeper = config.hydra.sweeper
    arguments = [str(a) for a in (config.hydra.overrides.task or [])]
    if is_optuna(sweeper):
        return "search point", _search_points(sweeper, arguments)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return "job", []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    params = [f"{k!s}={v}" for k, v in (sweeper.get("params") or {}).items()] + arguments
    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(params), None)
    except HydraException:  # a sweep type the basic sweeper refuses: it says so itself
        return "job", []
    return "job", [list(job) for job in batches[0]]


def _search_points(sweeper: Any, arguments: list[str]) -> list[list[str]]:
    """The fixed values with each searched key at its low end, then each key at each of its ends (or choices)."""
    from loraven.search import search_space

    distributions, fixed = search_space(sweeper, arguments)
    base = [f"{k}={v}" for k, v in fixed.items()]
    ends = {key: _ends(dist) for key, dist in distributions.items()}
    low = {key: values[0] for key, values in ends.items() if values}
    points = [base + [f"{k}={v}" for k, v in low.items()]]
    for key, values in ends.items():
        for value in values[1:]:
            points.append(base + [f"{k}={value if k == key else v}" for k, v in low.items()])
    return points


def _ends(distribution: Any) -> list[Any]:
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return list(choices)
    low, high = getattr(distribution, "low", None), getattr(distribution, "high", None)
    return [v for v in (low, high) if v is not None]


def check_sweep(config: DictConfig) -> int:
    """Compose and validate every job of this sweep; the first bad one is one :class:`ConfigError` line.

    Returns how many job configs were checked.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from loraven.cli.hydra_glue import config_search_dirs
    from loraven.run_config import validate_run_config

    what, jobs = job_overrides(config)
    if not jobs or not GlobalHydra.instance().is_initialized():
        return 0
    start = time.perf_counter()
    loader = GlobalHydra.instance().config_loader()
    holder = HydraConfig.instance()
    saved = holder.cfg
    search_dirs = config_search_dirs()
    results_dirs: set[str] = set()
    try:
        for i, overrides in enumerate(jobs):
            name = f"{what} {i} of {len(jobs)}" if what == "job" else what
            where = f"{name} ({' '.join(overrides) or 'no overrides'})"
            job_cfg = loader.load_sweep_config(config, list(overrides))
            holder.set_config(job_cfg)
            resolved = _resolved(job_cfg, where)
            try:
                run = validate_run_config(resolved, search_dirs)
            except ConfigError as err:
                raise ConfigError(f"{where}: {err}") from None
            results_dirs.add(run.top.results_dir)
    finally:
        holder.cfg = saved
    _check_writable(results_dirs)
    log.info("checked the configs of %d %ss in %.1f s", len(jobs), what, time.perf_counter() - start)
    return len(jobs)


def _resolved(job_cfg: DictConfig, where: str) -> dict[str, Any]:
    from omegaconf.errors import OmegaConfBaseException

    job = OmegaConf.masked_copy(job_cfg, [k for k in job_cfg if k != "hydra"])
    try:
        resolved = OmegaConf.to_container(job, resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {' '.join(str(err).split())}") from None
    assert isinstance(resolved, Mapping)
    return dict(resolved)


def _check_writable(results_dirs: set[str]) -> None:
    """The stores and the cache the jobs will write: one line now, not one failed job each."""
    from loraven.job import check_cache_writable
    from loraven.track import ResultsStore

    for root in sorted(results_dirs):
        ResultsStore(root).check_writable()
    check_cache_writable()
