"""Inference benchmark: forward latency of each adapter unmerged vs merged, as a ratio to the base model.

Merged means the method's own inference path: peft ``merge_and_unload()`` (W0 + ΔW folded, plain
nn.Linear again) for LoRA, DoRA and LoRA-AR; ``prepare_for_inference()`` for LoRAven (adapter mode
merges ΔW into W0; replace mode evaluates the dense U_r·diag(S_r)·V_rᵀ). ``python run.py`` evaluates every
method merged (``adapter.eval_path`` in result.json; see loraven.adapters.base.AdaptedModel), so the
"merged" column is what it evaluates with and what a deployment would run.
Every variant is timed round-robin in one process on the same batch under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from loraven.bench.methods import apply_method, bench_methods, build_base, check_methods, token_batch
from loraven.bench.timing import dtype_name, round_robin
from loraven.provenance import device_name


def adapter_methods() -> list[str]:
    """Every registered method with something to merge (the dense baseline has none), static schedulers."""
    return [name for name, (spec, sched) in bench_methods().items() if not spec.baseline and sched == "static"]


def merged_copy(adapted) -> nn.Module:
    """A merged deep copy of an adapted model (the unmerged one stays as it is)."""
    clone = copy.deepcopy(adapted)
    if hasattr(clone.model, "merge_and_unload"):  # a peft model
        return clone.model.merge_and_unload()
    clone.prepare_for_inference()
    return clone.model


def run_inference(
    methods: Sequence[str] | None = None,
    *,
    model: str = "smollm2",
    layers: int | None = None,
    batch_size: int = 16,
    seq_len: int = 64,
    rank: int = 16,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    threads: int | None = None,
    rank_mode: str = "uniform",
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows (method, variant ∈ base|unmerged|merged, ms, p10, p90, vs_base, max_abs_diff merged−unmerged)."""
    device = device or torch.device("cpu")
    methods = list(methods or adapter_methods())
    check_methods(methods)
    base, model_name = build_base(model, layers, device, dtype, seed)
    batch = token_batch(base.config.vocab_size, batch_size, seq_len, device, seed)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    models: dict[tuple[str, str], nn.Module] = {("base", "base"): base}
    for method in methods:
        adapted = apply_method(base, method, rank, device, seed, rank_mode)
        _perturb_adapter(adapted.model, seed)
        models[(method, "unmerged")] = adapted.model.eval()
        models[(method, "merged")] = merged_copy(adapted).eval()

    def forward(m: nn.Module) -> Callable[[], torch.Tensor]:
        return lambda: m(**inputs).logits

    fns = {f"{m}/{v}": forward(net) for (m, v), net in models.items()}
    if log:
        log(f"inference: {', '.join(fns)} on {model_name}, batch {batch_size}x{seq_len}, r={rank}")
    with torch.inference_mode():
        timings = round_robin(fns, repeats=repeats, warmup=warmup, device=device)
        outputs = {key: fn() for key, fn in fns.items()}
    base_ms = timings["base/base"].median
    common = {
        "model": model_name,
        "rank": rank,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "device": device_name(device),
        "dtype": dtype_name(dtype),
        "threads": threads or torch.get_num_threads(),
    }
    rows = []
    for key, timing in timings.items():
        method, variant = key.split("/")
        row = {"method": method, "variant": variant, **common, **timing.as_row(), "vs_base": timing.median / base_ms}
        if variant == "merged":
            row["max_abs_diff"] = float((outputs[key] - outputs[f"{method}/unmerged"]).abs().max())
        rows.append(row)
    return rows


@torch.no_grad()
def _perturb_adapter(model: nn.Module, seed: int) -> None:
    """Give zero-initialised adapter factors small random values, so merging has something to fold and
    merged-vs-unmerged agreement is a real check (times do not depend on the values)."""
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.requires_grad and p.ndim == 2 and float(p.abs().max()) == 0.0:
            p.copy_((torch.randn(p.shape, generator=gen) * 1e-3).to(p))
