"""The one training loop. Every method plugs in through :class:`AdaptedModel` hooks; none forks this file.

No per-step host sync: step times come from ``perf_counter`` on CPU (synchronous anyway) and from CUDA
events read once at the end on GPU; the loss is read back only every ``log_every`` steps, where a
non-finite loss stops the run (``DivergenceError`` names the first bad step).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from loraven.adapters.base import AdaptedModel
from loraven.checkpoint import CheckpointSession, ResumePoint
from loraven.settings import TrainerConfig, trainer_config
from loraven.tasks.base import Task
from loraven.tasks.lm import lm_loss
from loraven.threads import ThreadGovernor

FAULT_ENV = "LORAVEN_FAULT_INJECT"  # tests: "oom@3" simulated CUDA OOM at step 3; "error@N"; "nan@N" (NaN loss);
# "interrupt@N" (Ctrl-C at step N); "kill@N" (SIGKILL before step N), "term@N" (SIGTERM before step N)
log = logging.getLogger("loraven")


class DivergenceError(RuntimeError):
    """The loss became NaN/Inf; the run is recorded as failed with the step."""


@dataclass
class TrainStats:
    steps: int = 0
    final_loss: float | None = None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    step_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    train_s: float = 0.0

    @property
    def step_ms_median(self) -> float | None:
        # the first steps include allocator/kernel warm-up; drop them when there are enough steps
        times = self.step_ms[2:] if len(self.step_ms) > 6 else self.step_ms
        return statistics.median(times) if times else None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.train_s if self.train_s > 0 else None


# --------------------------------------------------------------------------- loop


LossFn = Callable[[torch.nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


class TrainStep:
    """One optimizer step exactly as the loop takes it, shared by the loop and the step-time benchmark.

    forward + the task's loss (+ the adapter's regularisation) under autocast → backward → grad clip →
    AdamW step → lr schedule step → zero_grad → ``adapted.after_optimizer_step``. Returns the detached
    on-device loss (no host sync). ``loss_fn`` is the task's ``batch_loss`` (default: next-token LM loss).
    """

    def __init__(
        self,
        adapted: AdaptedModel,
        cfg: Mapping[str, Any] | TrainerConfig,
        device: torch.device,
        forward_model: torch.nn.Module | None = None,
        loss_fn: LossFn = lm_loss,
    ) -> None:
        from transformers import get_scheduler

        cfg = trainer_config(cfg).dump()
        self.loss_fn = loss_fn
        self.adapted = adapted
        self.forward_model = forward_model or adapted.model
        self.params = list(adapted.trainable_parameters())
        if not self.params:
            raise ValueError("the adapter left no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.params, lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]), betas=tuple(cfg["betas"])
        )
        self.scheduler = get_scheduler(
            str(cfg["lr_scheduler"]),
            self.optimizer,
            num_warmup_steps=int(cfg["warmup_steps"]),
            num_training_steps=int(cfg["steps"]),
        )
        self.autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if device.type == "cuda" and cfg["precision"] in ("auto", "bf16")
            else nullcontext()
        )
        self.grad_clip = float(cfg["grad_clip"]) if cfg.get("grad_clip") else None

    def __call__(self, batch: Mapping[str, torch.Tensor], step: int, poison: bool = False) -> torch.Tensor:
        """``poison``: multiply the loss by NaN (the fault injector's simulated divergence)."""
        with self.autocast:
            loss = self.loss_fn(self.forward_model, batch)
            if poison:
                loss = loss * float("nan")
            extra = self.adapted.regularization_loss()
            total = loss + extra if extra is not None else loss
        total.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        detached = loss.detach()
        self.adapted.after_optimizer_step(step, detached)
        return detached

    def last_lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])


def train(
    adapted: AdaptedModel,
    task: Task,
    tokenizer: Any,
    cfg: Mapping[str, Any] | TrainerConfig,
    device: torch.device,
    log_fn=None,
    seed: int = 0,
    progress: bool = True,
    threads: ThreadGovernor | None = None,
    checkpoints: CheckpointSession | None = None,
) -> TrainStats:
    """Fine-tune ``adapted.model`` on ``task`` for ``cfg.steps`` optimizer steps.

    ``threads``: sets torch's CPU thread count step by step (probes on the first steps, re-probes when the
    load changes; :mod:`loraven.threads`); None leaves the count alone. ``checkpoints``
    (:mod:`loraven.checkpoint`): resume from the newest valid checkpoint, save at its steps and stop with
    :class:`~loraven.checkpoint.Preempted` at the step boundary after a SIGTERM/SIGUSR1/SIGUSR2."""
    cfg = trainer_config(cfg).dump()
    model = adapted.model
    model.train()
    steps = int(cfg["steps"])
    rank, world = _dist_rank_world()
    batch_size = int(cfg["batch_size"])
    max_len = task.max_seq_len or int(cfg["max_seq_len"])  # a task's worked answers need their room
    model_max = getattr(tokenizer, "model_max_length", None)
    max_len = min(max_len, int(model_max)) if model_max and model_max < 1_000_000 else max_len
    batches = task.train_batches(tokenizer, batch_size, max_len, seed, rank, world)
    take_step = TrainStep(adapted, cfg, device, forward_model=_maybe_ddp(model, device, world), loss_fn=task.batch_loss)
    log_every = max(1, int(cfg["log_every"]))
    fault = _parse_fault(os.environ.get(FAULT_ENV))
    stats = TrainStats()
    # CHECKPOINTS: the loop starts after the newest valid checkpoint's step (0 without one)
    resume = checkpoints.restore(adapted, take_step, batches, stats) if checkpoints else ResumePoint()
    first_bad = torch.full((), resume.first_bad, dtype=torch.long, device=device)
    cuda_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def loop_state() -> dict[str, Any]:  # what a checkpoint keeps of this loop (read only when one is saved)
        if cuda_events:
            torch.cuda.synchronize(device)
        return {
            "loss_curve": list(stats.loss_curve),
            "step_ms": stats.step_ms + [a.elapsed_time(b) for a, b in cuda_events],
            "tokens": stats.tokens,
            "train_s": stats.train_s + time.perf_counter() - start_all,
            "first_bad": int(first_bad),
        }

    terminal = sys.stderr.isatty()
    bar = tqdm(
        total=steps,
        initial=resume.step,
        desc="train",
        unit="step",
        disable=not progress or rank != 0 or not terminal,
        dynamic_ncols=True,
        mininterval=0.5,
    )  # a terminal gets the bar; a log file (a sweep's, a Slurm job's) gets a plain line every log_every steps
    text_progress = rank == 0 and not terminal
    start_all = time.perf_counter()
    for step in range(resume.step + 1, steps + 1):
        batch = next(batches)
        stats.tokens += task.batch_units(batch) * world
        work = max(v.numel() for v in batch.values())  # the thread probe's unit: padded tokens (or rows × features)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        if threads is not None:
            threads.begin()
        t0 = time.perf_counter()
        if device.type == "cuda":
            ev = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            ev[0].record()
        if fault and fault[1] == step:
            _inject(fault[0])
        detached = take_step(batch, step, poison=bool(fault and fault[0] == "nan" and step >= fault[1]))
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), step, first_bad)
        if device.type == "cuda":
            ev[1].record()
            cuda_events.append(ev)
        else:
            stats.step_ms.append((time.perf_counter() - t0) * 1000.0)
        if threads is not None:  # on a GPU the governor is fixed and ignores the time
            threads.end(stats.step_ms[-1] / 1000.0 if device.type != "cuda" else 0.0, work)
        bar.update(1)
        if step % log_every == 0 or step == steps:
            if world > 1:  # every rank must stop together (else the next all-reduce hangs); log the global mean
                detached, first_bad = _reduce_log_values(detached, first_bad)
            bad = int(first_bad)
            if bad >= 0:
                bar.close()
                raise DivergenceError(f"loss became non-finite at step {bad} (lr={cfg['lr']}); stopped at step {step}")
            value = float(detached)
            stats.loss_curve.append((step, value))
            bar.set_postfix(loss=f"{value:.4f}")
            if text_progress:  # tqdm in a file is one line of carriage returns, every 15 s at best
                recent = stats.step_ms[-log_every:]
                per_step = f", {statistics.median(recent):.0f} ms/step" if recent else ""
                log.info("train: step %d/%d, loss %.4f%s", step, steps, value, per_step)
            if log_fn is not None and rank == 0:
                log_fn(
                    {
                        "train/loss": value,
                        "train/lr": take_step.last_lr(),
                        **{f"train/{k}": v for k, v in adapted.step_metrics().items()},
                    },
                    step,
                )
        if checkpoints is not None:  # CHECKPOINTS: a periodic, final or signal-triggered save at this boundary
            checkpoints.after_step(step, steps, loop_state)
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        stats.step_ms += [a.elapsed_time(b) for a, b in cuda_events]
    stats.train_s += time.perf_counter() - start_all
    stats.steps = steps
    stats.final_loss = stats.loss_curve[-1][1] if stats.loss_curve else None
    if not math.isfinite(stats.final_loss or 0.0):
        raise DivergenceError(f"final loss is {stats.final_loss}")
    return stats


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _reduce_log_values(loss: torch.Tensor, first_bad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean loss over ranks and the earliest bad step seen by any rank (one collective per log step)."""
    dist = torch.distributed
    world = dist.get_world_size()
    loss = loss.detach().float().clone()
    dist.all_reduce(loss)
    # earliest non-negative step over ranks: MAX of (-step) among bad ranks; -1 stays "none"
    flag = torch.where(first_bad >= 0, -first_bad, torch.full_like(first_bad, -(2**62)))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    merged = torch.where(flag > -(2**62), -flag, torch.full_like(first_bad, -1))
    return loss / world, merged


def _maybe_ddp(model: torch.nn.Module, device: torch.device, world: int):
    """Data parallel through torch DDP when launched by ``accelerate launch`` / torchrun (world > 1)."""
    if world <= 1:
        return None
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _parse_fault(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    kind, _, step = spec.partition("@")
    return kind, int(step or 1)


def _inject(kind: str) -> None:
    if kind == "oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated by LORAVEN_FAULT_INJECT)")
    if kind == "error":
        raise RuntimeError("simulated failure (LORAVEN_FAULT_INJECT)")
    if kind == "interrupt":
        raise KeyboardInterrupt("simulated Ctrl-C (LORAVEN_FAULT_INJECT)")
    if kind == "nan":
        return  # applied to the loss in the loop
    if kind in ("kill", "term"):  # a node lost without warning / a preemption (mid-run checkpoint tests)
        os.kill(os.getpid(), signal.SIGKILL if kind == "kill" else signal.SIGTERM)
        return
    valid = "oom@N, error@N, nan@N, interrupt@N, kill@N, term@N"
    raise ValueError(f"unknown fault {kind!r} in {FAULT_ENV}; valid: {valid}")
