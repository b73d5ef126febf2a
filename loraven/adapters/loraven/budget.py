"""Energy budget manager (LoRAven paper §3.3.2).

``allocate_budget`` keeps the paper's shape — base budget from complexity and layer size, times the
priority factor ``0.5 + 0.5·performance_priority`` and a ``budget_scaling_factor``, capped by what remains
of the round's total — with one sound change: the factors scale only the *headroom* above the layer's
floor cost E(r_min). At the ranks LoRAven uses, most of a layer's energy (activation traffic, launches,
static power) does not depend on r; scaling the whole budget would make even r_min infeasible.

The paper leaves ``_calculate_base_budget`` open; ours gives each layer its floor plus the share of the
round's headroom (total − Σ floors) that its controllable cost E(r_max) − E(r_min), weighted by
``0.5 + complexity``, has among all layers declared in :meth:`begin_round`. "Historical efficiency" is the
scaling factor: it grows when past rounds left budget unused (bounded to [0.5, 2]); the cap by
``remaining_budget`` keeps Σ grants ≤ total whatever the factor is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


class BudgetManager:
    def __init__(self, total_budget: float, floor_cost: Callable[[Any], float],
                 headroom_cost: Callable[[Any], float], budget_scaling_factor: float = 1.0) -> None:
        self.total_budget = float(total_budget)
        self.floor_cost = floor_cost
        self.headroom_cost = headroom_cost
        self.budget_scaling_factor = float(budget_scaling_factor)
        self.remaining_budget = self.total_budget
        self._norm = 1.0
        self._headroom = 0.0
        self._allocated = 0.0
        self.history: list[tuple[float, float]] = []  # (granted, used) per round

    def begin_round(self, demands: Mapping[str, tuple[float, Any]]) -> None:
        """Start a decision round for ``{layer_id: (complexity_score, layer_dims)}``."""
        self.remaining_budget = self.total_budget
        self._allocated = 0.0
        floors = sum(self.floor_cost(dims) for _, dims in demands.values())
        self._headroom = max(0.0, self.total_budget - floors)
        self._norm = sum(self._weight(c, dims) for c, dims in demands.values()) or 1.0

    def _weight(self, complexity_score: float, layer_dims: Any) -> float:
        return max(self.headroom_cost(layer_dims), 0.0) * (0.5 + float(complexity_score))

    def _calculate_base_budget(self, complexity_score: float, layer_dims: Any) -> tuple[float, float]:
        """(floor, headroom share) of one layer."""
        share = self._headroom * self._weight(complexity_score, layer_dims) / self._norm
        return self.floor_cost(layer_dims), share

    def allocate_budget(self, layer_id: str, complexity_score: float, layer_dims: Any,
                        performance_priority: float = 1.0) -> float:
        floor, share = self._calculate_base_budget(complexity_score, layer_dims)
        priority_factor = 0.5 + 0.5 * performance_priority
        adjusted_budget = floor + share * priority_factor * self.budget_scaling_factor
        grant = min(adjusted_budget, self.remaining_budget)
        self._allocated += grant
        return grant

    def consume(self, joules: float) -> None:
        """Charge what a layer will actually use (≤ its grant), so later layers may use the slack."""
        self.remaining_budget = max(0.0, self.remaining_budget - joules)

    def end_round(self) -> None:
        used = self.total_budget - self.remaining_budget
        self.history.append((self._allocated, used))
        slack = (self.total_budget - used) / max(self.total_budget, 1e-30)
        self.budget_scaling_factor = min(2.0, max(0.5, self.budget_scaling_factor * (1.0 + 0.5 * slack)))
