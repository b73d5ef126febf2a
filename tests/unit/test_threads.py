"""The thread-count policy (loraven/threads.py): explicit choices win, the probe keeps the faster count, load
changes start a re-probe, and the record says how the count was chosen. A fake clock and a fake torch
thread setter make every case exact (no timing is asserted)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from loraven.errors import ConfigError
from loraven.threads import (
    CpuIdle,
    ThreadGovernor,
    candidate_counts,
    choose_threads,
    decide,
    env_threads,
    parse_threads,
    usable_cores,
)


class FakeTorch:
    """torch.set/get_num_threads stand-ins that log every set."""

    def __init__(self, n: int = 2) -> None:
        self.n = n
        self.sets: list[int] = []

    def set(self, n: int) -> None:
        self.n = n
        self.sets.append(n)

    def get(self) -> int:
        return self.n


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class FakeIdle(CpuIdle):
    """Idle cores as the test says (``value``), no /proc/stat."""

    def __init__(self, value: float | None = 0.0) -> None:
        self.value = value
        self.marks = 0

    def mark(self) -> None:
        self.marks += 1

    def idle_cores(self) -> float | None:
        return self.value


def make(requested="auto", cores=2, env=None, idle=None, **kw):
    fake, clock = FakeTorch(), FakeClock()
    gov = ThreadGovernor(
        requested,
        "cpu",
        env=env if env is not None else {},
        cores=cores,
        clock=clock,
        idle=idle if idle is not None else FakeIdle(None),  # None: no /proc/stat, so no gate
        set_threads=fake.set,
        get_threads=fake.get,
        **kw,
    )
    return gov, fake, clock


def run(gov: ThreadGovernor, fake: FakeTorch, clock: FakeClock, cost: Callable[[int, int], float], units: int, start=0):
    """``units`` units whose duration is ``cost(unit_index, threads_in_force)``; returns the counts used."""
    used = []
    for i in range(start, start + units):
        with gov.step():
            used.append(fake.n)
            clock.t += cost(i, fake.n)
    return used


# ---------------------------------------------------------------------- explicit choices


def test_config_integer_is_applied_and_never_changed():
    gov, fake, clock = make(3, env={"OMP_NUM_THREADS": "1"})  # the config key wins over the environment
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 9.0, 30)
    assert used == [3] * 30 and fake.sets == [3]
    rec = gov.record()
    assert rec["torch_threads"] == 3 and rec["threads"]["how"] == "config" and rec["threads"]["requested"] == 3


def test_omp_num_threads_is_respected_and_never_probed():
    gov, fake, clock = make("auto", env={"OMP_NUM_THREADS": "1"})
    used = run(gov, fake, clock, lambda i, n: 9.0 if n == 1 else 1.0, 30)  # 1 thread is slower: still kept
    assert used == [1] * 30 and fake.sets == [1]
    assert gov.choice.how == "env:OMP_NUM_THREADS" and not gov.auto


def test_omp_nested_form_and_invalid_values():
    assert env_threads({"OMP_NUM_THREADS": "4,2"}) == ("OMP_NUM_THREADS", 4)
    assert env_threads({"OMP_NUM_THREADS": ""}) is None
    assert env_threads({"OMP_NUM_THREADS": "lots"}) is None  # ignored with a warning, as OpenMP ignores it
    assert env_threads({"OMP_NUM_THREADS": "0"}) is None
    gov, _, _ = make("auto", env={"OMP_NUM_THREADS": "lots"})
    assert gov.auto and gov.probing


def test_gpu_keeps_torch_defaults():
    fake = FakeTorch(7)
    gov = ThreadGovernor("auto", torch.device("cuda"), env={}, set_threads=fake.set, get_threads=fake.get)
    with gov.step():
        pass
    assert fake.sets == [] and gov.choice.n == 7 and gov.choice.how == "cuda-default"


def test_one_core_needs_no_probe():
    gov, fake, clock = make(cores=1)
    assert not gov.auto and gov.choice.how == "one-core" and fake.n == 1


@pytest.mark.parametrize("bad", ["two", 0, -1, 1.5, True, "1e3x", [2]])
def test_bad_requests_are_one_line_errors(bad):
    with pytest.raises(ConfigError) as err:
        parse_threads(bad)
    message = str(err.value)
    assert "\n" not in message and repr(bad) in message and "auto or an integer >= 1" in message


@pytest.mark.parametrize(("value", "parsed"), [(None, "auto"), ("auto", "auto"), (" AUTO ", "auto"), (2, 2), ("4", 4)])
def test_good_requests(value, parsed):
    assert parse_threads(value) == parsed


# ---------------------------------------------------------------------- the probe


def test_slower_at_two_threads_chooses_one():
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 6.0, 20)
    assert gov.choice.n == 1 and gov.choice.how == "probe"
    # warm-up at the fewest threads, one decisive round (1 then 2), then 1 thread from there on
    assert used[:3] == [1, 1, 2] and used[3:] == [1] * 17
    assert gov.choice.timings_ms == {1: [1000.0], 2: [6000.0]}


def test_faster_at_two_threads_chooses_two():
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 0.6, 20)
    assert gov.choice.n == 2 and used[-10:] == [2] * 10 and fake.n == 2


def test_close_counts_take_every_round_and_keep_the_fewest_threads():
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 0.9, 20)  # 2 threads only 10 % faster
    assert gov.choice.n == 1 and gov.choice.how == "probe-unclear"
    assert used[:7] == [1, 1, 2, 2, 1, 1, 2]  # warm-up, then 3 rounds in A B, B A, A B order
    assert all(len(ts) == 3 for ts in gov.choice.timings_ms.values())


def test_a_lucky_round_cannot_buy_more_threads():
    """2 threads are 3x slower, but a spike slows round 1's 1-thread unit: more threads need two rounds, and
    the reversed round 2 means no count beats the other, so the fewest threads stay."""
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: 8.0 if i == 1 else (1.0 if n == 1 else 3.0), 12)
    assert gov.choice.n == 1 and used[-3:] == [1, 1, 1]


def test_unclear_fluctuating_load_keeps_the_fewest_threads():
    """Round ratios t1/t2 = 1.5, 0.7, 1.1: neither count beats the other in every round."""
    times = {1: 1.5, 2: 1.0, 3: 1.0, 4: 0.7, 5: 1.1, 6: 1.0}  # units 1..6 = rounds (1, 2) (2, 1) (1, 2)
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: times.get(i, 1.0), 10)
    assert gov.choice.n == 1 and gov.choice.how == "probe-unclear"


def test_more_threads_need_two_rounds_fewer_need_one():
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 0.5, 8)
    assert used[:6] == [1, 1, 2, 2, 1, 2] and gov.choice.how == "probe"
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 2.0, 8)
    assert used[:4] == [1, 1, 2, 1] and gov.choice.how == "probe"


def test_work_normalises_unequal_units():
    """A wide batch at 1 thread must not make 1 thread look slow: times are compared per unit of work."""
    gov, fake, clock = make()
    works = [64, 64, 16, 64, 16, 64, 16]  # the 2-thread units get the small batches
    for i in range(7):
        with gov.step(work=works[i]):
            clock.t += works[i] * (1.0 if fake.n == 1 else 2.0) / 64
    assert gov.choice.n == 1


def test_decide_rules():
    assert decide({1: [1.0], 2: [2.0]}) == (1, True)  # fewer threads: one round decides
    assert decide({1: [1.0], 2: [0.5]}) == (2, False)  # more threads: not on one round
    assert decide({1: [1.0, 1.0], 2: [0.5, 0.6]}) == (2, True)
    assert decide({1: [1.0], 2: [0.9]}) == (1, False)  # 2 threads 10 % faster: below CLEAR, fewest kept
    assert decide({1: [1.0, 1.0, 1.0], 2: [0.5, 3.0, 0.5]}) == (1, False)  # a reversed round: nobody beats
    assert decide({1: [4.0, 4.0], 2: [1.0, 2.0], 4: [1.0, 1.9]}) == (2, False)  # 1 beaten; 2 vs 4 undecided
    assert decide({1: [1.0, 1.0], 2: [2.0, 2.0]}, clear=3.0) == (1, False)
    with pytest.raises(ValueError, match="no probe timings"):
        decide({1: [], 2: []})


def test_decide_boundaries_count_as_beating():
    """A tie in one round is not a reversed round, and a median ratio of exactly CLEAR is clear (both ``>=``)."""
    assert decide({1: [1.0, 2.0, 2.0], 2: [1.0, 1.0, 1.0]}) == (2, True)  # round 0 a tie; median ratio 2
    assert decide({1: [1.2, 1.2], 2: [1.0, 1.0]}) == (2, True)  # median ratio exactly 1.2 = CLEAR
    assert decide({1: [1.0, 1.0], 2: [2.0, 2.0]}, clear=2.0) == (1, True)


@given(
    st.dictionaries(
        st.sampled_from([1, 2, 4, 8]),
        st.lists(st.floats(0.01, 100.0), min_size=3, max_size=3),
        min_size=1,
    )
)
def test_decide_keeps_a_count_nobody_beats(timings):
    """Property: the kept count is one of the counts and no other count is at least as fast in every round with a
    median ratio >= CLEAR against it; a decisive choice is at least as fast as every other in every round."""
    keep, decisive = decide(timings)
    assert keep in timings
    for m, ts in timings.items():
        ratios = [timings[keep][i] / ts[i] for i in range(3)]
        if m != keep:
            assert not (min(ratios) >= 1.0 and sorted(ratios)[1] >= 1.2)
            if decisive:
                assert all(ts[i] >= timings[keep][i] for i in range(3))


def test_choose_threads_calls_the_probe_and_leaves_the_choice_in_force():
    fake, clock = FakeTorch(), FakeClock()
    calls = []

    def probe():
        calls.append(fake.n)
        clock.t += 3.0 if fake.n == 2 else 1.0

    choice = choose_threads(
        probe,
        "auto",
        "cpu",
        env={},
        cores=2,
        clock=clock,
        idle=FakeIdle(None),
        set_threads=fake.set,
        get_threads=fake.get,
    )
    assert choice.n == 1 and fake.n == 1 and calls == [1, 1, 2]
    explicit = choose_threads(probe, 2, "cpu", env={}, set_threads=fake.set, get_threads=fake.get)
    assert explicit.n == 2 and explicit.how == "config" and len(calls) == 3  # the probe was not called


def test_restore_puts_back_the_original_count():
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 6.0, 5)
    assert fake.n == 1
    gov.restore()
    assert fake.n == 2


def test_real_torch_count_is_set_and_restored():
    before = torch.get_num_threads()
    gov = ThreadGovernor(1, "cpu", env={})
    assert torch.get_num_threads() == 1
    gov.restore()
    assert torch.get_num_threads() == before


# ---------------------------------------------------------------------- watching a long run


def test_slowdown_at_the_chosen_count_reprobes_and_switches():
    """Quiet start (2 threads faster), then a co-tenant arrives at unit 20 (2 threads 6x slower)."""
    gov, fake, clock = make()

    def cost(i, n):
        if i < 20:
            return 1.0 if n == 1 else 0.6
        return 1.2 if n == 1 else 6.0

    used = run(gov, fake, clock, cost, 40)
    assert used[19] == 2 and used[-10:] == [1] * 10
    assert gov.reprobes == 1
    change = gov.decisions[0]
    assert change["from"] == 2 and change["to"] == 1 and "slower" in change["why"]
    # caught after slow_window (3) slow units, plus the one 2-thread unit of the re-probe
    assert used[20:23] == [2, 2, 2] and used.count(2) - 20 + used[:20].count(1) <= 6


def test_idle_cores_at_fewer_threads_reprobe_for_more():
    """A co-tenant leaves: 1 thread is no slower, but a core sits idle and 2 threads are now faster."""
    idle = FakeIdle(0.0)
    gov, fake, clock = make(idle=idle)
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 6.0, 15)
    assert used[-1] == 1
    idle.value = 1.0
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 0.6, 30, start=15)
    assert used[-5:] == [2] * 5 and gov.decisions[0]["why"] == "1.00 cores spare"


def test_repeated_reprobes_that_keep_the_count_back_off():
    idle = FakeIdle(1.0)  # idle cores reported all along, but 2 threads stay slower
    gov, fake, clock = make(idle=idle)
    run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 3.0, 400)
    # windows of 10, 20, 40, 80, 80, ... units (backoff capped at 8x): 7 re-probes in 400 units, not 40
    assert 4 <= gov.reprobes <= 8 and all(c["to"] == 1 for c in gov.decisions)


def test_no_watch_means_one_decision():
    gov, fake, clock = make(watch=False)
    run(gov, fake, clock, lambda i, n: (1.0 if n == 1 else 0.6) if i < 10 else (1.0 if n == 1 else 9.0), 40)
    assert gov.reprobes == 0 and gov.choice.n == 2


def test_new_phase_keeps_the_count_and_takes_a_new_reference():
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 0.5, 10)  # training: 2 threads
    gov.new_phase("eval")
    # evaluation units take 10x longer per unit than training's, at both counts: no re-probe from that
    run(gov, fake, clock, lambda i, n: 10.0 if n == 1 else 5.0, 20)
    assert gov.reprobes == 0 and fake.n == 2
    gov.new_phase("train2", probe=True)
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 7.0, 6)
    assert used[:3] == [2, 2, 1] and used[-1] == 1  # warm-up, current count first, then the other
    assert gov.decisions[-1]["why"] == "new phase train2"


def test_watch_times_forward_calls_with_their_token_count():
    gov, fake, clock = make()
    model = torch.nn.Linear(4, 4)
    seen = []

    original = model.forward

    def slow_forward(x):
        seen.append((fake.n, x.shape[0]))
        clock.t += x.shape[0] * (1.0 if fake.n == 1 else 4.0)
        return original(x)

    model.forward = slow_forward
    with gov.watch(model, probe=False):
        for rows in (8, 8, 2, 8, 8):
            model(torch.zeros(rows, 4))
    assert gov.choice.n == 1 and gov.units == 5
    assert [n for n, _ in seen[:3]] == [1, 1, 2]
    assert not model._forward_hooks and not model._forward_pre_hooks  # hooks removed after the phase


def test_record_is_json_and_says_how():
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 6.0, 5)
    rec = json.loads(json.dumps(gov.record()))
    assert rec["torch_threads"] == 1
    t = rec["threads"]
    assert t["how"] == "probe" and t["candidates"] == [1, 2] and t["requested"] == "auto"
    assert t["probe_ms_per_unit"] == {"1": [1000.0], "2": [6000.0]} and t["units"] == 5 and t["decisions"] == []


def test_a_job_ending_inside_its_first_probe_records_the_count_its_units_ran_at():
    """Two units cannot finish a two-count probe (warm-up + rounds): the record says so and names the count
    torch was at (the fewest threads, the warm-up's), not the count torch had before the job (2)."""
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: 1.0, 2)
    rec = gov.record()
    assert rec["threads"]["unfinished_probe"] and rec["threads"]["how"] == "probe-unfinished"
    assert rec["torch_threads"] == rec["threads"]["n"] == fake.n == 1 and rec["threads"]["probe_ms_per_unit"] == {}


def test_a_finished_probe_is_not_reported_unfinished():
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 6.0, 5)
    assert gov.record()["threads"]["unfinished_probe"] is False


# ---------------------------------------------------------------------- machine facts


def test_candidate_counts():
    assert candidate_counts(1) == [1]
    assert candidate_counts(2) == [1, 2]
    assert candidate_counts(6) == [1, 2, 4, 6]
    assert candidate_counts(16) == [1, 2, 4, 8, 16]


@pytest.mark.parametrize(
    ("cpu_max", "affinity", "expected"),
    [
        ("max 100000\n", 8, 8),  # no quota: the affinity mask
        ("150000 100000\n", 8, 2),  # 1.5 CPUs: ceil, two threads may run
        ("100000 100000\n", 8, 1),
        ("400000 100000\n", 2, 2),  # a quota above the mask: the mask
        ("1000 100000\n", 4, 1),  # a hundredth of a CPU: still one
        ("garbage\n", 4, 4),  # unreadable: the mask
    ],
)
def test_usable_cores_caps_the_affinity_by_the_cgroup_quota(tmp_path, monkeypatch, cpu_max, affinity, expected):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    assert usable_cores(path) == expected
    assert usable_cores(tmp_path / "missing") == affinity


def test_usable_cores_follows_affinity(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert usable_cores() == 1


def test_cpu_idle_reads_our_cpus_in_proc_stat(tmp_path, monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr("os.getpriority", lambda which, who: 0, raising=False)
    stat = tmp_path / "stat"
    # columns: user nice system idle iowait irq softirq steal; cpu2 is not ours and is ignored
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 100 0 0 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n")
    meter = CpuIdle(str(stat))
    # over 100 jiffies per CPU: cpu0 fully busy; cpu1 half idle, a quarter iowait, a quarter niced work
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 200 0 0 0 0 0 0 0\ncpu1 0 25 0 150 25 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n")
    assert meter.idle_cores() == pytest.approx(1.0)  # idle + iowait + nice of cpu1: one whole core spare
    monkeypatch.setattr("os.getpriority", lambda which, who: 10, raising=False)  # we are niced ourselves:
    niced = CpuIdle(str(tmp_path / "stat"))  # then "nice" time may be our own and is not spare
    stat.write_text("cpu  0 0 0 0 0 0 0 0\ncpu0 300 0 0 0 0 0 0 0\ncpu1 0 50 0 200 50 0 0 0\ncpu2 0 0 0 0 0 0 0 0\n")
    assert niced.idle_cores() == pytest.approx(0.75)
    assert CpuIdle(str(tmp_path / "missing")).idle_cores() is None


# ---------------------------------------------------------------------- the rule half: spare cores


def test_no_spare_core_at_start_skips_the_many_thread_probe():
    """A co-tenant fills the other core during the warm-up unit: 2 threads are not tried at all."""
    gov, fake, clock = make(idle=FakeIdle(0.1))
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 60.0, 10)
    assert used == [1] * 10 and 2 not in fake.sets
    assert gov.choice.how == "idle-rule" and gov.choice.spare_cores == pytest.approx(0.1)


def test_a_spare_core_at_start_is_probed():
    gov, fake, clock = make(idle=FakeIdle(0.9))
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 0.6, 10)
    assert used[:3] == [1, 1, 2] and gov.choice.n == 2 and gov.choice.how == "probe"


def test_gate_scales_with_cores():
    """16 cores, 5 spare while the warm-up ran on 1: counts up to 1 + 5 + 0.4 are tried (1, 2, 4), not 8, 16."""
    gov, fake, clock = make(cores=16, idle=FakeIdle(5.0))
    run(gov, fake, clock, lambda i, n: 1.0 / n, 12)
    assert set(gov.choice.timings_ms) == {1, 2, 4} and gov.choice.n == 4


def test_slowdown_reprobe_reuses_the_slow_units():
    """After the slow run at 2 threads the re-probe needs only a 1-thread unit (2 threads' evidence is in hand)."""
    gov, fake, clock = make()
    used = run(gov, fake, clock, lambda i, n: (1.0 if n == 1 else 0.6) if i < 10 else (1.2 if n == 1 else 6.0), 20)
    assert used[10:] == [2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    assert gov.decisions[0]["probe_ms_per_unit"]["2"] == [6000.0] and gov.decisions[0]["to"] == 1


def test_short_units_extend_the_warm_up_until_spare_cores_can_be_read():
    """10 ms units: /proc/stat's ticks need >= 0.25 s, so the warm-up runs on at the fewest threads (20 at most)."""
    gov, fake, clock = make(idle=FakeIdle(1.0))
    used = run(gov, fake, clock, lambda i, n: 0.010 if n == 1 else 0.006, 40)
    assert used[:20] == [1] * 20 and used[20:22] == [1, 2] and gov.choice.n == 2
    gov, fake, clock = make(idle=FakeIdle(1.0))
    used = run(gov, fake, clock, lambda i, n: 0.1 if n == 1 else 0.06, 10)
    assert used[:4] == [1, 1, 1, 1] and used[4] == 2  # 3 warm-up units reach 0.3 s, then 1 and 2 are probed


def test_a_new_phase_restarts_a_running_probe():
    """Evaluation forwards and training steps differ per token: a probe is never decided on a mix of both."""
    gov, fake, clock = make()
    run(gov, fake, clock, lambda i, n: 0.1, 2)  # base-eval forwards: warm-up and one 1-thread unit, probe unfinished
    assert gov.probing
    gov.new_phase("train", probe=True)
    used = run(gov, fake, clock, lambda i, n: 1.0 if n == 1 else 6.0, 5)
    assert used[:3] == [1, 1, 2] and gov.choice.n == 1
    assert gov.choice.timings_ms == {1: [pytest.approx(1000.0)], 2: [pytest.approx(6000.0)]}  # training units only


def test_a_slowdown_at_one_thread_never_tries_more():
    """Chosen 1 (no spare core), then a second co-tenant makes 1-thread units 2x slower: 2 threads would be
    worse still, so no 2-thread unit is run; the slower time becomes the reference."""
    gov, fake, clock = make(idle=FakeIdle(0.0))
    used = run(gov, fake, clock, lambda i, n: (1.0 if i < 10 else 2.0) if n == 1 else 6.0, 30)
    assert used == [1] * 30 and gov.reprobes == 0 and gov._reference == pytest.approx(2.0)
