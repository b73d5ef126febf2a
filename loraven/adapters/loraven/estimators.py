"""Performance estimators (LoRAven paper §4.1.3): FLOPs, bytes, latency and memory of one layer at rank r.

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
        return Workload(self.tokens, self.in_features, self.out_features, rank, self.bytes_per_element,
                        self.training)


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

    peak_flops: float = 1.0e11        # FLOP/s; ~2 AVX2 cores. An H100 is ~5e14 (bf16 dense)
    bandwidth: float = 2.0e10         # B/s; DDR4 dual channel. An H100 is ~3.3e12 (HBM3)
    launch_overhead_s: float = 5e-6   # per kernel; CUDA launches are ~5 µs
    eta_parallel: float = 1.0         # achieved fraction of peak (1 = ideal)

    def seconds(self, w: Workload) -> float:
        kernels = 6 if w.training else 2
        compute = flops(w) / (self.peak_flops * max(self.eta_parallel, 1e-9))
        return max(compute, bytes_moved(w) / self.bandwidth) + kernels * self.launch_overhead_s


@dataclass
class MemoryEstimator:
    """Bytes held: parameters (allocated at r_max, active at r), optimizer state and saved activations."""

    optimizer_states: int = 2  # AdamW keeps exp_avg and exp_avg_sq

    def report(self, w: Workload, r_max: int) -> dict[str, float]:
        per = w.bytes_per_element
        active = w.rank * (w.in_features + w.out_features + 1) * per
        allocated = r_max * (w.in_features + w.out_features + 1) * per
        saved = w.tokens * (w.in_features + w.rank) * per if w.training else 0
        return {"active_param_bytes": active, "allocated_param_bytes": allocated,
                "optimizer_bytes": self.optimizer_states * allocated, "activation_bytes": saved}
