"""The "tuned" table: each method at its own best hyperparameters (python -m loraven.tune) beside the same
method at the default ones, on the test split, with 95 % intervals across seeds and the trainable-parameter
count beside every accuracy.

Runs are picked by ``config.tuning.role`` (``tuned`` / ``untuned``) and must be scored on the test split;
the search trials themselves (validation split) never enter it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from analysis import intervals as iv
from analysis.stats import as_count, completed_training, fill_missing, fmt

KEYS = ["experiment", "model", "task", "adapter_type", "scheduler"]
ROLES = ("untuned", "tuned")


def mean_interval(values: pd.Series) -> iv.Interval:
    """Mean with a Student-t 95 % interval across seeds (one run: no interval, n = 1)."""
    clean = pd.to_numeric(values, errors="coerce").dropna()
    if clean.empty:
        return iv.NAN_INTERVAL
    mean = float(clean.mean())
    if len(clean) < 2:
        return iv.Interval(mean, math.nan, math.nan, 1, "one run")
    res = iv.stats.ttest_1samp(clean.to_numpy(), 0.0).confidence_interval(iv.LEVEL)
    lo, hi = (mean, mean) if clean.std() == 0 else (float(res.low), float(res.high))
    return iv.Interval(mean, lo, hi, len(clean), "Student t across seeds")


def _unique(series: pd.Series) -> Any:
    values = series.dropna().unique().tolist()
    return values[0] if len(values) == 1 else (", ".join(map(str, values)) if values else None)


def tuned_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per method: untuned and tuned accuracy [95 % interval] (n), the lr and hyperparameters each
    ran at, and the trainable-parameter count; the difference tuned − untuned with its Welch interval."""
    runs = completed_training(frame)
    if "tuning_role" not in runs:
        return pd.DataFrame()
    runs = runs[runs["tuning_role"].isin(ROLES)]
    rows = []
    for key, group in runs.groupby(KEYS, dropna=False, sort=True):
        row: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        for role in ROLES:
            part = group[group["tuning_role"] == role]
            interval = mean_interval(part["accuracy"])
            row.update(
                {
                    f"{role}_acc": interval.value,
                    f"{role}_lo": interval.lo,
                    f"{role}_hi": interval.hi,
                    f"{role}_n": interval.n,
                    f"{role}_lr": _unique(part["lr"]),
                    f"{role}_params": _unique(part["trainable_params"]),
                    f"{role}_seeds": ",".join(str(s) for s in sorted(part["seed"].dropna().tolist())),
                }
            )
        tuned = group[group["tuning_role"] == "tuned"]
        row["chosen"] = _unique(tuned["tuned_params"]) if len(tuned) else None
        row.update(_difference(group))
        rows.append(row)
    table = pd.DataFrame(rows)
    if not table.empty:
        for role in ROLES:
            table[f"{role}_n"] = as_count(table[f"{role}_n"])
    return table


def _difference(group: pd.DataFrame) -> dict[str, float]:
    """tuned − untuned accuracy with a Welch t 95 % interval (needs ≥ 2 runs a side)."""
    a = pd.to_numeric(group.loc[group["tuning_role"] == "tuned", "accuracy"], errors="coerce").dropna()
    b = pd.to_numeric(group.loc[group["tuning_role"] == "untuned", "accuracy"], errors="coerce").dropna()
    if len(a) < 2 or len(b) < 2:
        value = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
        return {"gain": value, "gain_lo": math.nan, "gain_hi": math.nan}
    if a.std() == 0 and b.std() == 0:
        gain = float(a.mean() - b.mean())
        return {"gain": gain, "gain_lo": gain, "gain_hi": gain}
    res = iv.stats.ttest_ind(a.to_numpy(), b.to_numpy(), equal_var=False).confidence_interval(iv.LEVEL)
    return {"gain": float(a.mean() - b.mean()), "gain_lo": float(res.low), "gain_hi": float(res.high)}


def _acc(row: dict[str, Any], role: str) -> str:
    value, lo, hi, n = row[f"{role}_acc"], row[f"{role}_lo"], row[f"{role}_hi"], row[f"{role}_n"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return fmt(math.nan)
    span = "" if isinstance(lo, float) and math.isnan(lo) else f" [{lo:.3f}, {hi:.3f}]"
    return f"{value:.3f}{span} (n={n})"


def _params(value: Any) -> str:
    return f"{int(value):,}" if isinstance(value, (int, float)) and not math.isnan(value) else fmt(value)


def display_tuned(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in table.to_dict("records"):
        gain = row["gain"]
        span = "" if math.isnan(row["gain_lo"]) else f" [{row['gain_lo']:+.3f}, {row['gain_hi']:+.3f}]"
        rows.append(
            {
                "method": row["adapter_type"] + (f" ({row['scheduler']})" if row["scheduler"] != "static" else ""),
                "task": row["task"],
                "untuned lr": fmt(row["untuned_lr"], 3),
                "untuned accuracy": _acc(row, "untuned"),
                "tuned (chosen)": row["chosen"] or fmt(row["tuned_lr"], 3),
                "tuned accuracy": _acc(row, "tuned"),
                "tuned − untuned": fmt(math.nan) if math.isnan(gain) else f"{gain:+.3f}{span}",
                "trainable params": _params(
                    row["tuned_params"] if row["tuned_params"] is not None else row["untuned_params"]
                ),
            }
        )
    return fill_missing(pd.DataFrame(rows))


NOTE = (
    "Tuned comparisons (python -m loraven.tune): each method's best config from an Optuna search scored on "
    "the validation split, re-run over seeds and scored on the test split, beside the same method at the "
    "default config on the same seeds; accuracy mean [95 % Student-t interval across seeds] (n); "
    "tuned − untuned with a Welch interval."
)
