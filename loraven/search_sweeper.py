"""The Optuna sweeper (hydra-optuna-sweeper) ending a search in which no trial completed without a traceback.

The plugin reads ``study.best_trial`` after the last trial; with no completed trial Optuna raises
``ValueError: Record does not exist.`` and the whole search ended in a trace, before the sweep's table of trials and
their reasons was printed. :class:`GuardedOptunaSweeper` is the plugin's sweeper unchanged but for that end: it
logs what the study holds and returns, so :class:`loraven.sweep.SweepSummary` prints every trial's reason and exits
non-zero. :class:`loraven.search.OptunaDefaults` selects it in place of the plugin's class (same settings).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger("loraven.search")
NO_COMPLETED: dict[str, Any] = {}  # filled when a search ended without a completed trial (read by the summary)


class GuardedOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError as err:
            states = _states(self.sweeper.study_name, self.sweeper.storage)
            if states is None or states.get("COMPLETE"):
                raise
            NO_COMPLETED.update(study=self.sweeper.study_name, states=dict(states), error=str(err))
            log.error(
                "study %s has no completed trial (%s): no best trial; each trial's reason is in the table below",
                self.sweeper.study_name,
                ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trial",
            )
            return None


def _states(study_name: str | None, storage: Any) -> Counter | None:
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception:  # noqa: BLE001 - no readable study: the original error stands
        return None
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))
