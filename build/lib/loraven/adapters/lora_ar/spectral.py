"""Spectral metrics of weight matrices (HT-SR): eigenvalues, Hill power-law exponent, Marchenko–Pastur spikes.

Conventions (used throughout LoRA-AR):

* A weight ``W`` is oriented as ``N x M`` with ``N >= M`` (transposing does not change its singular values),
  aspect ratio ``Q = N / M >= 1``. Its empirical spectral density (ESD) is the ``M`` eigenvalues of the
  correlation matrix ``X = WᵀW / N``, i.e. ``λ = σ(W)² / N``. With this normalisation ``mean(λ)`` is the
  mean squared entry of ``W``, which is exactly the MP variance ``σ²`` of an i.i.d. matrix. The Hill exponent
  and the spike count are both invariant to rescaling ``W``, so the normalisation only fixes units.
* ``eigenvalue_threshold`` is *relative*: eigenvalues below ``threshold · λ_max`` are dropped before the
  power-law fit (they are numerically zero for rank-deficient matrices; a relative cut works for any
  init scale, an absolute one would not). Spike counting uses all ``M`` eigenvalues.

Eigenvalues are computed in float32 on the device the weights live on, batched over matrices of equal shape;
the per-matrix fits run on the small eigenvalue vectors on the CPU in float64.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

HILL_METHODS = ("median", "ks")
# 99 % quantile of the Tracy–Widom law for beta = 1 (real matrices), Johnstone (2001), Table 1.
TW1_Q99 = 2.0234
KS_MIN_TAIL = 10


def esd_eigenvalues(weights: Sequence[torch.Tensor], max_batch_elems: int = 1 << 26) -> list[torch.Tensor]:
    """Eigenvalues ``σ(W)²/N`` (descending, float32, on each weight's device) of every weight.

    Matrices of equal (oriented) shape on the same device are stacked and sent to one batched
    ``torch.linalg.svdvals`` call, chunked so a stack holds at most ``max_batch_elems`` elements.
    """
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, w in enumerate(weights):
        if w.dim() != 2:
            raise ValueError(f"expected a 2-D weight, got shape {tuple(w.shape)}")
        n, m = max(w.shape), min(w.shape)
        groups[(w.device, n, m)].append(i)
    out: list[torch.Tensor | None] = [None] * len(weights)
    for (_, n, m), idx in groups.items():
        per_chunk = max(1, max_batch_elems // (n * m))
        for start in range(0, len(idx), per_chunk):
            chunk = idx[start : start + per_chunk]
            stack = torch.stack([_oriented(weights[i]) for i in chunk])
            sv = torch.linalg.svdvals(stack)
            for row, i in enumerate(chunk):
                out[i] = sv[row].square() / n
    return [t for t in out if t is not None]


def _oriented(w: torch.Tensor) -> torch.Tensor:
    w = w.detach().to(torch.float32)
    return w if w.shape[0] >= w.shape[1] else w.T


def filter_eigenvalues(eigs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Drop eigenvalues below ``threshold · λ_max`` (and non-positive ones); ascending, float64, CPU."""
    x = eigs.detach().to("cpu", torch.float64).sort().values
    if x.numel() == 0 or x[-1] <= 0:
        return x[:0]
    return x[x > max(threshold * float(x[-1]), 0.0)]


def hill_alpha_median(eigs: torch.Tensor) -> float:
    """Hill estimate of the ESD's density exponent α (``p(λ) ∝ λ^-α``) over the top half of the spectrum.

    With ``λ_(1) ≥ … ≥ λ_(n)``, ``k = ⌈n/2⌉`` and threshold ``λ_thr = λ_(k+1)`` (the largest eigenvalue
    *not* in the tail, i.e. the boundary of the top half): ``α = 1 + k / Σ_{i≤k} ln(λ_(i) / λ_thr)``. This
    is the classic Hill (1975) estimator of the tail index plus one (density vs. survival exponent), the
    conditional MLE of a Pareto density above ``λ_thr``. (Using ``λ_(k)`` as threshold, as some code does,
    makes one log term zero: a ``(k-1)/k`` bias.) Returns NaN for fewer than 2 eigenvalues, +inf for a flat
    spectrum (no tail at all).
    """
    x = eigs.detach().to("cpu", torch.float64).sort(descending=True).values
    n = x.numel()
    if n < 2:
        return math.nan
    k = math.ceil(n / 2)
    denom = float(torch.log(x[:k] / x[k]).sum())
    return 1.0 + k / denom if denom > 0 else math.inf


def hill_alpha_ks(
    eigs: torch.Tensor, min_tail: int = KS_MIN_TAIL, max_block_elems: int = 1 << 22
) -> tuple[float, float, float]:
    """Power-law fit with ``x_min`` chosen by minimum Kolmogorov–Smirnov distance (Clauset et al. 2009).

    For every candidate ``x_min = x_j`` (ascending ``x``) with at least ``min_tail`` points in the tail,
    the MLE ``α_j = 1 + m_j / Σ_{i≥j} ln(x_i/x_j)`` comes from suffix sums of ``ln x`` in O(n); the KS
    distance between the tail's empirical CDF and ``1 - (x/x_j)^(1-α_j)`` is computed for all candidates at
    once, in row blocks of at most ``max_block_elems`` entries (O(n²) work, vectorised). Returns ``(α,
    x_min, ks_distance)``.
    """
    x = eigs.detach().to("cpu", torch.float64).sort().values
    n = x.numel()
    min_tail = max(2, min(min_tail, n))
    if n < 2:
        return math.nan, math.nan, math.nan
    logs = x.log()
    suffix = logs.flip(0).cumsum(0).flip(0)
    tail_n = torch.arange(n, 0, -1, dtype=torch.float64)
    denom = suffix - tail_n * logs
    alphas = 1.0 + tail_n / denom
    cand = torch.nonzero((tail_n >= min_tail) & (denom > 0)).flatten()
    if cand.numel() == 0:
        return math.inf, float(x[0]), math.nan
    cols = torch.arange(n)
    best = (math.inf, 0)
    rows_per_block = max(1, max_block_elems // n)
    for start in range(0, cand.numel(), rows_per_block):
        j = cand[start : start + rows_per_block]
        a, m = alphas[j, None], tail_n[j, None]
        # Clamping both offsets at 0 turns every entry left of the tail into a copy of its first entry
        # (pos 0, fitted CDF 0), so no mask is needed.
        pos = (cols[None, :] - j[:, None]).clamp_min(0).to(torch.float64) / m
        fitted = -torch.expm1((1.0 - a) * (logs[None, :] - logs[j, None]).clamp_min(0))
        dist = torch.maximum(pos + 1.0 / m - fitted, fitted - pos).amax(dim=1)
        d, arg = dist.min(dim=0)
        if float(d) < best[0]:
            best = (float(d), int(j[arg]))
    d, jstar = best
    return float(alphas[jstar]), float(x[jstar]), d


def hill_alpha(eigs: torch.Tensor, method: str = "median") -> float:
    """Density power-law exponent of the (already filtered) eigenvalues by ``method`` (see HILL_METHODS)."""
    if method == "median":
        return hill_alpha_median(eigs)
    if method == "ks":
        return hill_alpha_ks(eigs)[0]
    raise ValueError(f"unknown hill method {method!r}; valid: {', '.join(HILL_METHODS)}")


def mp_edge(eigs: torch.Tensor, n: int, m: int, tracy_widom: bool = True) -> float:
    """Upper Marchenko–Pastur bulk edge for the ESD of an ``n x m`` (``n ≥ m``) matrix, in ``λ = σ²/n`` units.

    ``λ₊ = σ²(1 + 1/√Q)²`` with ``σ² = mean(λ)`` over all ``m`` eigenvalues (the mean squared entry; spikes
    inflate it slightly, which only makes the count conservative) and ``Q = n/m``. With ``tracy_widom`` the
    edge is raised by the 99 % Tracy–Widom quantile times the finite-size scale of the largest eigenvalue of a
    white Wishart matrix, ``σ²(√n+√m)(1/√n+1/√m)^{1/3}/n`` (Johnstone 2001): a pure-noise matrix then shows a
    spike with ~1 % probability instead of ~20 %.
    """
    lam = eigs.detach().to("cpu", torch.float64)
    sigma2 = float(lam.mean())
    edge = sigma2 * (1.0 + math.sqrt(m / n)) ** 2
    if tracy_widom:
        scale = sigma2 * (math.sqrt(n) + math.sqrt(m)) * (1 / math.sqrt(n) + 1 / math.sqrt(m)) ** (1 / 3) / n
        edge += TW1_Q99 * scale
    return edge


def count_spikes(eigs: torch.Tensor, n: int, m: int, tracy_widom: bool = True) -> int:
    """Number of eigenvalues above the MP edge (:func:`mp_edge`): the layer's strong learned directions."""
    return int((eigs.detach().to("cpu", torch.float64) > mp_edge(eigs, n, m, tracy_widom)).sum())


def analyse_weights(
    weights: Mapping[str, torch.Tensor],
    hill_method: str = "median",
    eigenvalue_threshold: float = 1e-5,
    tracy_widom: bool = True,
) -> pd.DataFrame:
    """One row per weight: module, out/in features, n_eigs (after filtering), lambda_max, mp_edge, alpha_hill,
    spikes. ``weights`` maps module name to its ``(out, in)`` weight (any device/dtype)."""
    if hill_method not in HILL_METHODS:
        raise ValueError(f"unknown hill method {hill_method!r}; valid: {', '.join(HILL_METHODS)}")
    names = list(weights)
    all_eigs = esd_eigenvalues([weights[k] for k in names])
    rows = []
    for name, eigs in zip(names, all_eigs, strict=True):
        eigs = eigs.to("cpu", torch.float64)  # one transfer per matrix; the fits below are O(n) / O(n²) small
        out_f, in_f = weights[name].shape
        n, m = max(out_f, in_f), min(out_f, in_f)
        kept = filter_eigenvalues(eigs, eigenvalue_threshold)
        rows.append(
            dict(
                module=name,
                out_features=int(out_f),
                in_features=int(in_f),
                n_eigs=int(kept.numel()),
                lambda_max=float(eigs.max()),
                mp_edge=mp_edge(eigs, n, m, tracy_widom),
                alpha_hill=hill_alpha(kept, hill_method),
                spikes=count_spikes(eigs, n, m, tracy_widom),
            )
        )
    return pd.DataFrame(
        rows,
        columns=["module", "out_features", "in_features", "n_eigs", "lambda_max", "mp_edge", "alpha_hill", "spikes"],
    )
