"""loraven analysis: the LoRAven paper's tables and figures from the results store (or W&B), with the
paper's reported numbers beside ours. Reads result.json files only; never imports the training code."""

from analysis.load import AnalysisWarning, load_results, runs_frame
from analysis.pareto import pareto_front
from analysis.report import Report, build_report
from analysis.tables import accuracy_table, energy_table, runs_table, speedup_table
from analysis.wandb_source import load_wandb

__all__ = [
    "AnalysisWarning",
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
