"""Torch's CPU thread count for a job, chosen by timing the job's own work (issue 26, item 8).

Why not torch's default (one intra-op OpenMP thread per core): a parallel region ends when its slowest thread
does, and on a machine shared with busy processes one of the threads is always waiting for a core. On the
project's 2-core machine SmolLM2 trained at 24.5 s/step with 2 threads against 4.1 s/step with 1; on a quiet
machine 2 threads are faster. No fixed count is right under both, and the load a job will meet is not known
when it starts, so the count is measured (BENCHMARKS.md has the figures that chose this policy):

1. **Spare cores first (the rule).** The first unit of a job runs at 1 thread, untimed (it carries the
   allocator's warm-up anyway), while ``/proc/stat`` says how many of our CPUs nobody used (time of niced
   processes counts as spare: they yield). More threads than 1 + the spare cores (+0.4) are not tried:
   under a co-tenant a many-thread unit costs several steps of stalls (3-4x a step on SmolLM2, 60x on a
   tiny model), so under load the choice is 1 thread and costs nothing.
2. **Probe on the real work.** The counts left (1 and powers of two up to the usable cores) run the next
   units in turn, interleaved in alternating order (A B, B A, ...) so drifting load hits every count alike.
   Times are per unit of work (tokens: batches differ in width) and compared in pairs, round by round: m
   beats n when no round has n faster and the median of t_n / t_m is >= ``clear``. The probe ends when one
   count beats every other (one round for fewer threads, two for more), else after ``rounds`` rounds.
   Kept: the fewest threads no count beats, so more threads only on repeated evidence (under fluctuating
   load too many threads cost 3-5x, too few at most the parallel speed-up, and step 3 revisits it). Probe
   units are real work: probing costs only the difference between the counts, never extra steps.
3. **Watch and re-probe.** Load changes during a long run. ``slow_window`` units in a row slower than
   ``drift`` x the reference (the kept count's probe median: a co-tenant arrived) start a probe of fewer
   threads (the slow units stand in for the current count's sample; at 1 thread the slow time becomes the
   new reference). ``spare_cores`` spare over ``idle_window`` units while below the largest count (a
   co-tenant left) start a probe of more. A re-probe that keeps the count doubles the wait before
   the next (up to ``MAX_BACKOFF``), so a fluctuating load cannot keep it probing.

An explicit choice is never overridden: the ``threads`` config key (an integer), else ``OMP_NUM_THREADS`` in
the environment. On a GPU torch's defaults stay (only CPU compute is affected by the count). Inter-op threads
are left alone: the training loop and lm-eval use no inter-op parallelism (``torch.jit.fork``), and torch
allows setting them only once, before any parallel work.

Use (the training loop and ``job`` need a few lines each)::

    gov = ThreadGovernor(cfg.get("threads", "auto"), device)
    for batch in batches:
        with gov.step(work=batch["input_ids"].numel()):
            take_step(batch)
    with gov.watch(model):            # evaluation: every forward call is a unit
        evaluate(model, ...)
    result["env"].update(gov.record())
    gov.restore()                      # torch's count as it was before the job

or, for one decision from a callable: ``choose_threads(probe, requested) -> ThreadChoice``.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from loraven.errors import ConfigError

log = logging.getLogger(__name__)

THREADS_KEY = "threads"  # the proposed top-level config key: threads: auto | <int >= 1>
ENV_VARS = ("OMP_NUM_THREADS",)  # what torch itself reads at start-up for its intra-op count

# Defaults of the policy (see the module docstring; BENCHMARKS.md for the measurements behind them).
ROUNDS = 3  # most probe rounds per decision
CLEAR = 1.2  # m beats n: t_n / t_m (paired by round) >= 1 in every round, and its median >= CLEAR
DRIFT = 1.5  # a unit this much slower than the chosen count's probe median counts as "slowed"
SLOW_WINDOW = 3  # consecutive slowed units that trigger a re-probe
SPARE_CORES = 0.6  # spare cores that make one more thread worth a try (gate slack: 1 - SPARE_CORES)
IDLE_WINDOW = 10  # units between spare-core readings while settled
MAX_BACKOFF = 8  # a re-probe that keeps the count multiplies the next wait by 2, up to this factor
MAX_DECISIONS = 50  # re-probes listed in the record (all are counted)
SPARE_WINDOW_S = 0.25  # shortest window for reading spare cores (/proc/stat counts 10 ms ticks per CPU)
MAX_WARM = 20  # warm-up units at most, when units are too short to fill that window


def parse_threads(value: Any) -> str | int:
    """``auto`` (None, "auto") or an integer >= 1, from a config value; anything else is a one-line error."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    if isinstance(value, bool):  # bool is an int subclass: threads=true is a mistake, not 1 thread
        raise ConfigError(f"{THREADS_KEY}={value!r}; valid: auto or an integer >= 1")
    try:
        n = int(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{THREADS_KEY}={value!r}; valid: auto or an integer >= 1") from err
    if n < 1 or (isinstance(value, float) and value != n):
        raise ConfigError(f"{THREADS_KEY}={value!r}; valid: auto or an integer >= 1")
    return n


def env_threads(env: Mapping[str, str] | None = None) -> tuple[str, int] | None:
    """(variable, count) when the environment fixes the intra-op count (``OMP_NUM_THREADS=4``; OpenMP's
    nested form ``4,2`` gives 4), else None. A value that is no positive integer is ignored with a warning,
    as OpenMP ignores it."""
    env = os.environ if env is None else env
    for var in ENV_VARS:
        raw = env.get(var)
        if raw is None or not raw.strip():
            continue
        try:
            n = int(raw.split(",")[0])
        except ValueError:
            n = 0
        if n >= 1:
            return var, n
        log.warning("ignoring %s=%r (not a positive integer); choosing torch's thread count", var, raw)
    return None


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" in µs, or "max <period>"


def usable_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))  # ceil: 1.5 CPUs may use 2 threads
    except (OSError, ValueError):
        pass
    return max(1, cores)


def candidate_counts(cores: int) -> list[int]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself (a short list on a large machine)."""
    counts = {cores}
    n = 1
    while n < cores:
        counts.add(n)
        n *= 2
    return sorted(counts)


class CpuIdle:
    """Spare cores since the last ``mark()``: idle time of the CPUs this process may use, plus time given to
    niced (low-priority) processes, which yield to us; from ``/proc/stat`` (None where it is missing)."""

    def __init__(self, path: str = "/proc/stat") -> None:
        self.path = path
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except AttributeError:  # not on Linux
            self.cpus = set()
        try:
            self.count_nice = os.getpriority(os.PRIO_PROCESS, 0) <= 0  # a niced job's own time is in "nice" too
        except (AttributeError, OSError):
            self.count_nice = True
        self._last = self._read()

    def _read(self) -> tuple[float, float, int] | None:
        """(spare jiffies, all jiffies, CPUs counted) summed over our CPUs' lines (the total line if none)."""
        try:
            with open(self.path) as fh:
                lines = [line.split() for line in fh if line.startswith("cpu")]
        except OSError:
            return None
        rows = [f for f in lines if f[0] in self.cpus] or [f for f in lines if f[0] == "cpu"]
        spare = total = 0.0
        for row in rows:
            try:
                v = [float(x) for x in row[1:9]]  # user nice system idle iowait irq softirq steal
            except ValueError:
                return None
            if len(v) < 4:
                return None
            spare += v[3] + (v[4] if len(v) > 4 else 0.0) + (v[1] if self.count_nice else 0.0)
            total += sum(v)
        n = len(rows) if rows and rows[0][0] != "cpu" else (len(self.cpus) or os.cpu_count() or 1)
        return spare, total, n

    def mark(self) -> None:
        self._last = self._read()

    def idle_cores(self) -> float | None:
        now = self._read()
        if now is None or self._last is None or now[1] <= self._last[1]:
            return None
        return (now[0] - self._last[0]) / (now[1] - self._last[1]) * now[2]


@dataclass
class ThreadChoice:
    """What a job ran with and why: recorded in result.json's ``env`` (see :meth:`ThreadGovernor.record`)."""

    n: int  # intra-op threads in force
    how: str  # config | env:OMP_NUM_THREADS | <device>-default | one-core | idle-rule | probe | probe-unclear
    requested: str | int = "auto"
    candidates: list[int] = field(default_factory=list)
    timings_ms: dict[int, list[float]] = field(default_factory=dict)  # the deciding probe: ms per unit of work
    spare_cores: float | None = None  # spare cores seen before the first probe (the rule's input)

    def as_record(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "how": self.how,
            "requested": self.requested,
            "candidates": list(self.candidates),
            "probe_ms_per_unit": {str(k): [round(x, 6) for x in v] for k, v in self.timings_ms.items()},
            "spare_cores": self.spare_cores,
        }


def decide(timings: Mapping[int, list[float]], clear: float = CLEAR) -> tuple[int, bool]:
    """(count to keep, whether the evidence is decisive) from per-unit times at each count, index i of every
    list being round i (units run next to each other, so they shared the load of their moment).

    Count m *beats* n when no round has n faster and the median over rounds of the paired ratio t_n / t_m is
    at least ``clear``. Kept: the fewest threads that no count beats. Decisive: the kept count beats every
    other, and, when it is more than the fewest, over two rounds at least. So more threads are taken only on
    repeated evidence: under fluctuating load one lucky round could buy a count that then stalls at 3-5x,
    while too few threads cost at most the parallel speed-up (and the watch re-probes when cores sit idle).
    """
    counts = sorted(n for n, ts in timings.items() if ts)
    if not counts:
        raise ValueError("no probe timings")
    rounds = min(len(timings[n]) for n in counts)

    def beats(m: int, n: int) -> bool:
        ratios = [timings[n][i] / timings[m][i] for i in range(rounds)]
        return min(ratios) >= 1.0 and statistics.median(ratios) >= clear

    # never empty: m beats n needs t_n >= t_m in every round (and a median ratio > 1), so "beats" has no cycle
    keep = next(n for n in counts if not any(beats(m, n) for m in counts if m != n))
    decisive = all(beats(keep, n) for n in counts if n != keep) and (keep == counts[0] or rounds >= 2)
    return keep, decisive


class ThreadGovernor:
    """Sets torch's intra-op threads unit by unit: probes, keeps the fastest count, re-probes when load changes.

    A unit is anything repeated: a training step (``with gov.step(work=...)``) or a forward call
    (``with gov.watch(model)``). ``clock``, ``idle``, ``set_threads`` and ``get_threads`` are injectable
    (tests); the defaults are ``time.perf_counter``, ``/proc/stat`` and torch's own.
    """

    def __init__(
        self,
        requested: Any = "auto",
        device: torch.device | str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        cores: int | None = None,
        clock: Callable[[], float] = time.perf_counter,
        idle: CpuIdle | None = None,
        set_threads: Callable[[int], None] = torch.set_num_threads,
        get_threads: Callable[[], int] = torch.get_num_threads,
        rounds: int = ROUNDS,
        warmup: int = 1,
        clear: float = CLEAR,
        drift: float = DRIFT,
        slow_window: int = SLOW_WINDOW,
        spare_cores: float = SPARE_CORES,
        idle_window: int = IDLE_WINDOW,
        watch: bool = True,
    ) -> None:
        self.requested = parse_threads(requested)
        self.clock, self._set, self._get = clock, set_threads, get_threads
        self.original = get_threads()  # restored by restore()
        self.rounds, self.warmup, self.clear = max(1, rounds), max(0, warmup), clear
        self.drift, self.slow_window, self.spare_cores, self.idle_window = drift, slow_window, spare_cores, idle_window
        self.watching = watch
        self.units = 0  # units run since construction (all phases)
        self.reprobes = 0
        self.decisions: list[dict[str, Any]] = []  # re-decisions: unit, phase, why, how, from, to, timings
        self.phase = ""
        self.probing = False
        self._backoff = 1
        self._reference: float | None = None
        self._ref_samples: list[float] = []
        self._warm_left = 0
        self._warm_done = 0
        self._window_start = clock()
        self._recent: list[float] = []
        device = torch.device(device) if isinstance(device, str) else device
        fixed = self._fixed(self.requested, device, env)
        self.auto = fixed is None
        if fixed is not None:
            if fixed[0] is not None:
                self._set(fixed[0])
            self.choice = ThreadChoice(self._get(), fixed[1], self.requested)
            return
        self.candidates = candidate_counts(cores or usable_cores())
        self.choice = ThreadChoice(self._get(), "probe", self.requested, list(self.candidates))
        if len(self.candidates) == 1:
            self._set(1)
            self.choice.n, self.choice.how, self.auto = 1, "one-core", False
            return
        self.idle = idle if idle is not None else CpuIdle()
        self._start_probe("start", warm=self.warmup)

    @staticmethod
    def _fixed(requested: str | int, device, env) -> tuple[int | None, str] | None:
        if isinstance(requested, int):
            return requested, "config"
        from_env = env_threads(env)
        if from_env is not None:  # set again: an earlier job in this process may have changed torch's count
            return from_env[1], f"env:{from_env[0]}"
        if device is not None and device.type != "cpu":
            return None, f"{device.type}-default"
        return None

    # ------------------------------------------------------------------ state machine

    def _start_probe(
        self,
        why: str,
        warm: int = 0,
        seed: Mapping[int, list[float]] | None = None,
        spare: float | None = None,
        upto: int | None = None,
    ) -> None:
        """Probe from the next unit, after ``warm`` untimed ones (over which the spare cores are measured,
        unless ``spare`` is given). :meth:`_build_queue` then fixes the counts to try; ``seed``: samples in hand."""
        self.probing = True
        self._upto = upto
        self._given_spare = spare if spare is not None or warm > 0 else -1.0  # -1: no window, no gate
        self._why = why
        self._warm_left = warm
        self._seed = {n: list(ts) for n, ts in (seed or {}).items()}
        self._queue: list[int] | None = None
        self._times: dict[int, list[float]] = {}
        self._spare: float | None = None
        self._warm_done = 0
        self._mark()

    def _build_queue(self, spare: float | None) -> None:
        """The rule half of the policy: a count needs cores to run on, so counts above those in use plus the
        spare ones are not tried (``spare`` cores, measured over the last window at ``base`` threads). Under
        load this skips the many-thread probe unit, which costs a whole step of stalls. The rest are queued
        in rounds, A B then B A: drifting load hits every count alike."""
        base = self._get()  # the count in force over the window the spare cores were measured in
        spare = None if spare is not None and spare < 0 else spare
        self._spare = spare
        limit = base + spare + (1.0 - self.spare_cores) if spare is not None else float("inf")
        counts = [n for n in self.candidates if (n <= limit or n == base) and (self._upto is None or n <= self._upto)]
        if self._why == "start":  # fewest first: under load the many-thread unit is the costly one
            order = counts
        else:  # the current count first: its slowdown (or the idle cores) started this probe
            order = [self.choice.n] + [n for n in counts if n != self.choice.n]
        self._times = {n: list(self._seed.get(n, [])) for n in order}
        self._queue = []
        for r in range(self.rounds):
            for n in order if r % 2 == 0 else order[::-1]:
                if len(self._seed.get(n, [])) <= r:
                    self._queue.append(n)
        if len(order) == 1:  # nothing else is worth a unit
            self._times = {order[0]: list(self._seed.get(order[0], []))}
            self._settle(rule=True)

    def _settle(self, rule: bool = False) -> None:
        previous = self.choice.n
        if rule:
            keep, how, medians = next(iter(self._times)), "idle-rule", {}
        else:
            keep, decisive = decide(self._times, self.clear)
            medians = {n: statistics.median(ts) for n, ts in self._times.items() if ts}
            how = "probe" if decisive else "probe-unclear"
        probe_ms = {n: [t * 1000.0 for t in ts] for n, ts in self._times.items()}
        spare = None if self._spare is None else round(self._spare, 3)
        if self._why == "start":
            self.choice.how, self.choice.timings_ms, self.choice.spare_cores = how, probe_ms, spare
            log.info(
                "threads: %d (%s; spare cores %s; ms per unit %s)",
                keep,
                how,
                spare,
                ", ".join(f"{n}: {m * 1000:.3g}" for n, m in sorted(medians.items())) or "-",
            )
        else:
            self.reprobes += 1
            if len(self.decisions) < MAX_DECISIONS:
                self.decisions.append(
                    {
                        "unit": self.units,
                        "phase": self.phase,
                        "why": self._why,
                        "how": how,
                        "spare_cores": spare,
                        "from": previous,
                        "to": keep,
                        "probe_ms_per_unit": {str(k): [round(x, 6) for x in v] for k, v in probe_ms.items()},
                    }
                )
            self._backoff = 1 if keep != previous else min(self._backoff * 2, MAX_BACKOFF)
            log.info("threads: re-probed (%s): %d -> %d (%s)", self._why, previous, keep, how)
        self.choice.n = keep
        self.probing = False
        self._queue = None
        self._apply(keep)
        # the reference: the kept count's probe median, else (a rule, or seeded only) the next units' median
        kept = self._times.get(keep) or []
        self._reference = statistics.median(kept) if kept and not rule else None
        self._ref_samples = []
        self._reset_watch()

    def _mark(self) -> None:
        self.idle.mark()
        self._window_start = self.clock()

    def _reset_watch(self) -> None:
        self._recent = []
        self._idle_units = 0
        self._mark()

    def _apply(self, n: int) -> None:
        if self._get() != n:
            self._set(n)

    def begin(self) -> None:
        """Before a unit: set the count this unit runs at."""
        if not self.auto:
            return
        if self.probing and self._queue is None and self._warm_left > 0 and self._warm_done == 0:
            self._mark()  # the spare cores are measured over the warm-up unit(s)
        if self.probing and self._queue is None and self._warm_left == 0:
            self._build_queue(self._given_spare if self._given_spare is not None else self.idle.idle_cores())
        if self.probing and self._queue:
            self._apply(self._queue[0])
        elif self.probing and self._why == "start":  # warm-up unit: the fewest threads (harmless under load)
            self._apply(self.candidates[0])
        else:
            self._apply(self.choice.n)

    def end(self, seconds: float, work: float = 1.0) -> None:
        """After a unit: its wall time and its amount of work (tokens, rows; 1 when all units are alike)."""
        self.units += 1
        if not self.auto:
            return
        if self._warm_left > 0:  # first unit of a job or a phase: allocator and kernel warm-up
            self._warm_left -= 1
            self._warm_done += 1
            short = self.clock() - self._window_start < SPARE_WINDOW_S
            if self._warm_left == 0 and self.probing and short and self._warm_done < MAX_WARM:
                self._warm_left = 1  # too short to read spare cores from: one more unit at the same count
            return
        per = seconds / max(float(work), 1e-12)
        if self.probing:
            if not self._queue:  # begin() was not called for this unit: nothing to attribute it to
                return
            n = self._queue.pop(0)
            self._times[n].append(per)
            if len({len(ts) for ts in self._times.values()}) == 1:  # a round is complete
                _, decisive = decide(self._times, self.clear)
                if decisive or not self._queue:
                    self._settle()
            return
        if not self.watching:
            return
        if self._reference is None:  # a new phase (or a rule's choice): the median of its first units
            self._ref_samples.append(per)
            if len(self._ref_samples) >= self.slow_window:
                self._reference = statistics.median(self._ref_samples)
                self._reset_watch()
            return
        self._recent = [*self._recent, per][-self.slow_window * self._backoff :]
        slow = [t for t in self._recent if t > self._reference * self.drift]
        if len(slow) == len(self._recent) == self.slow_window * self._backoff:
            if self.choice.n == self.candidates[0]:  # nothing fewer to try: the cores are taken, a new normal
                self._reference = statistics.median(slow)
                self._recent = []
                return
            self._start_probe(  # fewer threads only: more would need cores that the slowdown says are busy
                f"{len(slow)} units >= {self.drift}x slower than the reference",
                seed={self.choice.n: [statistics.median(slow)]},
                upto=self.choice.n,
            )
            return
        self._idle_units += 1
        long_enough = self.clock() - self._window_start >= SPARE_WINDOW_S
        if self._idle_units >= self.idle_window * self._backoff and long_enough:
            spare = self.idle.idle_cores()
            self._reset_watch()
            if spare is not None and spare >= self.spare_cores and self.choice.n < self.candidates[-1]:
                self._start_probe(f"{spare:.2f} cores spare", spare=spare)

    @contextmanager
    def step(self, work: float = 1.0) -> Iterator[None]:
        """Time one unit (a training step) and let the policy act on it."""
        self.begin()
        start = self.clock()
        yield
        self.end(self.clock() - start, work)

    def new_phase(self, name: str, probe: bool = False) -> None:
        """Another kind of unit starts (training after evaluation): its times are not comparable with the last
        phase's. ``probe``: choose again on the new units (cheap where units are real work); else keep the
        count, skip ``warmup`` units and take the median of the next ``slow_window`` as the reference."""
        self.phase = name
        if not self.auto:
            return
        if self.probing:  # a probe still running: its samples are of the old kind of unit, so it starts again
            self._start_probe(self._why, warm=self.warmup, spare=self._given_spare if self._why != "start" else None)
            return
        if probe:
            self._start_probe(f"new phase {name}", warm=self.warmup)
            return
        self._reference, self._ref_samples = None, []
        self._warm_left, self._warm_done = self.warmup, 0
        self._reset_watch()

    @contextmanager
    def watch(self, model: torch.nn.Module, phase: str = "eval", probe: bool = False) -> Iterator[None]:
        """Every forward call of ``model`` (outermost module) is a unit, its work the input's element count:
        evaluation loops we do not own (lm-eval) are probed and watched like training steps."""
        self.new_phase(phase, probe)
        if not self.auto:
            yield
            return
        starts: list[float] = []

        def pre(module, args, kwargs):
            self.begin()
            starts.append(self.clock())

        def post(module, args, kwargs, output):
            if starts:
                self.end(self.clock() - starts.pop(), _work(args, kwargs))

        handles = [
            model.register_forward_pre_hook(pre, with_kwargs=True),
            model.register_forward_hook(post, with_kwargs=True),
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    # ------------------------------------------------------------------ outputs

    def record(self) -> dict[str, Any]:
        """result.json ``env`` keys: ``torch_threads`` (the count the job settled on) and ``threads`` (how it was
        chosen). A job can end inside a re-probe (load changed during the last units): ``unfinished_probe``
        says so, and the settled count, not the candidate being tried, is the job's count."""
        out = self.choice.as_record()
        out["units"] = self.units
        out["reprobes"] = self.reprobes
        out["decisions"] = list(self.decisions)
        out["unfinished_probe"] = bool(self.auto and self.probing)
        if out["unfinished_probe"] and not self.choice.timings_ms:  # too few units to finish the first probe:
            out["how"], out["n"] = "probe-unfinished", self._get()  # the count its last units ran at
        return {"torch_threads": out["n"] if self.auto else self._get(), "threads": out}

    def restore(self) -> None:
        """Torch's count as it was before this governor (a process may run several jobs)."""
        self._set(self.original)


def _work(args: tuple, kwargs: Mapping[str, Any]) -> float:
    """Elements of a forward call's first tensor input (tokens of ``input_ids``): its amount of work."""
    x = kwargs.get("input_ids", args[0] if args else None)
    if x is None:
        x = next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
    return float(x.numel()) if isinstance(x, torch.Tensor) and x.numel() else 1.0


def choose_threads(
    probe: Callable[[], Any], requested: Any = "auto", device: torch.device | str | None = None, **policy: Any
) -> ThreadChoice:
    """One decision by calling ``probe`` (a unit of the real work) at each candidate count; torch is left at
    the chosen count. An explicit request, the environment or a GPU decide without calling it."""
    gov = ThreadGovernor(requested, device, **policy)
    while gov.auto and gov.probing:
        with gov.step():
            probe()
    return gov.choice
