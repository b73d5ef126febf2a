"""REPORT.md: one page per results store with each paper claim, our measurement (interval and n), the
evidence behind it, the verdict and links to the figures; written by ``python -m analysis`` beside the
tables. Built from the same numeric frames as the tables, so the page and the tables cannot disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from analysis import intervals as iv
from analysis import paper
from analysis.tables import PAPER_LABEL, _pair_n, _shown, _times_interval

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


def write_meeting_report(frames: Mapping[str, pd.DataFrame], figures: Mapping[str, Path], out: Path) -> Path:
    """Write ``out/REPORT.md`` and return its path."""
    links = "\n".join(f"- [{name}]({path.relative_to(out).as_posix()})" for name, path in figures.items())
    parts = [
        "# LoRAven claims against our runs",
        LEGEND,
        "## Table 5.1 — fused kernels are faster",
        _table(_speedup_rows(frames["speedup"])),
        f"## §5.2 — {paper.ENERGY_CLAIM}",
        _table(_energy_rows(frames["energy"])),
        "## §5.3 — accuracy retention",
        _table(_accuracy_rows(frames["accuracy"])),
        "## Figures",
        links or "_no figures written (no data, or --no-figures)_",
        "Tables with every column (CSV with `_lo`, `_hi`, `n`): [tables/](tables/).",
    ]
    path = out / "REPORT.md"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join(parts) + "\n")
    return path
