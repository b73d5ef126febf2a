"""Spectral metrics against values worked out by hand on non-Pareto spectra (not recovered from a fit).

A Pareto sample only checks that an estimator is *consistent*; a wrong threshold (λ_(k) instead of
λ_(k+1)), a wrong tail size (n/8 instead of ⌈n/2⌉) or a wrong Tracy–Widom margin still lands near the
truth. Small spectra with closed-form answers pin each choice down.
"""

import math

import pytest
import torch

from loraven.adapters.lora_ar.spectral import (
    TW1_Q99,
    analyse_weights,
    count_spikes,
    esd_eigenvalues,
    filter_eigenvalues,
    hill_alpha,
    hill_alpha_ks,
    hill_alpha_median,
    mp_edge,
)

LN2 = math.log(2.0)


@pytest.mark.parametrize(
    ("eigs", "expected"),
    [
        # n = 6, k = 3, threshold λ_(4) = 2: Σ ln(16/2, 8/2, 4/2) = 6 ln 2 → α = 1 + 3 / (6 ln 2)
        ([16.0, 8.0, 4.0, 2.0, 1.0, 1.0], 1.0 + 3.0 / (6.0 * LN2)),
        # n = 5, k = ⌈5/2⌉ = 3, threshold λ_(4) = 2: Σ ln(32/2, 8/2, 4/2) = 7 ln 2
        ([1.0, 32.0, 2.0, 8.0, 4.0], 1.0 + 3.0 / (7.0 * LN2)),
        # n = 8, k = 4, threshold λ_(5) = e: Σ ln(e⁴/e, e³/e, e²/e, e²/e) = 3 + 2 + 1 + 1 = 7
        ([math.e**p for p in (4, 3, 2, 2, 1, 0.5, 0.25, 0)], 1.0 + 4.0 / 7.0),
    ],
)
def test_hill_median_on_hand_computed_spectra(eigs, expected):
    assert hill_alpha_median(torch.tensor(eigs, dtype=torch.float64)) == pytest.approx(expected, rel=1e-12)
    assert hill_alpha(torch.tensor(eigs, dtype=torch.float64), "median") == pytest.approx(expected, rel=1e-12)


def test_hill_median_edge_values():
    assert math.isnan(hill_alpha_median(torch.tensor([3.0])))
    assert hill_alpha_median(torch.tensor([2.0, 2.0, 2.0, 2.0])) == math.inf
    # n = 2: k = 1, threshold λ_(2): α = 1 + 1/ln(λ1/λ2)
    assert hill_alpha_median(torch.tensor([1.0, math.e**2])) == pytest.approx(1.5)


def _spectrum(bulk: int, ratios: list[float]) -> tuple[torch.Tensor, float]:
    """``bulk`` eigenvalues of 1 plus spikes at ``ratios`` × σ², σ² = the mean of all (solved exactly)."""
    m = bulk + len(ratios)
    sigma2 = bulk / (m - sum(ratios))
    eigs = torch.tensor([1.0] * bulk + [r * sigma2 for r in ratios], dtype=torch.float64)
    assert float(eigs.mean()) == pytest.approx(sigma2)
    return eigs, sigma2


def test_mp_edge_and_spikes_by_hand():
    # n = 400, m = 100: Q = 4, MP edge = σ²(1 + 1/2)² = 2.25 σ²; Tracy–Widom scale
    # σ²(√400 + √100)(1/√400 + 1/√100)^(1/3) / 400 = σ² · 30 · 0.15^(1/3) / 400 ≈ 0.0398 σ²
    n, m = 400, 100
    eigs, sigma2 = _spectrum(97, [2.29, 2.6, 5.0])
    tw = 30.0 * 0.15 ** (1.0 / 3.0) / 400.0
    assert mp_edge(eigs, n, m, tracy_widom=False) == pytest.approx(2.25 * sigma2, rel=1e-12)
    assert mp_edge(eigs, n, m, tracy_widom=True) == pytest.approx((2.25 + 2.0234 * tw) * sigma2, rel=1e-12)
    assert TW1_Q99 == pytest.approx(2.0234)
    # 2.29 σ² is above the bare edge but inside the 99 % TW margin (2.33 σ²); a 10x margin (3.06 σ²)
    # would also lose 2.6 σ²
    assert count_spikes(eigs, n, m, tracy_widom=False) == 3
    assert count_spikes(eigs, n, m, tracy_widom=True) == 2


def test_spikes_with_a_square_matrix():
    # n = m = 64: edge = 4 σ², TW scale σ²·16·(1/4)^(1/3)/64 ≈ 0.157 σ² → edge ≈ 4.32 σ²
    eigs, _ = _spectrum(60, [4.1, 4.5, 6.0, 9.0])
    assert count_spikes(eigs, 64, 64, tracy_widom=False) == 4
    assert count_spikes(eigs, 64, 64, tracy_widom=True) == 3


def test_esd_is_sigma_squared_over_n_in_any_orientation():
    w = torch.diag(torch.tensor([3.0, 2.0, 1.0]))
    tall = torch.cat([w, torch.zeros(2, 3)])  # 5 x 3: σ = 3, 2, 1, N = 5
    for mat in (tall, tall.T):
        (eigs,) = esd_eigenvalues([mat])
        assert torch.allclose(eigs, torch.tensor([9.0, 4.0, 1.0]) / 5.0)


def test_filter_keeps_only_eigenvalues_above_the_relative_threshold():
    x = torch.tensor([1e-9, 1e-3, 0.5, 1.0, 0.0, -1.0], dtype=torch.float64)
    assert filter_eigenvalues(x, 1e-2).tolist() == [0.5, 1.0]
    assert filter_eigenvalues(x, 1e-4).tolist() == [1e-3, 0.5, 1.0]
    assert filter_eigenvalues(torch.zeros(3), 0.1).numel() == 0


def test_hill_ks_accepts_a_tail_of_exactly_min_tail_points():
    # 10 points, min_tail = 10: the only candidate is x_min = 1, α = 1 + 10 / Σ ln(x_i)
    x = torch.arange(1, 11, dtype=torch.float64)
    alpha, x_min, _ = hill_alpha_ks(x, min_tail=10)
    assert x_min == 1.0 and alpha == pytest.approx(1.0 + 10.0 / float(torch.log(x).sum()), rel=1e-12)


def test_mp_edge_accumulates_in_float64_whatever_the_input_dtype():
    eigs, _ = _spectrum(97, [2.29, 2.6, 5.0])
    eigs32 = (eigs * 1.1).to(torch.float32)
    sigma2 = float(eigs32.to(torch.float64).mean())
    assert mp_edge(eigs32, 400, 100, tracy_widom=False) == pytest.approx(2.25 * sigma2, rel=1e-14)


def test_unknown_hill_method_names_the_choices():
    with pytest.raises(ValueError, match="unknown hill method 'mle'; valid: median, ks"):
        analyse_weights({"w": torch.eye(4)}, hill_method="mle")
    with pytest.raises(ValueError, match="valid: median, ks"):
        hill_alpha(torch.ones(3), "mle")
