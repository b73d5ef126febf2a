"""loraven analysis: the comparison of what you ran (per group, with intervals and verdicts), then the LoRAven
paper's tables and figures from the results store (or W&B), with the paper's reported numbers beside ours.
Reads result.json files only; never imports the training code."""

from analysis.compare import GroupComparison, compare, display_group
from analysis.load import AnalysisWarning, load_results, runs_frame
from analysis.pareto import pareto_front
from analysis.report import Report, build_report
from analysis.suites import display_suite, suite_table
from analysis.tables import accuracy_table, energy_table, runs_table, speedup_table
from analysis.wandb_source import load_wandb

__all__ = [
    "AnalysisWarning",
    "GroupComparison",
    "compare",
    "display_group",
    "display_suite",
    "suite_table",
    "Report",
    "accuracy_table",
    "build_report",
    "energy_table",
    "load_results",
    "load_wandb",
    "pareto_front",
    "runs_frame",
    "runs_table",
    "speedup_table",
]
