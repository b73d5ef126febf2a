"""Energy budget manager (LoRAven paper §3.3.2): one round's total budget shared out among the layers.

Each layer's grant is its floor cost E(r_min) plus a share of the round's headroom (total − Σ floors)
proportional to its controllable cost E(r_max) − E(r_min) weighted by ``0.5 + complexity``, times the
paper's priority factor ``0.5 + 0.5·performance_priority`` and a ``budget_scaling_factor``. Only the
*headroom* is scaled: at the ranks LoRAven uses, most of a layer's energy (activation traffic, launches,
static power) does not depend on r, so scaling the whole budget would make even r_min infeasible.

Why all grants at once: the paper's manager serves layers one by one, each capped by what remains. That
makes a layer's rank depend on its name (sort order) — six identical layers ended 6,6,6,6,6,2. Here every
grant is a function of the layer's own (score, shape) and the round's totals only; if Σ grants would
exceed the total (scaling factor > 1), all headroom shares shrink by the same factor. So permuting layer
names permutes grants, and identical layers get identical grants (sums use ``math.fsum``, which is
exact, so not even rounding depends on the order). "Historical efficiency" is the scaling
factor: it grows when a round left budget unused (bounded to [0.5, 2]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any


class BudgetManager:
    def __init__(
        self,
        total_budget: float,
        floor_cost: Callable[[Any], float],
        headroom_cost: Callable[[Any], float],
        budget_scaling_factor: float = 1.0,
    ) -> None:
        self.total_budget = float(total_budget)
        self.floor_cost = floor_cost
        self.headroom_cost = headroom_cost
        self.budget_scaling_factor = float(budget_scaling_factor)

    def _weight(self, complexity_score: float, layer_dims: Any) -> float:
        return max(self.headroom_cost(layer_dims), 0.0) * (0.5 + float(complexity_score))

    def allocate(self, demands: Mapping[str, tuple[float, Any]], performance_priority: float = 1.0) -> dict[str, float]:
        """Grants (J) for ``{layer_id: (complexity_score, layer_dims)}``; Σ grants ≤ max(total, Σ floors)."""
        floors = {k: self.floor_cost(dims) for k, (_, dims) in demands.items()}
        headroom = max(0.0, self.total_budget - math.fsum(floors.values()))
        weights = {k: self._weight(c, dims) for k, (c, dims) in demands.items()}
        norm = math.fsum(weights.values()) or 1.0
        factor = (0.5 + 0.5 * performance_priority) * self.budget_scaling_factor
        shares = {k: headroom * w / norm * factor for k, w in weights.items()}
        excess = math.fsum(shares.values())
        shrink = min(1.0, headroom / excess) if excess > 0 else 1.0
        return {k: floors[k] + shares[k] * shrink for k in demands}

    def end_round(self, used: float) -> None:
        """Adapt the scaling factor to the fraction of the budget the round left unused."""
        slack = (self.total_budget - used) / max(self.total_budget, 1e-30)
        self.budget_scaling_factor = min(2.0, max(0.5, self.budget_scaling_factor * (1.0 + 0.5 * slack)))
