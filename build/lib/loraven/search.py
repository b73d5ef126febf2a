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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, flag_override

from loraven.errors import ConfigError

log = logging.getLogger("loraven.search")
# optuna 2.x (what the sweeper pins) trips SQLAlchemy 1.4's "not 2.0-ready" banner on every import; we pin <2
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")

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


class OptunaDefaults(Callback):
    """Fill in loraven's search defaults before the Optuna sweeper is built (see the module docstring)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = config.hydra.sweeper
        if not is_optuna(sweeper):
            return
        given = _command_line_keys(config)
        experiment = str(config.get("experiment_name") or "default")
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


def prepare_storage(url: str, study_name: str) -> int:
    """Create the SQLite file's folder; in an existing study, mark trials a killed search left ``RUNNING`` as
    ``FAIL``. Returns how many trials the study has finished (complete, pruned or failed; not the interrupted)."""
    import optuna

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:  # no such study yet: create_study will make it
        return 0
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
