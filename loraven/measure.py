"""Phase timers (wall and CPU seconds) and the process warm-up that keeps one-time costs out of the meters.

The energy meters themselves are plug-ins: :mod:`loraven.meters`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

log = logging.getLogger("loraven.measure")


def sync(device: torch.device) -> None:
    """Synchronise CUDA at phase bounds (never per step)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class PhaseTimes:
    """Wall time per phase, and CPU seconds per phase: this process's (every thread: compute, the meter's
    sampling thread, W&B's) and its helper processes' (W&B's service). CPU seconds say what the harness itself
    costs even on a VM whose wall times swing with other tenants' load."""

    phases: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    helper_cpu: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def phase(self, name: str, device: torch.device | None = None) -> Iterator[None]:
        if device is not None:
            sync(device)
        start, cpu_start, helpers_start = time.perf_counter(), time.process_time(), helper_cpu_seconds()
        try:
            yield
        finally:
            if device is not None:
                sync(device)
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu_start
            self.helper_cpu[name] = self.helper_cpu.get(name, 0.0) + helper_cpu_seconds() - helpers_start


def helper_cpu_seconds() -> float:
    """User + system CPU seconds of this process's live child processes (W&B's service, a launcher's helpers)."""
    try:
        import psutil

        total = 0.0
        for child in psutil.Process().children(recursive=True):
            try:
                times = child.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total
    except Exception:  # psutil missing or /proc unreadable: the figure is optional
        return 0.0


_WARMED: set[str] = set()


def warm_up(device: torch.device) -> float:
    """Pay the process's one-time costs before the first metered phase; returns the seconds spent (0 after
    the first call per device).

    The first job of a process used to carry ~10x the train-phase time and energy of the next ones: the
    trainer's lazy ``transformers`` import, the first backward pass, the optimizer's first step (lazy
    imports in torch.optim), the lr scheduler, the allocator's first blocks and the CPU thread pool all
    start there. A throwaway layer trained for a few
    steps starts them outside the meter. The global RNG is restored, so seeded runs are unchanged.
    """
    key = str(device)
    if key in _WARMED:
        return 0.0
    start = time.perf_counter()
    try:  # the trainer imports its lr schedules lazily: the heaviest one-time cost (1-15 s on a loaded CPU)
        from transformers import get_scheduler  # noqa: F401
    except ImportError:  # pragma: no cover - transformers is a dependency; a broken install fails later anyway
        pass
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        layer = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).to(device)
        optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        for _ in range(3):
            x = torch.randn(16, 64, device=device)
            loss = torch.nn.functional.cross_entropy(layer(x), torch.zeros(16, dtype=torch.long, device=device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(layer.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            layer(torch.randn(512, 64, device=device)).softmax(-1).argmax(-1)
        float(loss.detach())
    sync(device)
    _WARMED.add(key)
    return time.perf_counter() - start


class PeakMemory:
    """This job's peak memory: CUDA's ``max_memory_allocated`` since the job started, or on CPU the resident-set
    high-water mark (``VmHWM``) after resetting it for this job (Linux ``/proc/self/clear_refs``, "5"). Where the
    reset is not possible the process's lifetime peak is reported, labelled ``whole process``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.scope = "job"
        else:
            self.scope = "job" if _reset_rss_peak() else "whole process"

    def read(self):
        from loraven.record import MemoryInfo

        if self.device.type == "cuda":
            return MemoryInfo(torch.cuda.max_memory_allocated(self.device) / 2**20, "job", "cuda-allocated")
        peak_kb = _rss_peak_kb()
        if peak_kb is None:
            import resource

            peak_kb, self.scope = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "whole process"
        return MemoryInfo(peak_kb / 1024, self.scope, "cpu-rss")


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _rss_peak_kb() is not None
    except OSError:
        return False


def _rss_peak_kb() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None
