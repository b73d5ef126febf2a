"""The fault attack of issue 26, a sample of it in the test suite (the whole of it: tests/e2e/fault_attack.py).

Each case runs ``run.py`` for real and is judged on what it left behind (events, files, processes)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fault_attack as attack  # noqa: E402


def _ok(outcome: attack.Outcome) -> None:
    assert outcome.ok, f"{outcome.case}: {outcome.note}"


CLI_SAMPLE = [
    ("unknown group option", [*attack.FAST, "adapter=loraa"], ["loraa", "lora_ar"], ()),
    ("broken interpolation", [*attack.FAST, "seed=${nope}"], ["nope"], ()),
    ("scheduler key checked before the model", [*attack.FAST, "scheduler.score_ema=2"], ["score_ema"], ()),
    ("device=cuda without CUDA", [*attack.FAST, "device=cuda"], ["cuda"], ()),
    ("traversal", [*attack.FAST, "experiment_name=../../../x"], ["experiment_name"], ()),
    ("bad grid point", ["-m", *attack.FAST, "trainer.lr=0.01,-1"], ["job 1 of 2", "trainer.lr=-1"], ()),
    ("budget", [*attack.FAST, "adapter=lora", "adapter.param_budget=1000000000"], ["largest"], ("model_load",)),
    (
        "no validation split in a search",
        ["-m", "hydra/sweeper=optuna", *attack.FAST, "trainer.lr=interval(1e-3, 1e-2)"],
        ["validation_fraction"],
        (),
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "args", "words", "allow"), CLI_SAMPLE, ids=[c[0] for c in CLI_SAMPLE])
def test_refused_in_one_line_before_anything_started(
    tmp_path: Path, name: str, args: list[str], words: list[str], allow: tuple
) -> None:
    run = attack.cli(tmp_path, [*args, f"results_dir={tmp_path}/r"])
    clear, survived, note = attack.refused_cleanly(run, tmp_path, words, 2, allow)
    assert clear and survived, note


@pytest.mark.slow
def test_a_credential_in_a_config_file_reaches_no_file() -> None:
    for outcome in attack.attack_secrets():
        _ok(outcome)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_record_write_leaves_the_completed_record(tmp_path: Path, sig) -> None:
    _ok(attack._signal_during_write(tmp_path / "w", sig, sweep=False))


@pytest.mark.slow
def test_a_signal_during_job_0s_write_in_a_basic_sweep_keeps_job_0(tmp_path: Path) -> None:
    _ok(attack._signal_during_write(tmp_path / "w", signal.SIGTERM, sweep=True))


@pytest.mark.slow
def test_a_rerun_interrupted_while_writing_keeps_its_new_completed_result(tmp_path: Path) -> None:
    _ok(attack._signal_during_write(tmp_path / "w", signal.SIGTERM, sweep=False, rerun=True))


@pytest.mark.slow
def test_ctrl_c_to_a_joblib_sweep_every_worker_records_itself(tmp_path: Path) -> None:
    _ok(attack._joblib_interrupt(tmp_path / "j", signal.SIGINT))


@pytest.mark.slow
def test_a_sigkilled_joblib_sweep_leaves_no_process_after_10_s(tmp_path: Path) -> None:
    _ok(attack._sigkill(tmp_path / "k", joblib=True))


@pytest.mark.slow
def test_a_sigkilled_tune_stops_its_child_sweep(tmp_path: Path) -> None:
    _ok(attack._tune_killed(tmp_path / "t", signal.SIGKILL))


@pytest.mark.slow
def test_unverifiable_locks_are_reported_stale_ones_taken_over(tmp_path: Path) -> None:
    for outcome in attack._locks(tmp_path / "locks"):
        _ok(outcome)


@pytest.mark.slow
def test_optuna_state_faults(tmp_path: Path) -> None:
    for outcome in attack._optuna_state(tmp_path / "o"):
        _ok(outcome)
