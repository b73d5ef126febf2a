"""Verdict words on hand-made stores with known spreads, and intervals equal to scipy's on the same numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_store import level_row, write_run
from scipy import stats

from analysis import accuracy_table, energy_table, load_results, runs_frame, speedup_table
from analysis import intervals as iv
from analysis.cli import main

SEEDS = range(5)


def pair_store(
    root: Path,
    dense_kwh: list[float],
    method_kwh: list[float],
    dense_only: dict | None = None,
    method_only: dict | None = None,
    **kw,
) -> Path:
    """Dense vs fixed low-rank, one run per seed, accuracy well above a recorded chance level; ``kw`` for both
    sides' runs, ``dense_only``/``method_only`` for one side's."""
    common = {"task": "digits", "chance": 0.1, "stderr": 0.01, "method": "codecarbon-tdp-estimate"} | kw
    for seed, kwh in enumerate(dense_kwh):
        write_run(
            root, "e", f"d{seed}", adapter="none", seed=seed, accuracy=0.95, kwh=kwh, **common | (dense_only or {})
        )
    for seed, kwh in enumerate(method_kwh):
        write_run(root, "e", f"s{seed}", seed=seed, accuracy=0.95, kwh=kwh, **common | (method_only or {}))
    return root


def fixed_row(root: Path):
    return level_row(energy_table(runs_frame(load_results(root))), "fixed low-rank")


def test_tight_half_energy_is_reproduced(tmp_path: Path) -> None:
    row = fixed_row(pair_store(tmp_path, [1.0, 1.01, 0.99, 1.0, 1.02], [0.5, 0.51, 0.49, 0.5, 0.5]))
    assert row["verdict"] == "reproduced"
    assert 40 < row["reduction_pct_lo"] < row["reduction_pct"] < row["reduction_pct_hi"] < 60
    assert row["evidence"] == "estimated"


def test_energy_from_runs_on_different_threads_or_load_gets_no_verdict(tmp_path: Path) -> None:
    """Half the energy because the method's runs had 2 threads on a quiet CPU and dense's 1 thread on a busy one
    is the machine's doing: insufficient evidence, saying why; same threads and load keep the verdict."""
    dense, half = [1.0, 1.01, 0.99, 1.0, 1.02], [0.5, 0.51, 0.49, 0.5, 0.5]
    row = fixed_row(pair_store(tmp_path / "a", dense, half, threads=1, train_cpu_s=1.0))
    assert row["verdict"] == "reproduced"  # train_s is 1.0 in the fake store: share 1.0 on both sides
    two_threads = {"threads": 2, "train_cpu_s": 2.0}  # the method's side again, on two threads
    pair_store(tmp_path / "b", dense, half, dense_only={"threads": 1, "train_cpu_s": 1.0}, method_only=two_threads)
    row = fixed_row(tmp_path / "b")
    assert row["verdict"].startswith("insufficient evidence") and "different thread counts (1, 2)" in row["verdict"]
    row = fixed_row(pair_store(tmp_path / "c", dense, half, threads=1))
    assert row["verdict"] == "reproduced"  # no CPU time recorded: nothing to say about load
    busy, quiet = {"train_cpu_s": 0.5}, {"train_cpu_s": 0.9}  # dense got half its thread's time, the method all
    pair_store(tmp_path / "d", dense, half, dense_only=busy, method_only=quiet, threads=1)
    row = fixed_row(tmp_path / "d")
    assert "different CPU load (share of their threads' time 0.90 vs 0.50)" in row["verdict"]


def test_tight_ten_percent_is_not_reproduced(tmp_path: Path) -> None:
    row = fixed_row(pair_store(tmp_path, [1.0, 1.01, 0.99, 1.0, 1.02], [0.9, 0.91, 0.89, 0.9, 0.9]))
    assert row["verdict"] == "not reproduced" and row["reduction_pct_hi"] < 40


def test_overlapping_seeds_are_inconclusive_with_a_seed_count(tmp_path: Path) -> None:
    row = fixed_row(pair_store(tmp_path, [1.0, 0.4, 1.6, 0.7, 1.3], [0.5, 0.2, 0.9, 0.4, 0.6]))
    assert row["reduction_pct_lo"] < 40 < row["reduction_pct_hi"]
    assert row["verdict"].startswith("inconclusive — about ")
    assert row["verdict"].endswith(" seeds would resolve it at the observed spread")
    assert int(row["verdict"].split("about ")[1].split()[0]) > 5


def test_one_run_at_chance_is_insufficient_evidence(tmp_path: Path) -> None:
    write_run(tmp_path, "a", "d", adapter="none", task="text_cls", accuracy=0.26, stderr=0.03, chance=0.25)
    write_run(tmp_path, "a", "m", task="text_cls", accuracy=0.27, stderr=0.03, chance=0.25)
    row = level_row(accuracy_table(runs_frame(load_results(tmp_path))), "fixed low-rank")
    assert row["chance"] == "at chance"
    assert row["verdict"].startswith("insufficient evidence (")
    assert "accuracy at chance level" in row["verdict"] and "fewer than 3 seeds" in row["verdict"]


def test_energy_below_meter_resolution_never_enters_a_verdict(tmp_path: Path) -> None:
    dense, method = [1.0, 1.01, 0.99, 1.0, 1.02], [0.5, 0.51, 0.49, 0.5, 0.5]
    row = fixed_row(pair_store(tmp_path, dense, method, below_resolution=True))
    assert row["verdict"] == "insufficient evidence (energy below meter resolution)"


def test_records_without_chance_say_unknown(tmp_path: Path) -> None:
    write_run(tmp_path, "a", "d", adapter="none", task="digits", accuracy=0.9)
    write_run(tmp_path, "a", "m", task="digits", accuracy=0.9)
    assert level_row(accuracy_table(runs_frame(load_results(tmp_path))), "fixed low-rank")["chance"] == "chance unknown"


def test_interval_equals_scipy_bootstrap(tmp_path: Path) -> None:
    dense, method = [1.0, 0.4, 1.6, 0.7, 1.3], [0.5, 0.2, 0.9, 0.4, 0.6]
    row = fixed_row(pair_store(tmp_path, dense, method))
    ref = stats.bootstrap(
        (np.array(method), np.array(dense)),
        lambda a, b, axis=-1: np.mean(a, axis=axis) / np.mean(b, axis=axis),
        vectorized=True,
        paired=False,
        confidence_level=0.95,
        n_resamples=iv.RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(iv.SEED),
    ).confidence_interval
    assert row["reduction_pct_lo"] == pytest.approx((1 - ref.high) * 100)
    assert row["reduction_pct_hi"] == pytest.approx((1 - ref.low) * 100)


def test_single_run_interval_is_lm_evals_binomial_stderr() -> None:
    got = iv.ratio([0.6], [0.8], [0.02], [0.01])
    rel = np.hypot(0.02 / 0.6, 0.01 / 0.8)
    half = stats.norm.ppf(0.975) * rel * 0.75
    assert (got.lo, got.hi) == pytest.approx((0.75 - half, 0.75 + half))


def test_smoke_store_never_yields_reproduced(tmp_path: Path) -> None:
    """4-step runs of a random model at chance: whatever the point estimates, no verdict is 'reproduced'."""
    root = tmp_path / "results"
    for seed in SEEDS:
        for adapter, sched, kwh, acc in (("none", "static", 1.0, 0.24), ("loraven", "static", 0.5, 0.26)):
            for sch in (sched, "energy") if adapter == "loraven" else (sched,):
                write_run(
                    root,
                    "smoke",
                    f"{adapter}{sch}{seed}",
                    adapter=adapter,
                    scheduler=sch,
                    seed=seed,
                    task="arith_mc",
                    accuracy=acc,
                    stderr=0.03,
                    kwh=kwh,
                    steps=4,
                )
    frame = runs_frame(load_results(root))
    verdicts = [*energy_table(frame)["verdict"], *accuracy_table(frame)["verdict"]]
    verdicts += list(speedup_table(load_results(root))["verdict"])
    assert not any(v == "reproduced" for v in verdicts), verdicts
    assert any("runs too short to train (4 steps" in v for v in verdicts)
    out = tmp_path / "out"
    assert main(["--results", str(root), "--out", str(out), "--no-figures"]) == 0
    assert "| reproduced |" not in (out / "REPORT.md").read_text()


def test_meter_flags_short_phases_and_gives_energy_per_unit() -> None:
    from loraven.meters import EnergyReading, combine

    short = EnergyReading("codecarbon-tdp-estimate", kwh=1e-6, duration_s=0.5, sampling_s=0.1)
    long = EnergyReading("codecarbon-tdp-estimate", kwh=1e-5, duration_s=2.0, sampling_s=0.1)
    assert short.below_resolution and not long.below_resolution
    energy = combine({"train": long, "eval": short}, train_units=360, eval_examples=100, train_unit="sample")
    assert energy["j_per_train_unit"] == pytest.approx(1e-5 * 3.6e6 / 360) and energy["train_unit"] == "sample"
    assert energy["j_per_eval_example"] is None  # below resolution: no number rather than a wrong one
    assert energy["phases"]["eval"]["below_resolution"] is True


def test_chance_from_the_recorded_number_of_choices(tmp_path: Path) -> None:
    from analysis.load import chance_known, chance_of

    record = {"metrics": {"accuracy": 0.3}, "config": {"task": {"n_choices": 4}}}
    assert chance_of(record) == pytest.approx(0.25) and chance_known(record)
    assert not chance_known({"metrics": {"accuracy": 0.3}, "config": {"task": {}}})
    assert chance_known({"metrics": {"chance": None}}) and chance_of({"metrics": {"chance": None}}) != 0.25


def test_a_pareto_front_needs_both_differences_resolved() -> None:
    """Cheaper (resolved) but only noisily better: no trade-off to draw. Both resolved: a real trade-off."""
    from analysis.figures import trade_off_resolved

    cheap_worse = ((5.0, 4.5, 5.5, 10), (0.640, 0.630, 0.650, 10))
    dear_noisy = ((12.0, 11.0, 13.0, 10), (0.630, 0.605, 0.655, 10))  # y interval overlaps the other's
    dear_better = ((12.0, 11.0, 13.0, 10), (0.600, 0.595, 0.605, 10))
    assert not trade_off_resolved(cheap_worse, dear_noisy)
    assert trade_off_resolved(cheap_worse, dear_better)
    same_cost = ((5.2, 4.6, 5.8, 10), (0.600, 0.595, 0.605, 10))
    assert not trade_off_resolved(cheap_worse, same_cost)  # quality resolved, cost not: no trade-off either
