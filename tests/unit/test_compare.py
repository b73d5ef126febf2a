"""What your runs show: groups that never pool different work, comparison rows with honest intervals and
verdicts, the commands that would resolve what a table cannot, the suite table and the GLUE claim, retention and
re-scored rows — on hand-made stores with known answers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_cfg
from fake_store import binomial_stderr, write_run
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis import accuracy_table, build_report, load_results, runs_frame
from analysis import intervals as iv
from analysis.cli import main
from analysis.commands import command_line, run_overrides
from analysis.compare import compare, display_group
from analysis.figures import FIGURES, FigureData, all_figures, figure, resolved_front
from analysis.missing import suggestions
from analysis.suites import BASE_ROW, display_suite, suite_table

COMMON = {"task": "arith_mc", "chance": 0.25, "steps": 300, "method": "codecarbon-tdp-estimate"}


def frame_of(root: Path) -> pd.DataFrame:
    return runs_frame(load_results(root))


def row_of(comparison, name_part: str) -> pd.Series:
    rows = comparison.rows[comparison.rows["row"].str.contains(name_part, regex=False)]
    assert len(rows) == 1, (name_part, comparison.rows["row"].tolist())
    return rows.iloc[0]


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval from its textbook formula (independent of scipy's implementation)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


# ----------------------------------------------------------------------------------------- groups


def test_two_models_one_task_give_two_sections_and_no_pooled_point(tmp_path: Path) -> None:
    for model, base in (("tiny", 0.30), ("smollm2", 0.70)):
        for adapter, bump in (("lora", 0.0), ("loraven", 0.02)):
            write_run(
                tmp_path / "r",
                "x",
                f"{model}-{adapter}",
                adapter=adapter,
                model=model,
                accuracy=base + bump,
                n=200,
                stderr=binomial_stderr(base + bump, 200),
                kwh=1e-4,
                **COMMON,
            )
    comparisons = compare(frame_of(tmp_path / "r"))
    assert [c.key["model"] for c in comparisons] == ["smollm2", "tiny"]
    for comp in comparisons:
        assert set(comp.runs["model"]) == {comp.key["model"]} and comp.rows["n_runs"].tolist() == [1, 1]
        assert comp.rows["value"].max() < 0.5 if comp.key["model"] == "tiny" else comp.rows["value"].min() > 0.5
    out = tmp_path / "rep"
    report = build_report(load_results(tmp_path / "r"), out, formats=["csv", "md"])
    text = (out / "REPORT.md").read_text()
    assert "## 1. model smollm2 · task arith_mc" in text and "## 2. model tiny · task arith_mc" in text
    table = pd.read_csv(out / "tables" / "comparison.csv")
    assert len(table) == 4 and (table.groupby("group_model")["n_runs"].sum() == 2).all()
    assert set(report.figures) >= {"comparison", "energy_vs_accuracy"}


def test_energy_methods_and_splits_are_separate_groups(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "a", adapter="lora", accuracy=0.6, kwh=1e-4, **COMMON)
    write_run(
        tmp_path, "x", "b", adapter="lora", seed=1, accuracy=0.6, kwh=1e-4, **(COMMON | {"method": "nvml-counter"})
    )
    keys = [c.key["energy_method"] for c in compare(frame_of(tmp_path))]
    assert keys == ["codecarbon-tdp-estimate", "nvml-counter"]


def test_two_learning_rates_of_one_method_are_two_rows_never_averaged(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path, "x", f"a{seed}", adapter="lora", seed=seed, lr=1e-3, accuracy=0.9, **COMMON)
        write_run(tmp_path, "x", f"b{seed}", adapter="lora", seed=seed, lr=1e-5, accuracy=0.3, **COMMON)
    (comp,) = compare(frame_of(tmp_path))
    assert comp.settings == ["trainer.lr"] and sorted(comp.rows["setting:lr"]) == ["0.001", "1e-05"]
    assert sorted(comp.rows["value"]) == [pytest.approx(0.3), pytest.approx(0.9)]
    assert "lr" in display_group(comp).columns


def test_options_outside_the_run_id_never_split_a_configuration(tmp_path: Path) -> None:
    """Seeds run before and after an option that only says how a run runs (threads, checkpoints) existed are one
    configuration, exactly as their run ids say; a semantic key (steps) still splits."""
    how = {"threads": "auto", "trainer": {"lr": 3e-4, "steps": 300, "checkpoint_every": 50}}
    write_run(tmp_path, "x", "old0", adapter="lora", seed=0, accuracy=0.5, **COMMON)
    write_run(tmp_path, "x", "new1", adapter="lora", seed=1, accuracy=0.6, config=how, **COMMON)
    write_run(tmp_path, "x", "new2", adapter="lora", seed=2, accuracy=0.7, config=how, **COMMON)
    (comp,) = compare(frame_of(tmp_path))
    assert comp.settings == [] and len(comp.rows) == 1 and comp.rows.iloc[0]["value"] == pytest.approx(0.6)
    write_run(tmp_path, "x", "long", adapter="lora", seed=0, accuracy=0.9, config={"trainer": {"steps": 900}}, **COMMON)
    (comp,) = compare(frame_of(tmp_path))
    assert comp.settings == ["trainer.steps"] and len(comp.rows) == 2


# ----------------------------------------------------------------------------------------- intervals and verdicts


def test_a_two_run_store_gives_binomial_intervals_and_no_resolved_difference(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "a", adapter="lora", accuracy=0.80, n=200, stderr=binomial_stderr(0.80, 200), **COMMON)
    write_run(tmp_path, "x", "b", adapter="dora", accuracy=0.83, n=200, stderr=binomial_stderr(0.83, 200), **COMMON)
    (comp,) = compare(frame_of(tmp_path))
    lora, dora = row_of(comp, "LoRA"), row_of(comp, "DoRA")
    assert lora["is_reference"] and comp.reference_why.endswith("the first method by adapter.order")
    assert (dora["value_lo"], dora["value_hi"]) == pytest.approx(wilson_by_hand(166, 200))
    half = 1.959963984540054 * math.hypot(binomial_stderr(0.80, 200), binomial_stderr(0.83, 200))
    assert (dora["change_lo"], dora["change_hi"]) == pytest.approx((0.03 - half, 0.03 + half))
    need = math.ceil((half / 0.03) ** 2)  # half-width ∝ 1/√n: n at which it equals the observed change
    assert dora["verdict"] == f"no resolved difference — about {need} seeds"
    shown = display_group(comp)
    assert shown.loc[1, "accuracy (higher is better)"].endswith("(n=200 docs, 1 seed)")
    assert "one seed a side: lm-eval binomial stderrs" in shown.loc[1, "change vs reference"]


def test_better_by_ten_points_at_five_seeds_is_better_and_mse_direction_is_respected(tmp_path: Path) -> None:
    noise = [0.01, -0.01, 0.0, 0.005, -0.005]
    for seed, e in enumerate(noise):
        write_run(tmp_path / "a", "x", f"l{seed}", adapter="lora", seed=seed, accuracy=0.70 + e, **COMMON)
        write_run(tmp_path / "a", "x", f"d{seed}", adapter="dora", seed=seed, accuracy=0.80 - e, **COMMON)
    (comp,) = compare(frame_of(tmp_path / "a"))
    dora = row_of(comp, "DoRA")
    d = np.array([0.10 - 2 * e for e in noise])
    ref = stats.ttest_1samp(d, 0.0).confidence_interval(0.95)
    assert dora["verdict"] == "better" and dora["change_method"] == "paired by seed, t over 5 seeds"
    assert (dora["change_lo"], dora["change_hi"]) == pytest.approx((ref.low, ref.high))
    assert 0.0 <= dora["value_lo"] <= dora["value"] <= dora["value_hi"] <= 1.0
    for seed, e in enumerate(noise):  # regression: lower MSE is better
        write_run(tmp_path / "m", "x", f"l{seed}", adapter="lora", seed=seed, task="regression", mse=2.0 + e, steps=300)
        write_run(tmp_path / "m", "x", f"d{seed}", adapter="dora", seed=seed, task="regression", mse=1.0 + e, steps=300)
    (comp,) = compare(frame_of(tmp_path / "m"))
    assert row_of(comp, "DoRA")["verdict"] == "better" and row_of(comp, "DoRA")["change"] == pytest.approx(-1.0)
    assert "mse (lower is better)" in display_group(comp).columns


def test_chance_and_too_short_runs_are_insufficient_evidence(tmp_path: Path) -> None:
    for adapter in ("lora", "dora"):
        write_run(tmp_path, "x", adapter, adapter=adapter, accuracy=0.25, stderr=0.03, **(COMMON | {"steps": 4}))
    (comp,) = compare(frame_of(tmp_path))
    verdict = row_of(comp, "DoRA")["verdict"]
    assert verdict == "insufficient evidence (both at chance level; runs too short to train (4 steps < 50))"


def test_the_reference_is_full_fine_tuning_or_what_the_user_names(tmp_path: Path) -> None:
    for adapter in ("lora", "none", "dora"):
        write_run(tmp_path, "x", adapter, adapter=adapter, accuracy=0.6, **COMMON)
    write_run(tmp_path, "x", "lin", adapter="loraven", scheduler="linear", accuracy=0.6, **COMMON)
    write_run(tmp_path, "x", "en", adapter="loraven", scheduler="energy", accuracy=0.6, **COMMON)
    frame = frame_of(tmp_path)
    assert compare(frame)[0].reference == "dense (adapter=none)"
    assert compare(frame, "adapter=lora")[0].reference == "LoRA"
    comp = compare(frame, "scheduler=energy")[0]
    assert comp.reference == "full LoRAven (adapter=loraven) · scheduler=energy" and comp.rows.iloc[0]["is_reference"]
    missing = compare(frame, "adapter=vera")[0]
    assert missing.reference == "dense (adapter=none)" and "matches no row" in missing.reference_why
    with pytest.raises(SystemExit) as exit_info:
        main(["--results", str(tmp_path), "--out", str(tmp_path / "o"), "--reference", "adapter"])
    assert exit_info.value.code == 2
    out = tmp_path / "rep"
    assert main(["--results", str(tmp_path), "--out", str(out), "--reference", "adapter=dora", "--no-figures"]) == 0
    assert "Reference: **DoRA** (--reference adapter=dora)." in (out / "REPORT.md").read_text()


@settings(max_examples=60, deadline=None)
@given(
    p=st.floats(0.0, 1.0),
    n=st.integers(1, 5000),
    se=st.floats(0.0, 0.5),
    tasks=st.integers(1, 8),
    seeds=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=6),
)
def test_no_accuracy_interval_leaves_the_unit_interval(p, n, se, tasks, seeds) -> None:
    for interval in (
        iv.single_run_accuracy(p, n, math.nan, 1),
        iv.single_run_accuracy(p, math.nan, se, 1),
        iv.single_run_accuracy(p, n, se, tasks),
        iv.bootstrap_mean(seeds),
    ):
        for bound in (interval.lo, interval.hi):
            assert math.isnan(bound) or 0.0 <= bound <= 1.0, interval
        if math.isfinite(interval.lo):
            assert interval.lo <= interval.value <= interval.hi


@settings(max_examples=15, deadline=None)
@given(accs=st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)), min_size=1, max_size=4))
def test_no_row_of_a_store_leaves_the_unit_interval(tmp_path_factory, accs) -> None:
    root = tmp_path_factory.mktemp("store")
    for seed, (a, b) in enumerate(accs):
        write_run(root, "x", f"a{seed}", adapter="lora", seed=seed, accuracy=a, n=20, **COMMON)
        write_run(root, "x", f"b{seed}", adapter="dora", seed=seed, accuracy=b, stderr=0.2, **COMMON)
    (comp,) = compare(frame_of(root))
    bounds = comp.rows[["value_lo", "value_hi"]].to_numpy().ravel()
    assert all(math.isnan(v) or 0.0 <= v <= 1.0 for v in bounds)


# ----------------------------------------------------------------------------------------- claims and figures


def test_generated_and_commonsense_tasks_match_no_claim_and_glue_tests_the_glue_claim(tmp_path: Path) -> None:
    for seed in range(3):
        for task in ("arith_mc", "commonsense", "glue"):
            write_run(
                tmp_path,
                "x",
                f"{task}d{seed}",
                adapter="none",
                seed=seed,
                task=task,
                accuracy=0.80,
                stderr=0.01,
                steps=300,
                chance=0.3,
            )
            write_run(
                tmp_path,
                "x",
                f"{task}l{seed}",
                adapter="loraven",
                scheduler="energy",
                seed=seed,
                task=task,
                accuracy=0.795 + 0.001 * seed,
                stderr=0.01,
                steps=300,
                chance=0.3,
            )
    table = accuracy_table(frame_of(tmp_path))
    measured = table[table["level"] != "not measured"]
    assert set(measured["task"]) == {"glue"}  # arith_mc (generated) and commonsense match no claim
    glue = measured.iloc[0]
    assert glue["kind"] == "text-classification" and "task=glue" in glue["paper_claim"]
    assert glue["verdict"] in ("reproduced", "not reproduced") or glue["verdict"].startswith(
        ("inconclusive", "insufficient evidence")
    )
    assert glue["retention_pct"] == pytest.approx(100 * 0.796 / 0.80)
    build_report(load_results(tmp_path), tmp_path / "rep", formats=["md"], figures=False)
    claims = (tmp_path / "rep" / "REPORT.md").read_text().split("## §5.3")[1]  # §5.2 (energy) holds for any task
    assert "task=glue" in claims and "/ arith_mc" not in claims and "/ commonsense" not in claims


def test_the_pareto_front_is_absent_for_overlapping_or_single_run_points() -> None:
    def pts(*rows):
        return pd.DataFrame(rows, columns=["x", "x_lo", "x_hi", "y", "y_lo", "y_hi"])

    overlapping = pts((1.0, 0.8, 1.2, 0.70, 0.60, 0.80), (2.0, 1.8, 2.2, 0.75, 0.65, 0.85))
    assert resolved_front(overlapping, higher=True).empty
    single_runs = pts((1.0, math.nan, math.nan, 0.70, 0.69, 0.71), (2.0, math.nan, math.nan, 0.90, 0.89, 0.91))
    assert resolved_front(single_runs, higher=True).empty  # n = 1: no energy interval, nothing is resolved
    resolved = pts((1.0, 0.9, 1.1, 0.70, 0.69, 0.71), (2.0, 1.9, 2.1, 0.90, 0.89, 0.91))
    assert resolved_front(resolved, higher=True)["x"].tolist() == [1.0, 2.0]


def test_figures_are_registered_and_all_figures_draws_each(tmp_path: Path) -> None:
    calls = []

    @figure("probe_figure")
    def probe(data: FigureData, out: Path) -> Path | None:
        calls.append(len(data.comparisons))
        return None

    try:
        assert FIGURES["probe_figure"] is probe
        with pytest.raises(ValueError, match="registered twice"):
            figure("probe_figure")(probe)
        write_run(tmp_path, "x", "a", adapter="lora", accuracy=0.6, **COMMON)
        made = all_figures(frame_of(tmp_path), pd.DataFrame(), tmp_path / "f")
        assert calls == [1] and "probe_figure" not in made and "comparison" in made
    finally:
        FIGURES.pop("probe_figure")


def test_memory_says_whole_process_when_a_record_does(tmp_path: Path) -> None:
    write_run(tmp_path, "x", "a", adapter="lora", accuracy=0.6, peak_mb=900, memory_scope="whole process", **COMMON)
    write_run(tmp_path, "x", "b", adapter="dora", accuracy=0.6, peak_mb=500, **COMMON)
    shown = display_group(compare(frame_of(tmp_path))[0])
    assert shown["peak memory"].tolist() == ["900 MB (whole process)", "500 MB (job)"]


# ----------------------------------------------------------------------------------------- commands


@pytest.mark.parametrize(
    "overrides",
    [
        ["adapter=lora", "adapter.r=4", "model=tiny_llama", "trainer=smoke", "tracking=none", "energy=none"],
        ["scheduler=energy", "task=commonsense", "task.names=[boolq,piqa]", "trainer.lr=0.001", "results_dir=/tmp/q"],
        ["adapter=none", "model=mlp_digits", "task=digits", "trainer=classic", "experiment_name=mine"],
    ],
)
def test_a_recorded_config_turns_back_into_the_command_that_made_it(overrides: list[str]) -> None:
    config = compose_cfg(overrides)
    again = run_overrides(config)
    assert compose_cfg([f"{k}={v}" for k, v in again.items()]) == config
    assert command_line(again).startswith("python run.py -m adapter=")


def test_missing_pieces_come_with_the_groups_own_commands(tmp_path: Path) -> None:
    base = compose_cfg(["model=tiny_llama", "trainer=smoke", "tracking=none", f"results_dir={tmp_path}"])
    for adapter in ("lora", "dora"):
        config = compose_cfg(
            ["model=tiny_llama", "trainer=smoke", "tracking=none", f"results_dir={tmp_path}", f"adapter={adapter}"]
        )
        write_run(
            tmp_path,
            "x",
            adapter,
            adapter=adapter,
            accuracy=0.65 if adapter == "dora" else 0.6,
            n=200,
            stderr=0.034,
            config=config,
            **(COMMON | {"steps": 300}),
        )
    assert base["trainer"]["steps"] == 4
    (comp,) = compare(frame_of(tmp_path))
    found = {s.why.split(" (")[0]: s.commands for s in suggestions(comp)}
    assert set(found) == {"more seeds", "a dense reference"}, found
    seeds, dense = found["more seeds"], found["a dense reference"]
    assert len(seeds) == 1 and "adapter=lora,dora " in seeds[0] and "trainer=smoke" in seeds[0]
    need = int(row_of(comp, "DoRA")["verdict"].split("about ")[1].split()[0])
    assert seeds[0].endswith(f"seed='range(0,{need})'") or seeds[0].endswith("seed=" + ",".join(map(str, range(need))))
    assert dense == (
        f"python run.py -m adapter=none model=tiny_llama task=arith_mc trainer=smoke energy=codecarbon "
        f"tracking=none results_dir={tmp_path} seed=0,1,2,3",
    )  # the same seeds: paired


# ----------------------------------------------------------------------------------------- suites, retention, rescore

TASKS8 = ("boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")


def test_the_commonsense_table_has_params_tasks_average_gain_and_the_readme_beside(tmp_path: Path) -> None:
    base = dict.fromkeys(TASKS8, 0.40)
    for adapter, p, share in (("lora", 0.50, 700), ("dora", 0.52, 360), ("loraven", 0.55, 500)):
        write_run(
            tmp_path,
            "cs",
            adapter,
            adapter=adapter,
            task="commonsense",
            per_task=dict.fromkeys(TASKS8, p),
            base_per_task=base,
            trainable_params=share,
            total_params=100_000,
            steps=300,
            chance=0.3,
        )
    (comp,) = compare(frame_of(tmp_path))
    table = suite_table(comp)
    assert table["row"].tolist() == [BASE_ROW, "fixed low-rank (adapter=loraven)", "LoRA", "DoRA"]  # adapter.order
    lora = table.iloc[2]
    assert lora["params_pct"] == pytest.approx(0.7) and lora["paper_boolq"] == 70.8 and lora["paper_average"] == 80.8
    assert (lora["boolq_lo"], lora["boolq_hi"]) == pytest.approx(wilson_by_hand(50, 100))
    assert lora["average"] == pytest.approx(0.50) and lora["gain"] == pytest.approx(0.10)
    se = math.sqrt(8 * binomial_stderr(0.5, 100) ** 2) / 8, math.sqrt(8 * binomial_stderr(0.4, 100) ** 2) / 8
    half = 1.959963984540054 * math.hypot(*se)
    assert (lora["gain_lo"], lora["gain_hi"]) == pytest.approx((0.10 - half, 0.10 + half))
    assert table.iloc[3]["paper_params_pct"] == 0.35  # DoRA at 0.36 %: the README's 0.35 % row, not 0.71 %
    assert math.isnan(table.iloc[1]["paper_boolq"])  # the README has no LoRAven row
    shown = display_suite(table)
    assert list(shown.columns[:4]) == ["method", "trainable params", "BoolQ", "PIQA"]
    assert shown.loc[2, "trainable params"] == "700 (0.7 %)" and shown.loc[2, "BoolQ"].startswith("50.0 [")
    assert (
        shown.loc[2, "paper_BoolQ (LLaMA3-8B)"] == "70.8" and shown.loc[1, "paper_BoolQ (LLaMA3-8B)"] == "not reported"
    )
    assert shown.loc[0, "average"].startswith("40.0 [")
    build_report(load_results(tmp_path), tmp_path / "rep", formats=["md"], figures=False)
    report = (tmp_path / "rep" / "REPORT.md").read_text()
    part1 = report.split("# The paper's claims")[0]
    assert "### Per task (commonsense)" in part1 and "another model" in part1


def test_a_subset_of_the_tasks_averages_the_readme_over_the_same_tasks(tmp_path: Path) -> None:
    write_run(tmp_path, "cs", "a", adapter="lora", task="commonsense", per_task={"boolq": 0.6, "piqa": 0.7}, steps=300)
    table = suite_table(compare(frame_of(tmp_path))[0])
    assert table.attrs["tasks"] == ["boolq", "piqa"] and table.iloc[0]["paper_average"] == pytest.approx(78.0)


def test_retention_column_figure_and_rescored_rows_beside_their_source(tmp_path: Path) -> None:
    for seed in range(3):
        for adapter, change in (("lora", -0.02), ("dora", -0.01)):
            retention = {
                "tasks": {"boolq": {"base": 0.6, "after": 0.6 + change, "change": change, "n": 100, "stderr": 0.05}},
                "mean_change": change + 0.001 * seed,
                "mean_change_lo": change - 0.05,
                "mean_change_hi": change + 0.05,
            }
            write_run(
                tmp_path,
                "x",
                f"{adapter}{seed}",
                adapter=adapter,
                seed=seed,
                accuracy=0.7,
                base_accuracy=0.5,
                stderr=0.03,
                retention=retention,
                **COMMON,
            )
    write_run(
        tmp_path,
        "x",
        "rs",
        adapter="lora",
        accuracy=0.4,
        rescore={"source_run_id": "cs-lora", "source_experiment": "cs"},
        **COMMON,
    )
    (comp,) = compare(frame_of(tmp_path))
    lora = comp.rows.iloc[0]
    assert (
        lora["row"] == "LoRA"
        and lora["retention"] == pytest.approx(-0.019)
        and lora["retention_lo"] <= lora["retention"]
    )
    rescored = row_of(comp, "re-scored on arith_mc")
    assert rescored["rescored_from"] == "cs-lora" and rescored["n_runs"] == 1 and not rescored["is_reference"]
    shown = display_group(comp)
    assert "retention: mean change" in shown and "source run" in shown
    report = build_report(load_results(tmp_path), tmp_path / "rep", formats=["csv"])
    assert "gain_vs_retention" in report.figures
    assert "rs" not in set(report.frames["accuracy"].get("run_id", []))
