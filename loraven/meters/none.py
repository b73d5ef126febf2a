"""``energy=none``: no meter (benchmarks whose µs timings a sampling thread would perturb, quick tests)."""

from __future__ import annotations

from pathlib import Path

from loraven.meters.base import EnergyMeter, NoSettings, register_meter


@register_meter("none", config=NoSettings)
def make_none(settings: NoSettings, output_dir: Path) -> EnergyMeter:
    """Energy is not measured; the record says ``not measured``."""
    return EnergyMeter()
