"""The thread benchmark's mechanics (loraven/bench/threads.py): co-tenants end, ratios and intervals are
computed from the samples they claim, the table carries its provenance. No timing is asserted."""

from __future__ import annotations

import os

import pytest

from loraven.bench import threads as bench


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_co_tenants_are_killed_on_exit_even_after_an_error():
    with pytest.raises(RuntimeError), bench.co_tenants(2) as pids:
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        raise RuntimeError("boom")
    assert not any(_alive(p) for p in pids)


def test_load_meter_attributes_a_co_tenants_core():
    import time

    with bench.co_tenants(1) as pids:
        meter = bench.LoadMeter(pids)
        time.sleep(0.6)
        cores = meter.cores()
    assert cores["co_tenants"] > 0.0  # the busy loop's CPU is attributed to it (its share depends on the load)
    assert cores["busy"] >= cores["co_tenants"] - 0.05 and cores["others"] >= 0.0


def test_ratio_and_bootstrap_on_known_samples():
    fixed1 = [1.0, 1.1, 0.9, 1.0, 1.05]
    fixed2 = [3.0, 2.9, 3.1, 3.0, 3.2]
    assert bench.ratio_of_medians(fixed1, [fixed1, fixed2]) == 1.0  # auto ran exactly as the best count
    assert bench.ratio_of_medians([2.0] * 5, [fixed1, fixed2]) == pytest.approx(2.0)
    lo, hi = bench.bootstrap_ratio(fixed1, [fixed1, fixed2])
    assert lo == hi == 1.0  # paired: every resample has auto == fixed1
    lo, hi = bench.bootstrap_ratio([x * 1.5 for x in fixed1], [fixed1, fixed2])
    assert lo == pytest.approx(1.5) and hi == pytest.approx(1.5)
    assert bench.bootstrap_ratio([1.0, 2.0], [[1.0, 2.0]]) == (None, None)  # too few rounds for an interval


def _round(f1: float, f2: float, auto: float, others: float) -> dict:
    return {"samples_s": {"fixed1": f1, "fixed2": f2, "auto": auto}, "auto": {"n": 1}, "load": {"others": others}}


def test_summary_and_markdown_from_synthetic_rounds():
    data = {
        "samples_s": {"fixed1": [1.0, 1.0, 1.0], "fixed2": [3.0, 3.0, 3.0], "auto": [1.1] * 3, "auto_job": [1.2] * 3},
        "auto": [{"n": 1, "how": "idle-rule", "probe_units": [(1, 1.0)]} for _ in range(3)],
        "load": [{"others": 0.1}, {"others": 0.0}, {"others": 0.2}],
    }
    row = bench.summarise(1, data, [1, 2], 60)
    assert row["best_fixed"] == 1 and row["auto_choices"] == {"1": 3} and row["target"] == 1.2
    assert row["ratio_steady"] == pytest.approx(1.1) and row["ratio_job"] == pytest.approx(1.2)
    assert row["others_cores_median"] == pytest.approx(0.1) and row["others_cores_max"] == pytest.approx(0.2)
    result = {
        "model": "m",
        "method": "x",
        "rank": 8,
        "batch_size": 16,
        "seq_len": 64,
        "job_steps": 60,
        "fixed": [1, 2],
        "env": {
            "device": "cpu:test",
            "torch": "t",
            "transformers": "tf",
            "peft": "p",
            "python": "3",
            "git_sha": "abc",
            "dirty": False,
        },
        "summary": [row],
        "loads": {
            "1": {
                **data,
                "discarded": [_round(2.0, 8.0, 2.2, 0.9), _round(4.0, 6.0, 4.4, 1.1)],
            }
        },
    }
    (shared,) = bench.discarded_rows(result)
    assert shared["rounds"] == 2 and shared["others"] == (pytest.approx(1.0), 0.9, 1.1)
    assert shared["fixed_median_s"] == {"1": 3.0, "2": 7.0} and shared["ratio"] == pytest.approx(3.3 / 3.0)
    text = bench.markdown(result)
    assert "| 1 busy loop | 1.00 [0.90, 1.10] | 2 | 3.00 | 7.00 | 3.30 | 1×2 thread(s) | 1.10 |" in text
    assert "| 1 busy co-tenant | 3 | 1.00 | 3.00 | 1.10 | 1×3 thread(s) | 1.10 [1.10, 1.10] |" in text
    assert "torch t, transformers tf" in text and "peft p" in text


@pytest.mark.slow
def test_tiny_run_end_to_end():
    out = bench.run_threads_bench(model="tiny", batch_size=2, seq_len=8, loads=(0, 1), rounds=3, warmup=1)
    assert [r["co_tenants"] for r in out["summary"]] == [0, 1]
    for row in out["summary"]:
        assert row["rounds"] == 3 and row["ratio_steady"] > 0 and row["ratio_steady_ci"][0] is not None
        assert sum(row["auto_choices"].values()) == 3
    assert out["method"] == bench.reference_method() and out["env"]["torch"]


def test_merge_runs_of_one_setup_into_one_table():
    def run(k: int, sha: str, rank: int = 8) -> dict:
        data = {
            "samples_s": {"fixed1": [1.0] * 3, "fixed2": [2.0] * 3, "auto": [1.0] * 3, "auto_job": [1.0] * 3},
            "auto": [{"n": 1, "how": "probe", "probe_units": []}] * 3,
            "load": [{"others": 0.0}] * 3,
            "discarded": [],
        }
        base = {"model": "m", "method": "x", "rank": rank, "batch_size": 16, "seq_len": 64, "job_steps": 60}
        env = {"git_sha": sha, "dirty": False}
        return {**base, "fixed": [1, 2], "env": env, "loads": {str(k): data}, "summary": []}

    out = bench.merge([run(1, "b" * 40), run(0, "a" * 40)])
    assert [r["co_tenants"] for r in out["summary"]] == [0, 1]
    assert out["env"]["git_sha"] == "aaaaaaaaaa, bbbbbbbbbb"
    with pytest.raises(ValueError, match="rank"):
        bench.merge([run(0, "a"), run(1, "a", rank=16)])
