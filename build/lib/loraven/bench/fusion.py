"""Fusion microbenchmark (LoRAven paper §3.1.1, Table 5.1): y = x·(U·diag(S)·Vᵀ)ᵀ computed six ways.

Variants (kernels imported from :mod:`loraven.adapters.loraven.fusion`, the ones the layer runs):

- ``original``: the paper's "traditional" code, three GEMMs with S stored as an r×r matrix
  (``x@V``, ``@Sᵀ``, ``@Uᵀ``). The paper's S is a matrix parameter, so the r×r matrix is built once
  here, not per call (``fusion.three_matmul`` rebuilds ``diag(S)`` each call; the tests check both agree).
- ``factored``: two GEMMs and a broadcast scale (what a training layer should run).
- ``fused``: one GEMM with W_fused precomputed *outside* the timed region (the paper's Table 5.1 number).
- ``fused_precompute``: ``fuse_weight`` + the GEMM in the timed region: the cost whenever the factors
  change (every training step), which the paper's table leaves out.
- ``inplace``: the fused GEMM into a preallocated output (``out=``), the paper's "in-place" column.
- ``dense``: ``nn.Linear(dim, dim, bias=False)`` with the same weight: the floor a fused GEMM can reach.

The paper gives batch×dim but no rank; we sweep r from 8 to dim/2, with square weights (in = out = dim).
FLOPs: fused/dense 2·b·in·out, factored 2·b·r·(in+out) (+ 2·b·r² for the original's r×r GEMM), so the
factored path needs fewer FLOPs for every r < in·out/(in+out) = dim/2: fusion can only win by saving
kernel launches and passes over memory, which matters at small shapes and stops paying at large ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from loraven.adapters.loraven import fusion
from loraven.bench.timing import dtype_name, round_robin
from loraven.errors import ConfigError

VARIANTS = ("original", "factored", "fused", "fused_precompute", "inplace", "dense")
PAPER_SHAPES = ("32x512", "64x1024", "128x2048")
DEFAULT_SHAPES = (*PAPER_SHAPES, "256x4096", "1024x1024", "4096x1024", "1024x4096", "4096x4096")
CPU_MAX_GFLOP = 10.0  # default cap on CPU: one dense GEMM of at most this many GFLOP (~0.2 s on 2 cores)


def parse_shape(shape: str) -> tuple[int, int]:
    """``"128x2048"`` → (batch 128, dim 2048)."""
    parts = re.split(r"[x×*]", str(shape).strip())
    try:
        batch, dim = (int(p) for p in parts)
    except ValueError as err:
        raise ConfigError(f"bench shape {shape!r}; valid: BATCHxDIM such as 128x2048") from err
    if batch < 1 or dim < 1:
        raise ConfigError(f"bench shape {shape!r}; batch and dim must be >= 1")
    return batch, dim


def ranks_for(dim: int, ranks: str | Sequence[int] | None) -> list[int]:
    """Explicit ranks (those ≤ dim kept), or ``auto``: powers of two from 8 to dim/2 (at least one)."""
    if ranks in (None, "auto"):
        out, r = [], 8
        while r <= max(dim // 2, 1):
            out.append(r)
            r *= 2
        return out or [max(1, dim // 2)]
    if isinstance(ranks, str):
        ranks = [int(r) for r in ranks.split(",") if r.strip()]
    bad = [r for r in ranks if int(r) < 1]
    if bad:
        raise ConfigError(f"bench.ranks={list(ranks)}; valid: auto or integers >= 1")
    return [int(r) for r in ranks if int(r) <= dim]


def variant_flops(variant: str, batch: int, dim: int, rank: int) -> int:
    fused = fusion.fused_flops(batch, dim, dim)
    factored = fusion.factored_flops(batch, dim, dim, rank)
    return {
        "original": factored + 2 * batch * rank * rank,
        "factored": factored,
        "fused": fused,
        "inplace": fused,
        "dense": fused,
        "fused_precompute": fused + 2 * dim * dim * rank,
    }[variant]


@dataclass
class FusionCase:
    x: torch.Tensor
    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor
    S_matrix: torch.Tensor
    w_fused_t: torch.Tensor
    out: torch.Tensor
    dense: nn.Linear


def make_case(batch: int, dim: int, rank: int, device: torch.device, dtype: torch.dtype, seed: int = 0) -> FusionCase:
    """Random factors scaled so outputs stay O(1) (comparable across variants in any dtype)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=gen)
    U = torch.randn(dim, rank, generator=gen) / rank**0.5
    V = torch.randn(dim, rank, generator=gen) / dim**0.5
    S = torch.rand(rank, generator=gen) + 0.5
    x, U, S, V = (t.to(device=device, dtype=dtype) for t in (x, U, S, V))
    w = fusion.fuse_weight(U, S, V)
    dense = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype).requires_grad_(False)
    dense.weight.copy_(w.T)
    return FusionCase(x, U, S, V, torch.diag(S), w, torch.empty(batch, dim, device=device, dtype=dtype), dense)


def variants(case: FusionCase, names: Iterable[str] = VARIANTS) -> dict[str, Callable[[], torch.Tensor]]:
    c = case
    table: dict[str, Callable[[], torch.Tensor]] = {
        "original": lambda: torch.matmul(torch.matmul(torch.matmul(c.x, c.V), c.S_matrix.T), c.U.T),
        "factored": lambda: fusion.factored(c.x, c.U, c.S, c.V),
        "fused": lambda: fusion.fused(c.x, c.w_fused_t),
        "fused_precompute": lambda: fusion.fused(c.x, fusion.fuse_weight(c.U, c.S, c.V)),
        "inplace": lambda: fusion.fused_inplace(c.x, c.w_fused_t, c.out),
        "dense": lambda: c.dense(c.x),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ConfigError(f"bench.variants has {unknown}; valid choices: {', '.join(VARIANTS)}")
    return {n: table[n] for n in names}


def max_gflop_for(value: float | str | None, device: torch.device) -> float | None:
    if value in (None, "none", "null"):
        return None
    if value == "auto":
        return CPU_MAX_GFLOP if device.type == "cpu" else None
    return float(value)


def run_fusion(
    shapes: Sequence[str] = PAPER_SHAPES,
    ranks: str | Sequence[int] | None = "auto",
    *,
    repeats: int = 20,
    warmup: int = 3,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    variant_names: Sequence[str] = VARIANTS,
    max_gflop: float | str | None = "auto",
    min_sample_ms: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One ``bench`` row per (shape, rank, variant): median ms of ``repeats`` interleaved samples + p10/p90.

    Shapes whose dense GEMM exceeds ``max_gflop`` GFLOP are skipped (``auto``: 10 on CPU, no cap on GPU)
    and reported through ``log``; ranks above dim are dropped.
    """
    device = device or torch.device("cpu")
    threads = threads or torch.get_num_threads()
    cap = max_gflop_for(max_gflop, device)
    rows: list[dict[str, Any]] = []
    for shape in shapes:
        batch, dim = parse_shape(shape)
        gflop = fusion.fused_flops(batch, dim, dim) / 1e9
        if cap is not None and gflop > cap:
            if log:
                log(f"skip {shape}: dense GEMM {gflop:.1f} GFLOP > bench.max_gflop={cap:g}")
            continue
        for rank in ranks_for(dim, ranks):
            case = make_case(batch, dim, rank, device, dtype)
            with torch.inference_mode():
                timings = round_robin(
                    variants(case, variant_names),
                    repeats=repeats,
                    warmup=warmup,
                    device=device,
                    min_sample_ms=min_sample_ms,
                )
            for name, timing in timings.items():
                rows.append(
                    {
                        "shape": f"{batch}x{dim}",
                        "batch": batch,
                        "dim": dim,
                        "rank": rank,
                        "variant": name,
                        **timing.as_row(),
                        "device": _device_label(device),
                        "dtype": dtype_name(dtype),
                        "threads": threads,
                        "flops": variant_flops(name, batch, dim, rank),
                    }
                )
            if log:
                log(f"{batch}x{dim} r={rank}: " + ", ".join(f"{k} {t.median:.3g} ms" for k, t in timings.items()))
            del case
    return rows


def _device_label(device: torch.device) -> str:
    from loraven.provenance import device_name

    return device_name(device)


def speedup_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (shape, rank): ms per variant plus original/fused, original/inplace, factored/fused ratios."""
    grouped: dict[tuple[str, int], dict[str, float]] = {}
    for row in rows:
        grouped.setdefault((row["shape"], row["rank"]), {})[row["variant"]] = row["ms"]
    out = []
    for (shape, rank), ms in grouped.items():
        entry: dict[str, Any] = {"shape": shape, "rank": rank, **ms}

        def ratio(a: str, b: str, ms: dict[str, float] = ms) -> float | None:
            return ms[a] / ms[b] if a in ms and b in ms and ms[b] > 0 else None

        entry["fusion_speedup"] = ratio("original", "fused")
        entry["inplace_speedup"] = ratio("original", "inplace")
        entry["fused_vs_factored"] = ratio("factored", "fused")
        out.append(entry)
    return out


def crossover(rows: Sequence[dict[str, Any]]) -> dict[str, int | None]:
    """Per shape, the smallest swept rank from which ``fused`` beats ``factored`` (None: never in the sweep).

    Below that rank the factored path's b·r·(in+out) FLOPs beat the fused b·in·out GEMM.
    """
    out: dict[str, int | None] = {}
    for entry in sorted(speedup_rows(rows), key=lambda e: (e["shape"], e["rank"])):
        out.setdefault(entry["shape"], None)
        ratio = entry["fused_vs_factored"]
        if ratio is not None and ratio > 1 and out[entry["shape"]] is None:
            out[entry["shape"]] = entry["rank"]
    return out
