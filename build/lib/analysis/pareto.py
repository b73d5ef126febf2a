"""Pareto front of a table (e.g. lower energy, higher accuracy), as in peft's method_comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pareto_front(df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, maximize_y: bool = True) -> pd.Series:
    """Boolean mask (aligned with ``df.index``): True where no other row dominates the row.

    Row b dominates a when b is at least as good on both axes and strictly better on one. Rows with a
    missing x or y are never on the front. Ties (identical points) are all kept.
    """
    xs = df[x].to_numpy(dtype=float) * (1.0 if minimize_x else -1.0)  # now "smaller is better" on both
    ys = df[y].to_numpy(dtype=float) * (-1.0 if maximize_y else 1.0)
    valid = ~(np.isnan(xs) | np.isnan(ys))
    no_worse = (xs[None, :] <= xs[:, None]) & (ys[None, :] <= ys[:, None])  # [a, b]: b no worse than a
    better = (xs[None, :] < xs[:, None]) | (ys[None, :] < ys[:, None])
    dominated = (no_worse & better & valid[None, :]).any(axis=1)
    return pd.Series(valid & ~dominated, index=df.index, name="pareto")
