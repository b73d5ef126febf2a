"""The Optuna sweeper (hydra-optuna-sweeper) ending a search in which no trial completed without a traceback.

The plugin reads ``study.best_trial`` after the last trial; with no completed trial Optuna raises
``ValueError: Record does not exist.`` and the whole search ended in a trace, before the sweep's table of trials and
their reasons was printed. :func:`install` wraps the plugin's ``OptunaSweeper.sweep`` (once per process; called by
:class:`loraven.search.OptunaDefaults` before the sweeper runs): in that one case it logs what the study holds and
returns, so :class:`loraven.sweep.SweepSummary` prints every trial's reason and exits non-zero. Any other error is
raised as before. Why a wrapper and not a subclass: Hydra instantiates sweepers only from the ``hydra_plugins``
namespace package, and this one fix is not worth shipping a plugin package for.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from typing import Any

log = logging.getLogger("loraven.search")
NO_COMPLETED: dict[str, Any] = {}  # filled when a search ended without a completed trial (read by the summary)


def install() -> None:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    if getattr(OptunaSweeper.sweep, "_loraven_guarded", False):
        return
    original = OptunaSweeper.sweep

    @functools.wraps(original)
    def sweep(self, arguments: list[str]) -> Any:
        try:
            return original(self, arguments)
        except ValueError as err:
            impl = self.sweeper
            states = _states(impl.study_name, impl.storage)
            if states is None or states.get("COMPLETE"):
                raise
            NO_COMPLETED.update(study=impl.study_name, states=dict(states), error=str(err))
            log.error(
                "study %s has no completed trial (%s): no best trial; each trial's reason is in the table below",
                impl.study_name,
                ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no trial",
            )
            return None

    sweep._loraven_guarded = True  # type: ignore[attr-defined]
    OptunaSweeper.sweep = sweep  # type: ignore[method-assign]


def _states(study_name: str | None, storage: Any) -> Counter | None:
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except Exception:  # noqa: BLE001 - no readable study: the original error stands
        return None
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))
