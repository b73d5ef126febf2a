"""Timers and energy meters. Every energy figure carries a method label saying how it was obtained.

Labels: ``codecarbon-rapl`` (Intel RAPL counters: a measurement), ``codecarbon-tdp-estimate`` (no RAPL:
TDP × CPU load, an estimate), ``codecarbon-constant-estimate`` (codecarbon's fallback constant power),
``nvml-counter`` (NVIDIA total-energy counter delta: a measurement), ``none`` (energy=none) and
``unavailable`` (the meter failed; the reason is recorded and the run goes on).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


RESOLUTION_FACTOR = 10  # a phase shorter than 10 sampling intervals is below the meter's resolution
NVML_UPDATE_S = 0.1  # NVML's energy counter updates every 10-100 ms: take the slow end


@dataclass
class EnergyReading:
    method: str
    kwh: float | None = None
    emissions_kg: float | None = None
    cpu_kwh: float | None = None
    gpu_kwh: float | None = None
    ram_kwh: float | None = None
    duration_s: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    sampling_s: float | None = None  # the meter's sampling interval (codecarbon) or counter update period (NVML)
    below_resolution: bool | None = None  # duration < RESOLUTION_FACTOR × sampling_s: never enters a verdict

    def __post_init__(self) -> None:
        if self.below_resolution is None and self.duration_s is not None and self.sampling_s:
            self.below_resolution = self.duration_s < RESOLUTION_FACTOR * self.sampling_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EnergyMeter:
    """Measures one phase at a time: ``with meter.measure("train") as reading: ...``."""

    method = "none"

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        yield box
        box["reading"] = EnergyReading(self.method)


class CodecarbonMeter(EnergyMeter):
    """codecarbon ``OfflineEmissionsTracker``, a new tracker per phase (never one tracker restarted)."""

    def __init__(self, cfg: Mapping[str, Any], output_dir: Path) -> None:
        self.cfg = cfg
        self.output_dir = output_dir
        self.method = "codecarbon"

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        tracker = None
        try:
            tracker = self._start(phase)
        except Exception as err:  # codecarbon failing must never fail the run
            log.warning("codecarbon failed to start (%s); energy recorded as unavailable", err)
            box["error"] = EnergyReading("unavailable", detail={"reason": f"{type(err).__name__}: {err}"})
        start = time.perf_counter()
        try:
            yield box
        finally:
            if tracker is not None:
                box["reading"] = self._stop(tracker, time.perf_counter() - start)
            else:
                box["reading"] = box.pop("error")

    def _start(self, phase: str):
        from codecarbon import OfflineEmissionsTracker

        self.output_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(
            project_name=f"loraven-{phase}",
            country_iso_code=str(self.cfg.get("country_iso_code", "USA")),
            output_dir=str(self.output_dir),
            output_file=f"emissions_{phase}.csv",
            measure_power_secs=float(self.cfg.get("measure_power_secs", 1.0)),
            tracking_mode=str(self.cfg.get("tracking_mode", "process")),
            save_to_file=bool(self.cfg.get("save_to_file", True)),
            log_level="error",
            allow_multiple_runs=True,
        )
        if not hasattr(tracker, "_hardware"):  # codecarbon swallows init errors ("graceful shutdown")
            raise RuntimeError("codecarbon tracker did not initialise (see its log)")
        tracker.start()
        return tracker

    def _stop(self, tracker, duration: float) -> EnergyReading:
        try:
            emissions = tracker.stop()
            data = tracker.final_emissions_data
            label, detail = codecarbon_method(tracker)
            detail.update(
                measure_power_secs=float(self.cfg.get("measure_power_secs", 1.0)),
                tracking_mode=str(self.cfg.get("tracking_mode", "process")),
                cpu_power_w_avg=_avg_power(data.cpu_energy, duration),
            )
            return EnergyReading(
                label,
                kwh=float(data.energy_consumed),
                emissions_kg=float(emissions or 0.0),
                cpu_kwh=float(data.cpu_energy),
                gpu_kwh=float(data.gpu_energy),
                ram_kwh=float(data.ram_energy),
                duration_s=duration,
                detail=detail,
                sampling_s=float(self.cfg.get("measure_power_secs", 1.0)),
            )
        except Exception as err:
            log.warning("codecarbon failed to stop (%s); energy recorded as unavailable", err)
            return EnergyReading("unavailable", duration_s=duration, detail={"reason": f"{type(err).__name__}: {err}"})


def _avg_power(kwh: float, seconds: float) -> float | None:
    """Average power = energy ÷ duration (codecarbon's power columns are instantaneous)."""
    return kwh * 3.6e6 / seconds if seconds > 0 else None


def codecarbon_method(tracker) -> tuple[str, dict[str, Any]]:
    """How codecarbon got the CPU figure: RAPL is a measurement; anything else is an estimate."""
    detail: dict[str, Any] = {}
    mode = None
    for hw in getattr(tracker, "_hardware", []):
        if type(hw).__name__ == "CPU":
            mode = getattr(hw, "_mode", None)
            detail.update(cpu_mode=mode, cpu_model=getattr(hw, "_model", None), cpu_tdp_w=getattr(hw, "_tdp", None))
        if type(hw).__name__ == "GPU":
            detail["gpu"] = "nvml"
    if mode == "intel_rapl":
        return "codecarbon-rapl", detail
    if mode in ("cpu_load", "tdp"):
        return "codecarbon-tdp-estimate", detail
    return "codecarbon-constant-estimate", detail


class NvmlMeter(EnergyMeter):
    """NVML total-energy counter delta (mJ since driver load), per visible GPU mapped by UUID."""

    method = "nvml-counter"

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.handles = _visible_gpu_handles(pynvml)
        if not self.handles:
            raise RuntimeError("energy=nvml but no NVIDIA GPU is visible")

    def _read_mj(self) -> list[int]:
        return [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles]

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        before, start = self._read_mj(), time.perf_counter()
        try:
            yield box
        finally:
            torch.cuda.synchronize()
            after, duration = self._read_mj(), time.perf_counter() - start
            joules = sum(a - b for a, b in zip(after, before, strict=True)) / 1000.0
            kwh = joules / 3.6e6
            box["reading"] = EnergyReading(
                self.method,
                kwh=kwh,
                gpu_kwh=kwh,
                duration_s=duration,
                sampling_s=NVML_UPDATE_S,
                detail={
                    "joules": joules,
                    "gpus": len(self.handles),
                    "note": "GPU only; counter updates every 10-100 ms",
                },
            )


def _visible_gpu_handles(pynvml) -> list:
    """NVML indexes GPUs in PCI order, not CUDA order: map the visible CUDA devices by UUID."""
    if not torch.cuda.is_available():
        return []
    uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())]
    handles = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if any(uuid.endswith(u) or u in uuid for u in uuids):
            handles.append(handle)
    return handles


def make_meter(cfg: Mapping[str, Any], output_dir: Path) -> EnergyMeter:
    """The meter named by ``cfg.name`` (``energy=`` group): codecarbon, nvml or none."""
    name = cfg.get("name", "none")
    if name not in METERS:
        from loraven.errors import ConfigError

        raise ConfigError(f"unknown energy meter {name!r}; valid choices: {', '.join(METERS)}")
    return METERS[str(name)](cfg, output_dir)


def _nvml_or_unavailable(cfg: Mapping[str, Any], output_dir: Path) -> EnergyMeter:
    try:
        return NvmlMeter()
    except Exception as err:
        log.warning("NVML unavailable (%s); energy recorded as unavailable", err)
        return _Unavailable(f"{type(err).__name__}: {err}")


class _Unavailable(EnergyMeter):
    method = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        yield box
        box["reading"] = EnergyReading("unavailable", detail={"reason": self.reason})


def combine(
    readings: Mapping[str, EnergyReading],
    train_units: int | None = None,
    eval_examples: int | None = None,
    train_unit: str = "token",
) -> dict[str, Any]:
    """The contract's ``energy`` section: the training phase's figures, plus every phase by name, plus
    energy per unit of work (J per training token for LM tasks, per sample for classic tasks, named in
    ``train_unit``; J per evaluated example)
    where the phase was resolved by the meter (a below-resolution phase gets None, not a number)."""
    train = readings.get("train") or EnergyReading("none")
    out = train.as_dict()
    out.pop("detail", None)
    out.update(train.detail)
    out["phases"] = {name: r.as_dict() for name, r in readings.items()}
    out["scope"] = "train phase (eval phase under phases.eval)"
    # "unit", not "token": key names ending in _token are redacted as credentials (loraven.track.is_credential_key)
    out["j_per_train_unit"] = _per_unit(train, train_units)
    out["train_unit"] = train_unit
    out["j_per_eval_example"] = _per_unit(readings.get("eval"), eval_examples)
    return out


def _per_unit(reading: EnergyReading | None, units: int | None) -> float | None:
    if reading is None or reading.kwh is None or not units or reading.below_resolution:
        return None
    return reading.kwh * 3.6e6 / units


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


METERS: dict[str, Callable[[Mapping[str, Any], Path], EnergyMeter]] = {
    "codecarbon": CodecarbonMeter,
    "nvml": _nvml_or_unavailable,
    "none": lambda cfg, output_dir: EnergyMeter(),
}
