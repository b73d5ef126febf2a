"""LoRA-AR spectral metrics: the Hill estimators recover a known power law; MP spike counting finds exactly
the planted outliers and none in pure noise; eigenvalues are batched per shape and match a per-matrix SVD."""

from __future__ import annotations

import math

import pytest
import torch

from loraven.adapters.lora_ar.spectral import (
    analyse_weights,
    count_spikes,
    esd_eigenvalues,
    filter_eigenvalues,
    hill_alpha_ks,
    hill_alpha_median,
    mp_edge,
)


def _pareto_density_sample(alpha: float, n: int, seed: int, x_min: float = 0.3) -> torch.Tensor:
    """Samples with *density* p(x) ∝ x^-alpha for x ≥ x_min (survival (x/x_min)^(1-alpha)): the quantity the
    Hill estimators target, since they return the ESD density exponent (tail index + 1)."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x_min * u.pow(-1.0 / (alpha - 1.0))


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0, 4.5, 6.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_hill_median_recovers_pareto_exponent(alpha: float, seed: int) -> None:
    est = hill_alpha_median(_pareto_density_sample(alpha, 20000, seed))
    assert abs(est - alpha) / alpha < 0.10


@pytest.mark.parametrize("alpha", [1.5, 2.5, 4.0])
def test_hill_ks_recovers_pareto_exponent_and_xmin(alpha: float) -> None:
    x = _pareto_density_sample(alpha, 2000, seed=7)
    est, x_min, dist = hill_alpha_ks(x)
    assert abs(est - alpha) / alpha < 0.10
    assert 0.3 <= x_min < 0.3 * 2.0  # a pure power law from 0.3: the best cut sits near the true x_min
    assert 0 <= dist < 0.05


def test_hill_ks_finds_tail_above_a_bulk() -> None:
    """A uniform bulk below a power-law tail: the KS cut skips the bulk, so it beats the fixed median cut."""
    gen = torch.Generator().manual_seed(3)
    bulk = torch.rand(3000, generator=gen, dtype=torch.float64) * 1.0
    tail = 1.0 * torch.rand(1000, generator=gen, dtype=torch.float64).pow(-1.0 / 2.0)  # density exponent 3
    x = torch.cat([bulk, tail])
    est, x_min, _ = hill_alpha_ks(x)
    assert abs(est - 3.0) / 3.0 < 0.10
    assert x_min >= 0.75
    assert abs(est - 3.0) < abs(hill_alpha_median(x) - 3.0)


def test_hill_edge_cases() -> None:
    assert math.isnan(hill_alpha_median(torch.tensor([1.0])))
    assert hill_alpha_median(torch.ones(10)) == math.inf  # flat spectrum: no tail at all


def test_filter_is_relative_to_largest_eigenvalue() -> None:
    eigs = torch.tensor([1e-9, 1e-7, 1e-3, 0.5, 1.0]) * 1e-4  # a tiny overall scale must not matter
    kept = filter_eigenvalues(eigs, 1e-5)
    assert kept.numel() == 3 and torch.all(kept[1:] >= kept[:-1])


@pytest.mark.parametrize("shape", [(200, 100), (128, 128), (300, 60), (64, 256)])
def test_gaussian_noise_has_no_spikes(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    weights = [torch.randn(*shape, generator=gen) * 0.02 for _ in range(4)]
    n, m = max(shape), min(shape)
    for eigs in esd_eigenvalues(weights):
        assert count_spikes(eigs, n, m, tracy_widom=True) <= 1


def _planted(n: int, m: int, k: int, seed: int) -> torch.Tensor:
    """Noise with unit-variance entries plus k rank-1 signals well above the BBP threshold."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, m, generator=gen)
    u, _ = torch.linalg.qr(torch.randn(n, k, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(m, k, generator=gen))
    strengths = torch.linspace(4.0, 8.0, k) * (n * m) ** 0.25  # BBP threshold is (n·m)^(1/4)
    return w + (u * strengths) @ v.T


@pytest.mark.parametrize("k", [1, 3, 6])
@pytest.mark.parametrize("shape", [(256, 256), (400, 160)])
def test_planted_spikes_are_counted_exactly(k: int, shape: tuple[int, int]) -> None:
    n, m = shape
    w = _planted(n, m, k, seed=k)
    for weight in (w, w.T):  # orientation must not matter
        eigs = esd_eigenvalues([weight])[0]
        assert count_spikes(eigs, n, m) == k


def test_tracy_widom_margin_raises_the_edge() -> None:
    eigs = esd_eigenvalues([torch.randn(300, 100, generator=torch.Generator().manual_seed(0))])[0]
    plain, corrected = mp_edge(eigs, 300, 100, False), mp_edge(eigs, 300, 100, True)
    assert corrected > plain
    assert plain == pytest.approx(float(eigs.mean()) * (1 + (100 / 300) ** 0.5) ** 2)


def test_batched_eigenvalues_match_single_svd() -> None:
    gen = torch.Generator().manual_seed(1)
    weights = [
        torch.randn(48, 32, generator=gen),
        torch.randn(32, 48, generator=gen),
        torch.randn(16, 16, generator=gen, dtype=torch.float64),
        torch.randn(48, 32, generator=gen),
    ]
    batched = esd_eigenvalues(weights, max_batch_elems=48 * 32 * 2)  # forces chunking of the 48x32 group
    for w, eigs in zip(weights, batched, strict=True):
        ref = torch.linalg.svdvals(w.double()).square() / max(w.shape)
        assert eigs.dtype == torch.float32 and eigs.device == w.device
        torch.testing.assert_close(eigs.double(), ref, rtol=1e-4, atol=1e-6)


def test_analyse_weights_orders_heavy_and_light() -> None:
    gen = torch.Generator().manual_seed(0)
    light = torch.randn(128, 96, generator=gen)
    u, _ = torch.linalg.qr(torch.randn(128, 96, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(96, 96, generator=gen))
    heavy = (u * torch.arange(1, 97).pow(-0.5)) @ v.T  # λ_i ∝ 1/i: density exponent ≈ 2, many outliers
    table = analyse_weights({"light": light, "heavy": heavy})
    assert list(table["module"]) == ["light", "heavy"]
    a_light, a_heavy = table["alpha_hill"]
    s_light, s_heavy = table["spikes"]
    assert a_heavy < a_light and s_heavy > s_light
    assert a_heavy == pytest.approx(2.0, rel=0.25)
