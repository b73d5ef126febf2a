"""Rank schedulers (LoRAven paper §3.2.2): ``static``, ``linear`` and ``energy``.

All decide at decision steps only (every ``update_every`` optimizer steps) from per-layer observations,
round ranks to a bucket set (multiples of ``rank_bucket`` plus r_min and r_max, so torch.compile sees few
distinct shapes) and apply hysteresis: a change needs ``min_steps_between_changes`` since the last one and
|Δr| ≥ ``deadband``, unless an event forces it.

linear: r = r_min + s̄·(r_max−r_min) + diversity_bonus + gradient_bonus, with
  s̄ = EMA (``score_ema``) of the scorer's complexity score ∈ [0, 1];
  diversity_bonus = w_div·d·(r_max−r_min), d = normalised spectral entropy of the last ``diversity_window``
    batch-mean features (0 when the input distribution stays put, → 1 when it keeps moving);
  gradient_bonus = w_grad·g·(r_max−r_min), g = clip(ρ/EMA(ρ) − 1, 0, 1) with ρ = ||∇(U,S,V)||/||(U,S,V)||
    the relative gradient norm of the factors on the observed step (only gradients above their usual size
    earn rank).
energy: the step budget is ``budget.joules_per_step``, or Σ_layers E(r_min) + fraction·(E(r_max) − E(r_min))
  (a fraction of the *controllable* energy: at adapter ranks most of E does not depend on r);
  r_energy = largest bucket rank with E(r, x) ≤ the layer's grant (BudgetManager: all grants computed at
  once from each layer's own score and shape, so ranks do not depend on layer names or order), then
  r = min(r_energy, α·r_energy + β·r_linear); forced down at once on a budget violation; never above
  r_energy, so Σ E(r) ≤ the total budget (r_min is a floor: if even r_min does not fit, it is kept and the
  violation is logged).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

from loraven.adapters.loraven.budget import BudgetManager
from loraven.adapters.loraven.config import SchedulerConfig
from loraven.adapters.loraven.energy_model import EnergyModel
from loraven.adapters.loraven.estimators import Workload
from loraven.adapters.loraven.scorer import spectral_entropy


def bucket_set(r_min: int, r_max: int, bucket: int) -> list[int]:
    return sorted({r_min, r_max} | {k for k in range(bucket, r_max + 1, bucket) if k >= r_min})


def to_bucket(r: float, candidates: list[int]) -> int:
    return min(candidates, key=lambda c: (abs(c - r), c))


@dataclass
class LayerState:
    """What a scheduler remembers about one layer between decisions."""

    score_ema: float | None = None
    grad_ema: float | None = None
    features: deque = field(default_factory=lambda: deque(maxlen=8))
    last_change: int = -(10**9)


@dataclass
class Observation:
    """One layer at one decision step (python floats: read with one host sync per decision)."""

    name: str
    rank: int
    r_min: int
    r_max: int
    in_features: int
    out_features: int
    tokens: int
    score: float
    diversity: float
    grad_rel: float

    def workload(self, rank: int | None = None, bytes_per_element: int = 4) -> Workload:
        return Workload(
            self.tokens, self.in_features, self.out_features, self.rank if rank is None else rank, bytes_per_element
        )


def diversity(features: deque) -> torch.Tensor:
    if len(features) < 2:
        return torch.zeros(())
    return spectral_entropy(torch.stack(list(features)))


class RankScheduler:
    """Base: holds the per-layer state and the hysteresis rule; ``propose`` is the policy."""

    name = "static"

    def __init__(self, cfg: SchedulerConfig, energy: EnergyModel) -> None:
        self.cfg = cfg
        self.energy = energy
        self.state: dict[str, LayerState] = {}
        self.last_total_budget: float | None = None

    def layer_state(self, name: str) -> LayerState:
        if name not in self.state:
            self.state[name] = LayerState(features=deque(maxlen=self.cfg.diversity_window))
        return self.state[name]

    def smooth(self, obs: Observation) -> tuple[float, float]:
        """Update EMAs; return (s̄, g) for the linear rule."""
        st = self.layer_state(obs.name)
        b = self.cfg.score_ema
        st.score_ema = obs.score if st.score_ema is None else b * st.score_ema + (1 - b) * obs.score
        g = 0.0
        if st.grad_ema is not None and st.grad_ema > 0:
            g = min(1.0, max(0.0, obs.grad_rel / st.grad_ema - 1.0))
        gb = self.cfg.gradient_ema
        st.grad_ema = obs.grad_rel if st.grad_ema is None else gb * st.grad_ema + (1 - gb) * obs.grad_rel
        return st.score_ema, g

    def linear_rank(self, obs: Observation, s_avg: float, g: float, bump: bool) -> int:
        span = obs.r_max - obs.r_min
        r = (
            obs.r_min
            + s_avg * span
            + self.cfg.diversity_weight * obs.diversity * span
            + self.cfg.gradient_weight * g * span
        )
        if bump:
            r += self.cfg.rank_bucket
        return to_bucket(min(r, obs.r_max), bucket_set(obs.r_min, obs.r_max, self.cfg.rank_bucket))

    def hysteresis(self, obs: Observation, proposed: int, step: int, force: bool) -> int:
        st = self.layer_state(obs.name)
        if proposed == obs.rank:
            return obs.rank
        if not force:
            if self.cfg.events.event_triggered:
                return obs.rank
            if step - st.last_change < self.cfg.min_steps_between_changes:
                return obs.rank
            if abs(proposed - obs.rank) < self.cfg.deadband:
                return obs.rank
        st.last_change = step
        return proposed

    def decide(
        self, observations: list[Observation], step: int, loss_events: list[str]
    ) -> tuple[dict[str, int], list[tuple[str, str]]]:
        """New rank per layer, and (layer, event) pairs for per-layer events (budget violations)."""
        return {o.name: o.rank for o in observations}, []


class StaticScheduler(RankScheduler):
    name = "static"


class LinearScheduler(RankScheduler):
    name = "linear"

    def decide(self, observations, step, loss_events):
        force = bool(loss_events)
        out = {}
        for obs in observations:
            s_avg, g = self.smooth(obs)
            proposed = self.linear_rank(obs, s_avg, g, "performance_drop" in loss_events)
            out[obs.name] = self.hysteresis(obs, proposed, step, force)
        return out, []


class EnergyScheduler(RankScheduler):
    name = "energy"

    def floor(self, o: Observation) -> float:
        return self.energy.energy(o.workload(o.r_min))

    def headroom(self, o: Observation) -> float:
        return self.energy.energy(o.workload(o.r_max)) - self.floor(o)

    def total_budget(self, observations: list[Observation]) -> float:
        """``joules_per_step`` if set, else Σ [E(r_min) + fraction·(E(r_max) − E(r_min))] over layers."""
        b = self.cfg.budget
        if b.joules_per_step is not None:
            return float(b.joules_per_step)
        return sum(self.floor(o) + b.fraction * self.headroom(o) for o in observations)

    def decide(self, observations, step, loss_events):
        b = self.cfg.budget
        total = self.total_budget(observations)
        self.last_total_budget = total
        if not hasattr(self, "manager"):
            self.manager = BudgetManager(total, self.floor, self.headroom, b.scaling_factor)
        mgr = self.manager
        mgr.total_budget = total
        smoothed = {o.name: self.smooth(o) for o in observations}
        grants = mgr.allocate({o.name: (smoothed[o.name][0], o) for o in observations}, b.performance_priority)
        out: dict[str, int] = {}
        events: list[tuple[str, str]] = []
        for obs in observations:  # each layer decides from its own grant only: the order does not matter
            s_avg, g = smoothed[obs.name]
            grant = grants[obs.name]
            candidates = bucket_set(obs.r_min, obs.r_max, self.cfg.rank_bucket)
            r_energy = self.energy.largest_feasible_rank(obs.workload(), grant, candidates)
            violation = self.energy.energy(obs.workload()) > grant * (1 + 1e-9)
            if violation:
                events.append((obs.name, "budget_violation"))
            if r_energy is None:
                r_energy = obs.r_min
            r_complexity = self.linear_rank(obs, s_avg, g, "performance_drop" in loss_events)
            proposed = min(r_energy, to_bucket(self.cfg.alpha * r_energy + self.cfg.beta * r_complexity, candidates))
            new = self.hysteresis(obs, proposed, step, force=bool(loss_events) or violation)
            new = min(new, r_energy)
            if new != obs.rank:
                self.layer_state(obs.name).last_change = step
            out[obs.name] = new
        mgr.end_round(math.fsum(self.energy.energy(o.workload(out[o.name])) for o in observations))
        return out, events


SCHEDULER_CLASSES = {"static": StaticScheduler, "linear": LinearScheduler, "energy": EnergyScheduler}


def build_scheduler(cfg: SchedulerConfig, energy: EnergyModel) -> RankScheduler:
    return SCHEDULER_CLASSES[cfg.name](cfg, energy)
