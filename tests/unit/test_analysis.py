"""analysis/: tables, Pareto, warnings and the CLI on small hand-built results stores with known numbers."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from fake_store import bench_rows, energy_store, level_row, write_run

from analysis import (
    AnalysisWarning,
    accuracy_table,
    energy_table,
    load_results,
    pareto_front,
    runs_frame,
    runs_table,
    speedup_table,
)
from analysis.cli import main
from analysis.figures import mean_rank_per_step
from analysis.tables import display_energy, display_speedup
from analysis.wandb_source import load_wandb


def test_energy_table_reduction_retention_and_verdict(tmp_path: Path) -> None:
    table = energy_table(runs_frame(load_results(energy_store(tmp_path))))
    dense, fixed = level_row(table, "dense"), level_row(table, "fixed low-rank")
    assert dense["n"] == 2 and dense["energy_kwh_mean"] == pytest.approx(1.1)
    assert dense["energy_kwh_std"] == pytest.approx(math.sqrt(0.02))
    assert dense["energy_j_mean"] == pytest.approx(1.1 * 3.6e6)
    assert fixed["reduction_pct"] == pytest.approx((1 - 0.5 / 1.1) * 100)
    assert fixed["retention_pct"] == pytest.approx(0.89 / 0.90 * 100)
    assert fixed["reduction_pct_lo"] <= fixed["reduction_pct"] <= fixed["reduction_pct_hi"]
    assert fixed["verdict"] == "insufficient evidence (fewer than 3 seeds: 2 vs 2 baseline)"
    assert level_row(table, "dynamic")["verdict"].startswith("insufficient evidence (fewer than 3 seeds")
    full = level_row(table, "full LoRAven")
    assert full["n"] == 1 and full["energy_kwh_mean"] == pytest.approx(0.4)  # the failed seed is excluded
    assert full["retention_pct"] == pytest.approx(0.5 / 0.9 * 100)
    assert full["verdict"].startswith("insufficient evidence")
    assert level_row(table, "dense")["verdict"] == "baseline"
    assert level_row(table, "LoRA-AR")["reduction_pct"] == pytest.approx((1 - 0.7 / 1.1) * 100)
    reference = level_row(table, "paper (reported)")
    assert reference["paper_reduction_pct"] == "40–60" and reference["paper_retention_pct"] == "≥95"
    shown = display_energy(table)
    assert (shown.loc[shown["level"] == "full LoRAven", "train energy J"] == "1.44e+06 (n=1)").all()
    assert shown.loc[shown["level"] == "fixed low-rank", "reduction vs dense %"].iloc[0].endswith("(n=2 vs 2 dense)")
    assert not shown.isna().any().any() and not (shown == "").any().any()


def test_energy_methods_are_never_mixed(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "d", adapter="none", accuracy=0.9, kwh=1.0, method="nvml-counter")
    write_run(tmp_path, "x", "s", accuracy=0.9, kwh=0.1, method="codecarbon-tdp-estimate")
    row = level_row(energy_table(runs_frame(load_results(tmp_path))), "fixed low-rank")
    assert math.isnan(row["reduction_pct"]) and row["verdict"].startswith("insufficient evidence (dense measured")
    assert "nvml-counter" in row["note"]


def test_modes_split_rows_only_when_both_occur(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "a", mode="adapter", accuracy=0.9, kwh=1.0)
    write_run(tmp_path, "x", "r", mode="replace", accuracy=0.8, kwh=0.5)
    levels = set(energy_table(runs_frame(load_results(tmp_path)))["level"])
    assert {"fixed low-rank (adapter)", "fixed low-rank (replace)"} <= levels


def test_accuracy_table_retention_mse_increase_and_paper_claims(tmp_path: Path) -> None:
    write_run(tmp_path, "acc", "dd", adapter="none", task="digits", accuracy=0.95)
    write_run(tmp_path, "acc", "dl", scheduler="energy", task="digits", accuracy=0.94)
    write_run(tmp_path, "acc", "rd", adapter="none", task="regression", mse=2.0, seed=0)
    write_run(tmp_path, "acc", "rd1", adapter="none", task="regression", mse=2.0, seed=1)
    write_run(tmp_path, "acc", "rl", scheduler="linear", task="regression", mse=2.1)
    table = accuracy_table(runs_frame(load_results(tmp_path)))
    image = table[table["kind"] == "image-classification"].iloc[0]
    assert image["level"] == "full LoRAven" and image["retention_pct"] == pytest.approx(0.94 / 0.95 * 100)
    assert image["paper_value"] == 99.2 and image["verdict"].startswith("insufficient evidence")
    reg = table[table["kind"] == "regression"].iloc[0]
    assert (
        reg["mse_increase_pct"] == pytest.approx(5.0)
        and reg["dense_n"] == 2
        and reg["verdict"].startswith("insufficient evidence")
    )
    assert math.isnan(reg["retention_pct"]) and reg["paper_value"] == 2.0
    text = table[table["kind"] == "text-classification"].iloc[
        0
    ]  # no text task run: the claim stays, ours "not measured"
    assert text["level"] == "not measured" and text["paper_value"] == 98.8


def test_speedup_table_ratios_paper_columns_and_crossover(tmp_path: Path) -> None:
    write_run(
        tmp_path,
        "paper_speedup",
        "b0",
        task=None,
        seed=0,
        bench=[
            *bench_rows("32x512", original=8.0, factored=3.0, fused=4.0, inplace=2.0),
            *bench_rows("4096x4096", original=10.0, factored=5.0, fused=20.0),
        ],
    )
    write_run(
        tmp_path,
        "paper_speedup",
        "b1",
        task=None,
        seed=1,
        bench=bench_rows("32x512", original=10.0, fused=4.0, inplace=2.0),
    )
    table = speedup_table(load_results(tmp_path))
    small, big = table.iloc[0], table.iloc[1]
    assert small["shape"] == "32x512" and small["original_ms"] == pytest.approx(9.0)  # mean over the 2 runs
    assert small["n_runs"] == 2 and small["original_ms_p10"] == pytest.approx(8.1)
    assert small["fusion_speedup"] == pytest.approx(9.0 / 4.0) and small["inplace_speedup"] == pytest.approx(4.5)
    assert small["paper_original_ms"] == 7.82 and small["paper_fusion_speedup"] == 1.90
    assert small["paper_inplace_ms"] == 4.14 and small["paper_inplace_speedup"] == 1.89
    assert big["fused_vs_factored"] == pytest.approx(0.25) and big["fusion_pays"] == "no"
    assert math.isnan(big["inplace_speedup"]) and math.isnan(big["paper_original_ms"])
    shown = display_speedup(table)
    assert shown.loc[1, "paper_original_ms"] == "not reported" and shown.loc[1, "inplace ms"] == "not measured"
    assert shown.loc[0, "paper_fusion_speedup"] == "1.90×" and shown.loc[0, "fusion speedup"].startswith("2.25×")


def test_failed_run_is_listed_with_its_reason_and_corrupt_json_warns(tmp_path: Path) -> None:
    energy_store(tmp_path)
    bad = tmp_path / "paper_energy" / "broken" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"run_id": "broken", "status": "comp')
    with pytest.warns(AnalysisWarning, match="broken"):
        records = load_results(tmp_path)
    runs = runs_table(records)
    assert len(runs) == 8
    failed = runs[runs["run_id"] == "e1"].iloc[0]
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: boom"
    assert "config" not in runs and "adapter.ranks" not in runs and runs["config.seed"].notna().all()


def test_mixed_versions_warn(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "a", adapter="none", accuracy=0.9, kwh=1.0, torch="2.13.0")
    write_run(tmp_path, "x", "b", accuracy=0.9, kwh=0.5, torch="2.4.0")
    with pytest.warns(AnalysisWarning, match="torch versions 2.13.0, 2.4.0"):
        energy_table(runs_frame(load_results(tmp_path)))


def test_pareto_front_membership() -> None:
    df = pd.DataFrame({"e": [1.0, 2.0, 3.0, 1.0, 0.5, math.nan], "acc": [0.8, 0.9, 0.85, 0.7, 0.5, 1.0]})
    assert pareto_front(df, "e", "acc").tolist() == [True, True, False, False, True, False]
    # minimise both: lowest energy point dominates everything with higher mse
    assert pareto_front(df, "e", "acc", maximize_y=False).tolist() == [
        False,
        False,
        False,
        False,
        True,
        False,
    ]


def test_rank_trace_mean_carries_unchanged_modules_forward() -> None:
    trace = pd.DataFrame({"step": [0, 0, 10, 20], "module": ["a", "b", "a", "b"], "rank": [8, 8, 4, 2]})
    assert mean_rank_per_step(trace).tolist() == [8.0, 6.0, 3.0]


def test_cli_writes_tables_and_figures_without_blank_cells(tmp_path: Path) -> None:
    results = energy_store(tmp_path / "results")
    write_run(
        results,
        "paper_speedup",
        "b0",
        task=None,
        bench=bench_rows("64x1024", original=5.0, fused=2.5, factored=2.0, inplace=2.0),
    )
    out = tmp_path / "reports"
    assert main(["--results", str(results), "--out", str(out)]) == 0
    for name in ("speedup", "energy", "accuracy"):
        for ext in ("md", "csv", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
        csv = pd.read_csv(out / "tables" / f"{name}.csv", keep_default_na=False)
        assert not (csv == "").any().any(), name
    speed = pd.read_csv(out / "tables" / "speedup.csv")
    assert speed.loc[0, "paper_fused_ms"] == 4.04 and float(speed.loc[0, "fused_ms"]) == 2.5
    energy_md = (out / "tables" / "energy.md").read_text()
    assert "paper (reported)" in energy_md and "insufficient evidence" in energy_md and "not measured" in energy_md
    assert len(pd.read_csv(out / "tables" / "runs.csv")) == 9
    comparison = pd.read_csv(out / "tables" / "comparison.csv", keep_default_na=False)
    assert not (comparison == "").any().any() and len(comparison) == 5  # dense, 3 LoRAven levels, LoRA-AR
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures == {
        "comparison.png",
        "speedup_vs_size.png",
        "energy_vs_accuracy.png",
        "rank_trace.png",
        "rank_allocation.png",
        "time_memory.png",
    }


def test_cli_missing_results_dir_exits_nonzero(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--results", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code != 0 and "does not exist" in capsys.readouterr().err


def test_figures_without_data_are_skipped_with_a_warning(tmp_path: Path) -> None:
    write_run(tmp_path / "r", "x", "a", adapter="none", accuracy=0.9)  # no energy, no bench, no traces
    from analysis import build_report

    with pytest.warns(AnalysisWarning, match="figure speedup_vs_size skipped"):
        report = build_report(load_results(tmp_path / "r"), tmp_path / "o", formats=["csv"])
    assert set(report.figures) == {"comparison"}  # the one run's accuracy and its interval: nothing else to draw
    speed = report.frames["speedup"]  # nothing measured: the paper's three shapes, ours "not measured"
    assert speed["shape"].tolist() == ["32x512", "64x1024", "128x2048"] and speed["original_ms"].isna().all()
    assert speed["paper_original_ms"].tolist() == [7.82, 10.36, 45.49]


def _flatten(prefix: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What our jobs log to W&B summaries (loraven.track.flatten), re-stated so the test pins the shape."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}/{key}" if prefix else key
        out.update(_flatten(name, value) if isinstance(value, dict) else {name: value})
    return out


class FakeApi:
    """Stands in for wandb.Api(): ``runs(path)`` returns objects with summary, config, group, state."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records, self.paths = records, []

    def runs(self, path: str) -> list[SimpleNamespace]:
        self.paths.append(path)
        return [
            SimpleNamespace(
                id=f"wb{i}",
                name=r["run_id"],
                group=r["experiment"],
                url=None,
                state="finished" if r["status"] == "completed" else "failed",
                config=r["config"],
                summary=_flatten("", {k: r[k] for k in ("metrics", "time", "energy", "model", "memory", "task")})
                | _flatten("adapter", {k: v for k, v in r["adapter"].items() if k != "ranks"})
                | {"status": r["status"], "reason": r["reason"] or "", "_step": 3},
            )
            for i, r in enumerate(self.records)
        ]


def test_wandb_runs_give_the_same_tables_as_the_local_store(tmp_path: Path) -> None:
    energy_store(tmp_path)
    write_run(tmp_path, "paper_energy", "rep", mode="replace", scheduler="linear", accuracy=0.7, kwh=0.3)
    local = load_results(tmp_path)
    api = FakeApi(local)
    remote = load_wandb("me/loraven", api=api)
    assert api.paths == ["me/loraven"] and len(remote) == len(local)
    for build in (energy_table, accuracy_table):
        pd.testing.assert_frame_equal(build(runs_frame(remote)), build(runs_frame(local)))
    failed = [r for r in remote if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["reason"] == "RuntimeError: boom"
