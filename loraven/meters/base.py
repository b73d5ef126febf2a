"""The meter contract and registry: a meter measures one phase at a time and labels how it got the number.

Every :class:`EnergyReading` carries ``method`` (how: ``codecarbon-rapl``, ``nvml-counter``,
``codecarbon-tdp-estimate``...) and ``evidence`` (what that makes it: ``measured`` for hardware counters,
``estimated`` for models such as TDP × load, ``not measured``); the meter sets both, analysis reads them from the
record and never parses a label. A meter is one module (``loraven/meters/<name>.py`` or a plug-in) and one YAML
(``conf/energy/<name>.yaml``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from loraven.registry import TARGET_KEY, Registry
from loraven.schema import Section, parse, with_defaults

EVIDENCE = ("measured", "estimated", "not measured")
RESOLUTION_FACTOR = 10  # a phase shorter than 10 sampling intervals is below the meter's resolution


@dataclass
class EnergyReading:
    method: str
    evidence: str = "not measured"
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
        if self.evidence not in EVIDENCE:
            raise ValueError(f"energy evidence {self.evidence!r} not in {EVIDENCE}")
        if self.below_resolution is None and self.duration_s is not None and self.sampling_s:
            self.below_resolution = self.duration_s < RESOLUTION_FACTOR * self.sampling_s

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EnergyMeter:
    """Measures one phase at a time: ``with meter.measure("train") as box: ...``; ``box["reading"]`` after."""

    method = "none"

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        yield box
        box["reading"] = EnergyReading(self.method, "not measured")


class Unavailable(EnergyMeter):
    """A meter that could not start: every phase reads ``unavailable`` with the reason; the run goes on."""

    method = "unavailable"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    @contextlib.contextmanager
    def measure(self, phase: str) -> Iterator[dict[str, EnergyReading]]:
        box: dict[str, EnergyReading] = {}
        yield box
        box["reading"] = EnergyReading("unavailable", "not measured", detail={"reason": self.reason})


MeterFactory = Callable[[Any, Path], EnergyMeter]


@dataclass(frozen=True)
class MeterSpec:
    """A meter: its config schema (``cfg.energy``) and its factory ``(settings, run_dir) -> EnergyMeter``."""

    name: str
    config: type[Section]
    factory: MeterFactory
    doc: str = ""


METERS: Registry[MeterSpec] = Registry("energy", "loraven.meters", "loraven.meters")


def register_meter(name: str, *, config: type[Section]) -> Callable[[MeterFactory], MeterFactory]:
    """Decorator: register ``factory`` as energy meter ``name`` (``energy=<name>``)."""

    def wrap(factory: MeterFactory) -> MeterFactory:
        METERS.register(name, MeterSpec(name, config, factory, factory.__doc__ or ""))
        return factory

    return wrap


def meter_settings(cfg: Mapping[str, Any]) -> Section:
    """``cfg.energy`` validated by its meter's schema (completed from ``conf/energy/<name>.yaml`` when partial)."""
    name = str(cfg.get("name", "none"))
    spec = METERS.get(name)
    return parse(spec.config, with_defaults("energy", name, cfg), "energy", drop=(TARGET_KEY,))


def make_meter(cfg: Mapping[str, Any] | Section, output_dir: Path) -> EnergyMeter:
    """The meter ``cfg.name`` names (``energy=`` group)."""
    settings = cfg if isinstance(cfg, Section) else meter_settings(cfg)
    return METERS.get(str(settings.name)).factory(settings, output_dir)  # type: ignore[attr-defined]


def combine(
    readings: Mapping[str, EnergyReading],
    train_units: int | None = None,
    eval_examples: int | None = None,
    train_unit: str = "token",
) -> dict[str, Any]:
    """The record's ``energy`` section: the training phase's figures at the top (the contract's keys), every other
    phase under ``phases`` (each value written once), and energy per unit of work (J per training token for LM
    tasks, per sample for tensor tasks; J per evaluated example) where the meter resolved the phase (a
    below-resolution phase gets None, not a number)."""
    train = readings.get("train") or EnergyReading("none")
    out = train.as_dict()
    out.pop("detail", None)
    out.update(train.detail)
    out["phases"] = {name: r.as_dict() for name, r in readings.items() if name != "train"}
    out["scope"] = "train phase (other phases under phases)"
    # "unit", not "token": key names ending in _token are redacted as credentials (loraven.track.is_credential_key)
    out["j_per_train_unit"] = _per_unit(train, train_units)
    out["train_unit"] = train_unit
    out["j_per_eval_example"] = _per_unit(readings.get("eval"), eval_examples)
    return out


def _per_unit(reading: EnergyReading | None, units: int | None) -> float | None:
    if reading is None or reading.kwh is None or not units or reading.below_resolution:
        return None
    return reading.kwh * 3.6e6 / units


class NoSettings(Section):
    """A meter without options (``energy=none``, ``energy=nvml``)."""

    where: ClassVar[str] = "energy"

    name: str
