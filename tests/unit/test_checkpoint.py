"""Mid-run checkpoints, one piece at a time: the resumable batch iterator, the all-or-nothing checkpoint folder and
its checks, the RNG capture, the deferred signals and energy summed over attempts (loraven/checkpoint.py)."""

from __future__ import annotations

import json
import os
import random
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from loraven import checkpoint
from loraven.meters.base import EnergyReading
from loraven.tasks.batching import EpochBatches


def _plain_generator(rows: int, batch_size: int, seed: int):
    """The batcher as it was before it could be saved (the loop of lm_batches/classic_batches): the reference."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(rows, generator=gen)
        for start in range(0, rows - batch_size + 1, batch_size):
            yield order[start : start + batch_size].tolist()


def _batches(rows: int, batch_size: int, seed: int) -> EpochBatches:
    return EpochBatches(rows, batch_size, seed, lambda idx: idx.tolist())


@pytest.mark.parametrize(("rows", "batch_size", "seed"), [(10, 3, 0), (7, 7, 5), (64, 16, 1234), (5, 1, 2)])
def test_epoch_batches_yield_what_the_plain_generator_did(rows: int, batch_size: int, seed: int) -> None:
    ours, reference = _batches(rows, batch_size, seed), _plain_generator(rows, batch_size, seed)
    for _ in range(4 * rows):  # several epochs: the remainder of each is dropped, as before
        assert next(ours) == next(reference)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 40),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
)
def test_a_restored_iterator_continues_exactly(rows: int, data, seed: int) -> None:
    batch_size = data.draw(st.integers(1, rows))
    taken = data.draw(st.integers(0, 3 * (rows // batch_size) + 2))
    running = _batches(rows, batch_size, seed)
    for _ in range(taken):
        next(running)
    saved = running.state_dict()
    restored = _batches(rows, batch_size, seed + 1)  # another seed: the state alone must decide what comes next
    restored.load_state_dict(saved)
    assert [next(restored) for _ in range(12)] == [next(running) for _ in range(12)]
    assert restored.taken == running.taken == taken + 12


def test_a_data_position_of_other_data_is_refused() -> None:
    state = _batches(10, 3, 0).state_dict()
    with pytest.raises(ValueError, match="10 rows in batches of 3"):
        _batches(12, 3, 0).load_state_dict(state)


# ---------------------------------------------------------------- the checkpoint folder


def _write(root: Path, step: int, run_id: str = "run1") -> Path:
    state = {"step": step, "w": torch.arange(1000, dtype=torch.float32) * step}
    return checkpoint.write_checkpoint(root, step, state, {"run_id": run_id})


def test_written_checkpoint_verifies_and_loads(tmp_path: Path) -> None:
    folder = _write(tmp_path, 7)
    assert folder.name == "step-000000007" and sorted(p.name for p in folder.iterdir()) == ["manifest.json", "state.pt"]
    manifest = checkpoint.verify(folder, "run1")
    assert manifest["step"] == 7 and manifest["bytes"] == (folder / "state.pt").stat().st_size
    assert torch.equal(checkpoint.load_state(folder)["w"], torch.arange(1000, dtype=torch.float32) * 7)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no temp folder left


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda f: _flip_byte(f / "state.pt"), "sha256"),
        (lambda f: _truncate(f / "state.pt"), "bytes"),
        (lambda f: (f / "manifest.json").unlink(), "did not finish"),
        (lambda f: (f / "manifest.json").write_text("{not json"), "unreadable manifest"),
        (lambda f: (f / "state.pt").unlink(), "missing"),
        (lambda f: _edit_manifest(f, run_id="another"), "written by run 'another'"),
        (lambda f: _edit_manifest(f, step=8), "step 8"),
        (lambda f: _edit_manifest(f, schema=0), "schema 0"),
    ],
)
def test_a_damaged_checkpoint_is_rejected_with_the_reason(tmp_path: Path, damage, words: str) -> None:
    folder = _write(tmp_path, 7)
    damage(folder)
    with pytest.raises(checkpoint.CheckpointRejected, match=words):
        checkpoint.verify(folder, "run1")


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, **changes}))


def test_a_save_that_fails_midway_leaves_nothing_that_looks_like_a_checkpoint(tmp_path: Path, monkeypatch) -> None:
    _write(tmp_path, 2)

    def broken_save(obj, fh):
        fh.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        _write(tmp_path, 4)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path)] == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000000002"]


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    for step in (2, 10, 4, 8, 6):
        _write(tmp_path, step)
    checkpoint.prune(tmp_path, 2)
    assert [step for step, _ in checkpoint.list_checkpoints(tmp_path)] == [10, 8]


# ---------------------------------------------------------------- RNG, signals, energy


def _draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_rng_state_round_trip_through_a_weights_only_load(tmp_path: Path) -> None:
    torch.manual_seed(3), random.seed(4), np.random.seed(5)
    saved = checkpoint.rng_state()
    expected = _draws()
    torch.save(saved, tmp_path / "rng.pt")
    _draws(), _draws()
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_preserved_rng_undoes_a_reseed() -> None:
    torch.manual_seed(0)
    expected = _draws()
    torch.manual_seed(0)
    with checkpoint.preserved_rng():
        torch.manual_seed(1234), random.seed(1234), np.random.seed(1234)  # what lm-eval's simple_evaluate does
        _draws()
    assert _draws()[0] == expected[0]


def test_deferred_signals_only_set_a_flag_then_go_back() -> None:
    seen: list[int] = []
    before = signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append(signum))
    try:
        deferred = checkpoint.DeferredSignals()
        deferred.install()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert deferred.pending == signal.SIGUSR1 and seen == []  # the process goes on; nothing ran
        deferred.uninstall(redeliver=True)  # not handled at a step boundary: sent again to the old handler
        assert seen == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_energy_adds_up_over_attempts_with_the_weakest_evidence() -> None:
    a = EnergyReading("codecarbon-rapl", "measured", kwh=1.0, cpu_kwh=0.75, gpu_kwh=0.0, ram_kwh=0.25, duration_s=10)
    b = EnergyReading("codecarbon-tdp-estimate", "estimated", kwh=2.0, cpu_kwh=1.5, gpu_kwh=0.0, ram_kwh=0.5)
    total, covered = checkpoint.sum_readings([a, None, b])
    assert covered == 2
    assert (total.kwh, total.cpu_kwh, total.ram_kwh) == (3.0, 2.25, 0.75)
    assert total.duration_s is None  # one attempt did not say how long: no made-up sum
    assert total.evidence == "estimated" and total.method == "codecarbon-rapl+codecarbon-tdp-estimate"
    none, covered = checkpoint.sum_readings([EnergyReading("none"), None])
    assert covered == 0 and none.kwh is None


# ---------------------------------------------------------------- a method's own state (LoRAven)


def _loraven(seed: int = 0):
    from loraven.adapters.base import AdapterContext, apply_adapter
    from loraven.models import build_tiny_llama

    model, _ = build_tiny_llama(seed=seed)
    sched = {
        "name": "energy",
        "update_every": 2,
        "min_steps_between_changes": 0,
        "budget": {"fraction": 0.3},
        "events": {"target_loss": 0.0, "error_threshold": 0.1, "performance_drop_pct": 0.5},
    }
    acfg = {"name": "loraven", "r_max": 8, "hebbian": True, "dropout": 0.1}
    adapted = apply_adapter(model, acfg, sched, AdapterContext(seed=seed, total_steps=40))
    opt = torch.optim.AdamW(list(adapted.trainable_parameters()), lr=3e-2)
    return model, adapted, opt


def _steps(model, adapted, opt, steps: range) -> None:
    for step in steps:
        x = torch.randint(4, 90, (4, 12), generator=torch.Generator().manual_seed(step))
        loss = model(x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        adapted.after_optimizer_step(step, loss.detach())


def _same(a, b, where: str = "state") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def test_loraven_state_survives_a_weights_only_round_trip_and_continues_identically(tmp_path: Path) -> None:
    """After 12 steps of the energy scheduler with events and Hebbian updates (decisions at odd steps: step 12 is
    between two, with a loss accumulated and the next step observed), a fresh LoRAven model given the saved
    parameters, optimizer and method state continues exactly as the original (ranks, events, trace, budget)."""
    torch.manual_seed(0)
    model, adapted, opt = _loraven()
    _steps(model, adapted, opt, range(1, 13))
    extra = adapted.state_dict_extra()
    # the state is not trivial: ranks moved, events fired, the budget manager adapted, the scorers trained
    assert len(extra["trace"]) > len(adapted.layers) and extra["events"]
    assert extra["monitor"]["ema"] is not None and extra["scheduler"]["manager"]["scaling"] != 1.0
    assert extra["scorers"]["updates"] > 0 and any(s["parked"] is not None for s in extra["layers"].values())
    assert extra["loss_acc"] is not None and all(s["observe"] for s in extra["layers"].values())
    torch.save(
        {
            "extra": extra,
            "params": {n: p for n, p in model.named_parameters() if p.requires_grad},
            "opt": opt.state_dict(),
        },
        tmp_path / "s.pt",
    )
    rng = checkpoint.rng_state()

    saved = torch.load(tmp_path / "s.pt", weights_only=True)
    torch.manual_seed(99)  # another init: everything that matters must come from the saved state
    model2, adapted2, opt2 = _loraven()
    with torch.no_grad():
        for name, p in model2.named_parameters():
            if p.requires_grad:
                p.copy_(saved["params"][name])
    opt2.load_state_dict(saved["opt"])
    adapted2.load_state_extra(saved["extra"])
    _same(adapted2.state_dict_extra(), extra)

    checkpoint.set_rng_state(rng)
    _steps(model, adapted, opt, range(13, 25))
    checkpoint.set_rng_state(rng)
    _steps(model2, adapted2, opt2, range(13, 25))
    _same(adapted2.state_dict_extra(), adapted.state_dict_extra(), "after")
    assert adapted2.summary() == adapted.summary() and adapted2.trace_rows() == adapted.trace_rows()


def test_loraven_refuses_another_models_state() -> None:
    _, adapted, _ = _loraven()
    extra = adapted.state_dict_extra()
    extra["layers"].pop(next(iter(extra["layers"])))
    with pytest.raises(ValueError, match="not this model's"):
        _loraven()[1].load_state_extra(extra)


def test_periodic_saves_wait_while_the_last_one_cost_more_than_the_overhead_cap(tmp_path: Path, monkeypatch) -> None:
    """checkpoint_every=1 with saves costing 1 s on 0.5 s steps and a 50 % cap: a save needs ≥ 2 s of training since
    the last one; the final step and a signal always save."""
    session = checkpoint.CheckpointSession(tmp_path, "r", 1, 2, False, max_overhead=0.5)
    clock, saved = [0.0], []

    def fake_save(step: int, loop) -> None:
        saved.append(step)
        session.last_saved, session._last_save_cost, session._last_save_end = step, 1.0, clock[0]

    monkeypatch.setattr(session, "save", fake_save)
    monkeypatch.setattr(checkpoint.time, "perf_counter", lambda: clock[0])
    for step in range(1, 10):
        clock[0] = 0.5 * step
        if step == 7:
            session.signals.pending = signal.SIGUSR1
            with pytest.raises(checkpoint.Preempted):
                session.after_step(step, 9, dict)
            continue
        session.after_step(step, 9, dict)
    assert saved == [1, 5, 7, 9] and session.postponed == 5  # 2, 3, 4, 6 and 8 (too soon after 7) waited


def test_lora_ar_resume_proves_its_re_derived_allocation() -> None:
    """LoRA-AR's ranks are not restored but derived again from the same frozen weights; the checkpoint keeps the
    ones it trained with, and a resume whose allocation came out different is refused."""
    from loraven.adapters.base import AdapterContext, apply_adapter
    from loraven.models import build_tiny_llama

    def build():
        model, _ = build_tiny_llama(seed=0)
        return apply_adapter(model, {"name": "lora_ar"}, {"name": "static"}, AdapterContext())

    saved = build().state_dict_extra()
    again = build()
    again.load_state_extra(saved)  # the same weights give the same allocation
    assert again.state_dict_extra() == saved and saved["ranks"]
    module = next(iter(saved["ranks"]))
    other = {**saved, "ranks": {**saved["ranks"], module: saved["ranks"][module] + 1}}
    with pytest.raises(ValueError, match="re-derived allocation differs"):
        again.load_state_extra(other)
