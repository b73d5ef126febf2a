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
from analysis.compare import GroupComparison, compare, comparison_frame, display_group
from analysis.figures import all_figures
from analysis.load import runs_frame
from analysis.meeting import write_meeting_report
from analysis.stats import fill_missing
from analysis.suites import display_suite, suite_table

FORMATS = ("md", "csv", "tex")


@dataclass
class Report:
    """What was computed (numeric frames) and what was written (paths)."""

    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    tables: dict[str, list[Path]] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)
    summary: Path | None = None  # REPORT.md
    comparisons: list[GroupComparison] = field(default_factory=list)


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
    return _write(numeric, [("", shown)], out, name, formats, note)


NOTES = {
    "comparison": "What your runs show: per group (model · task · split · metric · energy method), each "
    "configuration's value [95 % interval] (n), its change against the group's reference and a verdict; see "
    "REPORT.md for how intervals and verdicts are made.",
    "suites": "Per-task accuracy of suite runs (task=commonsense, task=glue); paper_* = the LoRA-AR README's "
    "LLaMA3-8B numbers (another model: orientation only).",
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
    reference: str | None = None,
) -> Report:
    """Tables under ``out/tables`` (and figures under ``out/figures``) from result records; ``reference``
    (``adapter=lora``, ``scheduler=linear``...) picks each group's reference row where it names one."""
    records = list(records)
    out = Path(out)
    frame = runs_frame(records)
    report = Report(runs=frame)
    report.comparisons = compare(frame, reference)
    _write_comparisons(report, out / "tables", formats)
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
        report.figures = all_figures(frame, report.frames["speedup"], out / "figures", report.comparisons)
    report.summary = write_meeting_report(report.frames, report.figures, out, report.comparisons, frame)
    return report


def _write_comparisons(report: Report, out: Path, formats: Sequence[str]) -> None:
    """tables/comparison.* (every group, a heading each) and, where suites ran, tables/suites.*."""
    numeric = comparison_frame(report.comparisons)
    report.frames["comparison"] = numeric
    sections = [(c.title, display_group(c)) for c in report.comparisons]
    report.tables["comparison"] = _write_sections(numeric, sections, out, "comparison", formats)
    suites = [(c, suite_table(c)) for c in report.comparisons]
    suites = [(c, t) for c, t in suites if not t.empty]
    if suites:
        report.frames["suites"] = pd.concat([t.assign(group=c.title) for c, t in suites], ignore_index=True)
        report.tables["suites"] = _write_sections(
            report.frames["suites"], [(c.title, display_suite(t)) for c, t in suites], out, "suites", formats
        )


def _write_sections(
    numeric: pd.DataFrame, sections: list[tuple[str, pd.DataFrame]], out: Path, name: str, formats: Sequence[str]
) -> list[Path]:
    """Like :func:`write_table` for a table in several groups: CSV in one piece, md/tex one heading per group."""
    return _write(numeric, sections, out, name, formats, NOTES[name])


def _write(
    numeric: pd.DataFrame,
    sections: list[tuple[str, pd.DataFrame]],
    out: Path,
    name: str,
    formats: Sequence[str],
    note: str,
) -> list[Path]:
    """The one table writer: each file written whole (temp file + rename), so a report is never half-written;
    a section with a title gets a heading, an empty one is left out, no data at all says "not measured"."""
    from loraven.files import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    present = [(title, shown) for title, shown in sections if not shown.empty]
    written = []
    if "csv" in formats:
        written.append(out / f"{name}.csv")
        atomic_write_text(written[-1], fill_missing(numeric).to_csv(index=False))
    if "md" in formats:
        written.append(out / f"{name}.md")
        body = "\n\n".join((f"## {t}\n\n" if t else "") + shown.to_markdown(index=False) for t, shown in present)
        atomic_write_text(written[-1], (f"{note}\n\n" if note else "") + (body or "_no data: not measured_") + "\n")
    if "tex" in formats:
        written.append(out / f"{name}.tex")
        body = "\n".join((f"% {t}\n" if t else "") + shown.to_latex(index=False, escape=True) for t, shown in present)
        atomic_write_text(written[-1], body or "% no data: not measured\n")
    return written
