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
import warnings
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
    if not math.isfinite(iv.half_width) or n_per_side < 1 or gap <= 1e-9 * max(iv.half_width, 1e-300):
        return None  # on the threshold (to rounding): no number of seeds would resolve it
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
    if any(w == INSUFFICIENT for w in words):  # a part without an interval (e.g. no energy reading)
        return f"{INSUFFICIENT} (a part of the claim has no interval: not measured)"
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


# ----------------------------------------------------------------------------------------- comparisons
#
# A method comparison reports each configuration's accuracy with an interval that stays inside [0, 1] and the
# difference to a reference with its own interval:
#
# * one run: the accuracy is a binomial proportion over the n evaluated documents → Wilson score interval
#   (``scipy.stats.binomtest(...).proportion_ci(method="wilson")``); a macro average of several tasks (a suite) is
#   not one proportion → normal interval from the recorded stderr (lm-eval's per-task stderrs combined), clipped to
#   [0, 1] (the true value cannot leave it) and labelled so.
# * several seeds: percentile bootstrap of the mean across seeds (``scipy.stats.bootstrap``): a resampled mean of
#   values in [0, 1] stays in [0, 1]; never mean ± t·sd on 0/1 data.
# * a difference between configurations: paired by seed when they share ≥ 2 seeds (Student t on the per-seed
#   differences), else Welch's t across seeds, else (one run a side) the normal interval of lm-eval's binomial
#   stderrs. The t intervals widen honestly at 2–5 seeds, where a percentile bootstrap under-covers (it can only
#   return the observed min and max of 2–3 values).

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no resolved difference"


def _z() -> float:
    return float(stats.norm.ppf(0.5 + LEVEL / 2.0))


def wilson(p: float, n: float) -> Interval:
    """Wilson score 95 % interval of one run's accuracy ``p`` over ``n`` documents (always inside [0, 1])."""
    if not (math.isfinite(p) and math.isfinite(n)) or n < 1 or not 0.0 <= p <= 1.0:
        return NAN_INTERVAL if not math.isfinite(p) else Interval(p, math.nan, math.nan, 1, "no n recorded")
    trials = int(round(n))
    successes = min(max(int(round(p * trials)), 0), trials)
    ci = stats.binomtest(successes, trials).proportion_ci(LEVEL, method="wilson")
    lo, hi = min(float(ci.low), p), max(float(ci.high), p)  # p·n rounded: keep the point inside its interval
    return Interval(p, max(lo, 0.0), min(hi, 1.0), 1, f"one run: Wilson, n={trials} documents")


def normal_unit(p: float, se: float, what: str) -> Interval:
    """``p ± z·se`` clipped to [0, 1]: a macro average's interval from its recorded stderr."""
    if not math.isfinite(p):
        return NAN_INTERVAL
    if not math.isfinite(se):
        return Interval(p, math.nan, math.nan, 1, "one run: no stderr recorded")
    half = _z() * se
    return Interval(p, max(p - half, 0.0), min(p + half, 1.0), 1, what)


def single_run_accuracy(p: float, n: float, se: float, n_tasks: int = 1) -> Interval:
    """One run's accuracy interval: Wilson over its documents, or for a macro average of ``n_tasks`` tasks the
    normal interval of its recorded stderr (clipped to [0, 1])."""
    if n_tasks > 1:
        return normal_unit(p, se, f"one run: macro average of {n_tasks} tasks, lm-eval stderrs, clipped to [0, 1]")
    if math.isfinite(n) and n >= 1:
        return wilson(p, n)
    if math.isfinite(se) and se >= 1e-6 and math.isfinite(p) and 0.0 < p < 1.0:
        return wilson(p, p * (1.0 - p) / se**2 + 1.0)  # lm-eval's stderr is √(p(1−p)/(n−1))
    return Interval(p, math.nan, math.nan, 1, "one run: no n or stderr recorded") if math.isfinite(p) else NAN_INTERVAL


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap_mean(values: Sequence[float], what: str = "across seeds") -> Interval:
    """Mean across runs with a percentile bootstrap 95 % interval (inside the values' range, so inside [0, 1] for
    accuracies); one run: no interval."""
    x = _clean(values)
    if len(x) == 0:
        return NAN_INTERVAL
    mean = float(np.mean(x))
    if len(x) < 2:
        return Interval(mean, math.nan, math.nan, 1, "one run: no seed interval")
    if np.ptp(x) == 0:
        return Interval(mean, mean, mean, len(x), f"bootstrap {what} (no spread)")
    res = stats.bootstrap(
        (x,),
        _mean,
        vectorized=True,
        confidence_level=LEVEL,
        n_resamples=RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(SEED),
    )
    lo = max(float(res.confidence_interval.low), float(x.min()))
    hi = min(float(res.confidence_interval.high), float(x.max()))
    return Interval(mean, lo, hi, len(x), f"bootstrap {what}")


def seed_difference(a: dict, b: dict, se_a: float = math.nan, se_b: float = math.nan) -> Interval:
    """mean(a) − mean(b) for per-seed values ``{seed: value}`` (several runs of one seed already averaged).

    Paired by seed when both share ≥ 2 seeds (t on the differences), else Welch's t (≥ 2 runs a side), else one
    run a side with their binomial stderrs (normal). ``n`` of the result is the number of seeds per side used.
    """
    a = {k: float(v) for k, v in a.items() if math.isfinite(float(v))}
    b = {k: float(v) for k, v in b.items() if math.isfinite(float(v))}
    if not a or not b:
        return NAN_INTERVAL
    common = sorted(set(a) & set(b), key=str)
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common])
        mean = float(d.mean())
        if np.ptp(d) == 0:
            return Interval(mean, mean, mean, len(d), f"paired by seed, {len(d)} seeds (no spread)")
        with warnings.catch_warnings():  # nearly equal differences: scipy warns of precision, the interval stands
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_1samp(d, 0.0).confidence_interval(LEVEL)
        return Interval(mean, float(ci.low), float(ci.high), len(d), f"paired by seed, t over {len(d)} seeds")
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    mean = float(x.mean() - y.mean())
    if len(x) >= 2 and len(y) >= 2:
        if np.ptp(x) == 0 and np.ptp(y) == 0:
            return Interval(mean, mean, mean, min(len(x), len(y)), "unpaired (no spread)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_ind(x, y, equal_var=False).confidence_interval(LEVEL)
        return Interval(mean, float(ci.low), float(ci.high), min(len(x), len(y)), "unpaired, Welch t across seeds")
    if len(x) == 1 and len(y) == 1:
        if not (math.isfinite(se_a) and math.isfinite(se_b)):
            return Interval(mean, math.nan, math.nan, 1, "one run a side, no stderr recorded")
        half = _z() * math.hypot(se_a, se_b)
        return Interval(mean, mean - half, mean + half, 1, "one seed a side: lm-eval binomial stderrs")
    shared = len(common)
    return Interval(
        mean, math.nan, math.nan, 1, f"{len(x)} seed(s) vs {len(y)}, {shared} shared: too few to pair or compare"
    )


def difference_verdict(diff: Interval, higher_is_better: bool, reasons: Sequence[str] = ()) -> tuple[str, int | None]:
    """``better`` / ``worse`` when the whole interval of (row − reference) is on one side of 0 (direction from
    the task: MSE is better lower), ``no resolved difference — about N seeds`` when it straddles 0 (N: seeds per
    side at which the interval's half-width, ∝ 1/√n, would clear the observed difference), else
    ``insufficient evidence (why)``. Returns the words and N (None when no N applies)."""
    blocked = insufficient(list(reasons))
    if blocked:
        return blocked, None
    if not math.isfinite(diff.value):
        return f"{INSUFFICIENT} (not measured)", None
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)):
        return f"{INSUFFICIENT} ({diff.method})", None
    if diff.lo > 0 or diff.hi < 0:
        up = diff.lo > 0
        return (BETTER if up == higher_is_better else WORSE), None
    need = seeds_to_resolve(diff, 0.0, max(diff.n, 1))
    if need is None:
        return f"{NO_DIFFERENCE} — identical at the observed spread (no number of seeds would resolve it)", None
    return f"{NO_DIFFERENCE} — about {need} seeds", need
