"""Energy meters: each module registers one meter (``register_meter``); every reading carries its evidence."""

from loraven.meters.base import (
    EVIDENCE,
    METERS,
    EnergyMeter,
    EnergyReading,
    MeterSpec,
    combine,
    make_meter,
    meter_settings,
    register_meter,
)

__all__ = [
    "EVIDENCE",
    "METERS",
    "EnergyMeter",
    "EnergyReading",
    "MeterSpec",
    "combine",
    "make_meter",
    "meter_settings",
    "register_meter",
]
