"""Every method is evaluated on the same (merged) path and says so; the energy-model calibration round-trips."""

import json

import pytest
import torch

from loraven.adapters.base import AdapterContext, apply_adapter
from loraven.adapters.loraven.calibrate import calibrate, main, write
from loraven.adapters.loraven.energy_model import EnergyModel
from loraven.adapters.loraven.estimators import Workload
from loraven.errors import ConfigError
from loraven.models import build_tiny_llama


def _x():
    return torch.randint(4, 90, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "adapter",
    [
        {"name": "lora", "r": 4},
        {"name": "dora", "r": 4},
        {"name": "loraven", "r_max": 4},
        {"name": "loraven", "r_max": 4, "mode": "replace"},
    ],
)
def test_every_method_evaluates_merged_and_records_it(adapter):
    model, _ = build_tiny_llama(seed=0)
    adapted = apply_adapter(model, adapter, {"name": "static"}, AdapterContext())
    with torch.no_grad():  # a trained-looking adapter: perturb every trainable tensor
        for p in adapted.trainable_parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.eval()
    x = _x()
    with torch.no_grad():
        before = model(x).logits
        adapted.prepare_for_inference()
        after = model(x).logits
    merged = [getattr(m, "merged", None) for m in model.modules() if hasattr(m, "merged")]
    assert merged and all(merged)  # peft LoraLayer.merged / DynamicLowRankLayer.merged
    assert adapted.summary()["eval_path"] == "merged"
    assert torch.allclose(before, after, atol=1e-4)


def test_calibration_recovers_known_scales_and_the_scheduler_reads_the_file(tmp_path):
    truth = EnergyModel()
    truth.scale = (0.5, 3.0, 2.0)
    rows = []
    for tokens, in_f, out_f in ((64, 256, 256), (256, 512, 256), (32, 128, 512)):
        for rank in (2, 8, 32, 64):
            w = Workload(tokens, in_f, out_f, rank)
            rows.append(
                {
                    "tokens": tokens,
                    "in_features": in_f,
                    "out_features": out_f,
                    "rank": rank,
                    "seconds": 0.0,
                    "joules": truth.energy(w),
                }
            )
    result = calibrate(rows, "wall_time")
    assert result["scale"] == pytest.approx([0.5, 3.0, 2.0], rel=1e-6)
    assert result["mape_heldout_pct"] < 1e-4 and result["mape_uncalibrated_pct"] > 10
    assert result["source_note"].startswith("estimated")
    path = write(result, tmp_path / "cal.json")
    model = EnergyModel.from_config({"calibration": str(path)})
    assert model.scale == pytest.approx((0.5, 3.0, 2.0), rel=1e-6)
    cfg = {"name": "energy", "energy_model": {"calibration": str(path)}}
    adapted = apply_adapter(build_tiny_llama(seed=0)[0], {"name": "loraven", "r_max": 4}, cfg, AdapterContext())
    assert adapted.scheduler_impl.energy.scale == model.scale
    assert "calibrated by" in adapted.summary()["energy_model"]


def test_bad_calibration_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        EnergyModel.from_config({"calibration": str(tmp_path / "missing.json")})
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"scale": [1.0, -1.0, 1.0]}))
    with pytest.raises(ConfigError, match="scale="):
        EnergyModel.from_config({"calibration": str(bad)})


def test_calibrate_entry_point_writes_a_file(tmp_path, monkeypatch):
    import loraven.adapters.loraven.calibrate as cal

    monkeypatch.setattr(cal, "GRID_SHAPES", ((32, 16), (48, 32)))
    monkeypatch.setattr(cal, "GRID_TOKENS", (8, 16))
    monkeypatch.setattr(cal, "GRID_RANKS", (2, 4, 8))
    out = tmp_path / "c.json"
    result = main(["--out", str(out), "--device", "cpu", "--repeats", "1"])
    data = json.loads(out.read_text())
    assert data["scale"] == result["scale"] and len(data["grid"]) == 12 and data["source"] == "wall_time"
    assert all(row["joules"] > 0 for row in data["grid"])
