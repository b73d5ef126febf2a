"""Typed, validated view of ``cfg.adapter`` for LoRA-AR; every bad value raises ConfigError."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from loraven.adapters.lora_ar.spectral import HILL_METHODS
from loraven.errors import ConfigError

RANK_SCALINGS = ("linear", "log", "sqrt")


@dataclass
class LoraARConfig:
    """Defaults follow the LoRA-AR README (see loraven/conf/adapter/lora_ar.yaml for each trade-off)."""

    name: str = "lora_ar"
    r_min: int = 4
    r_max: int = 64
    top_n_percentile: float = 0.5
    rank_scaling: str = "linear"
    alpha_factor: float = 2.0
    w_hill: float = 0.7
    w_spikes: float = 0.3
    hill_method: str = "median"
    eigenvalue_threshold: float = 1e-5
    tracy_widom: bool = True
    budget_rank: int | None = None
    budget_params: int | None = None  # set by adapter.param_budget (a trainable count); wins over budget_rank
    target_modules: str | list[str] = "all-linear"
    dropout: float = 0.0
    use_dora: bool = False
    use_rslora: bool = False

    def __post_init__(self) -> None:
        if self.name != "lora_ar":
            raise ConfigError(f"adapter.name={self.name!r}; valid: lora_ar")
        for key in ("r_min", "r_max"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"adapter.{key}={value!r}; valid: an integer >= 1")
        if self.r_min > self.r_max:
            raise ConfigError(f"adapter.r_min={self.r_min} > adapter.r_max={self.r_max}; valid: r_min <= r_max")
        if not 0.0 < float(self.top_n_percentile) <= 1.0:
            raise ConfigError(
                f"adapter.top_n_percentile={self.top_n_percentile}; valid: (0, 1] "
                "(fraction of target modules adapted; 1.0 adapts all)"
            )
        if self.rank_scaling not in RANK_SCALINGS:
            raise ConfigError(f"adapter.rank_scaling={self.rank_scaling!r}; valid: {', '.join(RANK_SCALINGS)}")
        if self.hill_method not in HILL_METHODS:
            raise ConfigError(f"adapter.hill_method={self.hill_method!r}; valid: {', '.join(HILL_METHODS)}")
        if not (math.isfinite(float(self.alpha_factor)) and float(self.alpha_factor) > 0):
            raise ConfigError(f"adapter.alpha_factor={self.alpha_factor}; valid: > 0")
        for key in ("w_hill", "w_spikes"):
            if not float(getattr(self, key)) >= 0:
                raise ConfigError(f"adapter.{key}={getattr(self, key)}; valid: >= 0")
        if float(self.w_hill) + float(self.w_spikes) <= 0:
            raise ConfigError(
                f"adapter.w_hill={self.w_hill} and adapter.w_spikes={self.w_spikes} are "
                "both 0; valid: non-negative with a positive sum"
            )
        if not 0.0 <= float(self.eigenvalue_threshold) < 1.0:
            raise ConfigError(
                f"adapter.eigenvalue_threshold={self.eigenvalue_threshold}; valid: [0, 1) "
                "(relative to each matrix's largest eigenvalue)"
            )
        if not isinstance(self.tracy_widom, bool):
            raise ConfigError(f"adapter.tracy_widom={self.tracy_widom!r}; valid: true, false")
        b = self.budget_rank
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ConfigError(f"adapter.budget_rank={self.budget_rank!r}; valid: null or an integer >= 1")
        p = self.budget_params
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 1):
            raise ConfigError(f"adapter.budget_params={p!r}; valid: null or a parameter count >= 1")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"adapter.dropout={self.dropout}; valid: [0, 1)")
        if isinstance(self.target_modules, str):
            if self.target_modules != "all-linear":
                self.target_modules = [self.target_modules]
        else:
            self.target_modules = [str(t) for t in self.target_modules]
            if not self.target_modules:
                raise ConfigError("adapter.target_modules=[] is empty; valid: all-linear or a list of module names")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, Any]) -> LoraARConfig:
        """Build from ``cfg.adapter`` (a dict or OmegaConf node); unknown keys are an error, not ignored."""
        raw = {str(k): cfg[k] for k in cfg}
        valid = {f.name for f in fields(cls)}
        bad = sorted(set(raw) - valid)
        if bad:
            raise ConfigError(f"unknown adapter keys for lora_ar {bad}; valid: {sorted(valid)}")
        if raw.get("target_modules") is not None and not isinstance(raw["target_modules"], str):
            raw["target_modules"] = [str(t) for t in raw["target_modules"]]
        return cls(**raw)
