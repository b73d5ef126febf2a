"""Hebbian-like factor update (LoRAven paper §3.4.2), optional and off by default.

The paper adds ``correlation[:, :r]`` (out × r: the first r *input* coordinates) to U and
``correlation.T[:, :r]`` (in × r: the first r *output* coordinates) to V — shape-compatible by accident and
meaningless for a factorisation. We project the correlation C = ȳ x̄ᵀ (out × in) onto the factor space
instead — the gradient of the Hebbian energy ȳᵀ U Vᵀ x̄:
ΔU_r = η·C·V_r = η·ȳ (V_rᵀ x̄)ᵀ (out × r), ΔV_r = η·Cᵀ·U_r = η·x̄ (U_rᵀ ȳ)ᵀ (in × r),
correct for any in ≠ out and computed without materialising C. Each step is clipped to
``max_rel`` × the factor's norm (Hebbian rules diverge without a bound).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def hebbian_update(
    U: torch.Tensor,
    V: torch.Tensor,
    r: int,
    x_mean: torch.Tensor,
    y_mean: torch.Tensor,
    lr: float,
    max_rel: float = 0.01,
) -> None:
    """In-place update of the active slices U[:, :r], V[:, :r] (parameters and optimizer state kept)."""
    u, v = U[:, :r], V[:, :r]
    x = x_mean.to(v.dtype)
    y = y_mean.to(u.dtype)
    du = lr * torch.outer(y, v.T @ x)
    dv = lr * torch.outer(x, u.T @ y)
    for m, d in ((u, du), (v, dv)):
        limit = max_rel * m.norm().clamp_min(1.0)
        m.add_(d * torch.clamp(limit / d.norm().clamp_min(1e-12), max=1.0))
