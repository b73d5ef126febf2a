"""Performance estimators (LoRAven paper §4.1.3): FLOPs, bytes and latency of one layer at rank r.

(The paper's memory estimator is left out: nothing decides from it, and the factors are allocated at r_max
whatever the active rank, so active-rank memory would not change any decision.)

They model the *low-rank path* (x·V_r, ·S_r, ·U_rᵀ) that the scheduler controls; in adapter mode the
frozen base GEMM costs the same at every rank, so it is left out of E(r, x) (it would only shift the
budget by a constant). Training steps cost ≈3× a forward (forward + two backward GEMMs per forward GEMM).
"""

from __future__ import annotations

from dataclasses import dataclass

from loraven.adapters.loraven import fusion


@dataclass(frozen=True)
class Workload:
    """One layer invocation: ``tokens`` rows through an ``in_features → out_features`` path at ``rank``."""

    tokens: int
    in_features: int
    out_features: int
    rank: int
    bytes_per_element: int = 4
    training: bool = True

    def at_rank(self, rank: int) -> Workload:
        return Workload(self.tokens, self.in_features, self.out_features, rank, self.bytes_per_element, self.training)


def flops(w: Workload) -> float:
    f = fusion.factored_flops(w.tokens, w.in_features, w.out_features, w.rank)
    return float(3 * f if w.training else f)


def bytes_moved(w: Workload) -> float:
    """Factor reads plus activation traffic (x read, z written+read, y written); ×3 when training."""
    params = w.rank * (w.in_features + w.out_features + 1)
    acts = w.tokens * (w.in_features + w.out_features + 2 * w.rank)
    b = float((params + acts) * w.bytes_per_element)
    return 3 * b if w.training else b


@dataclass
class LatencyEstimator:
    """Roofline time: max(compute, memory) + a fixed launch overhead per GEMM."""

    peak_flops: float = 1.0e11  # FLOP/s; ~2 AVX2 cores. An H100 is ~5e14 (bf16 dense)
    bandwidth: float = 2.0e10  # B/s; DDR4 dual channel. An H100 is ~3.3e12 (HBM3)
    launch_overhead_s: float = 5e-6  # per kernel; CUDA launches are ~5 µs
    eta_parallel: float = 1.0  # achieved fraction of peak (1 = ideal)

    def seconds(self, w: Workload) -> float:
        kernels = 6 if w.training else 2
        compute = flops(w) / (self.peak_flops * max(self.eta_parallel, 1e-9))
        return max(compute, bytes_moved(w) / self.bandwidth) + kernels * self.launch_overhead_s
