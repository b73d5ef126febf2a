"""Spectral metrics to a LoRA-AR rank allocation: score, select, interpolate ranks, optionally fit a budget.

README recipe, with the interpretations we had to choose:

* ``α_norm = minmax(α)``, ``N_norm = 1 - minmax(spikes)`` over all target modules, ``minmax(x) = (x - min) /
  (max - min + ε)``; ``score = w_hill·α_norm + w_spikes·N_norm``. Non-finite α (flat or empty spectrum: no
  tail, nothing learned) is treated as the largest finite α, i.e. "least structured".
* Selection keeps the ``⌈top_n_percentile · L⌉`` modules with the *highest* scores: the README says high α and
  few spikes mark the layers that "require more adaptation" and "benefit most". The public reference code
  keeps the lowest-scoring ones instead, contradicting its own README; we follow the README. Ties keep
  model order.
* Ranks interpolate between ``r_min`` and ``r_max`` over the *selected* modules' score range
  (``t = (s - s_min) / (s_max - s_min + ε)``): ``linear`` ``r_min + Δ·t``; ``sqrt`` ``r_min + Δ·√t`` (favours
  high ranks); ``log`` geometric ``r_min·(r_max/r_min)^t`` (evenly spaced in log-rank, favours low ranks).
  Rounded to nearest, clipped to ``[r_min, r_max]`` and to the layer's smaller side (a LoRA rank above
  ``min(in, out)`` adds parameters but no capacity). Unselected modules get rank 0.
* ``lora_alpha = alpha_factor · rank`` per module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from loraven.adapters.lora_ar.config import LoraARConfig

EPS = 1e-8
ALLOCATION_COLUMNS = ["module", "alpha_hill", "spikes", "score", "rank"]


@dataclass
class Allocation:
    """Per-module table (module, alpha_hill, spikes, score, selected, rank, lora_alpha, ...) plus budget
    info."""

    table: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ranks(self) -> dict[str, int]:
        sel = self.table[self.table["selected"]]
        return {str(m): int(r) for m, r in zip(sel["module"], sel["rank"], strict=True)}

    @property
    def alphas(self) -> dict[str, float]:
        sel = self.table[self.table["selected"]]
        return {str(m): float(a) for m, a in zip(sel["module"], sel["lora_alpha"], strict=True)}


def minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min() + EPS)


def composite_score(alpha: np.ndarray, spikes: np.ndarray, w_hill: float, w_spikes: float) -> np.ndarray:
    """README score: higher α (less heavy-tailed) and fewer spikes give a higher score."""
    alpha = np.asarray(alpha, dtype=np.float64).copy()
    finite = np.isfinite(alpha)
    alpha[~finite] = alpha[finite].max() if finite.any() else 0.0
    return w_hill * minmax(alpha) + w_spikes * (1.0 - minmax(np.asarray(spikes, dtype=np.float64)))


def select_top(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the ``⌈fraction·L⌉`` highest scores (stable: ties keep model order)."""
    n = len(scores)
    keep = min(n, max(1, math.ceil(fraction * n - 1e-9)))
    mask = np.zeros(n, dtype=bool)
    mask[np.argsort(-np.asarray(scores), kind="stable")[:keep]] = True
    return mask


def interpolate_ranks(scores: np.ndarray, r_min: int, r_max: int, scaling: str) -> np.ndarray:
    """Continuous (unrounded) ranks in ``[r_min, r_max]`` from the scores of the selected modules."""
    s = np.asarray(scores, dtype=np.float64)
    t = (s - s.min()) / (s.max() - s.min() + EPS)
    if scaling == "linear":
        return r_min + (r_max - r_min) * t
    if scaling == "sqrt":
        return r_min + (r_max - r_min) * np.sqrt(t)
    if scaling == "log":
        return r_min * (r_max / r_min) ** t
    raise ValueError(f"unknown rank scaling {scaling!r}")


def fit_budget(
    base: np.ndarray, cost: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: float, priority: np.ndarray
) -> np.ndarray:
    """Integer ranks ``r`` in ``[lo, hi]``, proportional to ``base``, with ``Σ r·cost`` as close to
    ``target``.

    A continuous scale ``s`` with ``Σ clip(s·base, lo, hi)·cost = target`` is found by bisection (the sum is
    monotone in ``s``); ranks are floored, then the leftover budget is handed out +1 at a time by largest
    fractional remainder (ties: higher ``priority``), only where the layer's cost still fits. Unless every
    layer hits a bound, the result is within ``max(cost)`` parameters of ``target`` (never above it by more
    than ``max(cost)/2``, since a final +1 is taken only when it lands closer).
    """

    def total(s: float) -> float:
        return float((np.clip(s * base, lo, hi) * cost).sum())

    s_lo, s_hi = 0.0, float(hi.max() / max(base.min(), EPS)) + 1.0
    for _ in range(200):
        mid = 0.5 * (s_lo + s_hi)
        s_lo, s_hi = (mid, s_hi) if total(mid) < target else (s_lo, mid)
    cont = np.clip(s_lo * base, lo, hi)
    ranks = np.maximum(np.floor(cont + 1e-9), lo).astype(np.int64)
    gap = target - float((ranks * cost).sum())
    order = np.lexsort((-priority, -(cont - ranks)))
    for i in order:
        if ranks[i] + 1 <= hi[i] and cost[i] <= gap:
            ranks[i] += 1
            gap -= cost[i]
    room = np.flatnonzero(ranks + 1 <= hi)
    if gap > 0 and room.size:
        i = room[np.argmin(cost[room])]
        if cost[i] - gap < gap:  # overshooting by less than we undershoot
            ranks[i] += 1
    return ranks


def allocate(spectra: pd.DataFrame, cfg: LoraARConfig) -> Allocation:
    """Scores, selection and ranks for every row of ``spectra`` (from :func:`spectral.analyse_weights`).

    Budget mode (``cfg.budget_rank = b``): the selected modules' ranks are rescaled (shape kept, see
    :func:`fit_budget`) so the trainable parameter count equals that of a uniform rank-``b`` LoRA on *all*
    target modules: ``Σ_sel r·(in+out) = b·Σ_all (in+out)`` (DoRA's per-output magnitude vectors are
    counted on both sides). Ranks stay in ``[r_min, r_max]`` when the budget allows; otherwise ``r_max`` is
    relaxed up to each layer's smaller side (or ``r_min`` down to 1) and ``info['bounds_relaxed']`` says
    so. The achieved ratio is ``info['param_ratio']``.
    """
    table = spectra.copy().reset_index(drop=True)
    if table.empty:
        raise ValueError("no target modules to allocate ranks to")
    table["score"] = composite_score(
        table["alpha_hill"].to_numpy(), table["spikes"].to_numpy(), float(cfg.w_hill), float(cfg.w_spikes)
    )
    table["selected"] = select_top(table["score"].to_numpy(), float(cfg.top_n_percentile))
    sel = table["selected"].to_numpy()
    cost = (table["in_features"] + table["out_features"]).to_numpy(dtype=np.int64)
    side = np.minimum(table["in_features"], table["out_features"]).to_numpy(dtype=np.int64)
    cont = interpolate_ranks(table.loc[sel, "score"].to_numpy(), cfg.r_min, cfg.r_max, cfg.rank_scaling)
    lo = np.minimum(cfg.r_min, side[sel])
    hi = np.minimum(cfg.r_max, side[sel])
    budgeted = cfg.budget_rank is not None or cfg.budget_params is not None
    info: dict[str, Any] = {"budget_mode": budgeted, "budget_rank": cfg.budget_rank, "budget_params": cfg.budget_params}
    if not budgeted:
        chosen = np.clip(np.floor(cont + 0.5), lo, hi).astype(np.int64)
    else:
        outs = table["out_features"].to_numpy(dtype=np.int64)
        dora_out = outs if cfg.use_dora else np.zeros_like(outs)
        target_total = (
            float(cfg.budget_params)
            if cfg.budget_params is not None  # a count (param_budget)
            else float(cfg.budget_rank * cost.sum() + dora_out.sum())
        )
        target = target_total - float(dora_out[sel].sum())
        relaxed = []
        if float((hi * cost[sel]).sum()) < target:
            hi, relaxed = side[sel], relaxed + ["r_max"]
        ceiling = float((hi * cost[sel]).sum() + dora_out[sel].sum())
        if cfg.budget_params is not None and ceiling < target_total:  # never capped silently
            from loraven.errors import ConfigError

            raise ConfigError(
                f"adapter.param_budget={int(target_total)} is beyond LoRA-AR's largest size on this model (its "
                f"{int(sel.sum())} selected layers at full rank train {int(ceiling)} parameters); give at most "
                f"{int(ceiling)}"
            )
        if float((lo * cost[sel]).sum()) > target:
            lo, relaxed = np.ones_like(lo), relaxed + ["r_min"]
        chosen = fit_budget(cont, cost[sel].astype(np.float64), lo, hi, target, table.loc[sel, "score"].to_numpy())
        achieved = float((chosen * cost[sel]).sum() + dora_out[sel].sum())
        info.update(
            target_params=int(target_total),
            achieved_params=int(achieved),
            param_ratio=achieved / target_total,
            bounds_relaxed=relaxed,
        )
    ranks = np.zeros(len(table), dtype=np.int64)
    ranks[sel] = chosen
    table["rank"] = ranks
    table["lora_alpha"] = float(cfg.alpha_factor) * ranks
    info["lora_params"] = int((ranks * cost).sum())
    return Allocation(table=table, info=info)
