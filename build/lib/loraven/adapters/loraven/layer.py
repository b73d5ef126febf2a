"""DynamicLowRankLayer (LoRAven paper §3.1, §4.1.1, §4.2): a drop-in ``nn.Linear`` with a dynamic rank.

W(t) ≈ U·diag(S)·Vᵀ with U (out × r_max), S (r_max,), V (in × r_max) created once, at r_max, as
``nn.Parameter``s; the active rank ``r`` is a python int and the forward uses the slices ``[:, :r]``.
Slicing (not masking with zeros) makes the cost follow the rank, and because the parameter objects
never change, rank changes keep trained values and the optimizer's (full-size) state.

Two modes:

- ``adapter``: y = W0·x + b + scaling·U_r·diag(S_r)·V_rᵀ·x with W0, b frozen. Initialised LoRA-style
  (U = 0, V with orthogonal columns at the scale of peft's ``lora_A`` init, S = 1) so step 0 equals the
  base model exactly and a rank increase never jumps the output (new columns have U = 0 until
  trained). ``scaling = alpha / r_max`` is constant so changing r does not rescale the surviving components.
- ``replace``: the dense weight itself is U_r·diag(S_r)·V_rᵀ, initialised from its truncated SVD
  (Theorem 2: ||W − U_r S_r V_rᵀ||_F ≤ σ_{r+1}·√(r* − r)); the bias is kept and trainable.

Why the parking buffers: AdamW keeps moving a column for a few steps after it leaves the active slice
(its momentum decays, decoupled weight decay shrinks it). When r shrinks, the leaving columns are copied
to a buffer and copied back when r grows again, so "decrease then increase" restores the trained values
exactly (optimizer state stays the same full-size tensors; only the momentum of parked columns decays).

No host sync in ``forward``: r is decided by the scheduler at its decision steps. NaN/Inf handling
(``nan_guard``) uses ``nan_to_num`` (→ 0, a neutral value; ±max would propagate inf): ``input`` cleans x
(replace mode's default: the layer is the whole computation, so its output is finite), ``bottleneck``
cleans the rank-r intermediate x·V_r only (adapter mode's default: it costs O(N·r) instead of O(N·in) —
a full pass over x cost ~20 % of a train step on CPU — and keeps the adapter branch finite while the
frozen W0·x path keeps base-model semantics, so an upstream NaN is not hidden).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from loraven.adapters.loraven import fusion
from loraven.adapters.loraven.gate import GateNetwork
from loraven.adapters.loraven.lowrank_fn import LowRankMatmul
from loraven.errors import ConfigError

MODES = ("adapter", "replace")
PATHS = ("factored", "three_matmul", "fused", "inplace")
NAN_GUARDS = ("input", "bottleneck", "off")


class DynamicLowRankLayer(nn.Module):
    """Low-rank (adapter or replacement) ``nn.Linear`` whose active rank changes without losing weights."""

    def __init__(
        self,
        base: nn.Linear,
        r_max: int,
        r_init: int | None = None,
        r_min: int = 1,
        mode: str = "adapter",
        alpha: float | None = None,
        dropout: float = 0.0,
        nan_guard: bool | str = "auto",
        gate_blocks: int = 0,
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"adapter.mode={mode!r}; valid choices: {', '.join(MODES)}")
        out_f, in_f = base.weight.shape
        limit = min(in_f, out_f)
        if not 1 <= r_max <= limit:
            raise ConfigError(f"adapter.r_max={r_max} does not fit a {out_f}x{in_f} layer; valid: 1..{limit}")
        if not 1 <= r_min <= r_max:
            raise ConfigError(f"adapter.r_min={r_min}; valid: 1..r_max={r_max}")
        self.in_features, self.out_features = in_f, out_f
        self.mode, self.r_max, self.r_min = mode, int(r_max), int(r_min)
        if nan_guard is True or nan_guard == "auto":
            nan_guard = "input" if mode == "replace" else "bottleneck"
        if nan_guard is False or nan_guard is None:
            nan_guard = "off"
        if nan_guard not in NAN_GUARDS:
            raise ConfigError(f"adapter.nan_guard={nan_guard!r}; valid: auto, {', '.join(NAN_GUARDS)}")
        if mode == "replace" and dropout > 0:
            raise ConfigError(
                f"adapter.dropout={dropout} with adapter.mode=replace; valid: 0.0 (dropout acts on "
                "the adapter input beside a frozen W0; replace mode has no separate adapter path)"
            )
        self.nan_guard, self.gradient_checkpointing = nan_guard, bool(gradient_checkpointing)
        self.path = "factored"
        self.merged = False
        w = base.weight.detach()
        if mode == "adapter":
            self.base_layer = base
            base.requires_grad_(False)
            factor_dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype  # as peft
            u = torch.zeros(out_f, r_max, device=w.device, dtype=factor_dtype)
            # orthonormal columns scaled to the column norm of peft's lora_A init (kaiming-uniform, a=√5:
            # per-element variance 1/(3·in) → column norm 1/√3), so the orthogonality penalty starts at 0
            v = torch.empty(in_f, r_max, device=w.device, dtype=factor_dtype)
            nn.init.orthogonal_(v)
            v.mul_(1.0 / math.sqrt(3.0))
            s = torch.ones(r_max, device=w.device, dtype=factor_dtype)
            self.scaling = float(alpha if alpha is not None else 2 * r_max) / r_max
            self.bias = None
        else:
            # the SVD runs in the layer's own precision (fp64 stays fp64); half types go through fp32
            svd_dtype = w.dtype if w.dtype in (torch.float32, torch.float64) else torch.float32
            uf, sf, vhf = torch.linalg.svd(w.to(svd_dtype), full_matrices=False)
            u, s, v = (t.to(w.dtype) for t in (uf[:, :r_max], sf[:r_max], vhf[:r_max].T))
            self.scaling = 1.0
            self.bias = nn.Parameter(base.bias.detach().clone()) if base.bias is not None else None
        self.U = nn.Parameter(u.contiguous())
        self.S = nn.Parameter(s.contiguous())
        self.V = nn.Parameter(v.contiguous())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.gate = GateNetwork(in_f, gate_blocks, r_max).to(w.device) if gate_blocks > 0 else None
        self.r = self.r_max if r_init is None else int(r_init)
        if not self.r_min <= self.r <= self.r_max:
            raise ConfigError(f"adapter.r_init={r_init}; valid: r_min={r_min}..r_max={r_max}")
        self._parked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._parked_hi = 0  # columns [r, _parked_hi) hold parked values
        self._fused_key: tuple | None = None
        self._fused_t: torch.Tensor | None = None
        self._out_buf: torch.Tensor | None = None
        # observation for the scheduler (set by the adapter on decision steps only; detached, on device)
        self.observe = False
        self.probe_rows = 64
        self.obs_mean: torch.Tensor | None = None
        self.obs_rms: torch.Tensor | None = None
        self.obs_rows: torch.Tensor | None = None
        self.obs_out_mean: torch.Tensor | None = None
        self.obs_tokens = 0

    # ------------------------------------------------------------------ nn.Linear compatibility
    @property
    def weight(self) -> torch.Tensor:
        """The frozen base weight (adapter) or the current dense weight U_r·diag(S_r)·V_rᵀ (replace)."""
        if self.mode == "adapter":
            return self.base_layer.weight
        return self.delta_weight()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, mode={self.mode}, "
            f"r={self.r}, r_max={self.r_max}, path={self.path}"
        )

    # ------------------------------------------------------------------ rank management
    def set_rank(self, r: int) -> None:
        """Change the active rank; trained columns are parked/restored, never re-created.

        A merged layer is unmerged at the old rank and merged again at the new one: W0 + ΔW_old would
        otherwise be unmerged with ΔW_new and leave W0 corrupted.
        """
        r = int(r)
        if not 1 <= r <= self.r_max:
            raise ConfigError(f"rank {r} out of range; valid: 1..{self.r_max}")
        old = self.r
        if r == old:
            return
        if self.merged:
            self.unmerge()
            self.set_rank(r)
            self.merge()
            return
        with torch.no_grad():
            if r < old:
                if self._parked is None:
                    self._parked = (self.U.detach().clone(), self.S.detach().clone(), self.V.detach().clone())
                pu, ps, pv = self._parked
                pu[:, r:old].copy_(self.U[:, r:old])
                ps[r:old].copy_(self.S[r:old])
                pv[:, r:old].copy_(self.V[:, r:old])
                self._parked_hi = max(self._parked_hi, old)
            elif self._parked is not None and self._parked_hi > old:
                hi = min(r, self._parked_hi)
                pu, ps, pv = self._parked
                self.U[:, old:hi].copy_(pu[:, old:hi])
                self.S[old:hi].copy_(ps[old:hi])
                self.V[:, old:hi].copy_(pv[:, old:hi])
                if hi >= self._parked_hi:
                    self._parked_hi = 0
        self.r = r
        self._fused_key = None

    def active_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        r = self.r
        return self.U[:, :r], self.S[:r], self.V[:, :r]

    def delta_weight(self) -> torch.Tensor:
        """scaling·U_r·diag(S_r)·V_rᵀ, shape (out, in)."""
        u, s, v = self.active_factors()
        return fusion.fuse_weight(u, s * self.scaling, v).T

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged and self.training and torch.is_grad_enabled():
            # a merged layer would train nothing (adapter: the base GEMM ignores U, S, V): unmerge, as
            # training resumes after an evaluation
            self.unmerge()
        if self.nan_guard == "input":
            x = torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
        if self.observe:
            self._record_input(x)
        if self.path in ("fused", "inplace") or self.merged:
            y = self._forward_fused(x)
        elif self.mode == "adapter":
            y = self.base_layer(x)
            y = y + self._low_rank(self.dropout(x)).to(y.dtype)
        else:
            y = self._low_rank(x)
            if self.bias is not None:
                y = y + self.bias
        if self.observe:
            self.obs_out_mean = y.detach().reshape(-1, y.shape[-1]).mean(0)
        return y

    def _low_rank(self, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._low_rank_impl, x, use_reentrant=False)
        return self._low_rank_impl(x)

    def _low_rank_impl(self, x: torch.Tensor) -> torch.Tensor:
        r = self.r
        u, s, v = self.U[:, :r], self.S[:r], self.V[:, :r]
        if x.dtype != v.dtype:
            x = x.to(v.dtype)
        if self.scaling != 1.0:
            s = s * self.scaling
        if self.path == "three_matmul":
            return fusion.three_matmul(x, u, s, v)
        if (
            self.gate is None
            and self.nan_guard != "bottleneck"
            and x.dtype == self.U.dtype
            and not torch.is_autocast_enabled(x.device.type)
            and not torch.compiler.is_compiling()
        ):
            y = LowRankMatmul.apply(x.reshape(-1, self.in_features), self.U, self.S, self.V, r, self.scaling)
            return y.reshape(*x.shape[:-1], self.out_features)
        z = torch.matmul(x, v)
        if self.nan_guard == "bottleneck":
            z = torch.nan_to_num(z, nan=0.0, posinf=0.0, neginf=0.0)
        z = z * s
        if self.gate is not None:
            z = z * self.gate(x, r)
        return F.linear(z, u)

    def _record_input(self, x: torch.Tensor) -> None:
        """Detached on-device statistics for the scorer/scheduler (decision steps only; no sync)."""
        flat = x.detach().reshape(-1, x.shape[-1])
        self.obs_tokens = flat.shape[0]
        self.obs_mean = flat.mean(0)
        self.obs_rms = flat.float().pow(2).mean().sqrt()
        step = max(1, flat.shape[0] // self.probe_rows)
        self.obs_rows = flat[::step][: self.probe_rows].clone()

    # ------------------------------------------------------------------ fusion (§3.1.1)
    def fused_weight_t(self) -> torch.Tensor:
        """Cached W_fusedᵀ (in × out); recomputed when the rank or any factor/base weight changed."""
        key = (
            self.r,
            self.U._version,
            self.S._version,
            self.V._version,
            self.merged,
            self.base_layer.weight._version if self.mode == "adapter" else 0,
        )
        if self._fused_key != key or self._fused_t is None:
            with torch.no_grad():
                if self.mode == "adapter":
                    w = self.base_layer.weight
                    self._fused_t = (
                        w.T.contiguous() if self.merged else (w.T + self.delta_weight().T.to(w.dtype)).contiguous()
                    )
                else:
                    u, s, v = self.active_factors()
                    self._fused_t = fusion.fuse_weight(u, s, v).contiguous()
            self._fused_key = key
        return self._fused_t

    def _bias(self) -> torch.Tensor | None:
        return self.base_layer.bias if self.mode == "adapter" else self.bias

    def _forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "adapter" and self.merged and self.path == "factored":
            return self.base_layer(x)
        if self.gate is not None:
            raise ConfigError("the fused/inplace paths cannot apply the per-token gate; use path='factored'")
        if torch.is_grad_enabled() and any(p.requires_grad for p in (self.U, self.S, self.V)):
            raise RuntimeError("fused/inplace paths are inference-only (the cached weight has no autograd)")
        wt = self.fused_weight_t()
        xf = x.reshape(-1, self.in_features).to(wt.dtype)
        if self.path == "inplace":
            if (
                self._out_buf is None
                or self._out_buf.shape != (xf.shape[0], self.out_features)
                or self._out_buf.dtype != wt.dtype
                or self._out_buf.device != wt.device
            ):
                self._out_buf = torch.empty(xf.shape[0], self.out_features, dtype=wt.dtype, device=wt.device)
            y = fusion.fused_inplace(xf, wt, self._out_buf)
            b = self._bias()
            if b is not None:
                y.add_(b)
        else:
            y = fusion.fused(xf, wt)
            b = self._bias()
            if b is not None:
                y = y + b
        return y.reshape(*x.shape[:-1], self.out_features)

    def set_path(self, path: str) -> None:
        """``factored`` (training), ``three_matmul`` (paper's original), ``fused`` / ``inplace`` (inference).

        ``inplace`` returns a reused buffer: the caller must consume it before the next call.
        """
        if path not in PATHS:
            raise ConfigError(f"path={path!r}; valid choices: {', '.join(PATHS)}")
        self.path = path

    # ------------------------------------------------------------------ merge (as peft)
    @torch.no_grad()
    def merge(self) -> None:
        """Adapter: W0 ← W0 + ΔW (one GEMM per forward). Replace: switch to the cached dense weight."""
        if self.merged:
            return
        if self.mode == "adapter":
            w = self.base_layer.weight
            w.add_(self.delta_weight().to(w.dtype))
        self.merged = True
        self._fused_key = None

    @torch.no_grad()
    def unmerge(self) -> None:
        """Inverse of :meth:`merge` (adapter: W0 ← W0 − ΔW; exact up to one rounding per element, as peft)."""
        if not self.merged:
            return
        if self.mode == "adapter":
            w = self.base_layer.weight
            w.sub_(self.delta_weight().to(w.dtype))
        self.merged = False
        self._fused_key = None

    # ------------------------------------------------------------------ stability (§4.2.1)
    def regularization_loss(self, l2: float = 0.0, orthogonality: float = 0.0) -> torch.Tensor:
        """l2·(||U_r||² + ||V_r||²) + orthogonality·(||offdiag(U_rᵀU_r)||² + ||offdiag(V_rᵀV_r)||²).

        Only off-diagonal terms: S carries the magnitudes, so columns need to be orthogonal, not unit;
        this is zero at both inits (U = 0 in adapter mode, SVD factors in replace mode).
        """
        u, _, v = self.active_factors()
        loss = u.new_zeros(())
        if l2:
            loss = loss + l2 * (u.pow(2).sum() + v.pow(2).sum())
        if orthogonality:
            for m in (u, v):
                g = m.T @ m
                loss = loss + orthogonality * (g - torch.diag(torch.diagonal(g))).pow(2).sum()
        return loss
