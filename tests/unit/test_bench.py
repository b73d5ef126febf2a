"""Benchmarks: variants agree numerically, rows follow the results contract, the job and the CLI run.
Timings are never asserted (the machine is shared); only structure and numerics are."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from loraven import CONF_DIR
from loraven.adapters.loraven import fusion as kernels
from loraven.bench.fusion import VARIANTS, crossover, make_case, parse_shape, ranks_for, run_fusion, variants
from loraven.bench.inference import run_inference
from loraven.bench.job import run_bench_job, suites_of
from loraven.bench.timing import percentile, round_robin
from loraven.bench.train_step import run_train_step
from loraven.contract import BENCH_ROW, contract_violations
from loraven.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
ROW_KEYS = (*BENCH_ROW, "ms_p10", "ms_p90", "threads", "repeats")


def _cfg(tmp_path: Path, *overrides: str) -> dict:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="config", overrides=["experiment=paper_speedup", f"results_dir={tmp_path}", *overrides]
        )
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.mark.parametrize("batch,dim,rank", [(8, 32, 4), (3, 48, 24)])
def test_fusion_variants_agree(batch: int, dim: int, rank: int) -> None:
    case = make_case(batch, dim, rank, torch.device("cpu"), torch.float32, seed=1)
    reference = kernels.three_matmul(case.x, case.U, case.S, case.V)  # the layer's original path
    scale = float(reference.abs().max())
    for name, fn in variants(case).items():
        out = fn().clone()
        assert out.shape == (batch, dim), name
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4 * scale, msg=name)


def test_fusion_rows_follow_the_contract() -> None:
    rows = run_fusion(["4x16", "8x32"], [4, 8, 64], repeats=3, warmup=1, min_sample_ms=0.0)
    # rank 64 > dim is dropped; every (shape, rank) has every variant
    assert {(r["shape"], r["rank"]) for r in rows} == {("4x16", 4), ("4x16", 8), ("8x32", 4), ("8x32", 8)}
    assert {r["variant"] for r in rows} == set(VARIANTS)
    for row in rows:
        assert all(k in row for k in ROW_KEYS), row
        assert (row["batch"], row["dim"]) == parse_shape(row["shape"])
        assert row["ms_p10"] <= row["ms"] <= row["ms_p90"] and row["repeats"] == 3
        assert row["dtype"] == "float32" and row["device"].startswith("cpu")
    assert set(crossover(rows)) == {"4x16", "8x32"}


def test_fusion_cap_skips_large_shapes_and_bad_input_is_a_config_error() -> None:
    skipped: list[str] = []
    assert run_fusion(["64x64"], [8], repeats=1, warmup=0, max_gflop=1e-6, log=skipped.append) == []
    assert skipped and "64x64" in skipped[0]
    assert ranks_for(512, "auto") == [8, 16, 32, 64, 128, 256]
    assert parse_shape("128x2048") == (128, 2048)
    with pytest.raises(ConfigError, match="BATCHxDIM"):
        parse_shape("128by2048")
    with pytest.raises(ConfigError, match="valid choices"):
        variants(make_case(2, 8, 2, torch.device("cpu"), torch.float32), ["fast"])
    with pytest.raises(ConfigError, match="valid choices"):
        suites_of({"suite": ["fusion", "speed"]})


def test_round_robin_interleaves_and_percentiles() -> None:
    calls: list[str] = []
    timings = round_robin(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        repeats=3,
        warmup=1,
        device=torch.device("cpu"),
    )
    assert calls == ["a", "b"] * 4
    assert all(len(t.samples_ms) == 3 for t in timings.values())
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 10) == pytest.approx(1.4)


def test_cli_fusion_runs(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "loraven.bench",
            "fusion",
            "--shapes",
            "4x16,8x32",
            "--ranks",
            "4",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "orig/fused" in proc.stdout
    rows = json.loads(out.read_text())["bench"]
    assert len(rows) == 2 * len(VARIANTS) and all(all(k in r for k in ROW_KEYS) for r in rows)


def test_experiment_selects_the_bench_job(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert cfg["job"] == "bench" and cfg["experiment_name"] == "paper_speedup"
    assert cfg["bench"]["suite"] == ["fusion"] and cfg["tracking"]["name"] == "none"


def test_bench_job_writes_a_completed_result(tmp_path: Path) -> None:
    cfg = _cfg(
        tmp_path,
        "job=bench",
        "experiment_name=paper_speedup",
        "bench.shapes=[4x16]",
        "bench.ranks=[4]",
        "bench.repeats=2",
        "bench.warmup=1",
    )
    result = run_bench_job(cfg)
    path = tmp_path / "paper_speedup" / result["run_id"] / "result.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["status"] == "completed", on_disk.get("reason")
    assert contract_violations(on_disk) == []
    assert on_disk["experiment"] == "paper_speedup" and on_disk["config"]["job"] == "bench"
    assert len(on_disk["bench"]) == len(VARIANTS) and on_disk["env"]["torch"]
    assert run_bench_job(cfg).get("_resumed")  # a completed run is not redone


def test_train_step_on_tiny_llama() -> None:
    rows = run_train_step(["none", "lora"], model="tiny", batch_size=2, seq_len=8, rank=4, warmup=1, repeats=2)
    by = {r["method"]: r for r in rows}
    assert by["none"]["status"] == by["lora"]["status"] == "measured"
    assert by["none"]["trainable_params"] == by["none"]["total_params"]
    assert 0 < by["lora"]["trainable_params"] < by["none"]["trainable_params"]
    assert by["lora"]["ranks"] == [4] and by["none"]["vs_full_ft"] == 1.0 and by["lora"]["vs_reference"] == 1.0
    for row in rows:
        assert row["ms"] > 0 and row["tokens_per_s"] > 0 and row["peak_mb"] >= row["resident_mb"] > 0
        assert row["top_ops"] and row["memory_method"] == "torch-profiler-live-tensors"
    # full fine-tuning keeps AdamW state for every weight: more resident memory than LoRA
    assert by["none"]["resident_mb"] > by["lora"]["resident_mb"]


def test_inference_merged_matches_unmerged() -> None:
    rows = run_inference(["lora", "loraven_static"], model="tiny", batch_size=2, seq_len=8, rank=4, warmup=0, repeats=1)
    merged = [r for r in rows if r["variant"] == "merged"]
    assert {r["method"] for r in merged} == {"lora", "loraven_static"}
    assert all(r["max_abs_diff"] < 1e-4 for r in merged)
    assert [r["vs_base"] for r in rows if r["variant"] == "base"] == [1.0]


def test_rank_cost_rows_follow_the_contract_and_run_from_the_cli() -> None:
    from loraven.bench.__main__ import main
    from loraven.bench.rank_cost import run_rank_cost

    rows = run_rank_cost(
        dim=64,
        batch=8,
        fractions=[1.0, 0.5],
        repeats=2,
        warmup=1,
        device=torch.device("cpu"),
        dtype=torch.float32,
        threads=1,
    )
    by_variant = {r["variant"]: r for r in rows}
    assert set(by_variant) == {"rank=32", "rank=16", "dense nn.Linear"}
    assert by_variant["rank=32"]["ratio_to_full_rank"] == 1.0
    assert all(r["ms"] > 0 and r["ms_p10"] <= r["ms_p90"] for r in rows)
    assert main(["rank_cost", "--dim", "64", "--batch", "4", "--repeats", "2", "--warmup", "1"]) == 0
