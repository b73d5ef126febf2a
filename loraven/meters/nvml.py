"""``energy=nvml``: the NVIDIA total-energy counter delta per phase (mJ since driver load): a measurement of the
visible GPUs only. NVML indexes GPUs in PCI order, not CUDA order, so the visible CUDA devices are mapped by UUID."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from loraven.meters.base import EnergyMeter, EnergyReading, NoSettings, Unavailable, register_meter

log = logging.getLogger("loraven.measure")
NVML_UPDATE_S = 0.1  # NVML's energy counter updates every 10-100 ms: take the slow end


class NvmlMeter(EnergyMeter):
    """NVML total-energy counter delta (mJ since driver load), per visible GPU mapped by UUID."""

    method = "nvml-counter"

    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._nvml = pynvml
        self.handles = visible_gpu_handles(pynvml)
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
                "measured",
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


def visible_gpu_handles(pynvml) -> list:
    """NVML handles of the GPUs CUDA can see, matched by UUID."""
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


@register_meter("nvml", config=NoSettings)
def make_nvml(settings: NoSettings, output_dir: Path) -> EnergyMeter:
    """NVML's energy counter on NVIDIA GPUs; without one the run goes on with energy ``unavailable``."""
    try:
        return NvmlMeter()
    except Exception as err:
        log.warning("NVML unavailable (%s); energy recorded as unavailable", err)
        return Unavailable(f"{type(err).__name__}: {err}")
