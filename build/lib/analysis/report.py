"""Build every table and figure from a list of result records and write them under one folder.

The CLI, the notebook and the W&B path all go through ``build_report`` so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import tables, tuned
from analysis.figures import all_figures
from analysis.load import runs_frame
from analysis.meeting import write_meeting_report
from analysis.stats import fill_missing

FORMATS = ("md", "csv", "tex")


@dataclass
class Report:
    """What was computed (numeric frames) and what was written (paths)."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    tables: dict[str, list[Path]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: Path | None = None  # REPORT.md


def write_table(
    numeric: pd.DataFrame,
    shown: pd.DataFrame,
    out: Path,
    name: str,
    formats: Sequence[str] = FORMATS,
    note: str = "",
) -> list[Path]:
    """CSV from the numeric frame (mean and std in separate columns, for machines); Markdown and LaTeX
    from the display frame (mean ± std, for people). Missing cells say "not measured"/"not reported"."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if "csv" in formats:
        written.append(out / f"{name}.csv")
        fill_missing(numeric).to_csv(written[-1], index=False)
    if "md" in formats:
        written.append(out / f"{name}.md")
        body = shown.to_markdown(index=False) if not shown.empty else "_no data: not measured_"
        written[-1].write_text((f"{note}\n\n" if note else "") + body + "\n")
    if "tex" in formats:
        written.append(out / f"{name}.tex")
        written[-1].write_text(
            shown.to_latex(index=False, escape=True) if not shown.empty else "% no data: not measured\n"
        )
    return written


NOTES = {
    "speedup": "Table 5.1: ms = mean over runs of each run's median [p10–p90]; "
    "paper_* = the paper's reported values (seeds/000 §5.1) for its three shapes.",
    "energy": "§5.2 — " + tables.VERDICT_RULE + ". Energy is the training phase's; evidence: measured = "
    "RAPL/NVML counters, estimated = codecarbon TDP × load (proportional to time).",
    "accuracy": "§5.3: every non-dense level vs dense of the same experiment/model/task "
    "(no best-of selection); retention % = accuracy ÷ dense accuracy; MSE increase % for regression; "
    "value [95 % interval] (n); chance = within 2 stderr of metrics.chance.",
    "tuned": tuned.NOTE,
}


def build_report(
    records: Iterable[Mapping[str, Any]],
    out: str | Path,
    formats: Sequence[str] = FORMATS,
    figures: bool = True,
) -> Report:
    """Tables under ``out/tables`` (and figures under ``out/figures``) from result records."""
    records = list(records)
    out = Path(out)
    frame = runs_frame(records)
    report = Report(runs=frame)
    built = {
        "speedup": (tables.speedup_table(records), tables.display_speedup),
        "energy": (tables.energy_table(frame), tables.display_energy),
        "accuracy": (tables.accuracy_table(frame), tables.display_accuracy),
        "tuned": (tuned.tuned_table(frame), tuned.display_tuned),
    }
    for name, (numeric, display) in built.items():
        report.frames[name] = numeric
        shown = display(numeric) if not numeric.empty else numeric
        report.tables[name] = write_table(numeric, shown, out / "tables", name, formats, NOTES[name])
    runs = tables.runs_table(records)
    report.frames["runs"] = runs
    report.tables["runs"] = write_table(
        runs, fill_missing(runs), out / "tables", "runs", [f for f in formats if f == "csv"] or ["csv"]
    )
    if figures:
        report.figures = all_figures(frame, report.frames["speedup"], out / "figures")
    report.summary = write_meeting_report(report.frames, report.figures, out)
    return report
