"""Training-step benchmark: one optimizer step per method on the same base model, batch and rank.

A step is the training loop's own :class:`loraven.train.TrainStep` (forward + loss + regularisation under
autocast → backward → grad clip → AdamW → lr schedule → zero_grad → ``after_optimizer_step``), at a
constant lr. All methods live in one process and are stepped round-robin (method 1, 2, ..., 1, 2, ...), so
background load hits them alike and the ratios to full fine-tuning and to the reference method are side by side.

Memory (``peak_mb``), after the timed steps, in one extra untimed step per method:
on GPU ``torch.cuda.max_memory_allocated`` above what was allocated before the step; on CPU the torch
profiler's allocation events (``profile_memory=True``), summed in time order to the peak of live tensor
bytes during the step. Either is added to the method's resident bytes (parameters, buffers, optimizer
state), so ``peak_mb`` = what this method needs, independent of the other methods in the process.
(Process RSS cannot separate methods sharing a process, and tracemalloc does not see torch's allocator.)
The same profiled step gives the top ops by self CPU time (where adapter time goes).

LoRAven's dynamic schedulers decide every ``update_every`` (10) steps; with 1 warm-up + 3 timed steps no
decision step is timed, so ``loraven_linear`` measures its steady-state step (decisions are amortised).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from loraven.bench.methods import (
    apply_method,
    bench_methods,
    build_base,
    check_methods,
    optimizer_bytes,
    param_bytes,
    token_batch,
)
from loraven.bench.timing import dtype_name, round_robin
from loraven.provenance import device_name
from loraven.train import TrainStep


class _Stepper:
    """One method's model and the training loop's own :class:`~loraven.train.TrainStep` on a fixed batch
    (constant lr: a benchmark has no schedule to follow), callable with no arguments."""

    def __init__(
        self, adapted, batch: dict[str, torch.Tensor], lr: float, grad_clip: float | None, device: torch.device
    ) -> None:
        self.adapted = adapted
        self.batch = batch
        self.step_no = 0
        settings = {"lr": lr, "grad_clip": grad_clip, "lr_scheduler": "constant", "steps": 1, "precision": "auto"}
        self.take_step = TrainStep(adapted, settings, device)
        self.optimizer = self.take_step.optimizer
        adapted.model.train()

    def __call__(self) -> torch.Tensor:
        self.step_no += 1
        return self.take_step(self.batch, self.step_no)  # the default loss: next-token LM


def step_memory_and_profile(
    step: Callable[[], Any], device: torch.device, top: int = 10
) -> tuple[int, list[dict[str, Any]]]:
    """Peak bytes allocated during one step above the bytes live before it, and the top ops by self time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    with profile(activities=activities, profile_memory=device.type != "cuda") as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        events = sorted(
            (e.start_ns(), e.nbytes())
            for e in prof.profiler.kineto_results.events()
            if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU
        )
        peak = max(itertools.accumulate(n for _, n in events), default=0)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    averages = sorted(prof.key_averages(), key=lambda a: getattr(a, key, 0.0), reverse=True)
    total = sum(getattr(a, key, 0.0) for a in averages) or 1.0
    ops = [
        {"op": a.key, "self_ms": getattr(a, key) / 1000.0, "share": getattr(a, key) / total, "calls": a.count}
        for a in averages[:top]
    ]
    return max(int(peak), 0), ops


def run_train_step(
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
    lr: float = 1e-4,
    grad_clip: float | None = 1.0,
    rank_mode: str = "uniform",
    reference: str | None = None,
    profile: bool = True,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One row per method: step ms (median, p10, p90), tokens/s, peak memory, trainable params, ratios.

    ``methods``: benchmark method names (default: every registered one); ``reference``: the method the
    ``vs_reference`` column divides by (default: the first non-baseline method).
    """
    device = device or torch.device("cpu")
    methods = list(methods or bench_methods())
    check_methods(methods)
    base, model_name = build_base(model, layers, device, dtype, seed)
    batch = token_batch(base.config.vocab_size, batch_size, seq_len, device, seed)
    total_params = sum(p.numel() for p in base.parameters())
    steppers: dict[str, _Stepper] = {}
    rows: dict[str, dict[str, Any]] = {}
    for method in methods:
        row = {
            "method": method,
            "model": model_name,
            "rank": rank,
            "batch_size": batch_size,
            "seq_len": seq_len,
            "device": device_name(device),
            "dtype": dtype_name(dtype),
            "threads": threads or torch.get_num_threads(),
            "total_params": total_params,
        }
        rows[method] = row
        adapted = apply_method(base, method, rank, device, seed, rank_mode)
        steppers[method] = _Stepper(adapted, batch, lr, grad_clip, device)
        row.update(
            status="measured",
            trainable_params=adapted.trainable_param_count(),
            ranks=sorted(set(adapted.ranks().values())),
        )
    del base
    if log:
        log(f"train_step: {', '.join(steppers)} on {model_name}, batch {batch_size}x{seq_len}, r={rank}")
    timings = round_robin(steppers, repeats=repeats, warmup=warmup, device=device)
    tokens = batch_size * seq_len
    for method, timing in timings.items():
        row = rows[method]
        row.update(timing.as_row(), tokens_per_s=tokens / (timing.median / 1000.0))
        stepper = steppers[method]
        resident = param_bytes(stepper.adapted.model) + optimizer_bytes(stepper.optimizer.state)
        row["resident_mb"] = resident / 2**20
        if profile:
            step_peak, ops = step_memory_and_profile(stepper, device)
            row.update(
                step_peak_mb=step_peak / 2**20,
                peak_mb=(resident + step_peak) / 2**20,
                top_ops=ops,
                memory_method="cuda-max-allocated" if device.type == "cuda" else "torch-profiler-live-tensors",
            )
        if log:
            log(f"  {method}: {timing.median:.1f} ms/step (p10 {timing.p10:.1f}, p90 {timing.p90:.1f})")
    add_ratios(list(rows.values()), reference)
    return list(rows.values())


def add_ratios(rows: list[dict[str, Any]], reference: str | None = None) -> None:
    """``vs_full_ft`` = step ms ÷ the dense baseline's (the registry's ``baseline`` method), ``vs_reference``
    = ÷ the ``reference`` method's (default: the first non-baseline row), both from the same run and load."""
    methods = bench_methods()
    baselines = [r["method"] for r in rows if r["method"] in methods and methods[r["method"]][0].baseline]
    others = [r["method"] for r in rows if r["method"] not in baselines]
    reference = reference or (others[0] if others else None)
    ms = {r["method"]: r.get("ms") for r in rows}
    for row in rows:
        row["reference"] = reference
        for key, ref in (("vs_full_ft", baselines[0] if baselines else None), ("vs_reference", reference)):
            row[key] = row["ms"] / ms[ref] if row.get("ms") and ref and ms.get(ref) else None
