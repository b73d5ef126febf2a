"""Typed views of ``cfg.adapter`` (loraven) and ``cfg.scheduler``, validated once before the run starts.

The defaults equal conf/adapter/loraven.yaml and conf/scheduler/linear.yaml (a test keeps them equal); the class
defaults are what ``scheduler=static`` runs with, since static.yaml sets only the name.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from loraven.adapters.loraven.layer import MODES
from loraven.adapters.options import AdapterOptions, TargetModules
from loraven.schema import Section

SCHEDULERS = ("static", "linear", "energy")


class AdapterConfig(AdapterOptions):
    name: Literal["loraven"] = "loraven"
    mode: Literal[MODES] = "adapter"  # type: ignore[valid-type]
    r_max: int | Literal["full"] = 8
    r_min: int = Field(default=2, ge=1)
    r_init: int | None = Field(default=None, ge=1)
    alpha: float | None = Field(default=16.0, gt=0)
    target_modules: TargetModules = "all-linear"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    nan_guard: bool | Literal["auto", "input", "bottleneck", "off"] = "auto"
    l2: float = Field(default=0.0, ge=0.0)
    orthogonality: float = Field(default=0.0, ge=0.0)
    hebbian: bool = False
    hebbian_lr: float = Field(default=1e-4, gt=0.0)
    gate: bool = False
    gate_blocks: int = Field(default=4, ge=1)
    gradient_checkpointing: bool = False
    train_other: bool = True
    inference_path: Literal["auto", "fused", "factored", "merge"] = "auto"

    @field_validator("r_max")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"adapter.r_max={value}: must be an integer >= 1 or 'full'")
        return value

    @model_validator(mode="after")
    def _ranks_ordered(self) -> AdapterConfig:
        if isinstance(self.r_max, int):
            if self.r_min > self.r_max:
                raise ValueError(f"adapter.r_min={self.r_min} > adapter.r_max={self.r_max}; need r_min <= r_max")
            if self.r_init is not None and not self.r_min <= self.r_init <= self.r_max:
                raise ValueError(
                    f"adapter.r_init={self.r_init} is outside [adapter.r_min={self.r_min}, adapter.r_max={self.r_max}]"
                )
        elif self.r_init is not None and self.r_init < self.r_min:
            raise ValueError(f"adapter.r_init={self.r_init} < adapter.r_min={self.r_min}")
        return self


class ScorerConfig(Section):
    where = "scheduler.scorer"
    lr: float = Field(default=1e-2, gt=0)
    steps: int = Field(default=4, ge=1)
    buffer: int = Field(default=32, ge=1)
    probe_rows: int = Field(default=64, ge=1)


class EventConfig(Section):
    where = "scheduler.events"
    target_loss: float | None = None
    error_threshold: float = Field(default=0.5, ge=0.0)
    performance_drop_pct: float = Field(default=10.0, ge=0.0)
    loss_ema: float = Field(default=0.5, ge=0.0, lt=1.0)
    event_triggered: bool = False


class BudgetConfig(Section):
    where = "scheduler.budget"
    fraction: float = Field(default=0.6, ge=0.0, le=1.0)  # of the headroom between E(r_min) and E(r_max)
    joules_per_step: float | None = Field(default=None, gt=0)
    performance_priority: float = Field(default=1.0, ge=0.0, le=1.0)
    scaling_factor: float = Field(default=1.0, ge=0.5, le=2.0)


class Weights(Section):
    where = "scheduler.weights"
    diversity: float = Field(default=0.25, ge=0.0)
    gradient: float = Field(default=0.25, ge=0.0)


class EnergyModelConfig(Section):
    """``scheduler.energy_model``: the constants of LoRAven's own energy prediction (every key optional; the
    defaults are :class:`~loraven.adapters.loraven.energy_model.EnergyModel`'s). A negative energy per FLOP or a
    miss rate above 1 would make every prediction meaningless, silently."""

    where = "scheduler.energy_model"

    e_flop: float | None = Field(default=None, gt=0.0)
    e_byte_cache: float | None = Field(default=None, ge=0.0)
    e_byte_dram: float | None = Field(default=None, ge=0.0)
    miss_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    eta_parallel: float | None = Field(default=None, gt=0.0)
    f_dvfs: float | None = Field(default=None, gt=0.0)
    p_idle: float | None = Field(default=None, ge=0.0)
    peak_flops: float | None = Field(default=None, gt=0.0)
    bandwidth: float | None = Field(default=None, gt=0.0)
    launch_overhead_s: float | None = Field(default=None, ge=0.0)
    calibration: str | None = None

    @field_validator(
        "e_flop",
        "e_byte_cache",
        "e_byte_dram",
        "miss_rate",
        "eta_parallel",
        "f_dvfs",
        "p_idle",
        "peak_flops",
        "bandwidth",
        "launch_overhead_s",
        mode="before",
    )
    @classmethod
    def _number(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class SchedulerConfig(Section):
    where = "scheduler"
    name: Literal["static", "linear", "energy"] = "static"
    update_every: int = Field(default=10, ge=1)
    min_steps_between_changes: int = Field(default=20, ge=0)
    rank_bucket: int = Field(default=2, ge=1)
    deadband: int | None = Field(default=None, ge=0)
    score_ema: float = Field(default=0.5, ge=0.0, lt=1.0)
    weights: Weights = Field(default_factory=Weights)
    diversity_window: int = Field(default=8, ge=1)
    gradient_ema: float = Field(default=0.9, ge=0.0, lt=1.0)
    alpha: float = Field(default=0.5, ge=0.0)
    beta: float = Field(default=0.5, ge=0.0)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    events: EventConfig = Field(default_factory=EventConfig)
    budget: BudgetConfig | None = None
    energy_model: dict[str, Any] = Field(default_factory=dict)

    @field_validator("energy_model")
    @classmethod
    def _energy_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Checked here (ranges, unknown keys) although kept a mapping for :meth:`EnergyModel.from_config`."""
        from loraven.schema import parse

        parse(EnergyModelConfig, value, "scheduler.energy_model")
        return value

    @model_validator(mode="after")
    def _complete(self) -> SchedulerConfig:
        if self.name == "energy" and self.budget is None:
            self.__dict__["budget"] = BudgetConfig()
        if self.deadband is None:
            self.__dict__["deadband"] = self.rank_bucket
        return self

    @property
    def diversity_weight(self) -> float:
        return self.weights.diversity

    @property
    def gradient_weight(self) -> float:
        return self.weights.gradient

    @classmethod
    def from_mapping(cls, cfg: Any) -> SchedulerConfig:
        """A mapping (a test's dict or a composed config) validated; an instance is returned as is."""
        return cfg if isinstance(cfg, cls) else cls(**dict(cfg or {}))


def adapter_config(cfg: Any) -> AdapterConfig:
    """A mapping validated as LoRAven's adapter settings; an instance is returned as is."""
    return cfg if isinstance(cfg, AdapterConfig) else AdapterConfig(**dict(cfg))
