"""Matrix fusion (LoRAven paper §3.1.1): the compute paths for y = x·(U·diag(S)·Vᵀ)ᵀ.

Shapes: ``x`` (..., in), ``U`` (out, r), ``S`` (r,), ``V`` (in, r); the weight is W = U·diag(S)·Vᵀ (out × in).

- ``three_matmul``: the paper's "original" — x·V, then ·Sᵀ as an r×r matrix, then ·Uᵀ (three GEMMs).
- ``factored``: the same algebra with diag(S) applied as a broadcast scale (two GEMMs): what a layer
  should do when training, because its cost follows the rank r.
- ``fuse_weight`` + ``fused``: precompute W_fusedᵀ = V·diag(S)·Uᵀ (in × out) once, then one GEMM.
  It only pays when the fused weight is reused (inference) and when launch overhead dominates FLOPs:
  one GEMM costs b·in·out versus b·r·(in+out) for the factored path, so for r < in·out/(in+out) the
  factored path does fewer FLOPs. The paper's O(3bmr) → O(bmr + r²m + r²n) claim ignores this.
- ``fused_inplace``: the paper's "in-place" variant, interpreted as the fused GEMM written into a
  preallocated output buffer (``out=``), so the steady state allocates nothing.
"""

from __future__ import annotations

import torch


def three_matmul(x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Paper's original: three sequential matmuls with S as an (r × r) diagonal matrix."""
    return torch.matmul(torch.matmul(torch.matmul(x, V), torch.diag(S).T), U.T)


def factored(x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """Two GEMMs and a broadcast scale; cost O(b·r·(in+out))."""
    return torch.matmul(torch.matmul(x, V) * S, U.T)


def fuse_weight(U: torch.Tensor, S: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """W_fusedᵀ = V·diag(S)·Uᵀ, shape (in, out); cost O(in·out·r), paid once per factor/rank change."""
    return torch.matmul(V * S, U.T)


def fused(x: torch.Tensor, w_fused_t: torch.Tensor) -> torch.Tensor:
    """One GEMM with the precomputed fused weight."""
    return torch.matmul(x, w_fused_t)


def fused_inplace(x: torch.Tensor, w_fused_t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """One GEMM into a preallocated buffer (no allocation in the steady state)."""
    return torch.matmul(x, w_fused_t, out=out)


def factored_flops(batch: int, in_features: int, out_features: int, rank: int) -> int:
    """Multiply-adds ×2 of the factored path (used by estimators and the crossover analysis)."""
    return 2 * batch * rank * (in_features + out_features) + batch * rank


def fused_flops(batch: int, in_features: int, out_features: int) -> int:
    return 2 * batch * in_features * out_features
