"""The paper's figures (and the ones it should have had) as PNGs; Agg backend, one function per figure.

Each function returns the written path, or None with a warning when its data are absent.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy import stats  # noqa: E402

from analysis import paper  # noqa: E402
from analysis.load import AnalysisWarning, evidence_of, read_csv_beside  # noqa: E402
from analysis.pareto import pareto_front  # noqa: E402
from analysis.stats import completed_training  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PAPER_STYLE = dict(marker="*", s=220, color="black", edgecolor="white", zorder=5, label="paper (reported)")


def _skip(name: str, why: str) -> None:
    warnings.warn(f"figure {name} skipped: {why}", AnalysisWarning, stacklevel=3)


def _save(fig: plt.Figure, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _palette(levels: Iterable[str]) -> dict[str, Any]:
    ordered = sorted(set(levels), key=lambda lv: (paper.level_rank(lv), lv))
    return dict(zip(ordered, sns.color_palette("tab10", len(ordered)), strict=True))


def speedup_figure(table: pd.DataFrame, out: Path) -> Path | None:
    """Per device: ms per variant (top) and speedups (bottom) vs layer size batch×dim, log-log, with the
    break-even line so the fused-vs-factored crossover shows, and the paper's points as black stars."""
    measured = [c for c in table.columns if c.endswith("_ms") and not c.startswith("paper_")]
    if table.empty or table[measured].isna().all().all():
        _skip("speedup_vs_size", "no bench rows in the results")
        return None
    devices = sorted(table["device"].unique())
    fig, axes = plt.subplots(2, len(devices), figsize=(6.5 * len(devices), 9), squeeze=False)
    sizes = table["batch"] * table["dim"]
    paper_x = [b * d for b, d in paper.PAPER_SPEEDUP]
    for col, device in enumerate(devices):
        rows = table[table["device"] == device].assign(size=sizes)
        top, bottom = axes[0, col], axes[1, col]
        for (dtype, rank), part in rows.groupby(["dtype", "rank"], dropna=False):
            part = part.sort_values("size")
            for variant in ("original", "factored", "fused", "inplace"):
                if part[f"{variant}_ms"].notna().any():
                    top.plot(
                        part["size"],
                        part[f"{variant}_ms"],
                        marker="o",
                        label=f"{variant} ({dtype}, r={rank:g})",
                    )
            for ratio, label in (
                ("fusion_speedup", "original/fused"),
                ("inplace_speedup", "original/in-place"),
                ("fused_vs_factored", "factored/fused"),
            ):
                if part[ratio].notna().any():
                    lo = (part[ratio] - part[f"{ratio}_lo"]).clip(lower=0).fillna(0)
                    hi = (part[f"{ratio}_hi"] - part[ratio]).clip(lower=0).fillna(0)
                    bottom.errorbar(
                        part["size"],
                        part[ratio],
                        yerr=[lo, hi],
                        marker="o",
                        capsize=3,
                        label=f"{label} ({dtype}, r={rank:g}), bars: p10–p90 ratio range",
                    )
                    for x, yv, n in zip(part["size"], part[ratio], part["n_runs"], strict=True):
                        bottom.annotate(f"n={n}", (x, yv), textcoords="offset points", xytext=(4, 4), fontsize=6)
        top.scatter(paper_x, [v["original_ms"] for v in paper.PAPER_SPEEDUP.values()], **PAPER_STYLE)
        top.scatter(
            paper_x,
            [v["fused_ms"] for v in paper.PAPER_SPEEDUP.values()],
            **{**PAPER_STYLE, "marker": "P", "label": "paper (reported) fused"},
        )
        bottom.scatter(paper_x, [v["fusion_speedup"] for v in paper.PAPER_SPEEDUP.values()], **PAPER_STYLE)
        bottom.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="break-even (fusion stops paying)")
        top.set(title=f"{device}: time per call", ylabel="ms (median)")
        bottom.set(title=f"{device}: speedup (> 1: faster)", ylabel="speedup ×", xlabel="layer size (batch × dim)")
        for ax in (top, bottom):
            ax.set(xscale="log", yscale="log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    return _save(fig, out, "speedup_vs_size")


def mean_interval(values: pd.Series) -> tuple[float, float, float, int]:
    """Mean and scipy's Student t 95 % interval of the mean across runs (one run: no interval)."""
    x = values.dropna().to_numpy(dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if len(x) < 2 or float(x.std()) == 0.0:
        return mean, mean, mean, len(x)
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=mean, scale=stats.sem(x))
    return mean, float(lo), float(hi), len(x)


def _errorbar(ax: plt.Axes, x: tuple, y: tuple, color: Any, label: str) -> None:
    """A point with its 95 % intervals on both axes, error bars clipped at zero (energies, accuracies and
    MSEs are never negative), and its n written beside it."""
    (xm, xlo, xhi, n), (ym, ylo, yhi, _) = x, y
    xerr = [[max(xm - max(xlo, 0.0), 0.0)], [max(xhi - xm, 0.0)]]
    yerr = [[max(ym - max(ylo, 0.0), 0.0)], [max(yhi - ym, 0.0)]]
    ax.errorbar([xm], [ym], xerr=xerr, yerr=yerr, fmt="o", color=color, capsize=3, label=label)
    ax.annotate(f"n={n}", (xm, ym), textcoords="offset points", xytext=(5, 5), fontsize=7)


def trade_off_resolved(a: tuple, b: tuple) -> bool:
    """Two adjacent points of a Pareto front are a trade-off (one cheaper, the other better) only when their
    intervals are disjoint on *both* axes: if the quality difference is noise, the cheaper point dominates as
    far as the data can tell, and a front drawn through both would show a trade-off that is not there."""
    (ax_, ay), (bx, by) = a, b
    return all(p[2] < q[1] or q[2] < p[1] for p, q in ((ax_, bx), (ay, by)))


def energy_accuracy_figure(frame: pd.DataFrame, out: Path) -> Path | None:
    """Training energy vs quality per level: mean with 95 % intervals on both axes and n, the chance line
    on accuracy axes, the Pareto front over level means only where every adjacent pair on it is a resolved
    trade-off (intervals disjoint on both axes), else "Pareto front not resolved"; one panel per experiment/task/energy
    method (never mixed), the axis naming the phase and the evidence (measured/estimated)."""
    runs = completed_training(frame).dropna(subset=["energy_kwh"])
    runs = runs.assign(energy_j=runs["energy_kwh"] * 3.6e6)  # joules read better than 0.0007 kWh
    runs = runs[runs["accuracy"].notna() | runs["mse"].notna()]
    if runs.empty:
        _skip("energy_vs_accuracy", "no completed run has both energy and accuracy/mse")
        return None
    panels = list(runs.groupby(["experiment", "task", "energy_method"], dropna=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    palette = _palette(runs["level"])
    for ax, ((experiment, task, method), part) in zip(axes[0], panels, strict=True):
        regression = part["accuracy"].isna().all()
        y = "mse" if regression else "accuracy"
        part = part.dropna(subset=[y])
        points = {}
        for level in [lv for lv in palette if lv in set(part["level"])]:
            rows = part[part["level"] == level]
            points[level] = (mean_interval(rows["energy_j"]), mean_interval(rows[y]))
            _errorbar(ax, *points[level], color=palette[level], label=level)
        means = pd.DataFrame(
            {"x": [p[0][0] for p in points.values()], "y": [p[1][0] for p in points.values()]}, index=list(points)
        )
        front = means[pareto_front(means, "x", "y", maximize_y=not regression)].sort_values("x")
        pairs = list(zip(front.index[:-1], front.index[1:], strict=True))
        if len(front) > 1 and all(trade_off_resolved(points[a], points[b]) for a, b in pairs):
            ax.plot(front["x"], front["y"], color="black", linestyle="--", linewidth=1, label="Pareto front")
        else:
            ax.text(0.02, 0.02, "Pareto front not resolved", transform=ax.transAxes, fontsize=8, color="grey")
        chance = part["chance"].dropna()
        if not regression and len(chance) and part["chance_known"].all():
            ax.axhline(float(chance.mean()), color="red", linestyle=":", linewidth=1, label="chance")
        elif not regression:
            ax.text(0.02, 0.08, "chance level unknown (not recorded)", transform=ax.transAxes, fontsize=8)
        evidence = evidence_of(method)
        below = part["energy_below_resolution"].astype(bool).any()
        ax.set(
            title=f"{experiment} / {task}\nenergy method: {method}" + ("\nbelow meter resolution" if below else ""),
            xlabel=f"training energy, {evidence} (J)",
            ylabel=f"{y} ({'lower' if regression else 'higher'} is better), mean [95 % CI]",
        )
        ax.legend(fontsize=8)
    return _save(fig, out, "energy_vs_accuracy")


def mean_rank_per_step(trace: pd.DataFrame) -> pd.Series:
    """Mean rank over modules per step; a trace logged only on changes is carried forward per module."""
    wide = trace.pivot_table(index="step", columns="module", values="rank", aggfunc="last").sort_index().ffill()
    return wide.mean(axis=1)


def rank_trace_figure(frame: pd.DataFrame, out: Path) -> Path | None:
    """Mean rank across modules over training steps, one line per run, coloured by scheduler level."""
    lines = []
    for row in completed_training(frame).to_dict("records"):
        trace = read_csv_beside(row["run_dir"], "rank_trace.csv")
        if trace is None or trace.empty or not {"step", "module", "rank"} <= set(trace.columns):
            continue
        mean = mean_rank_per_step(trace)
        lines.append(
            pd.DataFrame(
                {
                    "step": mean.index,
                    "mean rank": mean.to_numpy(),
                    "level": row["level"],
                    "run": f"{row['run_id']} (seed {row['seed']})",
                    "r_min": row.get("r_min", math.nan),
                    "r_max": row.get("r_max", math.nan),
                    "decisions": row.get("n_decisions", math.nan),
                }
            )
        )
    if not lines:
        _skip("rank_trace", "no rank_trace.csv beside any completed run")
        return None
    data = pd.concat(lines, ignore_index=True)
    palette = _palette(data["level"])
    fig, ax = plt.subplots(figsize=(8, 5))
    sns.lineplot(
        data=data,
        x="step",
        y="mean rank",
        hue="level",
        units="run",
        estimator=None,
        palette=palette,
        hue_order=list(palette),
        ax=ax,
        drawstyle="steps-post",
    )
    for bound, style in (("r_min", ":"), ("r_max", "--")):
        for value in sorted(data[bound].dropna().unique()):
            ax.axhline(value, color="grey", linestyle=style, linewidth=1)
            ax.annotate(f"{bound}={value:g}", (0, value), textcoords="offset points", xytext=(2, 2), fontsize=7)
    decisions = data.groupby("run")["decisions"].first().dropna()
    told = (
        f"scheduler decisions per run: {int(decisions.min())}–{int(decisions.max())} (n={len(decisions)} runs)"
        if len(decisions)
        else "scheduler decisions: not recorded"
    )
    ax.set(title=f"LoRAven rank over training (mean over modules, one line per run)\n{told}", xlabel="training step")
    ax.grid(True, alpha=0.3)
    return _save(fig, out, "rank_trace")


def _layer_and_projection(module: str) -> tuple[float, str]:
    match = re.search(r"layers?\.(\d+)\.", module)
    return (float(match.group(1)) if match else math.nan), module.rsplit(".", 1)[-1]


def allocation_figure(frame: pd.DataFrame, out: Path, max_runs: int = 4) -> Path | None:
    """A method's per-module rank allocation (any ``*_allocation.csv`` with ``module`` and ``rank`` columns that
    the method wrote beside its result, e.g. LoRA-AR's) as a layer × projection heatmap, one panel per run
    (first ``max_runs``)."""
    tables = []
    for row in completed_training(frame).to_dict("records"):
        for path in sorted(Path(str(row["run_dir"])).glob("*_allocation.csv")) if row.get("run_dir") else []:
            alloc = read_csv_beside(row["run_dir"], path.name)
            if alloc is not None and {"module", "rank"} <= set(alloc.columns) and not alloc.empty:
                tables.append((row, alloc))
    if not tables:
        _skip("rank_allocation", "no *_allocation.csv beside any completed run")
        return None
    tables = tables[:max_runs]
    fig, axes = plt.subplots(1, len(tables), figsize=(6 * len(tables), 6), squeeze=False)
    for ax, (row, alloc) in zip(axes[0], tables, strict=True):
        parts = alloc["module"].astype(str).map(_layer_and_projection)
        alloc = alloc.assign(layer=[p[0] for p in parts], projection=[p[1] for p in parts])
        if alloc["layer"].isna().all():  # no layer index in the names: plain bars per module
            sns.barplot(data=alloc, y="module", x="rank", ax=ax, color="tab:blue")
        else:
            grid = alloc.pivot_table(index="layer", columns="projection", values="rank", aggfunc="mean")
            grid.index = grid.index.astype(int)
            known = [p for p in PROJECTIONS if p in grid.columns]
            grid = grid[known + [c for c in grid.columns if c not in known]]
            sns.heatmap(
                grid,
                annot=len(grid) <= 32,
                fmt=".0f",
                cmap="viridis",
                ax=ax,
                cbar_kws={"label": "allocated rank"},
            )
            ax.set(ylabel="layer index")
        ax.set(title=f"{row['level']} rank allocation: {row['model']}\n{row['run_id']} (seed {row['seed']})")
    return _save(fig, out, "rank_allocation")


def cost_figure(frame: pd.DataFrame, out: Path) -> Path | None:
    """Time per step and peak memory per adapter level: bars = mean, error bars = seaborn's 95 % bootstrap
    interval across seeds (never below zero), n under each bar; memory says "whole process RSS" on CPU."""
    runs = completed_training(frame)
    runs = runs[runs["step_ms"].notna() | runs["peak_mb"].notna()]
    if runs.empty:
        _skip("time_memory", "no completed run reports time.step_ms_median or memory.peak_mb")
        return None
    runs = runs.assign(setting=runs["model"].astype(str) + " / " + runs["task"].astype(str))
    order = sorted(runs["level"].unique(), key=lambda lv: (paper.level_rank(lv), lv))
    whole = (runs["memory_device"].astype(str) == "cpu-process-peak-rss").any()
    memory_label = "peak memory, whole process RSS (MB)" if whole else "peak memory, device-allocated (MB)"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, (column, label) in zip(
        axes, (("step_ms", "train step time (ms, median per run)"), ("peak_mb", memory_label)), strict=True
    ):
        part = runs.dropna(subset=[column])
        if part.empty:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.barplot(
                data=part, x="level", y=column, hue="setting", order=order, errorbar=("ci", 95), capsize=0.1, ax=ax
            )
            counts = part.groupby("level")[column].count()
            ax.set_xticks(range(len(order)), [f"{lv}\n(n={int(counts.get(lv, 0))})" for lv in order])
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=7, title=None)
        ax.set(ylabel=label, xlabel="")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("Cost per adapter (mean, 95 % bootstrap CI over seeds; n runs under each bar)")
    return _save(fig, out, "time_memory")


def all_figures(frame: pd.DataFrame, speedup: pd.DataFrame, out: Path) -> dict[str, Path]:
    """Every figure whose data exist; the others are skipped with a warning."""
    made: Mapping[str, Path | None] = {
        "speedup_vs_size": speedup_figure(speedup, out),
        "energy_vs_accuracy": energy_accuracy_figure(frame, out),
        "rank_trace": rank_trace_figure(frame, out),
        "rank_allocation": allocation_figure(frame, out),
        "time_memory": cost_figure(frame, out),
    }
    return {name: path for name, path in made.items() if path is not None}
