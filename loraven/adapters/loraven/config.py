"""Typed views of ``cfg.adapter`` (loraven) and ``cfg.scheduler``; every bad value raises ConfigError."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from loraven.adapters.loraven.layer import MODES
from loraven.errors import ConfigError

SCHEDULERS = ("static", "linear", "energy")


def _section(cls, cfg: Mapping[str, Any] | None, where: str, ignore: tuple[str, ...] = ()):
    cfg = dict(cfg or {})
    valid = {f.name for f in fields(cls)}
    bad = sorted(set(cfg) - valid - set(ignore))
    if bad:
        raise ConfigError(f"unknown {where} keys {bad}; valid: {sorted(valid)}")
    return cls(**{k: v for k, v in cfg.items() if k in valid})


@dataclass
class AdapterConfig:
    name: str = "loraven"
    mode: str = "adapter"
    r_max: int | str = 8
    r_min: int = 2
    r_init: int | None = None
    alpha: float | None = 16.0
    target_modules: str | list[str] = "all-linear"
    dropout: float = 0.0
    nan_guard: bool | str = "auto"
    l2: float = 0.0
    orthogonality: float = 0.0
    hebbian: bool = False
    hebbian_lr: float = 1e-4
    gate: bool = False
    gate_blocks: int = 4
    gradient_checkpointing: bool = False
    train_other: bool = True
    inference_path: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"adapter.mode={self.mode!r}; valid choices: {', '.join(MODES)}")
        if not (self.r_max == "full" or (isinstance(self.r_max, int) and self.r_max >= 1)):
            raise ConfigError(f"adapter.r_max={self.r_max!r}; valid: an integer >= 1 or 'full'")
        if int(self.r_min) < 1:
            raise ConfigError(f"adapter.r_min={self.r_min}; valid: >= 1")
        if self.inference_path not in ("auto", "fused", "factored", "merge"):
            raise ConfigError(f"adapter.inference_path={self.inference_path!r}; valid: auto, fused, factored, merge")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"adapter.dropout={self.dropout}; valid: [0, 1)")
        if isinstance(self.target_modules, str) and self.target_modules != "all-linear":
            self.target_modules = [self.target_modules]
        if not isinstance(self.target_modules, str):
            self.target_modules = [str(t) for t in self.target_modules]


@dataclass
class ScorerConfig:
    lr: float = 1e-2
    steps: int = 4
    buffer: int = 32
    probe_rows: int = 64


@dataclass
class EventConfig:
    target_loss: float | None = None
    error_threshold: float = 0.5
    performance_drop_pct: float = 10.0
    loss_ema: float = 0.5
    event_triggered: bool = False


@dataclass
class BudgetConfig:
    fraction: float = 0.6
    joules_per_step: float | None = None
    performance_priority: float = 1.0
    scaling_factor: float = 1.0


@dataclass
class SchedulerConfig:
    name: str = "static"
    update_every: int = 10
    min_steps_between_changes: int = 20
    rank_bucket: int = 2
    deadband: int | None = None
    score_ema: float = 0.5
    diversity_weight: float = 0.25
    gradient_weight: float = 0.25
    diversity_window: int = 8
    gradient_ema: float = 0.9
    alpha: float = 0.5
    beta: float = 0.5
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    events: EventConfig = field(default_factory=EventConfig)
    budget: BudgetConfig | None = None
    energy_model: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any] | None) -> SchedulerConfig:
        raw = dict(cfg or {})
        weights = dict(raw.pop("weights", None) or {})
        bad = set(weights) - {"diversity", "gradient"}
        if bad:
            raise ConfigError(f"unknown scheduler.weights keys {sorted(bad)}; valid: diversity, gradient")
        if "diversity" in weights:
            raw["diversity_weight"] = weights["diversity"]
        if "gradient" in weights:
            raw["gradient_weight"] = weights["gradient"]
        raw["scorer"] = _section(ScorerConfig, raw.get("scorer"), "scheduler.scorer")
        raw["events"] = _section(EventConfig, raw.get("events"), "scheduler.events")
        if raw.get("budget") is not None:
            raw["budget"] = _section(BudgetConfig, raw["budget"], "scheduler.budget")
        raw["energy_model"] = dict(raw.get("energy_model") or {})
        out = _section(cls, raw, "scheduler")
        if out.name not in SCHEDULERS:
            raise ConfigError(f"scheduler.name={out.name!r}; valid choices for loraven: {', '.join(SCHEDULERS)}")
        for key in ("update_every", "rank_bucket"):
            if int(getattr(out, key)) < 1:
                raise ConfigError(f"scheduler.{key}={getattr(out, key)}; valid: >= 1")
        if out.name == "energy" and out.budget is None:
            out.budget = BudgetConfig()
        if out.budget is not None and out.budget.fraction < 0:
            raise ConfigError(f"scheduler.budget.fraction={out.budget.fraction}; valid: >= 0")
        if out.deadband is None:
            out.deadband = out.rank_bucket
        return out


def adapter_config(cfg: Mapping[str, Any]) -> AdapterConfig:
    return _section(AdapterConfig, cfg, "adapter", ignore=("r",))
