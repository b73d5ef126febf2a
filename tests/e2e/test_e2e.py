"""End to end: a tiny-model run through the real pipeline (train, lm-eval, energy, W&B offline, store),
the result.json contract key by key, resume, and one real SmolLM2 run from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from loraven import CONF_DIR
from loraven.contract import contract_violations
from loraven.job import run_job
from loraven.models import build_tiny_llama

ROOT = Path(__file__).resolve().parents[2]


def _cfg(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=tiny_llama",
                "trainer=smoke",
                "adapter=lora",
                f"results_dir={tmp_path / 'results'}",
                *overrides,
            ],
        )
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_tiny_run_writes_the_full_contract(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "tracking=wandb", "energy=codecarbon")
    result = run_job(cfg, progress=False)
    assert result["status"] == "completed", result.get("reason")
    on_disk = json.loads((tmp_path / "results" / "default" / result["run_id"] / "result.json").read_text())
    assert contract_violations(on_disk) == []
    m = on_disk["metrics"]
    assert m["task"] == "arith_mc" and m["metric"] == "acc" and m["n"] == 200
    assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 < m["accuracy_stderr"] < 0.1
    assert 0.0 <= m["base_accuracy"] <= 1.0
    t = on_disk["time"]
    assert t["train_s"] > 0 and t["eval_s"] > 0 and t["total_s"] >= t["train_s"] + t["eval_s"]
    assert t["step_ms_median"] > 0 and t["tokens_per_s"] > 0
    e = on_disk["energy"]
    assert e["method"] in ("codecarbon-rapl", "codecarbon-tdp-estimate", "codecarbon-constant-estimate")
    assert e["kwh"] > 0 and e["measure_power_secs"] == 1.0
    assert (tmp_path / "results" / "default" / result["run_id"] / "emissions_train.csv").is_file()
    env = on_disk["env"]
    assert env["torch"] and env["transformers"] and env["peft"] and env["lm_eval"] and env["python"]
    assert on_disk["config"]["adapter"]["name"] == "lora"
    assert on_disk["adapter"]["ranks"] and set(on_disk["adapter"]["ranks"].values()) == {8}
    wandb_runs = list((tmp_path / "results" / "default" / result["run_id"]).rglob("offline-run-*"))
    assert wandb_runs, "no offline W&B run written"


def test_lora_trainable_params_are_exact(tmp_path: Path) -> None:
    result = run_job(_cfg(tmp_path, "tracking=none", "energy=none", "adapter.r=4"), progress=False)
    base, _ = build_tiny_llama()
    expected = sum(
        4 * (m.in_features + m.out_features)
        for name, m in base.named_modules()
        if isinstance(m, nn.Linear) and not name.endswith("lm_head")
    )
    assert result["model"]["trainable_params"] == expected
    assert result["model"]["total_params"] == sum(p.numel() for p in base.parameters())


def test_dora_counts_its_magnitude_vectors(tmp_path: Path) -> None:
    result = run_job(_cfg(tmp_path, "adapter=dora", "tracking=none", "energy=none", "adapter.r=4"), progress=False)
    base, _ = build_tiny_llama()
    targets = [m for name, m in base.named_modules() if isinstance(m, nn.Linear) and not name.endswith("lm_head")]
    expected = sum(4 * (m.in_features + m.out_features) + m.out_features for m in targets)
    assert result["status"] == "completed" and result["model"]["trainable_params"] == expected


def test_full_finetune_trains_everything(tmp_path: Path) -> None:
    result = run_job(_cfg(tmp_path, "adapter=none", "tracking=none", "energy=none"), progress=False)
    assert result["status"] == "completed"
    assert result["model"]["trainable_params"] == result["model"]["total_params"]
    assert result["adapter"]["type"] == "none" and result["energy"]["method"] == "none"


def test_completed_run_is_not_repeated_unless_forced(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, "tracking=none", "energy=none")
    first = run_job(cfg, progress=False)
    again = run_job(cfg, progress=False)
    assert again.get("_resumed") and again["created_at"] == first["created_at"]
    forced = run_job({**cfg, "rerun": True}, progress=False)
    assert not forced.get("_resumed") and forced["status"] == "completed"


def test_training_reduces_the_loss(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        "adapter=none",
        "tracking=none",
        "energy=none",
        "trainer.steps=30",
        "trainer.batch_size=8",
        "trainer.lr=3e-3",
        "trainer.log_every=5",
    )
    curve = run_job(cfg, progress=False)["train"]["loss_curve"]
    assert curve[-1][1] < curve[0][1] * 0.8, curve


@pytest.mark.slow
def test_real_smollm2_smoke_run_from_the_command_line(tmp_path: Path) -> None:
    """The README's main command on the real embedded model, shortened with trainer=smoke."""
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("LORAVEN_CACHE", None)  # share the real model cache across runs (conversion is ~40 s once)
    out = subprocess.run(
        [sys.executable, "run.py", "trainer=smoke", f"results_dir={tmp_path / 'r'}", f"hydra.run.dir={tmp_path / 'h'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp_path / "r" / "default").glob("*/result.json")
    result = json.loads(path.read_text())
    assert contract_violations(result) == []
    assert result["status"] == "completed" and result["model"]["name"] == "SmolLM2-135M-Instruct"
    assert 134_000_000 < result["model"]["total_params"] < 135_000_000
    assert result["metrics"]["base_accuracy"] is not None and result["metrics"]["n"] == 200


@pytest.mark.slow
@pytest.mark.parametrize("adapter", ["lora_ar", "dora"])
def test_real_smollm2_other_adapters(tmp_path: Path, adapter: str) -> None:
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("LORAVEN_CACHE", None)
    out = subprocess.run(
        [
            sys.executable,
            "run.py",
            f"adapter={adapter}",
            "trainer=smoke",
            "tracking=none",
            f"results_dir={tmp_path / 'r'}",
            f"hydra.run.dir={tmp_path / 'h'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (path,) = (tmp_path / "r" / "default").glob("*/result.json")
    result = json.loads(path.read_text())
    assert contract_violations(result) == [] and result["adapter"]["type"] == adapter
    ranks = result["adapter"]["ranks"]
    if adapter == "lora_ar":
        assert len(set(ranks.values())) > 5, "LoRA-AR ranks should differ across SmolLM2's modules"
        assert (path.parent / "lora_ar_allocation.csv").read_text().startswith("module,alpha_hill,spikes,score,rank")
    else:
        assert set(ranks.values()) == {8} and len(ranks) == 210
