"""Hydra's Optuna sweeper (``hydra/sweeper=optuna``) set up for fair hyperparameter searches (issue 17).

The plugin's own defaults would minimise, keep the study in memory and score trials on whatever split the task
reports; a search that reads the test split selects on the numbers it reports. :class:`OptunaDefaults` (a Hydra
callback, run before the sweeper is built) fills in, wherever the command line left the plugin's default:

* ``direction``: from the task's metric (accuracy, exact match: maximize; mse, perplexity: minimize);
* ``storage``: ``sqlite:///<results_dir>/<experiment_name>/optuna.db``, in the results store, so an
  interrupted search resumes: ``n_trials`` is the study's *total* (a rerun runs only the trials still
  missing; a trial left ``RUNNING`` by a killed search is marked ``FAIL`` and does not count);
* ``study_name``: ``<experiment_name>-<adapter>``, so each method's search is its own study;
* ``params``: ``task.eval_split=validation`` for every trial; :func:`check_trial` refuses a trial scored on
  test before it runs;
* ``sampler.seed``: the run seed plus the trials already in the study (a resumed search does not replay the
  same random start).

:func:`objective` is what the task function returns: the metric of a completed run, or ``None`` for a failed,
diverged or skipped one, which the plugin records as a ``FAIL`` trial (never a score of 0) and goes on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, flag_override

from loraven.errors import ConfigError

log = logging.getLogger("loraven.search")
# optuna 2.x (what the sweeper pins) trips SQLAlchemy 1.4's "not 2.0-ready" banner on every import; we pin <2
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
logging.getLogger("alembic").setLevel(logging.WARNING)  # optuna's storage imports it: "setup plugin ..." per plugin

SEARCH_SPLIT = "validation"
STORAGE_FILE = "optuna.db"


class SearchConfigError(RuntimeError):
    """A trial that must not run (it would read the test split): raised out of the task function, so the
    sweeper stops the search with this one message instead of recording a score."""


def is_optuna(sweeper: Mapping[str, Any] | None) -> bool:
    return "optuna" in str((sweeper or {}).get("_target_", "")).lower()


def metric_of(task: Mapping[str, Any]) -> str:
    """The metric a run of this task is scored by: ``task.metric`` if named, else the task kind's declared
    default (its registry entry)."""
    from loraven.tasks import TASKS

    return str(task.get("metric") or TASKS.get(str(task.get("kind"))).default_metric)


def direction_for(task: Mapping[str, Any]) -> str:
    """``maximize`` or ``minimize`` for the task's metric, as the task kind declares it (lm-eval's own
    ``higher_is_better`` for metrics the kind does not list)."""
    from loraven.tasks import TASKS

    better_high = TASKS.get(str(task.get("kind"))).higher_is_better(metric_of(task))
    return "maximize" if better_high else "minimize"


def storage_url(results_dir: str | Path, experiment: str) -> str:
    """SQLite in the results store, next to the trials' result.json folders."""
    return f"sqlite:///{Path(results_dir) / experiment / STORAGE_FILE}"


def objective(result: Mapping[str, Any]) -> float | None:
    """The value a completed run reports to the sweeper (accuracy, else mse, as measured: the direction says
    which way is better); ``None`` when the run failed, diverged or was skipped, or gave no finite number."""
    if result.get("status") != "completed":
        return None
    metrics = result.get("metrics") if isinstance(result.get("metrics"), Mapping) else {}
    for key in ("accuracy", "mse"):
        value = metrics.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if math.isfinite(float(value)) else None
    return None


def check_trial(cfg: Mapping[str, Any], sweeper: Mapping[str, Any] | None) -> None:
    """Under an Optuna sweep a trial must be scored on the validation split, never on test."""
    if not is_optuna(sweeper):
        return
    split = str((cfg.get("task") or {}).get("eval_split") or "test")
    if split != SEARCH_SPLIT:
        raise SearchConfigError(
            f"an Optuna search must not read the test split, but this trial has task.eval_split={split}; "
            "leave task.eval_split to the sweeper (it sets validation) and give task.validation_fraction > 0"
        )


def current_sweeper() -> Mapping[str, Any] | None:
    from hydra.core.hydra_config import HydraConfig

    try:
        return HydraConfig.get().sweeper  # type: ignore[no-any-return]
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------- the callback


def _command_line_keys(config: DictConfig) -> set[str]:
    """Hydra keys the user set on the command line (``hydra.sweeper.direction=...``)."""
    keys = set()
    for item in config.hydra.overrides.hydra or []:
        key = str(item).split("=", 1)[0].lstrip("+~")
        keys.add(key)
    return keys


DIRECTIONS = ("minimize", "maximize")


def check_search_settings(sweeper: Any, arguments: list[str]) -> None:
    """The sweeper's settings and search space, one line each, before the first trial (the plugin raised an Optuna
    traceback for a reversed or non-positive log interval, ``direction=sideways`` or ``n_trials=0``)."""
    directions = sweeper.get("direction")
    from omegaconf import ListConfig

    listed = list(directions) if isinstance(directions, (list, tuple, ListConfig)) else [directions]
    for direction in listed:
        name = getattr(direction, "name", direction)
        if str(name) not in DIRECTIONS:
            raise ConfigError(f"hydra.sweeper.direction={name!r}; valid choices: {', '.join(DIRECTIONS)}")
    n_trials = sweeper.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"hydra.sweeper.n_trials={n_trials!r} is out of range; valid: >= 1 (the study's total)")
    n_jobs = sweeper.get("n_jobs")
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs!r} is out of range; valid: >= 1 (trials run at once)")
    rate = sweeper.get("max_failure_rate")
    if not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0 or not math.isfinite(float(rate)):
        raise ConfigError(f"hydra.sweeper.max_failure_rate={rate!r} is out of range; valid: [0, 1]")
    search_space(sweeper, arguments)


def search_space(sweeper: Any, arguments: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(distributions, fixed values) exactly as the plugin builds them from ``hydra.sweeper.params`` and the command
    line; a bad interval or choice is one line naming the key."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    params = [f"{k!s}={v}" for k, v in (sweeper.get("params") or {}).items()] + list(arguments)
    distributions: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for override in OverridesParser.create().parse_overrides(params):
        key = override.get_key_element()
        try:
            value = create_optuna_distribution_from_override(override)
        except (ValueError, AssertionError, NotImplementedError) as err:
            given = override.input_line or key
            raise ConfigError(f"{given}: not a valid Optuna search space ({err})") from None
        if isinstance(value, str):
            fixed[key] = value
        else:
            distributions[key] = value
    return {k: v for k, v in distributions.items() if k not in fixed}, fixed


def study_lock_path(url: str, study_name: str, results_dir: str | Path, experiment: str) -> Path:
    """Beside the SQLite file (or in the results store for other storages): one lock per study."""
    import re

    safe = re.sub(r"[^A-Za-z0-9._-]", "_", study_name)
    folder = Path(url[len("sqlite:///") :]).parent if url.startswith("sqlite:///") else Path(results_dir) / experiment
    return folder / f".optuna-{safe}.lock"


class OptunaDefaults(Callback):
    """Fill in loraven's search defaults before the Optuna sweeper is built (see the module docstring); check the
    search's settings; lock the study for this search (a second search on it is refused: the plugin's trials of
    both would interleave, and the resume step would mark the other's running trials failed)."""

    lock: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Hydra turns a callback's exception into a warning: a config error here ends the run itself (exit 2)."""
        try:
            self._start(config)
        except (ConfigError, SearchConfigError) as err:
            from loraven.cli.precheck import stop_from_callback

            stop_from_callback(err)

    def _start(self, config: DictConfig) -> None:
        sweeper = config.hydra.sweeper
        if not is_optuna(sweeper):
            return
        given = _command_line_keys(config)
        experiment = str(config.get("experiment_name") or "default")
        arguments = [str(a) for a in (config.hydra.overrides.task or [])]
        with flag_override(sweeper, ["struct", "readonly"], [False, False]):  # Hydra's node is read-only
            if "hydra.sweeper.direction" not in given:
                sweeper.direction = direction_for(config.task)
            if sweeper.get("storage") is None:
                sweeper.storage = storage_url(config.get("results_dir", "results"), experiment)
            if sweeper.get("study_name") is None:
                sweeper.study_name = f"{experiment}-{config.adapter.name}"
            params = dict(sweeper.get("params") or {})
            params.setdefault("task.eval_split", SEARCH_SPLIT)
            sweeper.params = params
            check_search_settings(sweeper, arguments)
            from loraven.search_sweeper import install

            install()  # the plugin's sweeper, but a search without a completed trial ends without a traceback
            self._lock(str(sweeper.storage), str(sweeper.study_name), config.get("results_dir", "results"), experiment)
            done = prepare_storage(str(sweeper.storage), str(sweeper.study_name))
            if "sampler" in sweeper and "seed" in sweeper.sampler and sweeper.sampler.seed is None:
                sweeper.sampler.seed = int(config.get("seed") or 0) + done
            if done:
                left = max(0, int(sweeper.n_trials) - done)
                log.info(
                    "study %s already has %d finished trial(s): running %d more (n_trials=%d is the total)",
                    sweeper.study_name,
                    done,
                    left,
                    int(sweeper.n_trials),
                )
                sweeper.n_trials = left
        log.info(
            "optuna search: study %s, %s %s on the %s split, storage %s",
            sweeper.study_name,
            sweeper.direction,
            metric_of(config.task),
            SEARCH_SPLIT,
            sweeper.storage,
        )

    def _lock(self, url: str, study_name: str, results_dir: str, experiment: str) -> None:
        import atexit

        from loraven import locks

        path = study_lock_path(url, study_name, results_dir, experiment)
        try:
            locks.acquire(path, f"study {study_name}", on_stale=log.warning)
        except locks.LockError as err:
            if err.state.state == "live":
                raise ConfigError(
                    f"study {study_name} is being searched by {err.state.detail.removeprefix('held by ')} ({path}); "
                    "wait for that search to end (it resumes from the same study when run again)"
                ) from None
            raise ConfigError(str(err)) from None
        OptunaDefaults.lock = path
        atexit.register(locks.release, path)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from loraven import locks

        if OptunaDefaults.lock is not None:
            locks.release(OptunaDefaults.lock)
            OptunaDefaults.lock = None


CORRUPT_DB = ("file is not a database", "database disk image is malformed", "file is encrypted")


def prepare_storage(url: str, study_name: str) -> int:
    """Create the SQLite file's folder; in an existing study, mark trials a killed search left ``RUNNING`` as
    ``FAIL``. Returns how many trials the study has finished (complete, pruned or failed; not the interrupted).

    A SQLite file that is not a database (truncated, overwritten) is moved aside with a warning and the study starts
    again (a trial that repeats a finished run's config is resumed from the results store); a storage that cannot
    be opened at all is one line.
    """
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:  # no such study yet: create_study will make it
        return 0
    except Exception as err:  # sqlalchemy's DatabaseError/ArgumentError, optuna's RuntimeError (another version)
        text = " ".join(str(err).split())
        db = Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None
        if db is not None and db.is_file() and any(words in text for words in CORRUPT_DB):
            aside = db.with_name(f"{db.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(db, aside)
            log.warning(
                "%s is not a readable Optuna study (%s): moved to %s; study %s starts again",
                db,
                text[:120],
                aside,
                study_name,
            )
            return 0
        raise ConfigError(f"hydra.sweeper.storage={url!r} cannot be opened: {text[:300]}") from None
    finished = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.RUNNING:  # interrupted: FAIL in the study, and not counted
            study._storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
            log.warning(
                "trial %d of study %s was left running by an interrupted search: marked FAIL and run again",
                trial.number,
                study_name,
            )
            continue
        finished += 1
    return finished


def study_summary(url: str, study_name: str) -> dict[str, Any]:
    """Best trial and every trial's state, value and params, read from the storage (for drivers and people)."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=url)
    trials = [
        {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params)}
        for t in study.get_trials(deepcopy=False)
    ]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    if not complete:
        raise ConfigError(f"study {study_name} in {url} has no completed trial ({len(trials)} failed or unfinished)")
    best = study.best_trial
    return {
        "study_name": study_name,
        "storage": url,
        "direction": study.direction.name.lower(),
        "best": {"number": best.number, "value": best.value, "params": dict(best.params)},
        "trials": trials,
    }
