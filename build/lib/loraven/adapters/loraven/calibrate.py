"""Calibrate the energy model (:meth:`EnergyModel.fit`) on a short grid of ranks; write what the scheduler reads.

    python -m loraven.adapters.loraven.calibrate --out calibration.json [--watts 15] [--device cpu]
    python run.py adapter=loraven scheduler=energy scheduler.energy_model.calibration=calibration.json

Why: the analytic constants (Horowitz 2014, 45 nm) are a prediction for no machine in particular; the
energy scheduler turns them into ranks, so their *relative* size (compute vs memory vs static) decides
which layers lose rank. A calibration fits the three term multipliers to joules of real layer steps.

What is measured: a replace-mode :class:`DynamicLowRankLayer` runs forward + backward (a training step of
the low-rank path, what :class:`Workload` with ``training=True`` models) over a grid of shapes × tokens ×
ranks. The joules of each cell are ``source``-labelled in the file:

- ``nvml`` (CUDA with pynvml): measured, the GPU's energy counter over the repeats;
- ``wall_time``: *estimated*, the median wall time × ``--watts`` (the power attributed to the work; a CPU
  has no per-process energy counter). The fit then calibrates time, which is what static energy is.

The fit uses even grid cells; odd cells are held out, and the file reports the mean absolute percentage
error of the calibrated (and of the uncalibrated) prediction on both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from loraven.adapters.loraven.energy_model import EnergyModel
from loraven.adapters.loraven.estimators import Workload
from loraven.adapters.loraven.layer import DynamicLowRankLayer

GRID_SHAPES = ((256, 256), (512, 256), (512, 512))
GRID_TOKENS = (64, 256)
GRID_RANKS = (4, 16, 64, 128)


def _nvml_joules(device: torch.device):
    """A callable returning the GPU's cumulative energy in joules, or None where NVML cannot say."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:  # noqa: BLE001  (no NVML, or a GPU without the counter)
        return None
    return lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0


def measure_grid(device: torch.device, watts: float, repeats: int = 5, seed: int = 0) -> tuple[list[dict], str]:
    """One row per (out, in, tokens, rank): joules of one forward + backward, and the source label."""
    torch.manual_seed(seed)
    nvml = _nvml_joules(device)
    source = "nvml" if nvml else "wall_time"
    rows = []
    for out_f, in_f in GRID_SHAPES:
        layer = DynamicLowRankLayer(nn.Linear(in_f, out_f), r_max=min(out_f, in_f, max(GRID_RANKS)), mode="replace").to(
            device
        )
        for tokens in GRID_TOKENS:
            x = torch.randn(tokens, in_f, device=device)
            for rank in GRID_RANKS:
                if rank > layer.r_max:
                    continue
                layer.set_rank(rank)
                seconds, joules = [], []
                for i in range(repeats + 1):  # the first run warms up
                    layer.zero_grad(set_to_none=True)
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    e0, t0 = (nvml() if nvml else 0.0), time.perf_counter()
                    layer(x).sum().backward()
                    if device.type == "cuda":
                        torch.cuda.synchronize(device)
                    if i:
                        seconds.append(time.perf_counter() - t0)
                        joules.append(nvml() - e0 if nvml else 0.0)
                sec = statistics.median(seconds)
                j = statistics.median(joules) if nvml else sec * watts
                rows.append(
                    {
                        "out_features": out_f,
                        "in_features": in_f,
                        "tokens": tokens,
                        "rank": rank,
                        "seconds": sec,
                        "joules": j,
                    }
                )
    return rows, source


def _mape(model: EnergyModel, rows: list[dict], workloads: list[Workload]) -> float:
    errs = [abs(model.energy(w) - r["joules"]) / r["joules"] for r, w in zip(rows, workloads, strict=True)]
    return 100.0 * sum(errs) / max(len(errs), 1)


def calibrate(rows: list[dict[str, Any]], source: str, energy_cfg: dict[str, Any] | None = None) -> dict[str, Any]:
    """Fit on even rows, evaluate on all; returns what :func:`write` stores (scale, errors, grid)."""
    workloads = [Workload(r["tokens"], r["in_features"], r["out_features"], r["rank"]) for r in rows]
    fit_idx = list(range(0, len(rows), 2))
    held_idx = list(range(1, len(rows), 2))
    uncalibrated = EnergyModel.from_config(energy_cfg)
    model = EnergyModel.from_config(energy_cfg)
    info = model.fit([rows[i]["joules"] for i in fit_idx], [workloads[i] for i in fit_idx])

    def sub(idx):
        return [rows[i] for i in idx], [workloads[i] for i in idx]

    return {
        "source": source,
        "source_note": {
            "nvml": "measured (NVML energy counter)",
            "wall_time": "estimated (measured wall time x assumed watts)",
        }[source],
        "scale": list(model.scale),
        "r2_fit": info["r2"],
        "mape_fit_pct": _mape(model, *sub(fit_idx)),
        "mape_heldout_pct": _mape(model, *sub(held_idx)),
        "mape_uncalibrated_pct": _mape(uncalibrated, rows, workloads),
        "latency": asdict(model.latency),
        "grid": rows,
    }


def write(result: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="calibration.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--watts", type=float, default=15.0, help="power attributed to the work (wall_time source)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    rows, source = measure_grid(torch.device(args.device), args.watts, args.repeats)
    result = calibrate(rows, source)
    write(result, args.out)
    print(
        f"{args.out}: source={result['source_note']}, scale={[f'{s:.3g}' for s in result['scale']]}, "
        f"MAPE fit {result['mape_fit_pct']:.1f} %, held-out {result['mape_heldout_pct']:.1f} %, "
        f"uncalibrated {result['mape_uncalibrated_pct']:.1f} %"
    )
    return result


if __name__ == "__main__":
    main()
