"""Saved weights (issue 24): each method's saved adapter (or model), reloaded by peft / transformers onto a freshly
built base model from its folder, gives the logits of the in-memory trained model; a killed save leaves nothing that
looks complete; the manifest and digest are deterministic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, compose_cfg

from loraven import artifacts
from loraven.adapters.base import AdapterContext, apply_adapter
from loraven.artifacts import SaveConfig, read_manifest, save_run_artifacts, write_folder
from loraven.models import LoadedModel, build_tiny_llama
from loraven.track import Tracker

TOL = 1e-5  # fp32, max abs difference of logits


def _batch() -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return torch.randint(4, 90, (3, 16), generator=gen)


def _trained(method: str, overrides=(), ranks=None):
    """A tiny Llama adapted by ``method`` with a nonzero "trained" state (every trainable tensor moved), in the
    state the job evaluates it in (``prepare_for_inference``: merged), and its config."""
    cfg = compose_cfg(["model=tiny_llama", f"adapter={method}", *overrides])
    model, tok = build_tiny_llama(seed=0)
    adapted = apply_adapter(model, cfg["adapter"], cfg["scheduler"], AdapterContext(total_steps=8, seed=0))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in adapted.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    for name, r in (ranks or {}).items():
        adapted.layers[name].set_rank(r)
    model.eval()
    adapted.prepare_for_inference()
    return adapted, LoadedModel(model, tok, "tiny-llama-random", "lm"), cfg


def _save(adapted, loaded, cfg, run_dir: Path, **save) -> dict:
    run = SimpleNamespace(top=SimpleNamespace(save=SaveConfig(**save)), raw=cfg)
    return save_run_artifacts(adapted, loaded, run, run_dir, Tracker(), "r0")


def _peft_reload(run_dir: Path, entry: dict) -> torch.nn.Module:
    """As a user would: the base from the folder the adapter names, the adapter from its folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    folder = run_dir / entry["path"]
    base_path = json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert base_path == entry["base_model"]["path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    return PeftModel.from_pretrained(base, str(folder)).eval()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("method", ["lora", "dora", "lora_ar", "loraven"])
def test_reloaded_adapter_gives_the_trained_logits(method, tmp_path):
    overrides = ["adapter.r_min=1", "adapter.r_max=4"] if method == "lora_ar" else []
    adapted, loaded, cfg = _trained(method, overrides)
    x = _batch()
    with torch.no_grad():
        expected = loaded.model(x).logits
    out = _save(adapted, loaded, cfg, tmp_path / "run")
    entry = out["adapter"]
    assert entry["saved"] and entry["format"] == "peft-lora" and entry["bytes"] > 0
    assert read_manifest(tmp_path / "run" / "adapter", verify=True)["sha256"] == entry["sha256"]
    reloaded = _peft_reload(tmp_path / "run", entry)
    with torch.no_grad():
        got = reloaded(x).logits
    assert (got - expected).abs().max().item() <= TOL
    if method == "lora_ar":  # per-module ranks travel in rank_pattern
        config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
        assert sorted(config["rank_pattern"].values()) == sorted(adapted.ranks().values())


def test_loraven_export_at_per_module_ranks_equals_the_layer(tmp_path):
    """Ranks that differ per module, all below r_max, with trained U, S, V: the exported peft LoRA is the LoRAven
    layer at its final ranks, layer by layer and for the whole model."""
    from peft import PeftModel

    probe, _, _ = _trained("loraven")
    names = list(probe.layers)
    ranks = {name: 1 + i % 7 for i, name in enumerate(names)}  # 1..7 < r_max = 8
    adapted, loaded, cfg = _trained("loraven", ranks=ranks)
    assert adapted.ranks() == ranks and all(layer.r < layer.r_max for layer in adapted.layers.values())
    x = _batch()
    with torch.no_grad():
        expected = loaded.model(x).logits
    entry = _save(adapted, loaded, cfg, tmp_path / "run")["adapter"]
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert sorted(config["rank_pattern"].values()) == sorted(ranks.values())
    scaling = adapted.layers[names[0]].scaling
    for key, alpha in config["alpha_pattern"].items():
        assert alpha / config["rank_pattern"][key] == pytest.approx(scaling)
    reloaded = _peft_reload(tmp_path / "run", entry)
    assert isinstance(reloaded, PeftModel)
    with torch.no_grad():
        assert (reloaded(x).logits - expected).abs().max().item() <= TOL
        for name, layer in adapted.layers.items():  # per layer: peft's B·A·(alpha/r) equals scaling·U_r·S_r·V_rᵀ
            peft_layer = reloaded.base_model.model.get_submodule(name)
            delta = peft_layer.get_delta_weight("default")
            assert peft_layer.r["default"] == ranks[name]
            assert (delta - layer.delta_weight()).abs().max().item() <= TOL


def test_full_fine_tuning_saves_the_model_only_when_asked(tmp_path):
    from transformers import AutoModelForCausalLM

    adapted, loaded, cfg = _trained("none")
    out = _save(adapted, loaded, cfg, tmp_path / "quiet")
    assert out["adapter"]["saved"] is False and "full fine-tuning" in out["adapter"]["reason"]
    assert out["model"]["saved"] is False and out["model"]["bytes_if_saved"] > 0
    assert not (tmp_path / "quiet" / "adapter").exists() and not (tmp_path / "quiet" / "model").exists()

    x = _batch()
    with torch.no_grad():
        expected = loaded.model(x).logits
    out = _save(adapted, loaded, cfg, tmp_path / "run", full_model=True)
    entry = out["model"]
    assert entry["saved"] and entry["format"] == "hf-model"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (reloaded(x).logits - expected).abs().max().item() <= TOL


def test_loraven_replace_mode_saves_the_dense_model_when_asked(tmp_path):
    from transformers import AutoModelForCausalLM

    adapted, loaded, cfg = _trained("loraven", ["adapter.mode=replace", "adapter.r_max=16", "adapter.r_min=2"])
    out = _save(adapted, loaded, cfg, tmp_path / "q")
    assert out["adapter"]["saved"] is False and "replace" in out["adapter"]["reason"]
    assert out["model"]["bytes_if_saved"] > 0
    x = _batch()
    with torch.no_grad():
        expected = loaded.model(x).logits
    entry = _save(adapted, loaded, cfg, tmp_path / "run", full_model=True)["model"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / entry["path"], dtype=torch.float32).eval()
    with torch.no_grad():
        assert (reloaded(x).logits - expected).abs().max().item() <= TOL


def test_saving_off_writes_nothing(tmp_path):
    adapted, loaded, cfg = _trained("lora")
    assert _save(adapted, loaded, cfg, tmp_path / "run", adapter=False) == {}
    assert not (tmp_path / "run").exists()


def test_digest_is_deterministic_and_independent_of_write_order(tmp_path):
    def write_ab(tmp: Path) -> dict:
        (tmp / "a.bin").write_bytes(b"alpha")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("beta")
        return {"format": "test"}

    def write_ba(tmp: Path) -> dict:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("beta")
        (tmp / "a.bin").write_bytes(b"alpha")
        return {"format": "test"}

    one, two = write_folder(tmp_path / "x" / "adapter", write_ab), write_folder(tmp_path / "y" / "adapter", write_ba)
    assert one["sha256"] == two["sha256"] and one["bytes"] == 9
    assert read_manifest(tmp_path / "x" / "adapter", verify=True) == one
    (tmp_path / "x" / "adapter" / "a.bin").write_bytes(b"alphX")  # same size, other bytes
    assert read_manifest(tmp_path / "x" / "adapter") is not None  # sizes only
    assert read_manifest(tmp_path / "x" / "adapter", verify=True) is None
    (tmp_path / "y" / "adapter" / "extra").write_text("?")
    assert read_manifest(tmp_path / "y" / "adapter") is None  # a file the manifest does not list


def test_failure_mid_write_leaves_no_folder_and_keeps_the_previous_one(tmp_path):
    final = tmp_path / "run" / "adapter"

    def failing(tmp: Path) -> dict:
        (tmp / "adapter_model.safetensors").write_bytes(b"\0" * 1000)
        raise OSError("disk full (simulated)")

    with pytest.raises(OSError):
        write_folder(final, failing)
    assert not final.exists() and list((tmp_path / "run").iterdir()) == []
    good = write_folder(final, lambda tmp: (tmp / "f").write_text("ok") and {"format": "t"})
    with pytest.raises(OSError):
        write_folder(final, failing)
    assert read_manifest(final, verify=True) == good  # a failed re-save leaves the earlier complete folder


def test_job_records_a_failed_save_as_a_warning_without_a_folder(tmp_path, monkeypatch):
    """The job's hook: a save that fails mid-write (LORAVEN_SAVE_FAULT) leaves no adapter/ and a warning."""
    from loraven.job import _save_weights
    from loraven.record import Record

    adapted, loaded, cfg = _trained("lora")
    monkeypatch.setenv(artifacts.FAULT_ENV, "adapter")
    record = Record(cfg, "r0", experiment="e", adapter={}, task={})
    run = SimpleNamespace(top=SimpleNamespace(save=SaveConfig()), raw=cfg)
    _save_weights(adapted, loaded, run, tmp_path / "run", Tracker(), record)
    assert not (tmp_path / "run" / "adapter").exists()
    assert record["artifacts"]["adapter"]["saved"] is False and "simulated" in record["warnings"][0]
    assert not list((tmp_path / "run").glob(".adapter.tmp-*"))


KILLED_SAVE = """
import sys, time
from pathlib import Path
from loraven.artifacts import write_folder

def write(tmp):
    (tmp / "adapter_model.safetensors").write_bytes(b"\\0" * 4096)
    Path(sys.argv[2]).write_text("writing")
    time.sleep(60)
    return {"format": "peft-lora"}

write_folder(Path(sys.argv[1]), write)
"""


def test_killed_save_leaves_nothing_that_looks_complete(tmp_path):
    """SIGKILL in the middle of writing: no ``adapter/`` folder; what is left is a hidden temp folder without a
    manifest, which readers refuse and the next save removes."""
    final, flag = tmp_path / "run" / "adapter", tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVE, str(final), str(flag)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the writer did not start"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not final.exists()
    (left,) = (tmp_path / "run").iterdir()
    assert left.name.startswith(".adapter.tmp-") and read_manifest(left) is None
    write_folder(final, lambda tmp: (tmp / "f").write_text("ok") and {"format": "t"})
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["adapter"]


def test_a_shared_cache_folder_written_meanwhile_is_kept(tmp_path):
    """Two processes saving the same cache folder (the tiny base model): the one that finishes second keeps the
    first one's complete folder and does not touch the other's temp folder."""
    final = tmp_path / "cache" / "tiny"
    first = write_folder(final, lambda tmp: (tmp / "w").write_text("same") and {"format": "t"}, shared=True)
    busy = tmp_path / "cache" / ".tiny.tmp-other"  # another process still writing
    busy.mkdir()
    again = write_folder(final, lambda tmp: (tmp / "w").write_text("same") and {"format": "t"}, shared=True)
    assert again == first and busy.is_dir() and read_manifest(final, verify=True) == first
    assert sorted(p.name for p in final.parent.iterdir()) == [".tiny.tmp-other", "tiny"]
