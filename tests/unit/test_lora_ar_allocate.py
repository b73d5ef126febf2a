"""LoRA-AR allocation: the README score, selection of the high-score (light-tailed) layers, rank curves,
budget mode parameter matching, and config validation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from loraven.adapters.lora_ar.allocate import allocate, composite_score, fit_budget, select_top
from loraven.adapters.lora_ar.config import LoraARConfig
from loraven.adapters.lora_ar.spectral import analyse_weights
from loraven.errors import ConfigError


def _heavy(n: int, m: int, gen: torch.Generator, power: float) -> torch.Tensor:
    """Singular values i^-power: λ_i ∝ i^-2power, a power-law ESD with many MP outliers."""
    u, _ = torch.linalg.qr(torch.randn(n, m, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(m, m, generator=gen))
    return (u * torch.arange(1, m + 1).pow(-power)) @ v.T


def _engineered_layers() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    layers = {}
    for i in range(3):
        layers[f"blk.{i}.heavy"] = _heavy(96, 64, gen, power=0.6 + 0.1 * i)
        layers[f"blk.{i}.light"] = torch.randn(96, 64, generator=gen) * 0.02
    return layers


def test_score_matches_readme_formula() -> None:
    alpha, spikes = np.array([2.0, 3.0, 5.0, 4.0]), np.array([10, 0, 5, 2])
    eps = 1e-8
    a_norm = (alpha - alpha.min()) / (alpha.max() - alpha.min() + eps)
    n_norm = 1 - (spikes - spikes.min()) / (spikes.max() - spikes.min() + eps)
    np.testing.assert_allclose(composite_score(alpha, spikes, 0.7, 0.3), 0.7 * a_norm + 0.3 * n_norm)
    # non-finite α (flat spectrum) counts as the least structured: same score as the largest finite α
    with_inf = composite_score(np.array([2.0, np.inf, 5.0]), np.array([1, 1, 1]), 1.0, 0.0)
    assert with_inf[1] == pytest.approx(with_inf[2])


def test_select_top_keeps_highest_scores_and_rounds_up() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.2])
    assert select_top(scores, 0.5).tolist() == [False, True, True, True, False]  # ⌈2.5⌉ = 3
    assert select_top(scores, 1.0).all()
    assert select_top(scores, 0.01).sum() == 1


def test_heavy_tailed_layers_get_lower_ranks_and_are_not_selected() -> None:
    spectra = analyse_weights(_engineered_layers())
    heavy = spectra["module"].str.endswith("heavy")
    assert spectra.loc[heavy, "alpha_hill"].max() < spectra.loc[~heavy, "alpha_hill"].min()
    assert spectra.loc[heavy, "spikes"].min() > spectra.loc[~heavy, "spikes"].max()

    all_ranks = allocate(spectra, LoraARConfig(top_n_percentile=1.0, r_min=2, r_max=32)).table
    assert all_ranks.loc[heavy, "rank"].max() < all_ranks.loc[~heavy, "rank"].min()
    assert all_ranks["rank"].min() == 2 and all_ranks["rank"].max() == 32
    np.testing.assert_allclose(all_ranks["lora_alpha"], 2.0 * all_ranks["rank"])

    half = allocate(spectra, LoraARConfig(top_n_percentile=0.5)).table
    assert half["selected"].tolist() == (~heavy).tolist()
    assert (half.loc[heavy, "rank"] == 0).all()


def _synthetic_table(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    outs = rng.choice([64, 128, 256], size=n)
    ins = rng.choice([64, 128], size=n)
    return pd.DataFrame(
        dict(
            module=[f"m.{i}" for i in range(n)],
            out_features=outs,
            in_features=ins,
            alpha_hill=rng.uniform(1.5, 6.0, n),
            spikes=rng.integers(0, 40, n),
        )
    )


@pytest.mark.parametrize("scaling", ["linear", "log", "sqrt"])
def test_rank_scalings_span_the_range_monotonically(scaling: str) -> None:
    table = allocate(_synthetic_table(), LoraARConfig(top_n_percentile=1.0, rank_scaling=scaling)).table
    order = np.argsort(table["score"].to_numpy())
    ranks = table["rank"].to_numpy()[order]
    assert np.all(np.diff(ranks) >= 0)
    assert ranks[0] == 4 and ranks[-1] == 64


def test_scalings_differ_in_the_expected_direction() -> None:
    mean = {
        s: allocate(_synthetic_table(), LoraARConfig(top_n_percentile=1.0, rank_scaling=s)).table["rank"].mean()
        for s in ("linear", "log", "sqrt")
    }
    assert mean["log"] < mean["linear"] < mean["sqrt"]


def test_ranks_capped_at_layer_side() -> None:
    table = _synthetic_table()
    table["in_features"] = 16
    out = allocate(table, LoraARConfig(top_n_percentile=1.0)).table
    assert out["rank"].max() == 16


@pytest.mark.parametrize("budget", [4, 8, 16])
@pytest.mark.parametrize("fraction", [0.5, 1.0])
@pytest.mark.parametrize("use_dora", [False, True])
def test_budget_mode_matches_uniform_lora_parameter_count(budget: int, fraction: float, use_dora: bool) -> None:
    """Tolerance: one rank-1 update of the largest layer, max(in+out) parameters (see fit_budget)."""
    table = _synthetic_table()
    alloc = allocate(table, LoraARConfig(top_n_percentile=fraction, budget_rank=budget, use_dora=use_dora))
    cost = table["in_features"] + table["out_features"]
    uniform = budget * cost.sum() + (table["out_features"].sum() if use_dora else 0)
    t = alloc.table
    sel = t["selected"]
    ours = (t["rank"] * cost).sum() + (t.loc[sel, "out_features"].sum() if use_dora else 0)
    assert abs(ours - uniform) <= cost.max()
    assert alloc.info["achieved_params"] == ours and alloc.info["target_params"] == uniform
    assert alloc.info["param_ratio"] == pytest.approx(ours / uniform)
    assert t.loc[sel, "rank"].between(4, 64).all() and not alloc.info["bounds_relaxed"]
    # the spectral ordering survives the rescaling
    ranked = t[sel].sort_values("score")
    assert np.all(np.diff(ranked["rank"].to_numpy()) >= -1)


def test_budget_mode_relaxes_bounds_when_needed() -> None:
    table = _synthetic_table()
    alloc = allocate(table, LoraARConfig(top_n_percentile=0.25, r_max=8, budget_rank=16))
    assert alloc.info["bounds_relaxed"] == ["r_max"]
    assert alloc.table["rank"].max() > 8
    assert (
        abs(alloc.info["param_ratio"] - 1)
        <= (table["in_features"] + table["out_features"]).max() / alloc.info["target_params"]
    )


def test_fit_budget_stays_within_tolerance() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(4, 64, 50)
    cost = rng.integers(100, 3000, 50).astype(float)
    target = 20 * cost.sum()
    ranks = fit_budget(base, cost, np.full(50, 4), np.full(50, 64), target, base)
    assert abs((ranks * cost).sum() - target) <= cost.max()
    assert ranks.min() >= 4 and ranks.max() <= 64


@pytest.mark.parametrize(
    "bad, fragment",
    [
        (dict(r_min=8, r_max=4), "r_min=8"),
        (dict(r_min=0), "r_min=0"),
        (dict(top_n_percentile=0.0), "top_n_percentile=0.0"),
        (dict(top_n_percentile=1.5), "(0, 1]"),
        (dict(rank_scaling="cubic"), "linear, log, sqrt"),
        (dict(hill_method="mle"), "median, ks"),
        (dict(w_hill=-0.1), "w_hill=-0.1"),
        (dict(w_hill=0.0, w_spikes=0.0), "positive sum"),
        (dict(budget_rank=0), "budget_rank=0"),
        (dict(alpha_factor=0), "alpha_factor=0"),
        (dict(eigenvalue_threshold=2.0), "eigenvalue_threshold=2.0"),
        (dict(tracy_widom="yes"), "true, false"),
    ],
)
def test_config_rejects_bad_values(bad: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("]", r"\]")):
        LoraARConfig(**bad)


def test_config_rejects_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="r_maxx"):
        LoraARConfig.from_mapping({"name": "lora_ar", "r_maxx": 3})
