"""95 % intervals for every ratio the analysis reports, and the three-state verdict read off them.

Why these methods (all from scipy, none hand-rolled):

* **Across seeds** (≥ 2 runs on each side): ``scipy.stats.bootstrap`` of the ratio of means
  ``mean(a) / mean(b)`` over the two independent samples, percentile method, 9,999 resamples, fixed
  ``random_state`` (``SEED``) so a table is reproducible bit for bit. Percentile, not BCa: BCa's jackknife is
  undefined for 2–3 identical values, which short classic runs produce.
* **Single runs** (one run a side, e.g. an lm-eval accuracy): the binomial stderr lm-eval reports
  (``metrics.accuracy_stderr``) through the delta method for a ratio, normal quantile ``scipy.stats.norm``.
* **Microbenchmarks**: their per-call samples when a bench row carries them (bootstrap as above), else the
  p10–p90 spread of each variant turned into a ratio range (labelled ``p10–p90 range``: wider than a 95 %
  interval of the median, never narrower).

A verdict is ``reproduced`` only when the whole interval satisfies the claim, ``not reproduced`` when the
whole interval violates it, ``inconclusive — about N seeds would resolve it at the observed spread`` when it
straddles, and ``insufficient evidence (<reason>)`` when the data cannot support any verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

SEED = 12345
RESAMPLES = 9999
LEVEL = 0.95
MIN_SEEDS = 3
MIN_TRAIN_STEPS = 50  # fewer optimiser steps than this do not train the classic MLPs or a LM adapter

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
INSUFFICIENT = "insufficient evidence"
BASELINE = "baseline"
REFERENCE = "reference"


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % interval, the runs behind it (n = both sides) and how it was made."""

    value: float
    lo: float
    hi: float
    n: int
    method: str

    def scaled(self, factor: float, offset: float = 0.0) -> Interval:
        """``offset + factor × x`` applied to value and bounds (bounds swap when factor < 0)."""
        a, b = offset + factor * self.lo, offset + factor * self.hi
        return Interval(offset + factor * self.value, min(a, b), max(a, b), self.n, self.method)

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2.0


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan, 0, "not measured")


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def _ratio_of_means(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def bootstrap_ratio(a: Sequence[float], b: Sequence[float]) -> Interval:
    """mean(a) / mean(b) with a percentile bootstrap 95 % interval (independent samples, fixed seed)."""
    x, y = _clean(a), _clean(b)
    if len(x) == 0 or len(y) == 0 or np.mean(y) == 0:
        return NAN_INTERVAL
    value = float(np.mean(x) / np.mean(y))
    if len(x) < 2 or len(y) < 2:
        return Interval(value, math.nan, math.nan, len(x) + len(y), "one run: no seed interval")
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return Interval(value, value, value, len(x) + len(y), "bootstrap ratio of means (no spread)")
    res = stats.bootstrap(
        (x, y),
        _ratio_of_means,
        vectorized=True,
        paired=False,
        confidence_level=LEVEL,
        n_resamples=RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(SEED),
    )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(value, lo, hi, len(x) + len(y), "bootstrap ratio of means")


def delta_ratio(a: float, se_a: float, b: float, se_b: float) -> Interval:
    """a / b for single runs with binomial stderrs (lm-eval's), delta method, normal 95 % quantile."""
    if not all(math.isfinite(v) for v in (a, b)) or b == 0:
        return NAN_INTERVAL
    value = a / b
    if not (math.isfinite(se_a) and math.isfinite(se_b)):
        return Interval(value, math.nan, math.nan, 2, "one run: no stderr recorded")
    rel = math.hypot(se_a / a if a else 0.0, se_b / b)
    z = float(stats.norm.ppf(0.5 + LEVEL / 2.0))
    return Interval(value, value - z * rel * abs(value), value + z * rel * abs(value), 2, "binomial stderr, delta")


def ratio(a: Sequence[float], b: Sequence[float], se_a: Sequence[float] = (), se_b: Sequence[float] = ()) -> Interval:
    """The right interval for mean(a)/mean(b): bootstrap across seeds, delta method for one run a side."""
    x, y = _clean(a), _clean(b)
    if len(x) == 1 and len(y) == 1:
        sa, sb = _clean(se_a), _clean(se_b)
        return delta_ratio(
            float(x[0]), float(sa[0]) if len(sa) else math.nan, float(y[0]), float(sb[0]) if len(sb) else math.nan
        )
    return bootstrap_ratio(x, y)


def range_ratio(num: tuple[float, float, float], den: tuple[float, float, float]) -> Interval:
    """median(num)/median(den) with the widest ratio of their (p10, p90) spreads; for summarised benches."""
    (nm, n10, n90), (dm, d10, d90) = num, den
    if not (math.isfinite(nm) and math.isfinite(dm)) or dm == 0:
        return NAN_INTERVAL
    if not all(math.isfinite(v) for v in (n10, n90, d10, d90)) or d10 <= 0:
        return Interval(nm / dm, math.nan, math.nan, 1, "no spread recorded")
    return Interval(nm / dm, n10 / d90, n90 / d10, 1, "p10–p90 range")


# ----------------------------------------------------------------------------------------- verdicts


def seeds_to_resolve(iv: Interval, threshold: float, n_per_side: int) -> int | None:
    """Seeds per side at which the interval's half-width (∝ 1/√n) would clear ``threshold``; None if never."""
    gap = abs(iv.value - threshold)
    if gap == 0 or not math.isfinite(iv.half_width) or n_per_side < 1:
        return None
    return max(n_per_side + 1, math.ceil(n_per_side * (iv.half_width / gap) ** 2))


def one_sided(iv: Interval, threshold: float, at_least: bool, n_per_side: int) -> tuple[str, int | None]:
    """Verdict of "value ≥ threshold" (``at_least``) or "value < threshold" and seeds to resolve it."""
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return INSUFFICIENT, None
    above, below = iv.lo >= threshold, iv.hi < threshold
    if above or below:
        return (REPRODUCED if above == at_least else NOT_REPRODUCED), None
    return INCONCLUSIVE, seeds_to_resolve(iv, threshold, n_per_side)


def combine(parts: Sequence[tuple[str, int | None]]) -> str:
    """All parts reproduced → reproduced; any violated → not reproduced; else inconclusive with seeds."""
    words = [w for w, _ in parts]
    if any(w == NOT_REPRODUCED for w in words):
        return NOT_REPRODUCED
    if all(w == REPRODUCED for w in words):
        return REPRODUCED
    needs = [n for w, n in parts if w == INCONCLUSIVE]
    if any(n is None for n in needs):
        return f"{INCONCLUSIVE} — no number of seeds would resolve it at the observed spread (on the threshold)"
    return f"{INCONCLUSIVE} — about {max(needs)} seeds would resolve it at the observed spread"


def insufficient(reasons: Sequence[str]) -> str | None:
    """``insufficient evidence (a; b)`` when any reason holds, else None."""
    return f"{INSUFFICIENT} ({'; '.join(reasons)})" if reasons else None


def seed_reasons(n_a: int, n_b: int) -> list[str]:
    """Fewer than MIN_SEEDS completed runs on either side of a comparison cannot carry a verdict."""
    if min(n_a, n_b) < MIN_SEEDS:
        return [f"fewer than {MIN_SEEDS} seeds: {n_a} vs {n_b} baseline"]
    return []


def show(iv: Interval, digits: int = 3, suffix: str = "") -> str:
    """``value [lo, hi] (n=…)`` for md/tex; the bounds say "no interval" when there is none."""
    if not math.isfinite(iv.value):
        return "not measured"
    value = f"{iv.value:.{digits}g}{suffix}"
    if not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return f"{value} [no interval: {iv.method}] (n={iv.n})"
    return f"{value} [{iv.lo:.{digits}g}, {iv.hi:.{digits}g}]{suffix} (n={iv.n})"
