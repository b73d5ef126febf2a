"""Typed, validated view of ``cfg.adapter`` for LoRA-AR (parsed once, before the run starts)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from loraven.adapters.lora_ar.spectral import HILL_METHODS
from loraven.adapters.options import AdapterOptions, TargetModules

RANK_SCALINGS = ("linear", "log", "sqrt")


class LoraARConfig(AdapterOptions):
    """Defaults follow the LoRA-AR README (conf/adapter/lora_ar.yaml explains each trade-off; a test keeps the
    two equal)."""

    name: Literal["lora_ar"] = "lora_ar"
    r_min: int = Field(default=4, ge=1)
    r_max: int = Field(default=64, ge=1)
    top_n_percentile: float = Field(default=0.5, gt=0.0, le=1.0)  # fraction of target modules adapted
    rank_scaling: Literal["linear", "log", "sqrt"] = "linear"
    alpha_factor: float = Field(default=2.0, gt=0.0)
    w_hill: float = Field(default=0.7, ge=0.0)
    w_spikes: float = Field(default=0.3, ge=0.0)
    hill_method: Literal[HILL_METHODS] = "median"  # type: ignore[valid-type]
    eigenvalue_threshold: float = Field(default=1e-5, ge=0.0, lt=1.0)  # relative to each matrix's largest
    tracy_widom: bool = True
    budget_rank: int | None = Field(default=None, ge=1)
    budget_params: int | None = Field(default=None, ge=1)  # set by adapter.param_budget; wins over budget_rank
    target_modules: TargetModules = "all-linear"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    use_dora: bool = False
    use_rslora: bool = False

    @model_validator(mode="after")
    def _rules(self) -> LoraARConfig:
        if self.r_min > self.r_max:
            raise ValueError(f"adapter.r_min={self.r_min} > adapter.r_max={self.r_max}; valid: r_min <= r_max")
        if self.w_hill + self.w_spikes <= 0:
            raise ValueError(
                f"adapter.w_hill={self.w_hill} and adapter.w_spikes={self.w_spikes} are both 0; "
                "valid: non-negative with a positive sum"
            )
        return self

    @classmethod
    def from_mapping(cls, cfg) -> LoraARConfig:
        """Build from ``cfg.adapter`` (a dict or OmegaConf node); unknown keys are an error, not ignored."""
        return cls(**{str(k): cfg[k] for k in cfg})
