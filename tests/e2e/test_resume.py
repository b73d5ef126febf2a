"""Mid-run checkpoints end to end: a run killed or preempted mid-training and run again resumes from its newest valid
checkpoint and ends exactly as the run nobody interrupted (CPU, fp32, tiny model), for every method.

The reference run has checkpointing off (``trainer.checkpoint_every=0``; the keys are not part of the run_id), so the
comparison also shows that saving checkpoints does not change what a run computes. Dropout is on wherever a method
has it, so that a resumed run that did not restore the RNG would draw other masks.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import FAST_LM, ROOT, cli_env, compose_cfg, results

from loraven import checkpoint
from loraven.contract import contract_violations
from loraven.job import run_job

pytestmark = pytest.mark.slow

# checkpoint_max_overhead=0: a save exactly every 2 steps (the tiny model's steps are shorter than a save)
RUN = [
    *FAST_LM,
    "trainer.steps=12",
    "trainer.log_every=1",
    "trainer.checkpoint_every=2",
    "trainer.checkpoint_max_overhead=0",
]
METHODS = {
    "none": ["adapter=none"],
    "lora": ["adapter=lora", "adapter.dropout=0.1"],
    "dora": ["adapter=dora", "adapter.dropout=0.1"],
    "lora_ar": ["adapter=lora_ar", "adapter.dropout=0.1"],
    "loraven_static": ["adapter=loraven", "scheduler=static", "adapter.dropout=0.1"],
    "loraven_linear": ["adapter=loraven", "scheduler=linear", "adapter.dropout=0.1"],
    "loraven_energy": ["adapter=loraven", "scheduler=energy", "adapter.dropout=0.1", "adapter.hebbian=true"],
}
SIDE_FILES = ("rank_trace.csv", "loraven_events.csv", "lora_ar_allocation.csv")


@pytest.fixture(autouse=True)
def _cache(session_cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("LORAVEN_CACHE", str(session_cache))
    monkeypatch.delenv("LORAVEN_FAULT_INJECT", raising=False)


def _cfg(args: list[str], results_dir: Path, *more: str) -> dict[str, Any]:
    return compose_cfg([*args, f"results_dir={results_dir}", *more])


def _run_dir(results_dir: Path) -> Path:
    (folder,) = [p.parent for p in results_dir.rglob("config.json")]
    return folder


def _assert_same_result(resumed: dict, reference: dict, resumed_dir: Path, reference_dir: Path) -> None:
    """Every number the run computed is the same: metrics, the loss at every step, ranks, the method's files."""
    assert resumed["run_id"] == reference["run_id"]
    assert resumed["metrics"] == reference["metrics"]
    assert resumed["train"]["loss_curve"] == reference["train"]["loss_curve"]
    assert len(resumed["train"]["loss_curve"]) == 12
    drop = ("analysis_s",)  # LoRA-AR's analysis wall time
    same = {k: v for k, v in resumed["adapter"].items() if k not in drop}
    assert same == {k: v for k, v in reference["adapter"].items() if k not in drop}
    assert resumed["time"]["steps"] == reference["time"]["steps"] == 12
    assert resumed["time"]["train_tokens"] == reference["time"]["train_tokens"]
    for name in SIDE_FILES:
        if (reference_dir / name).exists():
            assert (resumed_dir / name).read_text() == (reference_dir / name).read_text(), name


@pytest.mark.parametrize("method", list(METHODS))
def test_a_killed_run_resumes_at_its_checkpoint_and_ends_bit_identical(
    method: str, tmp_path: Path, session_cache: Path
) -> None:
    args = [*RUN, *METHODS[method]]
    res, ref = tmp_path / "res", tmp_path / "ref"
    # the attempt killed (SIGKILL: no handler runs, nothing is recorded) just before step 7, in its own process
    killed = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args, f"results_dir={res}", f"hydra.run.dir={tmp_path}/o"],
        cwd=tmp_path,
        env=cli_env(session_cache, {"LORAVEN_FAULT_INJECT": "kill@7"}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    run_dir = _run_dir(res)
    assert not (run_dir / "result.json").exists()
    assert [s for s, _ in checkpoint.list_checkpoints(run_dir / "checkpoints")] == [6, 4]  # checkpoint_keep=2

    resumed = run_job(_cfg(args, res), progress=False)
    reference = run_job(_cfg(args, ref, "trainer.checkpoint_every=0"), progress=False)
    assert resumed["status"] == reference["status"] == "completed", (resumed["reason"], reference["reason"])
    assert not contract_violations(resumed)
    assert resumed["checkpoint"]["resumed_from_step"] == 6
    assert resumed["attempts"] == 2 and reference["attempts"] == 1
    attempts = resumed["checkpoint"]["attempts"]
    assert [(a["outcome"], a["start_step"], a["end_step"]) for a in attempts] == [
        ("killed", 0, 6),
        ("completed", 6, 12),
    ]
    assert resumed["time"]["train_s"] == pytest.approx(sum(a["train_s"] for a in attempts))
    _assert_same_result(resumed, reference, run_dir, _run_dir(ref))
    assert not (run_dir / "checkpoints").exists()  # a completed run's checkpoints are deleted


@pytest.mark.parametrize("method", ["lora", "loraven_energy"])
def test_a_preempted_run_is_recorded_as_resumable_and_a_corrupt_newest_checkpoint_falls_back(
    method: str, tmp_path: Path, monkeypatch
) -> None:
    """SIGTERM before step 7: saved at the boundary after step 7, recorded as an interrupted attempt that resumes;
    the step-7 checkpoint is then damaged, and the rerun resumes from step 6 with a warning."""
    args = [*RUN, *METHODS[method]]
    res, ref = tmp_path / "res", tmp_path / "ref"
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "term@7")
    with pytest.raises(KeyboardInterrupt):  # the job ends as interrupted, as it did before checkpoints
        run_job(_cfg(args, res), progress=False)
    monkeypatch.delenv("LORAVEN_FAULT_INJECT")
    run_dir = _run_dir(res)
    (between,) = results(res)
    assert between["status"] == "failed" and between["attempts"] == 1
    assert between["reason"].startswith("interrupted (SIGTERM) at step 7: checkpoint saved"), between["reason"]
    assert [a["outcome"] for a in between["checkpoint"]["attempts"]] == ["preempted"]
    assert [s for s, _ in checkpoint.list_checkpoints(run_dir / "checkpoints")] == [7, 6]

    state = run_dir / "checkpoints" / "step-000000007" / "state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 3] ^= 0xFF
    state.write_bytes(bytes(data))

    resumed = run_job(_cfg(args, res), progress=False)  # rerun=false: a failed record is run again, and resumes
    reference = run_job(_cfg(args, ref, "trainer.checkpoint_every=0"), progress=False)
    assert resumed["status"] == "completed" and resumed["checkpoint"]["resumed_from_step"] == 6
    assert resumed["attempts"] == 2
    assert any("step-000000007 ignored" in w and "sha256" in w for w in resumed["warnings"]), resumed["warnings"]
    assert resumed["checkpoint"]["rejected"] and "sha256" in resumed["checkpoint"]["rejected"][0]
    _assert_same_result(resumed, reference, run_dir, _run_dir(ref))


def test_every_checkpoint_corrupt_starts_from_zero_and_rerun_true_starts_fresh(tmp_path: Path, monkeypatch) -> None:
    args = [*RUN, *METHODS["lora"], "trainer.checkpoint_keep_finished=true"]
    res, ref = tmp_path / "res", tmp_path / "ref"
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "term@5")
    with pytest.raises(KeyboardInterrupt):
        run_job(_cfg(args, res), progress=False)
    monkeypatch.delenv("LORAVEN_FAULT_INJECT")
    run_dir = _run_dir(res)
    for _, folder in checkpoint.list_checkpoints(run_dir / "checkpoints"):
        (folder / "manifest.json").unlink()  # as a save cut off before its manifest
    fresh = run_job(_cfg(args, res), progress=False)
    reference = run_job(_cfg(args, ref, "trainer.checkpoint_every=0"), progress=False)
    assert fresh["status"] == "completed" and fresh["checkpoint"]["resumed_from_step"] is None
    assert len(fresh["checkpoint"]["rejected"]) == 2 and all(
        "did not finish" in r for r in fresh["checkpoint"]["rejected"]
    )
    _assert_same_result(fresh, reference, run_dir, _run_dir(ref))
    # checkpoint_keep_finished=true: the final state stays; rerun=true ignores it and trains from step 0
    assert [s for s, _ in checkpoint.list_checkpoints(run_dir / "checkpoints")][0] == 12
    again = run_job(_cfg(args, res, "rerun=true"), progress=False)
    assert again["checkpoint"]["resumed_from_step"] is None and again["attempts"] == 1
    assert again["train"]["loss_curve"] == reference["train"]["loss_curve"]


def test_a_checkpoint_that_cannot_be_restored_stops_the_run_instead_of_training_half_loaded(
    tmp_path: Path, monkeypatch
) -> None:
    from loraven.adapters.loraven.model import LoRAvenModel

    args = [*RUN, *METHODS["loraven_linear"]]
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "term@5")
    with pytest.raises(KeyboardInterrupt):
        run_job(_cfg(args, tmp_path), progress=False)
    monkeypatch.delenv("LORAVEN_FAULT_INJECT")

    def refuse(self, state):
        self.step = -1  # changed something, then found it does not fit
        raise ValueError("not this model's state")

    monkeypatch.setattr(LoRAvenModel, "load_state_extra", refuse)
    failed = run_job(_cfg(args, tmp_path), progress=False)
    assert failed["status"] == "failed" and "half-restored" in failed["reason"], failed["reason"]
    assert sum("not this model's state" in w for w in failed["warnings"]) == 2  # both checkpoints tried


def test_energy_and_time_add_up_over_attempts(tmp_path: Path, monkeypatch) -> None:
    args = [*RUN, *METHODS["lora"], "energy=codecarbon", "energy.measure_power_secs=0.5"]
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "term@7")
    with pytest.raises(KeyboardInterrupt):
        run_job(_cfg(args, tmp_path), progress=False)
    monkeypatch.delenv("LORAVEN_FAULT_INJECT")
    done = run_job(_cfg(args, tmp_path), progress=False)
    attempts = done["checkpoint"]["attempts"]
    assert done["attempts"] == 2 and [a["outcome"] for a in attempts] == ["preempted", "completed"]
    kwh = [a["energy_kwh"] for a in attempts]
    assert all(k is not None and k > 0 for k in kwh), attempts
    assert done["energy"]["kwh"] == pytest.approx(sum(kwh), rel=1e-12)
    assert done["time"]["train_s"] == pytest.approx(sum(a["train_s"] for a in attempts), rel=1e-12)
    assert not [w for w in done.get("warnings", []) if "energy covers" in w]


def test_a_cached_base_score_does_not_change_the_run(tmp_path: Path, monkeypatch) -> None:
    """lm-eval reseeds every RNG when it scores the base model; a run that found the score cached used to start
    its adapter from other random numbers than one that measured it."""
    monkeypatch.setenv("LORAVEN_CACHE", str(tmp_path / "cache"))
    args = [*RUN, *METHODS["lora"], "trainer.checkpoint_every=0"]
    first = run_job(_cfg(args, tmp_path / "a"), progress=False)  # measures the base score
    second = run_job(_cfg(args, tmp_path / "b"), progress=False)  # reads it from the cache
    assert first["train"]["loss_curve"] == second["train"]["loss_curve"]
    assert json.dumps(first["metrics"], sort_keys=True) == json.dumps(second["metrics"], sort_keys=True)


def test_a_checkpoint_that_does_not_fit_is_refused_before_anything_is_loaded(tmp_path: Path, monkeypatch) -> None:
    """A checkpoint of another model shape under this run's id (a copied folder, edited code) is checked against the
    live parameters and optimizer before anything changes: refused with the reason, and the run starts at step 0."""
    big, small = [*RUN, "adapter=lora", "adapter.r=8"], [*RUN, "adapter=lora", "adapter.r=4"]
    monkeypatch.setenv("LORAVEN_FAULT_INJECT", "term@5")
    with pytest.raises(KeyboardInterrupt):
        run_job(_cfg(big, tmp_path / "big"), progress=False)
    monkeypatch.delenv("LORAVEN_FAULT_INJECT")
    reference = run_job(_cfg(small, tmp_path / "ref", "trainer.checkpoint_every=0"), progress=False)
    target = tmp_path / "small" / "default" / reference["run_id"] / "checkpoints"
    target.parent.mkdir(parents=True)
    shutil.copytree(_run_dir(tmp_path / "big") / "checkpoints", target)
    for _, folder in checkpoint.list_checkpoints(target):
        manifest = json.loads((folder / "manifest.json").read_text())
        (folder / "manifest.json").write_text(json.dumps({**manifest, "run_id": reference["run_id"]}))
    done = run_job(_cfg(small, tmp_path / "small"), progress=False)
    assert done["status"] == "completed" and done["checkpoint"]["resumed_from_step"] is None
    assert len(done["checkpoint"]["rejected"]) == 2
    assert all("in the checkpoint" in r or "not this model's" in r for r in done["checkpoint"]["rejected"])
    assert done["train"]["loss_curve"] == reference["train"]["loss_curve"]
