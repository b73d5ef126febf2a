"""Does a LoRAven layer's cost follow its active rank? (LoRAven issue goal: half rank ≤ 0.6× full rank.)

A replace-mode :class:`DynamicLowRankLayer` (dim × dim, factors preallocated at ``r_max``) runs forward +
backward on a (batch × dim) input at several active ranks, interleaved round-robin in one process; each row
carries its time and the ratio to the full-rank time. Slicing the factors (not masking with zeros) is what
makes the ratio fall with the rank; a dense ``nn.Linear`` of the same shape is timed beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from loraven.adapters.loraven.layer import DynamicLowRankLayer
from loraven.bench.timing import dtype_name, round_robin
from loraven.provenance import device_name


def _step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        module.zero_grad(set_to_none=True)
        module(x).sum().backward()

    return run


def run_rank_cost(
    *,
    dim: int = 2048,
    batch: int = 128,
    fractions: list[float] | None = None,
    repeats: int = 10,
    warmup: int = 2,
    device: torch.device,
    dtype: torch.dtype,
    threads: int,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    fractions = fractions or [1.0, 0.75, 0.5, 0.25]
    torch.manual_seed(0)
    base = nn.Linear(dim, dim).to(device=device, dtype=dtype)
    r_max = dim // 2
    layers = {}
    for f in fractions:
        layer = DynamicLowRankLayer(base, r_max=r_max, mode="replace").to(device)
        layer.set_rank(max(1, int(round(r_max * f))))
        layers[f"rank={layer.r}"] = layer
    x = torch.randn(batch, dim, device=device, dtype=dtype, requires_grad=False)
    fns = {name: _step(layer, x) for name, layer in layers.items()}
    fns["dense nn.Linear"] = _step(base, x)
    if log:
        log(f"rank_cost: {dim}x{dim}, batch {batch}, r_max {r_max}, ranks {list(layers)}")
    timings = round_robin(fns, repeats=repeats, warmup=warmup, device=device)
    full = timings[f"rank={r_max}"].median if f"rank={r_max}" in timings else None
    rows = []
    for name, timing in timings.items():
        rank = int(name.split("=")[1]) if name.startswith("rank=") else None
        rows.append(
            {
                "variant": name,
                "rank": rank,
                "r_max": r_max,
                "dim": dim,
                "batch": batch,
                "device": device_name(device),
                "dtype": dtype_name(dtype),
                "threads": threads,
                "ratio_to_full_rank": timing.median / full if full else None,
                **timing.as_row(),
            }
        )
    return rows
