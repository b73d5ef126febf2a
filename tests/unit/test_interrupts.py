"""A job interrupted twice in quick succession (Ctrl-C's SIGINT, then the launcher's forwarded SIGTERM) still
records itself: the second signal must not raise again while the first interruption is being recorded."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import FAST_CLASSIC, compose_cfg
from hypothesis import given
from hypothesis import strategies as st

from loraven import job
from loraven.job import Interrupted, InterruptOnce, run_job


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_first_signal_raises_with_its_number_and_a_quick_second_is_held() -> None:
    clock = FakeClock()
    handler = InterruptOnce(hold_s=30, clock=clock)
    with pytest.raises(Interrupted) as info:
        handler(signal.SIGINT, None)
    assert info.value.signum == signal.SIGINT
    clock.now += 29.9
    handler(signal.SIGTERM, None)  # held: no exception
    assert handler.held == [signal.SIGTERM]


def test_a_signal_after_the_hold_window_raises_again() -> None:
    clock = FakeClock()
    handler = InterruptOnce(hold_s=30, clock=clock)
    with pytest.raises(Interrupted):
        handler(signal.SIGINT, None)
    clock.now += 30.0  # the boundary: held strictly inside the window only
    with pytest.raises(Interrupted) as info:
        handler(signal.SIGTERM, None)
    assert info.value.signum == signal.SIGTERM and handler.held == []


@given(st.lists(st.tuples(st.sampled_from([signal.SIGINT, signal.SIGTERM]), st.floats(0, 50)), max_size=12))
def test_raises_exactly_when_the_last_raise_is_at_least_hold_s_old(events) -> None:
    clock = FakeClock()
    handler = InterruptOnce(hold_s=10, clock=clock)
    last, raises = None, 0
    for signum, gap in events:
        clock.now += gap
        expect_raise = last is None or clock.now - last >= 10
        try:
            handler(signum, None)
            raised = False
        except Interrupted as err:
            raised = True
            assert err.signum == signum
        assert raised == expect_raise
        if raised:
            last, raises = clock.now, raises + 1
    assert len(handler.held) == len(events) - raises  # every signal either raised or was held, none lost


def test_sigterm_while_a_sigint_is_being_recorded_still_leaves_the_record(tmp_path: Path, monkeypatch) -> None:
    """The race seen under load: SIGINT raises in the job; the launcher's SIGTERM lands after the exception was
    caught but before the record is written (here: inside ``checkpoint.resume_note``, the first thing the
    recording does). The record must be on disk, saying SIGINT, and the job must still end as interrupted."""
    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])

    def second_signal(run_dir: Path) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)  # the handler runs at the next bytecode: give it every chance to raise here
        return ""

    def body(run, record, run_dir, tracker, progress, main) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted long before this ends
        raise AssertionError("the SIGINT did not interrupt the job")

    monkeypatch.setattr(job.checkpoint, "resume_note", second_signal)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(Interrupted) as info:
        run_job(cfg, progress=False, body=body)
    assert {s: signal.getsignal(s) for s in before} == before  # the job's handlers are gone again
    (path,) = list((tmp_path / "r").rglob("result.json"))
    written = json.loads(path.read_text())
    assert written["status"] == "failed" and written["reason"].startswith("interrupted (SIGINT)"), written["reason"]
    assert info.value.record["run_id"] == written["run_id"]


def test_a_signal_that_reached_a_worker_before_its_job_started_is_recorded_by_the_job(tmp_path: Path) -> None:
    """A Ctrl-C while a launcher worker validates or claims its job used to be held until the job had run to the
    end (and the launcher killed it after its grace period: no record). Now the job records it at once."""
    from loraven.cli import lifecycle

    cfg = compose_cfg([*FAST_CLASSIC, f"results_dir={tmp_path}/r"])
    ran: list[bool] = []

    def body(run, record, run_dir, tracker, progress, main) -> None:
        ran.append(True)

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        lifecycle.install_worker_handlers()
        lifecycle._WORKER["busy"] = True  # as app.run_from_hydra marks it before the job
        os.kill(os.getpid(), signal.SIGINT)  # the job has not installed its handler yet: held
        assert lifecycle._WORKER["pending"] == signal.SIGINT
        with pytest.raises(Interrupted) as info:
            run_job(cfg, progress=False, body=body)
    finally:
        lifecycle._WORKER.update(busy=False, pending=None)
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert not ran  # interrupted before its body ran, not after
    (path,) = list((tmp_path / "r").rglob("result.json"))
    assert json.loads(path.read_text())["reason"].startswith("interrupted (SIGINT)")
    assert info.value.signum == signal.SIGINT
    again = run_job(cfg, progress=False, body=body)  # the signal was used up: the next job runs to the end
    assert ran == [True] and again["status"] == "completed"
