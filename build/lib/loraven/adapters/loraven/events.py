"""Event-triggered adaptation (LoRAven paper §3.4.1): deterministic triggers, evaluated at decision steps.

- ``error_threshold``: |loss_ema − target_loss| > error_threshold. Off unless ``target_loss`` is set: with no
  target there is no error to threshold (a default target would duplicate ``performance_drop``);
- ``performance_drop``: loss_ema > best_ema · (1 + performance_drop_pct/100) (the loss rose by more than
  x % over its best EMA so far — "accuracy drop" for a training loss);
- ``budget_violation``: the predicted energy at the current rank exceeds the layer's allocation (checked by
  the energy scheduler, per layer).
The paper's code fires events at random; here each fires exactly when its condition holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class EventRow:
    step: int
    module: str
    event: str
    old_rank: int
    new_rank: int


class EventMonitor:
    def __init__(
        self,
        target_loss: float | None = None,
        error_threshold: float = 0.5,
        performance_drop_pct: float = 10.0,
        loss_ema: float = 0.5,
    ) -> None:
        self.target_loss = target_loss
        self.error_threshold = float(error_threshold)
        self.performance_drop_pct = float(performance_drop_pct)
        self.beta = float(loss_ema)
        self.ema: float | None = None
        self.best: float | None = None

    def update(self, loss: float) -> list[str]:
        """Feed the mean loss since the last decision; return the loss events that fire now."""
        if not math.isfinite(loss):
            return []
        self.ema = loss if self.ema is None else self.beta * self.ema + (1 - self.beta) * loss
        fired = []
        if self.target_loss is not None and abs(self.ema - self.target_loss) > self.error_threshold:
            fired.append("error_threshold")
        if self.best is not None and self.ema > self.best + abs(self.best) * self.performance_drop_pct / 100:
            fired.append("performance_drop")
        self.best = self.ema if self.best is None else min(self.best, self.ema)
        return fired
