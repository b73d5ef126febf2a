"""Autograd for the factored path y = ((x·V_r)·s)·U_rᵀ that writes gradients straight into full-size buffers.

Slicing ``U[:, :r]`` under plain autograd costs, in backward, a zero-filled full-size tensor plus a copy of
the active block for every factor (~35 % of a 2048×2048 layer's step at half rank on CPU). Here the
active block's gradient is computed by ``torch.mm(..., out=grad[:, :r])`` (BLAS writes the strided block in
place) and only the inactive columns are zeroed, so the cost follows the rank. Used for same-dtype,
non-autocast calls (the replace-mode experiments); other cases use plain slicing (adapter ranks are tiny).
"""

from __future__ import annotations

import torch


class LowRankMatmul(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, V: torch.Tensor, r: int, scaling: float
    ) -> torch.Tensor:
        z = torch.mm(x, V[:, :r])
        s = S[:r] * scaling if scaling != 1.0 else S[:r]
        y = torch.mm(z * s, U[:, :r].T)
        ctx.save_for_backward(x, z, U, S, V)
        ctx.r, ctx.scaling = r, scaling
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, z, U, S, V = ctx.saved_tensors
        r, scaling = ctx.r, ctx.scaling
        u, v = U[:, :r], V[:, :r]
        s = S[:r] * scaling if scaling != 1.0 else S[:r]
        g_zs = torch.mm(gy, u)
        gx = gU = gS = gV = None
        if ctx.needs_input_grad[1]:
            gU = torch.empty_like(U)
            torch.mm(gy.T, z * s, out=gU[:, :r])
            gU[:, r:].zero_()
        if ctx.needs_input_grad[2]:
            gS = torch.zeros_like(S)
            gs = (g_zs * z).sum(0)
            gS[:r] = gs * scaling if scaling != 1.0 else gs
        g_z = g_zs * s
        if ctx.needs_input_grad[3]:
            gV = torch.empty_like(V)
            torch.mm(x.T, g_z, out=gV[:, :r])
            gV[:, r:].zero_()
        if ctx.needs_input_grad[0]:
            gx = torch.mm(g_z, v.T)
        return gx, gU, gS, gV, None, None
