"""Means ± std over seeds, and how missing values are shown (never as zero or blank)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

NOT_MEASURED = "not measured"
NOT_REPORTED = "not reported"


def completed_training(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that count towards means: completed, not microbenchmarks (failed/skipped stay in runs.csv), scored
    on the test split (search trials scored on validation never mix with reported numbers)."""
    split = frame["split"] if "split" in frame else pd.Series("test", index=frame.index)
    return frame[(frame["status"] == "completed") & ~frame["bench"].astype(bool) & (split.fillna("test") == "test")]


def group_stats(frame: pd.DataFrame, keys: Sequence[str], values: Sequence[str]) -> pd.DataFrame:
    """Per group: n runs, seeds, and mean/std (ddof=1, NaN for one run) of each value, NaNs ignored."""
    grouped = frame.groupby(list(keys), dropna=False, sort=False)
    out = grouped.size().rename("n").to_frame()
    out["seeds"] = grouped["seed"].agg(lambda s: ",".join(str(v) for v in s.dropna().tolist()) or NOT_MEASURED)
    for value in values:
        out[f"{value}_mean"] = grouped[value].mean()
        out[f"{value}_std"] = grouped[value].std(ddof=1)
    return out.reset_index()


def fmt(value: object, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; missing → "not measured"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_MEASURED
    if isinstance(value, (int, float)):
        return f"{value:.{digits}g}"
    return str(value)


def count(n: object) -> str:
    """A run count as an integer string; missing → "not measured"."""
    try:
        return str(int(n))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return NOT_MEASURED


def as_count(series: pd.Series) -> pd.Series:
    """Counts stay integers (nullable) even in a frame with a reference row that has none."""
    return pd.to_numeric(series, errors="coerce").astype("Int64")


def mean_std(mean: object, std: object, n: object, digits: int = 4) -> str:
    """'m ± s' for display; 'm (n=1)' when a single run leaves the std undefined."""
    text = fmt(mean, digits)
    if text == NOT_MEASURED:
        return text
    if isinstance(std, float) and math.isnan(std):
        return f"{text} (n=1)" if count(n) == "1" else text
    return f"{text} ± {fmt(std, digits)}"


def fill_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Written tables never show blanks: paper_* cells say "not reported", the rest "not measured"."""
    out = frame.astype(object).copy()
    for column in out.columns:
        filler = NOT_REPORTED if str(column).startswith("paper_") else NOT_MEASURED
        if str(column).endswith("_std") and "n" in out.columns:
            mean = str(column)[: -len("_std")] + "_mean"
            has_mean = frame[mean].notna() if mean in frame.columns else True
            single = out[column].isna() & has_mean & (pd.to_numeric(out["n"], errors="coerce") == 1)
            out.loc[single, column] = "n/a (n=1)"
        out[column] = out[column].where(out[column].notna(), filler)
    return out
