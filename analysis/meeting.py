"""REPORT.md, in two parts: "What your runs show" (per group, the comparison of exactly what ran, the per-task
table of a suite, the figures, and the command that would add each missing piece), then "The paper's claims"
(each LoRAven claim, our measurement with its interval and n, the evidence and the verdict). Built from the same
numeric frames as the tables, so the page and the tables cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from analysis import intervals as iv
from analysis import paper
from analysis.compare import GroupComparison, display_group
from analysis.groups import short_key
from analysis.missing import suggestions
from analysis.suites import display_suite, suite_note, suite_table
from analysis.tables import PAPER_LABEL, _pair_n, _shown, _times_interval

COMPARISON_LEGEND = (
    "Each section is one **group**: the same model, task, split, metric and energy method; numbers of different "
    "groups are never pooled. Rows are the configurations that ran (method as recorded, the name you typed in "
    "brackets, the scheduler, and any setting that differs inside the group), averaged over seeds. "
    "Accuracy: `value [95 % interval] (n)` — one run: Wilson interval over its n evaluated documents (lm-eval's "
    "binomial noise: evaluation noise only); several seeds: percentile bootstrap of the mean over seeds "
    f"(scipy.stats.bootstrap, {iv.RESAMPLES} resamples, seed {iv.SEED}). Change vs reference: paired by seed "
    "(t over the per-seed differences) where both rows share seeds, else Welch's t, else (one seed each) the "
    "normal interval of lm-eval's stderrs. Verdicts: **better** / **worse** = the whole interval of the change is "
    "on one side of zero in the task's direction; **no resolved difference — about N seeds** = it straddles zero "
    "(N: seeds a side at which the half-width, ∝ 1/√n, would clear the observed change); **insufficient evidence "
    "(why)**. Energy is the training phase's, with its evidence (measured = counters, estimated = a model); "
    "memory is each job's own peak (\"whole process\" where a record could only give the process's)."
)

FIGURES_OF_RUNS = (
    "comparison",
    "energy_vs_accuracy",
    "gain_vs_retention",
    "time_memory",
    "rank_trace",
    "rank_allocation",
)

LEGEND = (
    "Verdicts: **reproduced** = the whole 95 % interval satisfies the claim; **not reproduced** = the whole "
    "interval violates it; **inconclusive** = it straddles the claim (with the seeds that would resolve it at "
    "the observed spread, half-width ∝ 1/√n); **insufficient evidence** = fewer than "
    f"{iv.MIN_SEEDS} seeds a side, accuracy at chance, fewer than {iv.MIN_TRAIN_STEPS} training steps, or "
    "energy below meter resolution (10 sampling intervals). Intervals: across seeds a percentile bootstrap of "
    f"the ratio of means (scipy.stats.bootstrap, {iv.RESAMPLES} resamples, seed {iv.SEED}); one run a side: "
    "lm-eval's binomial stderr (delta method); microbenchmarks: the p10–p90 ratio range. Energy evidence: "
    "measured = RAPL/NVML counters, estimated = codecarbon TDP × load (proportional to time)."
)


def _setting(row: Mapping[str, object]) -> str:
    parts = [row.get(k) for k in ("experiment", "model", "task")]
    if all(p is None or (isinstance(p, float) and p != p) for p in parts):
        return "not run"
    return " / ".join(str(p) for p in parts)


def _table(rows: list[dict[str, str]]) -> str:
    return pd.DataFrame(rows).to_markdown(index=False) if rows else "_no runs for this claim: not measured_"


def _energy_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for row in table.to_dict("records"):
        if row["level"] in (PAPER_LABEL, "dense"):
            continue
        rows.append(
            {
                "setting": _setting(row),
                "level": row["level"],
                "energy reduction vs dense %": _shown(row, "reduction_pct", _pair_n(row)),
                "retention %": _shown(row, "retention_pct", _pair_n(row)),
                "evidence": f"{row['evidence']} ({row['energy_method']})",
                "verdict": row["verdict"],
            }
        )
    return rows


def _accuracy_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for row in table.to_dict("records"):
        name = "mse_increase_pct" if row["kind"] == "regression" else "retention_pct"
        rows.append(
            {
                "claim": str(row["paper_claim"]),
                "setting": _setting(row),
                "level": row["level"],
                "ours": _shown(row, name, _pair_n(row)),
                "chance": "-" if _setting(row) == "not run" else f"{row['chance']} / dense {row['dense_chance']}",
                "verdict": row["verdict"],
            }
        )
    return rows


def _speedup_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for row in table.to_dict("records"):
        claim = row.get("paper_fusion_speedup")
        rows.append(
            {
                "shape (batch×dim)": str(row["shape"]),
                "device / dtype": f"{row['device']} / {row['dtype']}",
                "paper fusion speedup": "not reported" if pd.isna(claim) else f"{claim:.2f}×",
                "ours": _times_interval(row, "fusion_speedup"),
                "evidence": "measured (per-call timings)",
                "verdict": row["verdict"],
            }
        )
    return rows


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False) if not frame.empty else "_no rows_"


def _settings_line(comparison: GroupComparison) -> str:
    if not comparison.settings:
        return "Rows differ in method and scheduler only."
    shown = ", ".join(
        f"`{s}`" + (f" (column {short_key(s)})" if short_key(s) != s else "") for s in comparison.settings
    )
    return f"Rows also differ in {shown}."


def _not_compared(runs: pd.DataFrame) -> list[str]:
    """Runs that no comparison counts, with why: failed, skipped, search trials on the validation split."""
    lines = []
    if runs.empty:
        return lines
    for status in ("failed", "skipped"):
        part = runs[runs["status"] == status]
        for row in part.to_dict("records")[:20]:
            lines.append(f"- {status}: `{row['run_id']}` ({row['level']}, seed {row['seed']}): {row['reason']}")
        if len(part) > 20:
            lines.append(f"- … and {len(part) - 20} more {status} runs (tables/runs.csv)")
    split = runs["split"].fillna("test") if "split" in runs else pd.Series("test", index=runs.index)
    trials = runs[(runs["status"] == "completed") & (split != "test")]
    if len(trials):
        lines.append(
            f"- {len(trials)} search trial(s) scored on the {', '.join(sorted(set(split[trials.index])))} split: a "
            "search's choices, not results; see tables/runs.csv and the tuned table"
        )
    return lines


def runs_part(
    comparisons: Sequence[GroupComparison],
    figures: Mapping[str, Path],
    out: Path,
    runs: pd.DataFrame,
) -> list[str]:
    """Part 1: what the user's runs show, group by group, with the commands that would add what is missing."""
    completed = int((runs["status"] == "completed").sum()) if not runs.empty else 0
    counts = runs["status"].value_counts().to_dict() if not runs.empty else {}
    parts = [
        "# What your runs show",
        f"{len(runs)} records ({', '.join(f'{n} {s}' for s, n in sorted(counts.items())) or 'none'}); "
        f"{len(comparisons)} group(s) of comparable runs from {completed} completed.",
        COMPARISON_LEGEND,
    ]
    if not comparisons:
        parts.append("_No completed training run to compare: run `python run.py -m adapter=lora,dora seed=0,1,2`._")
    for number, comparison in enumerate(comparisons, 1):
        parts.append(f"## {number}. {comparison.title}")
        parts.append(
            f"Reference: **{comparison.reference}** ({comparison.reference_why}). {_settings_line(comparison)}"
        )
        parts.append(_md(display_group(comparison)))
        suite = suite_table(comparison)
        if not suite.empty:
            name = "commonsense" if suite.attrs.get("commonsense") else str(comparison.key.get("task"))
            parts.append(f"### Per task ({name})")
            parts.append(suite_note(suite))
            parts.append(_md(display_suite(suite)))
        missing = suggestions(comparison)
        if missing:
            lines = ["**What would resolve what this table cannot:**", ""]
            for item in missing:
                lines.append(f"- {item.why}" + (":" if item.commands else ""))
                lines.extend(f"  `{command}`" for command in item.commands)
            parts.append("\n".join(lines))
    shown = [name for name in FIGURES_OF_RUNS if name in figures]
    if shown:
        parts.append("## Figures")
        parts.extend(f"![{name}]({figures[name].relative_to(out).as_posix()})" for name in shown)
    others = _not_compared(runs)
    if others:
        parts.append("## Not compared")
        parts.append("\n".join(others))
    return parts


def write_meeting_report(
    frames: Mapping[str, pd.DataFrame],
    figures: Mapping[str, Path],
    out: Path,
    comparisons: Sequence[GroupComparison] = (),
    runs: pd.DataFrame | None = None,
) -> Path:
    """Write ``out/REPORT.md`` (part 1: your runs; part 2: the paper's claims) and return its path."""
    claims_figures = {k: v for k, v in figures.items() if k not in FIGURES_OF_RUNS}
    links = "\n".join(f"- [{name}]({path.relative_to(out).as_posix()})" for name, path in claims_figures.items())
    parts = runs_part(comparisons, figures, out, runs if runs is not None else pd.DataFrame())
    parts += [
        "# The paper's claims",
        "LoRAven's claims (seeds/000 §5), each matched to our runs by what the task declares (`task.family`: "
        "image classification → CIFAR-10, text classification → GLUE, regression → MSE); a task that matches no "
        "claim (generated arithmetic, commonsense, your own data) is left out here and compared above. "
        "The claims are LoRAven's (its levels: fixed low-rank, dynamic, full LoRAven); every other method's row "
        "shows how it fares against the same thresholds, for orientation.",
        LEGEND,
        "## Table 5.1 — fused kernels are faster",
        _table(_speedup_rows(frames["speedup"])),
        f"## §5.2 — {paper.ENERGY_CLAIM}",
        _table(_energy_rows(frames["energy"])),
        "## §5.3 — accuracy retention",
        _table(_accuracy_rows(frames["accuracy"])),
        "## Figures of the claims",
        links or "_no figures written (no data, or --no-figures)_",
        "Tables with every column (CSV with `_lo`, `_hi`, `n`): [tables/](tables/).",
    ]
    path = out / "REPORT.md"
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n\n".join(parts) + "\n")
    tmp.replace(path)
    return path
