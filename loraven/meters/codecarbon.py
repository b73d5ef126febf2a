"""``energy=codecarbon``: codecarbon's ``OfflineEmissionsTracker`` around each phase (a new tracker per phase).

Evidence: ``measured`` when codecarbon read Intel RAPL counters (``codecarbon-rapl``); ``estimated`` otherwise
(``codecarbon-tdp-estimate``: TDP × CPU load, proportional to time; ``codecarbon-constant-estimate``: its fallback
constant power). Each attempt of a run writes its own CSV files: the first ``emissions_<phase>.csv``, a rerun (or a
run again after a failure) ``emissions_<phase>.attempt-<k>.csv``, and the record names its file
(``energy.phases.<phase>.detail.csv``), so summing a CSV never counts two attempts.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from loraven.meters.base import EnergyMeter, EnergyReading, register_meter
from loraven.schema import Section

log = logging.getLogger("loraven.measure")


class CodecarbonSettings(Section):
    where: ClassVar[str] = "energy"
    name: Literal["codecarbon"]
    country_iso_code: str = Field(pattern=r"^[A-Z]{3}$")  # grid carbon intensity (ISO 3166-1 alpha-3)
    measure_power_secs: float = Field(gt=0)
    tracking_mode: Literal["process", "machine"]
    save_to_file: bool

    @field_validator("country_iso_code")
    @classmethod
    def _known_country(cls, value: str) -> str:
        """A code codecarbon has a grid mix for (it fell back to a world average for an unknown one, silently)."""
        known = codecarbon_countries()
        if known and value not in known:
            close = difflib.get_close_matches(value, sorted(known), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"energy.country_iso_code={value!r} is not a country codecarbon knows{hint}")
        return value


@functools.lru_cache(maxsize=1)
def codecarbon_countries() -> frozenset[str]:
    """The ISO alpha-3 codes in codecarbon's grid-mix table (empty if the table cannot be read: not checked)."""
    import json
    from importlib import resources

    try:
        table = resources.files("codecarbon").joinpath("data/private_infra/global_energy_mix.json").read_text()
        return frozenset(json.loads(table))
    except (OSError, ValueError, ModuleNotFoundError, TypeError):
        return frozenset()


class CodecarbonMeter(EnergyMeter):
    """codecarbon ``OfflineEmissionsTracker``, a new tracker per phase (never one tracker restarted)."""

    method = "codecarbon"

    def __init__(self, settings: CodecarbonSettings, output_dir: Path) -> None:
        self.settings = settings
        self.output_dir = output_dir
        self.suffix = attempt_suffix(output_dir)  # this attempt's CSVs, apart from earlier attempts' rows

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        tracker = None
        try:
            tracker = self._start(phase)
        except Exception as err:  # codecarbon failing must never fail the run
            log.warning("codecarbon failed to start (%s); energy recorded as unavailable", err)
            box["error"] = EnergyReading(
                "unavailable", "not measured", detail={"reason": f"{type(err).__name__}: {err}"}
            )
        start = time.perf_counter()
        try:
            yield box
        finally:
            if tracker is not None:
                box["reading"] = self._stop(tracker, time.perf_counter() - start, phase)
            else:
                box["reading"] = box.pop("error")

    def _start(self, phase: str):
        from codecarbon import OfflineEmissionsTracker

        self.output_dir.mkdir(parents=True, exist_ok=True)
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        tracker = OfflineEmissionsTracker(
            project_name=f"loraven-{phase}",
            country_iso_code=self.settings.country_iso_code,
            output_dir=str(self.output_dir),
            output_file=f"emissions_{phase}{self.suffix}.csv",
            measure_power_secs=self.settings.measure_power_secs,
            tracking_mode=self.settings.tracking_mode,
            save_to_file=self.settings.save_to_file,
            log_level="error",
            allow_multiple_runs=True,
        )
        if not hasattr(tracker, "_hardware"):  # codecarbon swallows init errors ("graceful shutdown")
            raise RuntimeError("codecarbon tracker did not initialise (see its log)")
        tracker.start()
        return tracker

    def _stop(self, tracker, duration: float, phase: str) -> EnergyReading:
        try:
            emissions = tracker.stop()
            data = tracker.final_emissions_data
            label, evidence, detail = codecarbon_method(tracker)
            detail.update(
                csv=f"emissions_{phase}{self.suffix}.csv" if self.settings.save_to_file else None,
                measure_power_secs=self.settings.measure_power_secs,
                tracking_mode=self.settings.tracking_mode,
                cpu_power_w_avg=_avg_power(data.cpu_energy, duration),
            )
            return EnergyReading(
                label,
                evidence,
                kwh=float(data.energy_consumed),
                emissions_kg=float(emissions or 0.0),
                cpu_kwh=float(data.cpu_energy),
                gpu_kwh=float(data.gpu_energy),
                ram_kwh=float(data.ram_energy),
                duration_s=duration,
                detail=detail,
                sampling_s=self.settings.measure_power_secs,
            )
        except Exception as err:
            log.warning("codecarbon failed to stop (%s); energy recorded as unavailable", err)
            return EnergyReading(
                "unavailable", "not measured", duration_s=duration, detail={"reason": f"{type(err).__name__}: {err}"}
            )


def attempt_suffix(output_dir: Path) -> str:
    """``""`` for a run folder without emissions CSVs, else ``.attempt-<k>`` for the first free k >= 2."""
    if not any(Path(output_dir).glob("emissions_*.csv")):
        return ""
    k = 2
    while any(Path(output_dir).glob(f"emissions_*.attempt-{k}.csv")):
        k += 1
    return f".attempt-{k}"


def _avg_power(kwh: float, seconds: float) -> float | None:
    """Average power = energy ÷ duration (codecarbon's power columns are instantaneous)."""
    return kwh * 3.6e6 / seconds if seconds > 0 else None


def codecarbon_method(tracker) -> tuple[str, str, dict[str, Any]]:
    """(label, evidence, detail): RAPL counters are a measurement; TDP × load or a constant is an estimate."""
    detail: dict[str, Any] = {}
    mode = None
    for hw in getattr(tracker, "_hardware", []):
        if type(hw).__name__ == "CPU":
            mode = getattr(hw, "_mode", None)
            detail.update(cpu_mode=mode, cpu_model=getattr(hw, "_model", None), cpu_tdp_w=getattr(hw, "_tdp", None))
        if type(hw).__name__ == "GPU":
            detail["gpu"] = "nvml"
    if mode == "intel_rapl":
        return "codecarbon-rapl", "measured", detail
    if mode in ("cpu_load", "tdp"):
        return "codecarbon-tdp-estimate", "estimated", detail
    return "codecarbon-constant-estimate", "estimated", detail


@register_meter("codecarbon", config=CodecarbonSettings)
def make_codecarbon(settings: CodecarbonSettings, output_dir: Path) -> EnergyMeter:
    """codecarbon around train and eval; RAPL where the CPU has it, else a labelled estimate."""
    return CodecarbonMeter(settings, output_dir)
