"""Timing helpers shared by every benchmark: fixed threads, device sync, round-robin sampling, spread.

Why our own loop rather than ``torch.utils.benchmark.Timer``: Timer times one statement per call
(``blocked_autorange``), so variants measured one after another see different background load on a shared
machine. Here every round times each variant once (A B C A B C ...), so load hits all variants alike and
ratios are taken side by side. Short kernels are repeated ``number`` times per sample (calibrated like
``timeit.autorange``) so a sample is never shorter than the clock's useful resolution.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from loraven.errors import ConfigError


@dataclass
class Timing:
    """Per-call times (ms) of one variant: one entry per sample, each the mean of ``number`` calls."""

    samples_ms: list[float] = field(default_factory=list)
    number: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p10(self) -> float:
        return percentile(self.samples_ms, 10)

    @property
    def p90(self) -> float:
        return percentile(self.samples_ms, 90)

    def as_row(self) -> dict[str, Any]:
        return {
            "ms": self.median,
            "ms_p10": self.p10,
            "ms_p90": self.p90,
            "repeats": len(self.samples_ms),
            "number": self.number,
        }


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), defined for a single value too."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no samples")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def set_threads(threads: int | str | None) -> int:
    """Fix torch's intra-op threads (``auto``/None = one per CPU core); returns the number in force."""
    if threads in (None, "auto"):
        n = os.cpu_count() or 1
    else:
        try:
            n = int(threads)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"bench.threads={threads!r}; valid: auto or an integer >= 1") from err
        if n < 1:
            raise ConfigError(f"bench.threads={threads!r}; valid: auto or an integer >= 1")
    torch.set_num_threads(n)
    return torch.get_num_threads()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], Any], number: int, device: torch.device) -> float:
    """Mean ms per call over ``number`` calls; on GPU the clock is read after a device sync."""
    sync(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync(device)
    return (time.perf_counter() - start) * 1000.0 / number


def calibrate(fn: Callable[[], Any], device: torch.device, min_sample_ms: float) -> int:
    """Smallest power of ten of calls whose total reaches ``min_sample_ms`` (timeit.autorange's rule)."""
    number = 1
    while number < 10**6:
        if _time_once(fn, number, device) * number >= min_sample_ms:
            return number
        number *= 10
    return number


def round_robin(
    fns: Mapping[str, Callable[[], Any]], *, repeats: int, warmup: int, device: torch.device, min_sample_ms: float = 0.0
) -> dict[str, Timing]:
    """Time every variant ``repeats`` times, interleaved A B C A B C ..., after ``warmup`` untimed rounds.

    ``min_sample_ms`` > 0 calibrates a per-variant call count (for µs kernels); 0 times single calls
    (training steps, which are long enough on their own).
    """
    if repeats < 1:
        raise ConfigError(f"repeats={repeats}; valid: an integer >= 1")
    for _ in range(max(0, warmup)):
        for fn in fns.values():
            fn()
    sync(device)
    numbers = {k: calibrate(fn, device, min_sample_ms) if min_sample_ms > 0 else 1 for k, fn in fns.items()}
    out = {k: Timing(number=numbers[k]) for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            out[key].samples_ms.append(_time_once(fn, numbers[key], device))
    return out


def resolve_device(name: str | None) -> torch.device:
    from loraven.provenance import pick_device

    return pick_device(str(name or "auto"))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``auto`` = bf16 on GPU (what an H100 trains in), fp32 on CPU (bf16 GEMMs are slow there)."""
    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise ConfigError(f"bench.dtype={name!r}; valid choices: auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
