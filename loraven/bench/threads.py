"""Thread-count benchmark (issue 26, item 8): ``python -m loraven.bench.threads``.

On the default model (SmolLM2-135M-Instruct, LoRA r=8 through the harness's adapter, the training loop's own
:class:`~loraven.train.TrainStep`, a 16x64-token batch as ``trainer=default``), step time of every fixed
thread count and of the harness's automatic choice (:class:`loraven.threads.ThreadGovernor`), under
three loads: quiet, one and two busy co-tenant processes (Python busy loops this benchmark starts).

Interleaved: each round runs every variant once, in an order rotated per round (A B C, B C A, C A B), so
drifting background load hits all alike. ``auto`` is a fresh governor per round, as a new job gets: its
probe units are real steps (the warm-up unit included), then one step at its choice. Two ratios per load,
against the fastest fixed count for that load: ``steady`` (the step after the choice) and ``job`` (a
``--job-steps`` run: probe units + the rest at the steady step time), each the ratio of medians over
rounds with a paired bootstrap interval over rounds (scipy). Other processes' CPU use (the machine's busy
cores less this process and its co-tenants, from /proc) is measured every round and reported: a "quiet"
row is only quiet if that is near 0.

    python -m loraven.bench.threads --rounds 6 --md threads.md --json threads.json
    python -m loraven.bench.threads --model tiny --rounds 3            # a quick check of the mechanics
    python -m loraven.bench.threads --scenario arrive --steps 18       # a co-tenant arrives mid-run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from loraven.bench.methods import apply_method, build_base, token_batch
from loraven.bench.train_step import _Stepper
from loraven.threads import ThreadGovernor, candidate_counts, usable_cores

BUSY = "while True: pass"  # one core's worth of demand, no memory traffic
TARGETS = {0: 1.1, 1: 1.2, 2: 1.2}  # issue 26: quiet <= 1.1x the best fixed count, loaded <= 1.2x
MAX_ATTEMPTS = 3  # attempts per kept round at most, when rounds are discarded for other jobs' load


# ---------------------------------------------------------------------- load


@contextmanager
def co_tenants(k: int) -> Any:
    """``k`` busy-loop processes for the duration (killed by pid on exit, whatever happens)."""
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(k)]
    try:
        time.sleep(1.0 if k else 0.0)  # let them reach the loop
        yield [p.pid for p in procs]
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _jiffies(path: str) -> float | None:
    try:
        with open(path) as fh:
            text = fh.read()
    except OSError:
        return None
    if path == "/proc/stat":
        fields = [float(x) for x in text.splitlines()[0].split()[1:]]
        return sum(fields[:8]) - fields[3] - fields[4]  # busy = total - idle - iowait
    after = text.rsplit(")", 1)[1].split()  # /proc/<pid>/stat: utime, stime are fields 14, 15
    return float(after[11]) + float(after[12])


class LoadMeter:
    """Cores used over an interval: by the machine, by this process (all threads), by the given co-tenants;
    ``others`` = the rest (other users' jobs)."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.hz = os.sysconf("SC_CLK_TCK")
        self._start = self._read()

    def _read(self) -> tuple[float, float | None, float, float]:
        times = os.times()
        tenants = sum(_jiffies(f"/proc/{p}/stat") or 0.0 for p in self.pids) / self.hz
        busy = _jiffies("/proc/stat")
        return time.monotonic(), busy / self.hz if busy is not None else None, times.user + times.system, tenants

    def cores(self) -> dict[str, float | None]:
        now = self._read()
        wall = now[0] - self._start[0]
        if wall <= 0:
            return {"busy": None, "self": None, "co_tenants": None, "others": None}
        busy = (now[1] - self._start[1]) / wall if now[1] is not None and self._start[1] is not None else None
        own = (now[2] - self._start[2]) / wall
        tenants = (now[3] - self._start[3]) / wall
        others = max(0.0, busy - own - tenants) if busy is not None else None
        return {"busy": busy, "self": own, "co_tenants": tenants, "others": others}


def wait_quiet(
    pids: Sequence[int], max_others: float, log: Callable[[str], None] | None = None, timeout_s: float = 900.0
) -> bool:
    """Block until a 3 s window in which other jobs used at most ``max_others`` cores (or ``timeout_s``)."""
    start = time.monotonic()
    said = False
    while time.monotonic() - start < timeout_s:
        meter = LoadMeter(pids)
        time.sleep(3.0)
        others = meter.cores()["others"]
        if others is None or others <= max_others:
            return True
        if log and not said:
            log(f"waiting for other jobs to stop (they use {others:.2f} cores)")
            said = True
    return False


# ---------------------------------------------------------------------- the measurement


def _work(batch: dict[str, torch.Tensor]) -> float:
    return float(batch["input_ids"].numel())


def time_fixed(step: Callable[[], Any], n: int) -> float:
    torch.set_num_threads(n)
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def time_auto(step: Callable[[], Any], work: float, job_steps: int, watch: bool = True) -> dict[str, Any]:
    """A new job's governor: its probe on real steps, then one step at its choice."""
    gov = ThreadGovernor("auto", torch.device("cpu"), env={}, watch=watch)
    units: list[tuple[int, float]] = []
    while gov.auto and gov.probing:
        gov.begin()
        n = torch.get_num_threads()
        start = time.perf_counter()
        step()
        seconds = time.perf_counter() - start
        gov.end(seconds, work)
        units.append((n, seconds))
    gov.begin()
    start = time.perf_counter()
    step()
    steady = time.perf_counter() - start
    gov.end(steady, work)
    probe_s = sum(s for _, s in units)
    job = (probe_s + max(0, job_steps - len(units)) * steady) / max(job_steps, len(units))
    return {"n": gov.choice.n, "how": gov.choice.how, "probe_units": units, "steady_s": steady, "job_step_s": job}


def run_threads_bench(
    *,
    model: str = "smollm2",
    layers: int | None = None,
    batch_size: int = 16,
    seq_len: int = 64,
    rank: int = 8,
    loads: Sequence[int] = (0, 1, 2),
    rounds: int = 6,
    warmup: int = 2,
    job_steps: int = 60,
    max_others: float | None = None,
    attempts: int = MAX_ATTEMPTS,
    wait_s: float = 900.0,
    seed: int = 0,
    save: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Every fixed count and ``auto``, interleaved, ``rounds`` rounds per load; raw samples and summaries
    (``save`` gets the whole result after every round, so a long wait for quiet loses nothing).

    ``max_others``: a round in which other jobs (not this process, not its co-tenants) used more cores than
    this is discarded (kept in the output, counted in the table) and run again after :func:`wait_quiet` (at
    most ``wait_s``), up to ``attempts`` x ``rounds`` tries per load: on a shared machine, quiet is checked."""
    device = torch.device("cpu")
    method = reference_method()
    step, name, work = _build_step(model, layers, batch_size, seq_len, rank, seed, method)
    fixed = candidate_counts(usable_cores())
    variants = [f"fixed{n}" for n in fixed] + ["auto"]
    out: dict[str, Any] = {
        "model": name,
        "method": method,
        "rank": rank,
        "batch_size": batch_size,
        "seq_len": seq_len,
        "rounds": rounds,
        "job_steps": job_steps,
        "fixed": fixed,
        "max_others": max_others,
        "env": _env(device),
        "loads": {},
        "summary": [],
    }
    original = torch.get_num_threads()
    for _ in range(max(0, warmup)):
        for n in fixed:
            time_fixed(step, n)
    try:
        for k in loads:
            samples: dict[str, list[float]] = {v: [] for v in [*variants, "auto_job"]}
            data: dict[str, Any] = {"samples_s": samples, "auto": [], "load": [], "discarded": []}
            out["loads"][str(k)] = data
            with co_tenants(k) as pids:
                tries = 0
                while len(data["load"]) < rounds and tries < rounds * attempts:
                    tries += 1
                    if max_others is not None:
                        wait_quiet(pids, max_others, log, wait_s)
                    r = len(data["load"])
                    meter = LoadMeter(pids)
                    got: dict[str, float] = {}
                    auto: dict[str, Any] = {}
                    for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                        if v == "auto":
                            auto = time_auto(step, work, job_steps)
                            got["auto"], got["auto_job"] = auto["steady_s"], auto["job_step_s"]
                        else:
                            got[v] = time_fixed(step, int(v.removeprefix("fixed")))
                    cores = meter.cores()
                    line = ", ".join(f"{v} {got[v]:.2f}s" for v in variants)
                    line += f" (auto chose {auto['n']}, {auto['how']}; others {_fmt(cores['others'])} cores)"
                    if max_others is not None and cores["others"] is not None and cores["others"] > max_others:
                        data["discarded"].append({"samples_s": got, "auto": auto, "load": cores})
                        if log:
                            log(f"load {k}: round discarded, other jobs used {cores['others']:.2f} cores: {line}")
                    else:
                        for key, value in got.items():
                            samples[key].append(value)
                        data["auto"].append(auto)
                        data["load"].append(cores)
                        if log:
                            log(f"load {k} round {r + 1}/{rounds}: {line}")
                    if save:
                        save(with_summary(out))
    finally:
        torch.set_num_threads(original)
    return with_summary(out)


def with_summary(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with ``summary`` rebuilt from its loads (those with at least one kept round)."""
    out["summary"] = [
        summarise(int(k), d, out["fixed"], out["job_steps"]) for k, d in out["loads"].items() if d["samples_s"]["auto"]
    ]
    return out


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Runs of the same set-up (model, method, rank, batch, counts) measured at different times, one table:
    a load measured twice keeps the later run's rounds."""
    first = results[0]
    keys = ("model", "method", "rank", "batch_size", "seq_len", "fixed", "job_steps")
    for other in results[1:]:
        bad = [k for k in keys if other.get(k) != first.get(k)]
        if bad:
            raise ValueError(f"cannot merge runs that differ in {', '.join(bad)}")
    out = {**first, "loads": {}, "summary": []}
    out["env"] = dict(first["env"])
    shas = sorted({str(r["env"].get("git_sha")) for r in results})
    out["env"]["git_sha"] = ", ".join(s[:10] for s in shas) if len(shas) > 1 else shas[0]
    out["env"]["dirty"] = any(r["env"].get("dirty") for r in results)
    for r in results:
        out["loads"].update(r["loads"])
    out["loads"] = dict(sorted(out["loads"].items(), key=lambda kv: int(kv[0])))
    return with_summary(out)


def reference_method() -> str:
    """The step benchmark's reference method (conf/experiment/paper_speedup.yaml, one source of defaults)."""
    from loraven.bench.job import load_defaults

    return str(load_defaults()["train_step"]["reference"])


def _build_step(model: str, layers: int | None, batch_size: int, seq_len: int, rank: int, seed: int, method=None):
    device = torch.device("cpu")
    base, name = build_base(model, layers, device, torch.float32, seed)
    adapted = apply_method(base, method or reference_method(), rank, device, seed)
    batch = token_batch(base.config.vocab_size, batch_size, seq_len, device, seed)
    return _Stepper(adapted, batch, 1e-4, 1.0, device), name, _work(batch)


# ---------------------------------------------------------------------- statistics


def ratio_of_medians(auto: Sequence[float], fixed: Sequence[Sequence[float]]) -> float:
    return statistics.median(auto) / min(statistics.median(f) for f in fixed)


def bootstrap_ratio(
    auto: Sequence[float], fixed: Sequence[Sequence[float]], seed: int = 0
) -> tuple[float | None, float | None]:
    """95 % percentile interval of :func:`ratio_of_medians`, resampling rounds (paired: a round's samples
    stay together, as they shared its load). None with fewer than 3 rounds."""
    if len(auto) < 3:
        return None, None
    from scipy.stats import bootstrap

    res = bootstrap(
        (list(auto), *[list(f) for f in fixed]),
        lambda a, *fs: ratio_of_medians(a, fs),
        paired=True,
        vectorized=False,
        n_resamples=2000,
        method="percentile",
        random_state=seed,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarise(k: int, data: dict[str, Any], fixed: Sequence[int], job_steps: int) -> dict[str, Any]:
    s = data["samples_s"]
    if not s["auto"]:
        raise RuntimeError(f"load {k}: no round kept (every round discarded for other jobs' load); try later")
    fixed_samples = [s[f"fixed{n}"] for n in fixed]
    medians = {n: statistics.median(s[f"fixed{n}"]) for n in fixed}
    best = min(medians, key=lambda n: medians[n])
    choices = [a["n"] for a in data["auto"]]
    others = [row["others"] for row in data["load"] if row["others"] is not None]
    row: dict[str, Any] = {
        "co_tenants": k,
        "rounds": len(s["auto"]),
        "fixed_median_s": {str(n): m for n, m in medians.items()},
        "best_fixed": best,
        "auto_steady_median_s": statistics.median(s["auto"]),
        "auto_job_median_s": statistics.median(s["auto_job"]),
        "auto_choices": {str(n): choices.count(n) for n in sorted(set(choices))},
        "auto_probe_units_median": statistics.median(len(a["probe_units"]) for a in data["auto"]),
        "others_cores_median": statistics.median(others) if others else None,
        "others_cores_max": max(others) if others else None,
        "discarded_rounds": len(data.get("discarded", [])),
        "target": TARGETS.get(k, 1.2),
    }
    for key, auto in (("steady", s["auto"]), ("job", s["auto_job"])):
        row[f"ratio_{key}"] = ratio_of_medians(auto, fixed_samples)
        row[f"ratio_{key}_ci"] = bootstrap_ratio(auto, fixed_samples)
    return row


# ---------------------------------------------------------------------- scenario: load changes mid-run


def run_scenario(
    kind: str = "arrive",
    *,
    model: str = "smollm2",
    layers: int | None = None,
    batch_size: int = 16,
    seq_len: int = 64,
    rank: int = 8,
    steps: int = 18,
    change_at: int | None = None,
    repeats: int = 1,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One run of ``steps`` steps per variant in which the load changes at ``change_at`` (default steps/3):
    ``arrive`` (quiet, then one co-tenant) or ``leave`` (one co-tenant, then quiet). Variants: every fixed
    count, ``auto`` (probe + watch + re-probe) and ``auto-once`` (the probe only). Run one after another
    (a run cannot be interleaved with itself), order rotated per repeat; total seconds per run."""
    if kind not in ("arrive", "leave"):
        raise ValueError(f"scenario={kind!r}; valid choices: arrive, leave")
    step, name, work = _build_step(model, layers, batch_size, seq_len, rank, seed)
    change_at = steps // 3 if change_at is None else change_at
    fixed = candidate_counts(usable_cores())
    variants = [f"fixed{n}" for n in fixed] + ["auto", "auto-once"]
    original = torch.get_num_threads()
    for n in fixed:
        time_fixed(step, n)
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    try:
        for r in range(repeats):
            for v in variants[r % len(variants) :] + variants[: r % len(variants)]:
                runs[v].append(_scenario_run(step, work, v, kind, steps, change_at))
                if log:
                    got = runs[v][-1]
                    log(f"{kind} repeat {r + 1}: {v} {got['total_s']:.1f}s threads {got['threads']}")
    finally:
        torch.set_num_threads(original)
    return {
        "scenario": kind,
        "model": name,
        "steps": steps,
        "change_at": change_at,
        "repeats": repeats,
        "env": _env(torch.device("cpu")),
        "runs": runs,
    }


def _scenario_run(step, work: float, variant: str, kind: str, steps: int, change_at: int) -> dict[str, Any]:
    gov = None
    if variant.startswith("auto"):
        gov = ThreadGovernor("auto", torch.device("cpu"), env={}, watch=variant == "auto")
    load = [1, 0] if kind == "leave" else [0, 1]
    times, threads = [], []
    tenants = co_tenants(load[0])
    tenants.__enter__()
    try:
        for i in range(steps):
            if i == change_at:
                tenants.__exit__(None, None, None)
                tenants = co_tenants(load[1])
                tenants.__enter__()
            if gov is None:
                torch.set_num_threads(int(variant.removeprefix("fixed")))
            else:
                gov.begin()
            threads.append(torch.get_num_threads())
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
            if gov is not None:
                gov.end(times[-1], work)
    finally:
        tenants.__exit__(None, None, None)
    return {
        "total_s": sum(times),
        "before_s": sum(times[:change_at]),
        "after_s": sum(times[change_at:]),
        "step_s": times,
        "threads": threads,
        "reprobes": gov.reprobes if gov else 0,
    }


# ---------------------------------------------------------------------- reporting


def _env(device: torch.device) -> dict[str, Any]:
    from loraven.provenance import environment

    env = environment(device)
    return {k: env.get(k) for k in ("device", "python", "torch", "transformers", "peft", "git_sha", "dirty")}


def _fmt(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def markdown(result: dict[str, Any]) -> str:
    """The table for BENCHMARKS.md, with its provenance line."""
    env = result["env"]
    fixed = result["fixed"]
    head = (
        "| load | rounds | "
        + " | ".join(f"fixed {n} (s/step)" for n in fixed)
        + " | auto (s/step) | auto chose | auto ÷ best, steady [95 % CI] | auto ÷ best, "
        + f"{result['job_steps']}-step job [95 % CI] | target | other jobs (cores) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    names = {0: "quiet", 1: "1 busy co-tenant", 2: "2 busy co-tenants"}
    for row in result["summary"]:
        k = row["co_tenants"]
        chose = ", ".join(f"{n}×{c}" for n, c in row["auto_choices"].items())
        lo, hi = row["ratio_steady_ci"]
        jlo, jhi = row["ratio_job_ci"]
        cells = [
            names.get(k, f"{k} busy co-tenants"),
            str(row["rounds"]),
            *[_fmt(row["fixed_median_s"][str(n)]) for n in fixed],
            _fmt(row["auto_steady_median_s"]),
            f"{chose} thread(s)",
            f"{row['ratio_steady']:.2f} [{_fmt(lo)}, {_fmt(hi)}]",
            f"{row['ratio_job']:.2f} [{_fmt(jlo)}, {_fmt(jhi)}]",
            f"≤ {row['target']}",
            f"{_fmt(row['others_cores_median'])} (max {_fmt(row['others_cores_max'])}); "
            f"{row['discarded_rounds']} round(s) discarded",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{result['model']}, {result['method']} r={result['rank']} (the harness's adapter), "
        f"batch {result['batch_size']}×{result['seq_len']} tokens, fp32, device `{env['device']}`, "
        f"torch {env['torch']}, transformers {env['transformers']}, "
        f"peft {env['peft']}, python {env['python']}, commit {str(env['git_sha'])[:10]}"
        f"{' (dirty)' if env['dirty'] else ''}. Medians over rounds; intervals: paired bootstrap over rounds."
    )
    shared = discarded_rows(result)
    added = {0: "none", 1: "1 busy loop", 2: "2 busy loops"}
    if shared:
        lines += [
            "",
            "Rounds discarded above because other jobs (other sessions' test suites: not controlled, not busy",
            "loops) used the CPU during them — the same interleaved measurement under real shared load:",
            "",
            "| load we added | other jobs (cores, median [min, max]) | rounds | "
            + " | ".join(f"fixed {n} (s/step)" for n in fixed)
            + " | auto (s/step) | auto chose | auto ÷ best fixed |",
            "|" + "---|" * (6 + len(fixed)),
        ]
        for row in shared:
            chose = ", ".join(f"{n}×{c}" for n, c in row["auto_choices"].items())
            lines.append(
                f"| {added.get(row['co_tenants'], row['co_tenants'])} | {_fmt(row['others'][0])} "
                f"[{_fmt(row['others'][1])}, {_fmt(row['others'][2])}] | {row['rounds']} | "
                + " | ".join(_fmt(row["fixed_median_s"][str(n)]) for n in fixed)
                + f" | {_fmt(row['auto_median_s'])} | {chose} thread(s) | {row['ratio']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def discarded_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per load, the rounds discarded for other jobs' CPU use, summarised like the kept ones (no interval:
    their load was whatever the other sessions ran)."""
    rows = []
    for k, data in result["loads"].items():
        rounds = data.get("discarded") or []
        if not rounds:
            continue
        fixed = {n: [r["samples_s"][f"fixed{n}"] for r in rounds] for n in result["fixed"]}
        auto = [r["samples_s"]["auto"] for r in rounds]
        others = [r["load"]["others"] for r in rounds if r["load"]["others"] is not None]
        choices = [r["auto"]["n"] for r in rounds]
        rows.append(
            {
                "co_tenants": int(k),
                "rounds": len(rounds),
                "others": (statistics.median(others), min(others), max(others)) if others else (None, None, None),
                "fixed_median_s": {str(n): statistics.median(v) for n, v in fixed.items()},
                "auto_median_s": statistics.median(auto),
                "auto_choices": {str(n): choices.count(n) for n in sorted(set(choices))},
                "ratio": ratio_of_medians(auto, list(fixed.values())),
            }
        )
    return rows


def scenario_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Scenario `{result['scenario']}` ({result['model']}, {result['steps']} steps, load changes before step "
        f"{result['change_at'] + 1}, {result['repeats']} repeat(s)):",
        "",
        "| variant | total s (median) | before change s | after change s | re-probes | threads per step (first run) |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for v, runs in result["runs"].items():
        med = {key: statistics.median(r[key] for r in runs) for key in ("total_s", "before_s", "after_s", "reprobes")}
        lines.append(
            f"| {v} | {med['total_s']:.1f} | {med['before_s']:.1f} | {med['after_s']:.1f} | {med['reprobes']:g} | "
            f"{''.join(str(t) for t in runs[0]['threads'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loraven.bench.threads",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="smollm2", choices=("smollm2", "tiny"))
    parser.add_argument("--layers", type=int, default=None, help="keep the first N decoder layers (quick runs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--loads", default="0,1,2", help="co-tenant counts, e.g. 0,1,2")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--job-steps", type=int, default=60, help="job length the probe cost is spread over")
    parser.add_argument(
        "--max-others", type=float, default=None, help="discard (and redo) rounds in which other jobs used more cores"
    )
    parser.add_argument("--scenario", choices=("arrive", "leave"), help="instead: the load changes mid-run")
    parser.add_argument("--steps", type=int, default=18, help="scenario: steps per run")
    parser.add_argument("--repeats", type=int, default=1, help="scenario: runs per variant")
    parser.add_argument("--attempts", type=int, default=MAX_ATTEMPTS, help="tries per kept round at most")
    parser.add_argument("--wait-s", type=float, default=900.0, help="longest wait for quiet before a try")
    parser.add_argument("--from-json", type=Path, nargs="+", help="no measuring: merge these runs into one table")
    parser.add_argument("--json", type=Path, help="write every sample here (after every round)")
    parser.add_argument("--md", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    if "OMP_NUM_THREADS" in os.environ:
        print("note: OMP_NUM_THREADS is set; this benchmark sets torch's count itself", file=sys.stderr)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    common = dict(model=args.model, layers=args.layers, batch_size=args.batch_size, seq_len=args.seq_len)

    def save_json(out: dict[str, Any]) -> None:
        if args.json:
            _atomic_write(args.json, json.dumps(out, indent=2, default=str) + "\n")

    if args.from_json:
        out = merge([json.loads(p.read_text()) for p in args.from_json])
        text = markdown(out)
    elif args.scenario:
        out = run_scenario(args.scenario, **common, rank=args.rank, steps=args.steps, repeats=args.repeats, log=log)
        text = scenario_markdown(out)
    else:
        try:
            loads = [int(x) for x in args.loads.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--loads {args.loads!r}; valid: co-tenant counts such as 0,1,2")
        out = run_threads_bench(
            **common,
            rank=args.rank,
            loads=loads,
            rounds=args.rounds,
            job_steps=args.job_steps,
            max_others=args.max_others,
            attempts=args.attempts,
            wait_s=args.wait_s,
            save=save_json,
            log=log,
        )
        text = markdown(out)
    print(text)
    save_json(out)
    if args.md:
        _atomic_write(args.md, text)
    return 0


def _atomic_write(path: Path, content: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
