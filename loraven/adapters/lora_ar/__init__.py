"""LoRA-AR: static LoRA whose per-module ranks come from a spectral (HT-SR) analysis of the pretrained
weights.

Pipeline (once, before training): eigenvalues of every target weight (:mod:`.spectral`) → Hill α and
Marchenko–Pastur spike count → README score, layer selection and ranks (:mod:`.allocate`) → peft LoRA with an
exact-name ``rank_pattern``/``alpha_pattern``, verified after injection (:mod:`.inject`). Training is then
plain peft LoRA (or DoRA / rsLoRA), so only the allocation differs from the ``lora`` adapter.

Selection keeps the *highest*-scoring modules, as the README says (the public reference code keeps the lowest,
contradicting it); see :mod:`.allocate` for every interpretation we made.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from loraven.adapters.base import AdaptedModel, AdapterContext, register_adapter
from loraven.adapters.lora import PeftAdapted
from loraven.adapters.lora_ar.allocate import ALLOCATION_COLUMNS, Allocation, allocate
from loraven.adapters.lora_ar.config import LoraARConfig
from loraven.adapters.lora_ar.inject import inject, resolve_targets, weight_of
from loraven.adapters.lora_ar.spectral import analyse_weights

ALLOCATION_FILE = "lora_ar_allocation.csv"

__all__ = ["ALLOCATION_FILE", "LoraARAdapted", "LoraARConfig", "apply_lora_ar", "plan_allocation"]


class LoraARAdapted(PeftAdapted):
    """A peft LoRA model plus the spectral allocation that shaped it."""

    def __init__(self, model: nn.Module, allocation: Allocation, cfg: LoraARConfig, analysis_s: float) -> None:
        super().__init__(model)
        self.allocation = allocation
        self.cfg = cfg
        self.analysis_s = analysis_s

    def state_dict_extra(self) -> dict[str, Any]:
        """The allocation is not restored but re-derived: the spectra of the same frozen pretrained weights give
        the same ranks on every attempt (no randomness in :mod:`.spectral`/:mod:`.allocate`). The checkpoint keeps
        the ranks and alphas it was trained with so that a resume can prove it."""
        return {"ranks": dict(self.allocation.ranks), "alphas": dict(self.allocation.alphas)}

    def load_state_extra(self, state: Mapping[str, Any]) -> None:
        mine = self.state_dict_extra()
        saved = {key: dict(state.get(key) or {}) for key in mine}
        if saved != mine:
            differ = sorted(
                m for m in {**mine["ranks"], **saved["ranks"]} if mine["ranks"].get(m) != saved["ranks"].get(m)
            )
            raise ValueError(f"LoRA-AR's re-derived allocation differs from the checkpoint's (modules {differ[:5]})")

    def allocation_frame(self) -> pd.DataFrame:
        """module, alpha_hill, spikes, score, rank (0 = not selected) per target module, in model order."""
        return self.allocation.table[ALLOCATION_COLUMNS].copy()

    def write_artifacts(self, run_dir: Path) -> list[Path]:
        path = Path(run_dir) / ALLOCATION_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.allocation_frame().to_csv(path, index=False)
        return [path]

    def artifact_tables(self) -> Mapping[str, Any]:
        """The full allocation (also selected, lora_alpha, shapes, MP edge) for the tracker."""
        return {"lora_ar_allocation": self.allocation.table.copy()}

    def summary(self) -> dict[str, Any]:
        ranks = self.ranks()
        hist = Counter(ranks.values())
        return {
            **super().summary(),
            "analysis_s": round(self.analysis_s, 3),
            "n_targets": len(self.allocation.table),
            "n_selected": len(ranks),
            "rank_hist": {str(r): hist[r] for r in sorted(hist)},
            "hill_method": self.cfg.hill_method,
            "rank_scaling": self.cfg.rank_scaling,
            **self.allocation.info,
        }


def plan_allocation(model: nn.Module, cfg: LoraARConfig) -> tuple[Allocation, float]:
    """Analyse the target weights of ``model`` and allocate ranks; returns (allocation, seconds spent)."""
    start = time.perf_counter()
    targets = resolve_targets(model, cfg.target_modules)
    spectra = analyse_weights(
        {n: weight_of(m) for n, m in targets.items()},
        hill_method=cfg.hill_method,
        eigenvalue_threshold=float(cfg.eigenvalue_threshold),
        tracy_widom=cfg.tracy_widom,
    )
    alloc = allocate(spectra, cfg)
    return alloc, time.perf_counter() - start


def match_rank(cfg: dict[str, Any], rank: int, mode: str) -> dict[str, Any]:
    """Benchmarks at matched rank r: ``uniform`` = r on every target (``r_min = r_max = r``, all selected);
    ``budget`` = the parameter count of rank-r LoRA, spread over modules by the spectra (``budget_rank``)."""
    if mode == "uniform":
        return {**cfg, "r_min": rank, "r_max": rank, "top_n_percentile": 1.0, "budget_rank": None}
    return {**cfg, "budget_rank": rank}


def budget_fit(model: nn.Module, settings: LoraARConfig, budget: int) -> dict[str, Any]:
    """LoRA-AR's own budget mode, given a count: the spectral allocation is rescaled so Σ r·(in+out) (+ DoRA's
    magnitudes) equals ``budget`` (see :func:`allocate.allocate`); ``budget_rank`` is then unused. A budget beyond
    every target at full rank is an error here, before anything runs (:func:`allocate.allocate` checks the
    selected modules' exact ceiling)."""
    from loraven.adapters.base import linear_targets
    from loraven.errors import ConfigError

    layers = linear_targets(model, settings.target_modules)
    largest = sum(min(m.in_features, m.out_features) * (m.in_features + m.out_features) for _, m in layers)
    largest += sum(m.out_features for _, m in layers) if settings.use_dora else 0
    if budget > largest:
        raise ConfigError(
            f"adapter.param_budget={budget} is beyond LoRA-AR's largest size on this model (every target layer at "
            f"its full rank trains {largest} parameters); give at most {largest}"
        )
    return {"budget_params": int(budget), "budget_rank": None}


@register_adapter(
    "lora_ar",
    schedulers=("static",),
    config=LoraARConfig,
    size_key="r_max",
    labels={"static": "LoRA-AR"},
    order=22,
    match_rank=match_rank,
    fit_budget=budget_fit,
    size_space=("adapter.budget_rank", "choice(4,8,16)"),
)
def apply_lora_ar(model: nn.Module, cfg: LoraARConfig, ctx: AdapterContext) -> AdaptedModel:
    """LoRA-AR: per-module LoRA ranks from Hill α and MP spikes of the pretrained weights (then static)."""
    alloc, analysis_s = plan_allocation(model, cfg)
    wrapped = inject(
        model,
        alloc.ranks,
        alloc.alphas,
        {"dropout": cfg.dropout, "use_dora": cfg.use_dora, "use_rslora": cfg.use_rslora},
    )
    return LoraARAdapted(wrapped, alloc, cfg, analysis_s)
