"""The figures, as PNGs (Agg backend): one function per figure, registered with ``@figure("name")``.

Every figure reads the runs frame and the tables already built (:class:`FigureData`), draws within the groups of
analysis.groups (one facet per group: never two models or two energy methods in one panel), draws intervals (not
bare means) with n, and returns the written path, or None with a warning when its data are absent.
"""

from __future__ import annotations

import math
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import intervals as iv  # noqa: E402
from analysis import paper  # noqa: E402
from analysis.compare import GroupComparison, compare  # noqa: E402
from analysis.load import AnalysisWarning, read_csv_beside  # noqa: E402
from analysis.pareto import pareto_front  # noqa: E402
from analysis.stats import completed_training  # noqa: E402

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PAPER_STYLE = dict(marker="*", s=220, color="black", edgecolor="white", zorder=5, label="paper (reported)")
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h")


@dataclass
class FigureData:
    """What a figure may read: the runs frame (one row per record), Table 5.1 and the groups' comparisons."""

    frame: pd.DataFrame
    speedup: pd.DataFrame = field(default_factory=pd.DataFrame)
    comparisons: list[GroupComparison] = field(default_factory=list)


FigureFn = Callable[[FigureData, Path], "Path | None"]
FIGURES: dict[str, FigureFn] = {}


def figure(name: str) -> Callable[[FigureFn], FigureFn]:
    """Register a figure function under ``name`` (its PNG's stem); :func:`all_figures` draws every one."""

    def register(fn: FigureFn) -> FigureFn:
        if name in FIGURES:
            raise ValueError(f"figure {name!r} is registered twice")
        FIGURES[name] = fn
        fn.figure_name = name  # type: ignore[attr-defined]
        return fn

    return register


def all_figures(
    frame: pd.DataFrame,
    speedup: pd.DataFrame,
    out: Path,
    comparisons: Sequence[GroupComparison] | None = None,
) -> dict[str, Path]:
    """Every registered figure whose data exist; the others are skipped with a warning."""
    data = FigureData(frame, speedup, list(compare(frame) if comparisons is None else comparisons))
    made = {name: fn(data, out) for name, fn in FIGURES.items()}
    return {name: path for name, path in made.items() if path is not None}


def _skip(name: str, why: str) -> None:
    warnings.warn(f"figure {name} skipped: {why}", AnalysisWarning, stacklevel=3)


def _save(fig: plt.Figure, out: Path, name: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.png"
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _wrap(text: str, width: int = 34) -> str:
    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def _grid(n: int, width: float = 6.5, height: float = 4.8, cols: int = 2) -> tuple[plt.Figure, list[plt.Axes]]:
    """``n`` panels, at most ``cols`` a row; unused panels removed."""
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def _panel_title(comparison: GroupComparison) -> str:
    key = comparison.key
    return _wrap(
        f"{key['model']} · {key['task']} ({key['family']}) · {key['split']} · {key['metric']} · energy "
        f"{key['energy_method']}",
        60,
    )


def _yerr(value: float, lo: float, hi: float) -> list[list[float]] | None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [[max(value - lo, 0.0)], [max(hi - value, 0.0)]]


def _palette(names: Sequence[str]) -> dict[str, Any]:
    return dict(zip(names, sns.color_palette("tab10", max(len(names), 1)), strict=False))


# ----------------------------------------------------------------------------------------- the comparison


@figure("comparison")
def comparison_figure(data: FigureData, out: Path) -> Path | None:
    """Per group: each configuration's accuracy (or MSE) with its 95 % interval, the reference's value as a
    dashed line, n and the verdict beside each point. Rows sit on their own line: nothing hides anything."""
    comps = [c for c in data.comparisons if not c.rows.empty]
    if not comps:
        _skip("comparison", "no completed runs to compare")
        return None
    heights = [max(2.4, 0.75 * len(c.rows) + 1.4) for c in comps]
    fig, axes = plt.subplots(
        len(comps), 1, figsize=(11, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    for ax, comp in zip(axes[:, 0], comps, strict=True):
        rows = comp.rows.iloc[::-1].reset_index(drop=True)  # the reference on top
        column = rows["metric_column"].iloc[0]
        higher = bool(rows["higher_is_better"].iloc[0])
        for y, row in rows.iterrows():
            err = _yerr(row["value"], row["value_lo"], row["value_hi"])
            ax.errorbar(
                [row["value"]],
                [y],
                xerr=err,
                fmt="D" if row["is_reference"] else "o",
                color="black" if row["is_reference"] else "tab:blue",
                capsize=4,
                markersize=7,
            )
            n = f"n={int(row['n_runs'])} seed{'s' if row['n_runs'] > 1 else ''}"
            span = "" if err else " (no interval)"
            ax.annotate(
                f"{n}{span} — {row['verdict']}", (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize=8
            )
        ref = rows[rows["is_reference"]].iloc[0]
        ax.axvline(ref["value"], color="grey", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(rows)), [_wrap(r, 38) for r in rows["row"]], fontsize=8)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        unit = "accuracy" if column == "accuracy" else column
        ax.set_xlabel(f"{unit} ({'higher' if higher else 'lower'} is better), 95 % interval")
        if column == "accuracy":
            lo = float(np.nanmin(rows["value_lo"].fillna(rows["value"])))
            hi = float(np.nanmax(rows["value_hi"].fillna(rows["value"])))
            pad = max(0.02, (hi - lo) * 0.1)
            ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
            chance = comp.runs["chance"].dropna()
            if len(chance) and comp.runs["chance_known"].all():
                ax.axvline(float(chance.mean()), color="red", linestyle=":", linewidth=1)
                ax.annotate("chance", (float(chance.mean()), len(rows) - 0.5), color="red", fontsize=7)
        ax.set_title(_panel_title(comp), fontsize=9, loc="left")
        ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle("What your runs show: each configuration against the reference (◆, dashed line)", y=1.0)
    fig.tight_layout()
    return _save(fig, out, "comparison")


# ----------------------------------------------------------------------------------------- energy vs accuracy


def _dodge(xs: np.ndarray, ys: np.ndarray, xspan: float, yspan: float) -> np.ndarray:
    """Horizontal offsets (≤ 2 % of the x range each) for points that would sit on top of each other."""
    offsets = np.zeros(len(xs))
    for i in range(len(xs)):
        for j in range(i):
            close = abs(xs[i] + offsets[i] - xs[j] - offsets[j]) < 0.015 * xspan and abs(ys[i] - ys[j]) < 0.015 * yspan
            if close:
                offsets[i] = offsets[j] + 0.02 * xspan
    return offsets


def _chance_line(ax: plt.Axes, chance: float, rows: pd.DataFrame) -> None:
    """The chance level as a line when it lies near the data; else a note, so the data keep the axis."""
    lo = float(np.nanmin(rows["value_lo"].fillna(rows["value"])))
    hi = float(np.nanmax(rows["value_hi"].fillna(rows["value"])))
    pad = max((hi - lo) * 0.15, 0.005)
    if lo - 3 * pad <= chance <= hi + 3 * pad:
        ax.axhline(chance, color="red", linestyle=":", linewidth=1, label="chance")
    else:
        ax.set_ylim(lo - pad, hi + pad)
        where = "below" if chance < lo else "above"
        ax.text(
            0.98,
            0.02 if where == "below" else 0.95,
            f"chance {chance:.3g} ({where} the axis)",
            transform=ax.transAxes,
            ha="right",
            fontsize=7,
            color="red",
        )


def resolved_front(points: pd.DataFrame, higher: bool) -> pd.DataFrame:
    """The Pareto front (lower energy, better quality) when every adjacent pair on it is a trade-off resolved at
    the interval level on both axes; else an empty frame. Points without an interval on either axis (a single run
    has no energy interval) can never be resolved."""
    valid = points.dropna(subset=["x", "y"])
    if len(valid) < 2:
        return valid.iloc[0:0]
    front = valid[pareto_front(valid, "x", "y", maximize_y=higher)].sort_values("x")
    if len(front) < 2:
        return front.iloc[0:0]
    for (_, a), (_, b) in zip(front.iloc[:-1].iterrows(), front.iloc[1:].iterrows(), strict=True):
        pa = ((a["x"], a["x_lo"], a["x_hi"]), (a["y"], a["y_lo"], a["y_hi"]))
        pb = ((b["x"], b["x_lo"], b["x_hi"]), (b["y"], b["y_lo"], b["y_hi"]))
        if any(not math.isfinite(v) for p in (pa, pb) for axis in p for v in axis):
            return front.iloc[0:0]
        if not trade_off_resolved(pa, pb):
            return front.iloc[0:0]
    return front


@figure("energy_vs_accuracy")
def energy_accuracy_figure(data: FigureData, out: Path) -> Path | None:
    """Training energy vs quality, one facet per group with energy: each configuration's mean with its 95 %
    intervals on both axes (accuracy: Wilson for one run, bootstrap over seeds; energy: bootstrap over seeds, none
    for one run) and n; the Pareto front only through differences resolved on both axes, else "not resolved";
    the energy axis names the evidence (measured/estimated)."""
    comps = [c for c in data.comparisons if c.rows["energy_j"].notna().any()]
    if not comps:
        _skip("energy_vs_accuracy", "no group has both an energy reading and accuracy/mse")
        return None
    fig, axes = _grid(len(comps))
    for ax, comp in zip(axes, comps, strict=True):
        rows = comp.rows.dropna(subset=["energy_j", "value"]).reset_index(drop=True)
        higher = bool(comp.rows["higher_is_better"].iloc[0])
        xs, ys = rows["energy_j"].to_numpy(float), rows["value"].to_numpy(float)
        xspan = float(np.ptp(xs)) or float(abs(xs).max() or 1.0)
        yspan = float(np.ptp(ys)) or 0.1
        offsets = _dodge(xs, ys, xspan, yspan)
        palette = _palette(list(rows["row"]))
        for i, row in rows.iterrows():
            ax.errorbar(
                [row["energy_j"] + offsets[i]],
                [row["value"]],
                xerr=_yerr(row["energy_j"], row["energy_j_lo"], row["energy_j_hi"]),
                yerr=_yerr(row["value"], row["value_lo"], row["value_hi"]),
                fmt=MARKERS[i % len(MARKERS)],
                color=palette[row["row"]],
                capsize=3,
                markersize=7,
                label=_wrap(f"{row['row']} (n={int(row['n_runs'])})", 45),
            )
        points = pd.DataFrame(
            {
                "x": rows["energy_j"],
                "x_lo": rows["energy_j_lo"],
                "x_hi": rows["energy_j_hi"],
                "y": rows["value"],
                "y_lo": rows["value_lo"],
                "y_hi": rows["value_hi"],
            }
        )
        front = resolved_front(points, higher)
        if len(front):
            ax.plot(front["x"], front["y"], color="black", linestyle="--", linewidth=1, label="Pareto front (resolved)")
        else:
            ax.text(
                0.02,
                0.02,
                "Pareto front not resolved (intervals overlap or are missing)",
                transform=ax.transAxes,
                fontsize=8,
                color="grey",
            )
        if offsets.any():
            ax.text(
                0.02,
                0.08,
                "overlapping points offset horizontally (≤ 2 % of the axis)",
                transform=ax.transAxes,
                fontsize=7,
                color="grey",
            )
        chance = comp.runs["chance"].dropna()
        if rows["metric_column"].iloc[0] == "accuracy" and len(chance) and comp.runs["chance_known"].all():
            _chance_line(ax, float(chance.mean()), rows)
        evidence = ", ".join(sorted(set(rows["energy_evidence"])))
        below = " — below meter resolution" if rows["energy_below_resolution"].any() else ""
        metric = "accuracy" if rows["metric_column"].iloc[0] == "accuracy" else rows["metric_column"].iloc[0]
        ax.set(
            xlabel=f"training energy (J), {evidence}{below}",
            ylabel=f"{metric} ({'higher' if higher else 'lower'} is better), 95 % interval",
        )
        ax.set_title(_panel_title(comp), fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, out, "energy_vs_accuracy")


# ----------------------------------------------------------------------------------------- rank traces


@figure("rank_trace")
def rank_trace_figure(data: FigureData, out: Path) -> Path | None:
    """Mean rank across modules over training steps, one line per run, coloured by the scheduler the user chose
    (``scheduler=linear``), one facet per group."""
    panels = []
    for comp in data.comparisons:
        lines = []
        for row in comp.runs.to_dict("records"):
            trace = read_csv_beside(row["run_dir"], "rank_trace.csv")
            if trace is None or trace.empty or not {"step", "module", "rank"} <= set(trace.columns):
                continue
            mean = mean_rank_per_step(trace)
            lines.append(
                pd.DataFrame(
                    {
                        "step": mean.index,
                        "mean rank": mean.to_numpy(),
                        "scheduler": f"scheduler={row['scheduler']}",
                        "run": f"{row['run_id']} (seed {row['seed']})",
                        "r_min": row.get("r_min", math.nan),
                        "r_max": row.get("r_max", math.nan),
                        "decisions": row.get("n_decisions", math.nan),
                    }
                )
            )
        if lines:
            panels.append((comp, pd.concat(lines, ignore_index=True)))
    if not panels:
        _skip("rank_trace", "no rank_trace.csv beside any completed run")
        return None
    fig, axes = _grid(len(panels), width=7, height=4.5)
    for ax, (comp, lines) in zip(axes, panels, strict=True):
        order = sorted(lines["scheduler"].unique())
        sns.lineplot(
            data=lines,
            x="step",
            y="mean rank",
            hue="scheduler",
            hue_order=order,
            units="run",
            estimator=None,
            ax=ax,
            drawstyle="steps-post",
        )
        for bound, style in (("r_min", ":"), ("r_max", "--")):
            for value in sorted(lines[bound].dropna().unique()):
                ax.axhline(value, color="grey", linestyle=style, linewidth=1)
                ax.annotate(f"{bound}={value:g}", (0, value), textcoords="offset points", xytext=(2, 2), fontsize=7)
        decisions = lines.groupby("run")["decisions"].first().dropna()
        told = (
            f"scheduler decisions per run: {int(decisions.min())}–{int(decisions.max())} "
            f"(n={lines['run'].nunique()} runs)"
            if len(decisions)
            else f"scheduler decisions: not recorded (n={lines['run'].nunique()} runs)"
        )
        ax.set_title(_panel_title(comp) + "\n" + told, fontsize=9, loc="left")
        ax.set(xlabel="training step", ylabel="mean rank over modules")
        ax.grid(True, alpha=0.3)
    fig.suptitle("LoRAven rank over training, one line per run, by scheduler")
    fig.tight_layout()
    return _save(fig, out, "rank_trace")


# ----------------------------------------------------------------------------------------- time and memory


@figure("time_memory")
def cost_figure(data: FigureData, out: Path) -> Path | None:
    """Per group: train step time and each job's own peak memory per configuration (bars = mean over seeds,
    ticks = each run), n under each bar; the memory axis says "whole process" where a record's memory.scope does
    (an upper bound: a sweep's later jobs inherit earlier peaks)."""
    comps = [c for c in data.comparisons if c.runs[["step_ms", "peak_mb"]].notna().any().any()]
    if not comps:
        _skip("time_memory", "no completed run reports time.step_ms_median or memory.peak_mb")
        return None
    fig, axes = plt.subplots(
        len(comps), 2, figsize=(13, 1.2 + max(3.2, 0.55 * max(len(c.rows) for c in comps)) * len(comps)), squeeze=False
    )
    for (left, right), comp in zip(axes, comps, strict=True):
        trained = comp.rows[~comp.rows["rescored"]]  # a re-scored adapter's training cost is its source run's
        names = list(trained["row"])
        keyed = []
        for row in trained.to_dict("records"):
            part = row["_runs"]
            keyed.append(part.assign(configuration=row["row"]))
        runs = pd.concat(keyed, ignore_index=True)
        scopes = set(runs["memory_scope"].dropna().astype(str))
        scope = "whole process (upper bound)" if "whole process" in scopes else "each job's own peak"
        for ax, column, label in (
            (left, "step_ms", "train step time, ms (median per run)"),
            (right, "peak_mb", f"peak memory, MB — {scope}"),
        ):
            part = runs.dropna(subset=[column])
            if part.empty:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
            else:
                means = part.groupby("configuration")[column].mean().reindex(names)
                counts = part.groupby("configuration")[column].count().reindex(names).fillna(0)
                ax.barh(range(len(names)), means.to_numpy(), color="tab:blue", alpha=0.6)
                for y, name in enumerate(names):
                    values = part.loc[part["configuration"] == name, column]
                    ax.plot(values, [y] * len(values), "k|", markersize=12)
                ax.set_yticks(range(len(names)), [f"{_wrap(n, 38)}\n(n={int(counts[n])})" for n in names], fontsize=7)
                ax.invert_yaxis()
                ax.set_xlim(left=0)
            ax.set_xlabel(label)
            ax.grid(True, axis="x", alpha=0.3)
        left.set_title(_panel_title(comp), fontsize=9, loc="left")
    fig.suptitle("Cost per configuration (bars: mean over seeds; ticks: each run)")
    fig.tight_layout()
    return _save(fig, out, "time_memory")


# ----------------------------------------------------------------------------------------- retention


def gain_interval(runs: pd.DataFrame) -> iv.Interval:
    """Accuracy − the untrained model's on the same documents: paired by seed (t), one run: both stderrs."""
    after = dict(zip(runs["seed"], runs["accuracy"], strict=True))
    before = dict(zip(runs["seed"], runs["base_accuracy"], strict=True))
    se_base = runs["base_accuracy_stderr"].iloc[0] if "base_accuracy_stderr" in runs else math.nan
    se = runs["accuracy_stderr"].iloc[0]
    return iv.seed_difference(after, before, float(se), float(se_base))


@figure("gain_vs_retention")
def retention_figure(data: FigureData, out: Path) -> Path | None:
    """Per group with retention tasks (``metrics.retention``): each configuration's gain on its own task (accuracy
    − the untrained model's) against its mean change on the retention tasks, both with intervals; forgetting is
    left of zero."""
    comps = [c for c in data.comparisons if c.rows["retention"].notna().any()]
    if not comps:
        _skip("gain_vs_retention", "no record carries metrics.retention")
        return None
    fig, axes = _grid(len(comps))
    for ax, comp in zip(axes, comps, strict=True):
        rows = comp.rows.dropna(subset=["retention"]).reset_index(drop=True)
        palette = _palette(list(rows["row"]))
        for i, row in rows.iterrows():
            part = row["_runs"]
            gi = gain_interval(part)
            ax.errorbar(
                [row["retention"]],
                [gi.value],
                xerr=_yerr(row["retention"], row["retention_lo"], row["retention_hi"]),
                yerr=_yerr(gi.value, gi.lo, gi.hi),
                fmt=MARKERS[i % len(MARKERS)],
                color=palette[row["row"]],
                capsize=3,
                label=_wrap(f"{row['row']} (n={int(row['n_runs'])})", 45),
            )
        ax.axvline(0, color="grey", linewidth=1)
        ax.axhline(0, color="grey", linewidth=1)
        tasks = ", ".join(sorted({t for ts in rows["retention_tasks"].dropna() for t in str(ts).split(",") if t}))
        ax.set(
            xlabel=_wrap(f"retention: mean accuracy change on {tasks} (< 0: forgetting)", 60),
            ylabel=f"gain on {comp.key['task']} over the untrained model",
        )
        ax.set_title(_panel_title(comp), fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out, "gain_vs_retention")


# ----------------------------------------------------------------------------------------- Table 5.1, allocation


@figure("speedup_vs_size")
def _speedup(data: FigureData, out: Path) -> Path | None:
    return speedup_figure(data.speedup, out)


@figure("rank_allocation")
def _allocation(data: FigureData, out: Path) -> Path | None:
    return allocation_figure(data.frame, out)


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


def mean_rank_per_step(trace: pd.DataFrame) -> pd.Series:
    """Mean rank over modules per step; a trace logged only on changes is carried forward per module."""
    wide = trace.pivot_table(index="step", columns="module", values="rank", aggfunc="last").sort_index().ffill()
    return wide.mean(axis=1)


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


def trade_off_resolved(a: tuple, b: tuple) -> bool:
    """Two adjacent points of a Pareto front are a trade-off (one cheaper, the other better) only when their
    intervals are disjoint on *both* axes: if the quality difference is noise, the cheaper point dominates as
    far as the data can tell, and a front drawn through both would show a trade-off that is not there."""
    (ax_, ay), (bx, by) = a, b
    return all(p[2] < q[1] or q[2] < p[1] for p, q in ((ax_, bx), (ay, by)))
