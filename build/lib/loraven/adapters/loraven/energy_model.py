"""Energy model (LoRAven paper §3.3.1): E = E_compute + E_memory + E_static for one layer invocation.

- E_compute = FLOPs · E_flop · η_parallel · f_DVFS
- E_memory  = Σ_levels bytes · E_level · miss_rate_to_level  (on-chip SRAM always, DRAM on a miss)
- E_static  = P_idle · t_exec  (t_exec from the roofline :class:`LatencyEstimator`)

Default constants are Horowitz, "Computing's energy problem", ISSCC 2014 (45 nm): fp32 FMA ≈ 3.7 + 0.9 pJ
per 2 FLOPs → 2.3 pJ/FLOP; 32 KB SRAM read ≈ 20 pJ / 64 bit → 2.5 pJ/B; DRAM ≈ 1.3–2.6 nJ / 64 bit →
162.5 pJ/B (the low end). These are a *prediction*, not a measurement: :meth:`EnergyModel.fit` calibrates
the three terms against measured joules (codecarbon / NVML) by non-negative least squares; ``python -m
loraven.adapters.loraven.calibrate`` runs it on a grid of ranks and writes the file that
``scheduler.energy_model.calibration`` points at (the multipliers are then used by every prediction).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from loraven.adapters.loraven.estimators import LatencyEstimator, Workload, bytes_moved, flops
from loraven.errors import ConfigError


@dataclass
class EnergyModel:
    e_flop: float = 2.3e-12  # J/FLOP, fp32 (Horowitz 2014); bf16 ≈ 0.75e-12
    e_byte_cache: float = 2.5e-12  # J/B, on-chip SRAM (32 KB)
    e_byte_dram: float = 162.5e-12  # J/B, off-chip DRAM
    miss_rate: float = 0.1  # fraction of accesses that reach DRAM
    eta_parallel: float = 1.0  # parallel-efficiency factor on compute energy
    f_dvfs: float = 1.0  # DVFS scaling of energy per op (1 = nominal voltage/frequency)
    p_idle: float = 10.0  # W, idle/static power attributed to this work
    latency: LatencyEstimator = field(default_factory=LatencyEstimator)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # calibrated multipliers (compute, memory, static)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> EnergyModel:
        cfg = dict(cfg or {})
        calibration = cfg.pop("calibration", None)
        lat_keys = {f.name for f in fields(LatencyEstimator)}
        own = {f.name for f in fields(cls)} - {"latency", "scale"}
        bad = set(cfg) - lat_keys - own
        if bad:
            raise ConfigError(
                f"unknown scheduler.energy_model keys {sorted(bad)}; valid: {sorted(own | lat_keys | {'calibration'})}"
            )
        lat = LatencyEstimator(**{k: float(v) for k, v in cfg.items() if k in lat_keys})
        model = cls(latency=lat, **{k: float(v) for k, v in cfg.items() if k in own})
        if calibration:
            model.scale = load_scale(calibration)
        return model

    def terms(self, w: Workload) -> tuple[float, float, float]:
        """(E_compute, E_memory, E_static) in joules, before calibration."""
        compute = flops(w) * self.e_flop * self.eta_parallel * self.f_dvfs
        memory = bytes_moved(w) * (self.e_byte_cache + self.e_byte_dram * self.miss_rate)
        static = self.p_idle * self.latency.seconds(w)
        return compute, memory, static

    def energy(self, w: Workload) -> float:
        """Predicted joules of one invocation."""
        return float(sum(s * t for s, t in zip(self.scale, self.terms(w), strict=True)))

    def largest_feasible_rank(self, w: Workload, budget: float, candidates: Sequence[int]) -> int | None:
        """argmax{r ∈ candidates : E(r, x) ≤ budget}, or None if even the smallest does not fit."""
        ok = [r for r in candidates if self.energy(w.at_rank(r)) <= budget]
        return max(ok) if ok else None

    def fit(
        self, measured_joules: Sequence[float], workloads: Sequence[Workload | Sequence[Workload]]
    ) -> dict[str, float]:
        """Calibrate the three term multipliers by non-negative least squares (scipy ``nnls``).

        ``workloads[i]`` is what was run while ``measured_joules[i]`` was measured (one Workload or a list
        of them, e.g. all layers of a step × steps). Returns the multipliers and the fit's R².
        """
        from scipy.optimize import nnls

        if len(measured_joules) != len(workloads) or len(workloads) < 3:
            raise ConfigError("fit needs >= 3 (measured_joules, workloads) pairs of equal length")
        rows = []
        for item in workloads:
            items = [item] if isinstance(item, Workload) else list(item)
            rows.append(np.sum([self.terms(w) for w in items], axis=0))
        a = np.asarray(rows, dtype=float)
        y = np.asarray(measured_joules, dtype=float)
        col = np.maximum(a.max(axis=0), 1e-30)  # column scaling for conditioning
        coef, _ = nnls(a / col, y)
        coef = coef / col
        pred = a @ coef
        ss_tot = float(((y - y.mean()) ** 2).sum()) or 1e-30
        r2 = 1.0 - float(((y - pred) ** 2).sum()) / ss_tot
        self.scale = (float(coef[0]), float(coef[1]), float(coef[2]))
        return {"scale_compute": self.scale[0], "scale_memory": self.scale[1], "scale_static": self.scale[2], "r2": r2}


def load_scale(path: str | Path) -> tuple[float, float, float]:
    """The (compute, memory, static) multipliers of a calibration file written by ``calibrate``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(
            f"scheduler.energy_model.calibration={str(path)!r} is not a file; valid: a JSON file "
            "written by python -m loraven.adapters.loraven.calibrate, or null"
        )
    scale = tuple(float(v) for v in json.loads(p.read_text())["scale"])
    if len(scale) != 3 or any(v < 0 or not math.isfinite(v) for v in scale):
        raise ConfigError(f"calibration file {path}: scale={scale!r}; valid: three finite numbers >= 0")
    return scale  # type: ignore[return-value]
