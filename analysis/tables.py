"""The paper's tables from our runs: Table 5.1 (speedup), §5.2 (energy levels), §5.3 (accuracy), runs.

Each builder returns a numeric frame (NaN = no data; tests and the CSV read it) and ``display`` turns it
into the human table (mean ± std strings, "not measured"/"not reported" instead of blanks).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from analysis import intervals as iv
from analysis import paper
from analysis.load import RUN_DIR_KEY, VERSION_KEYS, seed_of, warn_mixed_versions
from analysis.stats import (
    NOT_MEASURED,
    NOT_REPORTED,
    as_count,
    completed_training,
    count,
    fill_missing,
    fmt,
    group_stats,
    mean_std,
)

VARIANTS = ("original", "factored", "fused", "fused_precompute", "inplace", "dense")
PAPER_LABEL = "paper (reported)"

# ----------------------------------------------------------------------------------------- Table 5.1


def bench_frame(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """All bench rows of completed runs, one row each, with the run's id and versions attached."""
    rows = []
    for r in records:
        if r.get("status") != "completed":
            continue
        env = r.get("env") or {}
        for row in r.get("bench") or []:
            rows.append({**row, "run_id": r.get("run_id"), **{f"env_{k}": env.get(k) for k in VERSION_KEYS}})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for axis, index in (("batch", 0), ("dim", 1)):  # shape "128x2048" is batch x dim when they're absent
        parsed = frame["shape"].astype(str).map(lambda s, i=index: _shape_part(s, i))
        frame[axis] = frame[axis].fillna(parsed) if axis in frame else parsed
    for column in ("rank", "ms_p10", "ms_p90", "ms_iqr"):
        if column not in frame:
            frame[column] = math.nan
    for column in ("device", "dtype"):
        frame[column] = frame.get(column, pd.Series(index=frame.index, dtype=object)).fillna("unknown")
    return frame


def _shape_part(shape: str, index: int) -> float:
    parts = re.split(r"[x×*]", shape)
    try:
        return float(parts[index])
    except (IndexError, ValueError):
        return math.nan


def speedup_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Table 5.1: per (device, dtype, shape, rank) the ms of each variant (mean over runs of the per-run
    median, with the p10/p90 or IQR spread), fusion speedup = original/fused, in-place speedup =
    original/inplace, fused-vs-factored = factored/fused (< 1: fusion no longer pays), and the paper's
    values for its three shapes in paper_* columns."""
    bench = bench_frame(records)
    if bench.empty:  # nothing measured: still show the paper's rows, ours "not measured"
        bench = pd.DataFrame(
            [
                {
                    "device": NOT_MEASURED,
                    "dtype": NOT_MEASURED,
                    "shape": f"{b}x{d}",
                    "batch": b,
                    "dim": d,
                    "rank": math.nan,
                    "variant": "original",
                    "ms": math.nan,
                    "ms_p10": math.nan,
                    "ms_p90": math.nan,
                    "ms_iqr": math.nan,
                    "run_id": None,
                }
                for b, d in paper.PAPER_SPEEDUP
            ]
        )
    warn_mixed_versions(bench, "speedup table")
    keys = ["device", "dtype", "shape", "batch", "dim", "rank"]
    per_variant = (
        bench.groupby([*keys, "variant"], dropna=False)
        .agg(
            ms=("ms", "mean"),
            p10=("ms_p10", "mean"),
            p90=("ms_p90", "mean"),
            iqr=("ms_iqr", "mean"),
            n_runs=("run_id", "nunique"),
        )
        .reset_index()
    )
    # unstack, not pivot_table(dropna=False): the latter invents every batch x dim combination
    wide = per_variant.set_index([*keys, "variant"])[["ms", "p10", "p90", "iqr", "n_runs"]].unstack("variant")
    table = wide.index.to_frame(index=False)
    table["n_runs"] = as_count(pd.Series(wide["n_runs"].max(axis=1).to_numpy()))
    for variant in VARIANTS:
        for stat, name in (("ms", "ms"), ("p10", "ms_p10"), ("p90", "ms_p90"), ("iqr", "ms_iqr")):
            present = stat in wide.columns.get_level_values(0) and variant in wide[stat].columns
            table[f"{variant}_{name}"] = wide[stat][variant].to_numpy() if present else math.nan
    table["fusion_speedup"] = table["original_ms"] / table["fused_ms"]
    table["inplace_speedup"] = table["original_ms"] / table["inplace_ms"]
    table["fused_vs_factored"] = table["factored_ms"] / table["fused_ms"]
    for name, num, den in (
        ("fusion_speedup", "original", "fused"),
        ("inplace_speedup", "original", "inplace"),
        ("fused_vs_factored", "factored", "fused"),
    ):
        spans = [
            iv.range_ratio(
                (r[f"{num}_ms"], r[f"{num}_ms_p10"], r[f"{num}_ms_p90"]),
                (r[f"{den}_ms"], r[f"{den}_ms_p10"], r[f"{den}_ms_p90"]),
            )
            for r in table.to_dict("records")
        ]
        table[f"{name}_lo"] = [x.lo for x in spans]
        table[f"{name}_hi"] = [x.hi for x in spans]
    table["fusion_pays"] = table["fusion_speedup"].map(
        lambda s: NOT_MEASURED if math.isnan(s) else ("yes" if s > 1 else "no")
    )
    for key in ("original_ms", "fused_ms", "inplace_ms", "fusion_speedup", "inplace_speedup"):
        table[f"paper_{key}"] = [
            paper.PAPER_SPEEDUP.get((int(b), int(d)), {}).get(key, math.nan)
            if not (math.isnan(b) or math.isnan(d))
            else math.nan
            for b, d in zip(table["batch"], table["dim"], strict=True)
        ]
    table["verdict"] = [_speedup_verdict(r) for r in table.to_dict("records")]
    table["size"] = table["batch"] * table["dim"]
    return table.sort_values(["device", "dtype", "size", "rank"]).drop(columns="size").reset_index(drop=True)


def _speedup_verdict(row: Mapping[str, Any]) -> str:
    """Table 5.1's claim at a shape: fusion at least as fast as the paper's factor over its whole p10–p90
    ratio range (the per-call spread, wider than a 95 % interval of the median)."""
    claim = row.get("paper_fusion_speedup", math.nan)
    if not isinstance(claim, float) or math.isnan(claim):
        return iv.insufficient(["the paper reports no speedup for this shape"]) or ""
    interval = iv.Interval(row["fusion_speedup"], row["fusion_speedup_lo"], row["fusion_speedup_hi"], 1, "")
    if not (math.isfinite(interval.lo) and math.isfinite(interval.hi)):
        return iv.insufficient(["no per-call spread recorded" if math.isfinite(interval.value) else "not measured"])
    return iv.combine([iv.one_sided(interval, claim, True, 1)]).replace(" seeds ", " runs ")


def _spread(row: Mapping[str, Any], variant: str) -> str:
    ms = row.get(f"{variant}_ms")
    if ms is None or math.isnan(ms):
        return NOT_MEASURED
    p10, p90, iqr = (row.get(f"{variant}_ms_{k}", math.nan) for k in ("p10", "p90", "iqr"))
    if not (math.isnan(p10) or math.isnan(p90)):
        return f"{fmt(ms)} [{fmt(p10)}–{fmt(p90)}]"
    if not math.isnan(iqr):
        return f"{fmt(ms)} (IQR {fmt(iqr)})"
    return fmt(ms)


def display_speedup(table: pd.DataFrame) -> pd.DataFrame:
    """Human Table 5.1: ms as "median [p10–p90]" (or IQR), speedups as "1.90×", paper columns beside."""
    if table.empty:
        return table
    rows = []
    for row in table.to_dict("records"):
        out = {k: row[k] for k in ("device", "dtype", "shape", "rank")} | {"n_runs": count(row["n_runs"])}
        out |= {f"{v} ms": _spread(row, v) for v in ("original", "factored", "fused", "inplace")}
        out |= {
            k.replace("_", " "): _times_interval(row, k)
            for k in ("fusion_speedup", "inplace_speedup", "fused_vs_factored")
        }
        out["fusion pays"] = row["fusion_pays"]
        for key in ("original_ms", "fused_ms", "inplace_ms"):
            out[f"paper_{key}"] = row[f"paper_{key}"]
        for key in ("fusion_speedup", "inplace_speedup"):
            out[f"paper_{key}"] = _times(row[f"paper_{key}"], missing=NOT_REPORTED)
        out["verdict"] = row["verdict"]
        rows.append(out)
    return fill_missing(pd.DataFrame(rows))


def _times_interval(row: Mapping[str, Any], key: str) -> str:
    """ "1.90× [1.7, 2.1] (n=…)" with the p10–p90 ratio range; n = runs behind the medians."""
    value, lo, hi = row[key], row.get(f"{key}_lo", math.nan), row.get(f"{key}_hi", math.nan)
    if value is None or math.isnan(value):
        return NOT_MEASURED
    if math.isnan(lo) or math.isnan(hi):
        return f"{_times(value)} [no spread recorded] (n={count(row['n_runs'])})"
    return f"{_times(value)} [{lo:.2f}, {hi:.2f}] (n={count(row['n_runs'])})"


def _times(value: float, missing: str = NOT_MEASURED) -> str:
    return missing if value is None or math.isnan(value) else f"{value:.2f}×"


# ----------------------------------------------------------------------------------------- §5.2 energy

ENERGY_KEYS = ["experiment", "model", "task", "energy_method", "level"]
VERDICT_RULE = (
    f"reproduced = the whole 95 % interval of the reduction is ≥ {paper.PAPER_ENERGY_REDUCTION_PCT[0]:g} % and of "
    f"the retention ≥ {paper.PAPER_ACCURACY_RETENTION_PCT:g} % vs dense (same experiment, model, task and energy "
    "method); not reproduced = a whole interval on the wrong side; inconclusive = an interval straddles; "
    f"insufficient evidence = fewer than {iv.MIN_SEEDS} seeds a side, accuracy at chance, fewer than "
    f"{iv.MIN_TRAIN_STEPS} training steps, energy below meter resolution, or the two sides trained on different "
    "thread counts or CPU load. Intervals: "
    "analysis.intervals (bootstrap ratio of means across seeds, fixed seed); "
    "regression retention = 100 − MSE increase %"
)


def _group(runs: pd.DataFrame, row: Mapping[str, Any], keys: Iterable[str]) -> pd.DataFrame:
    """The runs of the group ``row`` names."""
    return runs[_mask(runs, row, keys)]


def chance_state(group: pd.DataFrame) -> str:
    """ "at chance" when mean accuracy is within 2 stderr of the recorded chance level; "above chance";
    "no chance level" (regression/generation: chance recorded as null); "chance unknown" (older records
    without ``metrics.chance``: not guessed). The stderr is lm-eval's binomial one, else √(p(1−p)/n) from
    the recorded number of evaluated examples, else the seeds' standard error."""
    acc = group["accuracy"].dropna()
    if acc.empty:
        return "no chance level"
    if not group["chance_known"].all():
        return "chance unknown"
    chance = group["chance"].dropna()
    if chance.empty:
        return "no chance level"
    p = float(acc.mean())
    stderr = group["accuracy_stderr"].dropna()
    if len(stderr):
        se = float(stderr.mean())
    elif group["eval_n"].notna().any():
        se = math.sqrt(p * (1 - p) / float(group["eval_n"].dropna().mean()))
    else:
        se = float(acc.std(ddof=1) / math.sqrt(len(acc))) if len(acc) > 1 else math.nan
    if not math.isfinite(se):
        return "chance unknown"
    return "at chance" if abs(p - float(chance.mean())) <= 2 * se else "above chance"


def _evidence_reasons(group: pd.DataFrame, base: pd.DataFrame, energy: bool) -> list[str]:
    """Why a comparison cannot carry a verdict (seeds, chance, training length, meter resolution)."""
    reasons = iv.seed_reasons(len(group), len(base))
    if any(chance_state(g) == "at chance" for g in (group, base)):
        reasons.append("accuracy at chance level")
    steps = pd.concat([group["steps"], base["steps"]]).dropna()
    if len(steps) and steps.min() < iv.MIN_TRAIN_STEPS:
        reasons.append(f"runs too short to train ({int(steps.min())} steps < {iv.MIN_TRAIN_STEPS})")
    if energy:
        if pd.concat([group["energy_below_resolution"], base["energy_below_resolution"]]).astype(bool).any():
            reasons.append("energy below meter resolution")
        if (group["energy_evidence"] == "not measured").any():
            reasons.append("energy not measured")
        reasons += condition_reasons(group, base)
    return reasons


CPU_SHARE_TOLERANCE = 1.25  # median CPU shares further apart than this: the two sides ran under different load


def condition_reasons(group: pd.DataFrame, base: pd.DataFrame) -> list[str]:
    """Times, and energies estimated from them, compare only runs that had the same CPU: one thread count, and a
    similar share of their threads' time (``analysis.load.cpu_share``). Otherwise the difference is the machine's,
    not the method's."""
    reasons = []
    both = pd.concat([group, base])
    threads = sorted({int(t) for t in both["torch_threads"].dropna()})
    if len(threads) > 1:
        reasons.append(f"runs used different thread counts ({', '.join(map(str, threads))})")
    mine, theirs = group["cpu_share"].median(), base["cpu_share"].median()
    if mine > 0 and theirs > 0 and max(mine, theirs) / min(mine, theirs) > CPU_SHARE_TOLERANCE:
        reasons.append(f"different CPU load (share of their threads' time {mine:.2f} vs {theirs:.2f})")
    return reasons


def _quality_interval(group: pd.DataFrame, base: pd.DataFrame) -> tuple[iv.Interval, bool]:
    """Retention % (accuracy ratio ×100), or for regression 100 − MSE increase %; and whether regression."""
    if group["accuracy"].notna().any():
        ratio = iv.ratio(group["accuracy"], base["accuracy"], group["accuracy_stderr"], base["accuracy_stderr"])
        return ratio.scaled(100.0), False
    ratio = iv.ratio(group["mse"], base["mse"])
    return ratio.scaled(-100.0, 200.0), True  # 100 − (r − 1)·100


def _put(row: dict[str, Any], name: str, interval: iv.Interval) -> None:
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = interval.value, interval.lo, interval.hi
    row[f"{name}_method"] = interval.method


def energy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """§5.2: each level's energy and quality (mean ± std over seeds), reduction % and retention % vs the
    dense run of the same experiment/model/task *measured with the same method* (never mixed) with 95 %
    intervals, energy per unit of work, the evidence (measured/estimated) and a three-state verdict."""
    runs = outside_tuning(completed_training(frame))
    warn_mixed_versions(runs, "energy table")
    values = ["energy_kwh", "accuracy", "mse", "step_ms", "j_per_train_unit", "j_per_eval_example", "trainable_params"]
    stats = group_stats(runs, ENERGY_KEYS, values) if not runs.empty else None
    rows = []
    dense = set(runs.loc[runs["baseline"].astype(bool), "level"]) if not runs.empty else set()
    ranks = paper.level_ranks(runs)
    for row in [] if stats is None else stats.to_dict("records"):
        group = _group(runs, row, ENERGY_KEYS)
        row["energy_j_mean"], row["energy_j_std"] = row["energy_kwh_mean"] * 3.6e6, row["energy_kwh_std"] * 3.6e6
        row["evidence"] = group["energy_evidence"].iloc[0]
        row["below_resolution"] = bool(group["energy_below_resolution"].astype(bool).any())
        row["chance"] = chance_state(group)
        same = runs[runs["baseline"].astype(bool) & _mask(runs, row, ENERGY_KEYS[:3])]
        base = same[_eq(same["energy_method"], row["energy_method"])]
        row["dense_n"] = len(base) if row["level"] not in dense else math.nan
        for name in ("reduction_pct", "retention_pct", "step_time_ratio"):
            _put(row, name, iv.NAN_INTERVAL)
        row["note"] = "below meter resolution" if row["below_resolution"] else "none"
        if row["level"] in dense:
            row["verdict"] = iv.BASELINE
        elif len(base):
            reduction = iv.ratio(group["energy_kwh"], base["energy_kwh"]).scaled(-100.0, 100.0)
            retention, _ = _quality_interval(group, base)
            _put(row, "reduction_pct", reduction)
            _put(row, "retention_pct", retention)
            _put(row, "step_time_ratio", iv.ratio(group["step_ms"], base["step_ms"]))
            row["verdict"] = _verdict(reduction, retention, _evidence_reasons(group, base, energy=True), len(group))
        else:
            row["note"] = (
                f"dense measured with {', '.join(map(str, same['energy_method'].unique()))}: not compared"
                if len(same)
                else "no dense run"
            )
            row["verdict"] = iv.insufficient([row["note"]])
        rows.append(row)
    rows.sort(
        key=lambda r: (
            str(r["experiment"]),
            str(r["model"]),
            str(r["task"]),
            str(r["energy_method"]),
            ranks.get(r["level"], math.inf),
            r["level"],
        )
    )
    rows.append(
        {
            "level": PAPER_LABEL,
            "verdict": iv.REFERENCE,
            "note": paper.ENERGY_CLAIM,
            "paper_reduction_pct": "–".join(f"{v:g}" for v in paper.PAPER_ENERGY_REDUCTION_PCT),
            "paper_retention_pct": f"≥{paper.PAPER_ACCURACY_RETENTION_PCT:g}",
        }
    )
    intervals = [
        f"{name}{suffix}"
        for name in ("reduction_pct", "retention_pct", "step_time_ratio")
        for suffix in ("", "_lo", "_hi", "_method")
    ]
    columns = [
        "level",
        *ENERGY_KEYS[:4],
        "evidence",
        "n",
        "dense_n",
        "seeds",
        "energy_kwh_mean",
        "energy_kwh_std",
        "energy_j_mean",
        "energy_j_std",
        "j_per_train_unit_mean",
        "j_per_eval_example_mean",
        "below_resolution",
        "accuracy_mean",
        "accuracy_std",
        "trainable_params_mean",
        "chance",
        "mse_mean",
        "mse_std",
        "step_ms_mean",
        *intervals,
        "verdict",
        "note",
        "paper_reduction_pct",
        "paper_retention_pct",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["n"], table["dense_n"] = as_count(table["n"]), as_count(table["dense_n"])
    # the claim is the reference for every level's comparison, so every row carries it
    table["paper_reduction_pct"] = rows[-1]["paper_reduction_pct"]
    table["paper_retention_pct"] = rows[-1]["paper_retention_pct"]
    return table


def _verdict(reduction: iv.Interval, retention: iv.Interval, reasons: list[str], n: int) -> str:
    """Both parts of §5.2's claim (reduction ≥ 40 %, retention ≥ 95 %) read off their whole intervals."""
    blocked = iv.insufficient(reasons)
    if blocked:
        return blocked
    return iv.combine(
        [
            iv.one_sided(reduction, paper.PAPER_ENERGY_REDUCTION_PCT[0], True, n),
            iv.one_sided(retention, paper.PAPER_ACCURACY_RETENTION_PCT, True, n),
        ]
    )


def _eq(series: pd.Series, value: Any) -> pd.Series:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return series.isna() if missing else series == value


def _mask(frame: pd.DataFrame, row: Mapping[str, Any], keys: Iterable[str]) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for key in keys:
        mask &= _eq(frame[key], row[key])
    return mask


def _shown(row: Mapping[str, Any], name: str, n: str, suffix: str = "", digits: int = 3) -> str:
    """``value [lo, hi] (n=…)`` from a row's numeric interval columns."""
    value = row.get(name)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return NOT_MEASURED
    interval = iv.Interval(
        value, row.get(f"{name}_lo", math.nan), row.get(f"{name}_hi", math.nan), 0, str(row.get(f"{name}_method", ""))
    )
    text = iv.show(interval, digits, suffix)
    return text.replace("(n=0)", f"(n={n})")


def _pair_n(row: Mapping[str, Any]) -> str:
    return f"{count(row.get('n'))} vs {count(row.get('dense_n'))} dense"


def display_energy(table: pd.DataFrame) -> pd.DataFrame:
    """Human §5.2 table; the paper row shows its claim in the measured columns' place, clearly labelled."""
    rows = []
    for row in table.to_dict("records"):
        is_paper = row["level"] == PAPER_LABEL
        out = {"level": row["level"], **{k: row[k] for k in ENERGY_KEYS[:4]}, "evidence": row["evidence"]}
        out["n"] = count(row["n"])
        out["train energy J"] = mean_std(row["energy_j_mean"], row["energy_j_std"], row["n"])
        out["J / train unit"] = fmt(row["j_per_train_unit_mean"], 3)
        out["J / eval example"] = fmt(row["j_per_eval_example_mean"], 3)
        out["accuracy"] = mean_std(row["accuracy_mean"], row["accuracy_std"], row["n"])
        out["trainable params"] = params_text(row["trainable_params_mean"])
        out["chance"] = row["chance"]
        out["mse"] = mean_std(row["mse_mean"], row["mse_std"], row["n"])
        pair = _pair_n(row)
        out["reduction vs dense %"] = row["paper_reduction_pct"] if is_paper else _shown(row, "reduction_pct", pair)
        out["retention vs dense %"] = row["paper_retention_pct"] if is_paper else _shown(row, "retention_pct", pair)
        out["step time ÷ dense"] = "-" if is_paper else _shown(row, "step_time_ratio", pair)
        out["verdict"], out["note"] = row["verdict"], row["note"] or "none"
        if is_paper:
            out |= {
                k: "-"
                for k in (
                    *ENERGY_KEYS[:4],
                    "evidence",
                    "n",
                    "train energy J",
                    "J / train unit",
                    "J / eval example",
                    "accuracy",
                    "trainable params",
                    "chance",
                    "mse",
                )
            }
        rows.append(out)
    return fill_missing(pd.DataFrame(rows))


# ----------------------------------------------------------------------------------------- §5.3 accuracy

ACC_KEYS = ["experiment", "model", "task", "level"]


def _accuracy_verdict(kind: str, interval: iv.Interval, reasons: list[str], n: int) -> str:
    blocked = iv.insufficient(reasons)
    if blocked:
        return blocked
    claim = float(paper.PAPER_ACCURACY[kind]["value"])  # type: ignore[arg-type]
    if kind == "regression":  # "< 2 % MSE increase": the claim holds below the threshold
        word, need = iv.one_sided(interval, claim, False, n)
    else:
        word, need = iv.one_sided(interval, claim, True, n)
    return iv.combine([(word, need)])


def _gain_interval(group: pd.DataFrame) -> iv.Interval:
    """Accuracy gain over the untrained model (a fixed, cached number): mean gain with scipy's Student t
    95 % interval across seeds; one run: lm-eval's binomial stderr, normal quantile."""
    gain = (group["accuracy"] - group["base_accuracy"]).dropna()
    if gain.empty:
        return iv.NAN_INTERVAL
    mean = float(gain.mean())
    if len(gain) == 1:
        se = float(group["accuracy_stderr"].dropna().iloc[0]) if group["accuracy_stderr"].notna().any() else math.nan
        z = float(iv.stats.norm.ppf(0.975))
        return iv.Interval(mean, mean - z * se, mean + z * se, 1, "binomial stderr")
    res = iv.stats.ttest_1samp(gain.to_numpy(), 0.0).confidence_interval(iv.LEVEL)
    return iv.Interval(mean, float(res.low), float(res.high), len(gain), "Student t across seeds")


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """§5.3: per task, each non-dense level (all levels are shown: picking the best on the test set would
    flatter the method) against dense: retention % (accuracy ratio) or MSE increase % (regression) with 95 %
    intervals, the gain over the untrained model, chance level, a three-state verdict, and the paper's
    claim for that kind of task beside it; kinds we have not run still get a row."""
    runs = outside_tuning(completed_training(frame))
    warn_mixed_versions(runs, "accuracy table")
    rows = []
    ranks = paper.level_ranks(runs)
    if not runs.empty:
        stats = group_stats(runs, ACC_KEYS, ["accuracy", "mse"])
        dense = set(runs.loc[runs["baseline"].astype(bool), "level"])
        for row in stats.to_dict("records"):
            if row["level"] in dense:
                continue
            group = _group(runs, row, ACC_KEYS)
            kind = paper.claim_for(group["family"].iloc[0])
            if kind is None:  # a task that matches no §5.3 claim (generated, commonsense...) is left out
                continue
            regression = math.isnan(row["accuracy_mean"]) and not math.isnan(row["mse_mean"])
            value = "mse" if regression else "accuracy"
            base = runs[runs["baseline"].astype(bool) & _mask(runs, row, ACC_KEYS[:3])]
            b = stats[stats["level"].isin(dense) & _mask(stats, row, ACC_KEYS[:3])]
            b = b.iloc[0] if len(b) else None
            out = {
                **{k: row[k] for k in ACC_KEYS},
                "kind": kind,
                "metric": value,
                "n": row["n"],
                "seeds": row["seeds"],
                "dense_n": b["n"] if b is not None else math.nan,
                "dense_mean": b[f"{value}_mean"] if b is not None else math.nan,
                "dense_std": b[f"{value}_std"] if b is not None else math.nan,
                "mean": row[f"{value}_mean"],
                "std": row[f"{value}_std"],
                "trainable_params": group["trainable_params"].mean(),
                "dense_trainable_params": base["trainable_params"].mean() if len(base) else math.nan,
                "chance": chance_state(group),
                "dense_chance": chance_state(base) if len(base) else NOT_MEASURED,
            }
            for name in ("retention_pct", "mse_increase_pct", "gain_over_base"):
                _put(out, name, iv.NAN_INTERVAL)
            reasons = _evidence_reasons(group, base, energy=False) if len(base) else ["no dense run"]
            if len(base) and regression:
                interval = iv.ratio(group["mse"], base["mse"]).scaled(100.0, -100.0)
                _put(out, "mse_increase_pct", interval)
            elif len(base):
                interval = iv.ratio(
                    group["accuracy"], base["accuracy"], group["accuracy_stderr"], base["accuracy_stderr"]
                ).scaled(100.0)
                _put(out, "retention_pct", interval)
            else:
                interval = iv.NAN_INTERVAL
            if not regression:
                _put(out, "gain_over_base", _gain_interval(group))
            out["verdict"] = _accuracy_verdict(out["kind"], interval, reasons, int(row["n"]))
            rows.append(out)
    for row in rows:
        claim = paper.PAPER_ACCURACY[row["kind"]]
        row["paper_claim"], row["paper_value"] = paper.claim_text(row["kind"], row.get("task")), claim["value"]
    for kind, claim in paper.PAPER_ACCURACY.items():
        if not any(r["kind"] == kind for r in rows):
            rows.append(
                {
                    "kind": kind,
                    "level": NOT_MEASURED,
                    "paper_claim": claim["claim"],
                    "paper_value": claim["value"],
                    "verdict": iv.insufficient(["not run"]),
                }
            )
    intervals = [
        f"{name}{suffix}"
        for name in ("retention_pct", "mse_increase_pct", "gain_over_base")
        for suffix in ("", "_lo", "_hi", "_method")
    ]
    columns = [
        *ACC_KEYS,
        "kind",
        "metric",
        "n",
        "seeds",
        "mean",
        "std",
        "trainable_params",
        "chance",
        "dense_n",
        "dense_mean",
        "dense_std",
        "dense_trainable_params",
        "dense_chance",
        *intervals,
        "verdict",
        "paper_claim",
        "paper_value",
    ]
    order = list(paper.PAPER_ACCURACY)
    table = pd.DataFrame(rows, columns=columns)
    table["n"], table["dense_n"] = as_count(table["n"]), as_count(table["dense_n"])
    table["_k"] = table["kind"].map(order.index)
    table["_l"] = table["level"].map(lambda lv: ranks.get(lv, math.inf))
    return (
        table.sort_values(["_k", "experiment", "task", "_l"], na_position="last")
        .drop(columns=["_k", "_l"])
        .reset_index(drop=True)
    )


def display_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for row in table.to_dict("records"):
        out = {k: row[k] for k in (*ACC_KEYS, "kind", "metric")} | {"n": count(row["n"])}
        out["LoRAven level"] = out.pop("level")
        out["value"] = mean_std(row["mean"], row["std"], row["n"])
        out["trainable params"] = params_text(row["trainable_params"])
        out["chance"] = row["chance"]
        out["dense"] = mean_std(row["dense_mean"], row["dense_std"], row["dense_n"])
        out["dense params"] = params_text(row["dense_trainable_params"])
        pair = _pair_n(row)
        out["retention %"] = _shown(row, "retention_pct", pair)
        out["MSE increase %"] = _shown(row, "mse_increase_pct", pair)
        out["gain over base"] = _shown(row, "gain_over_base", count(row["n"]))
        out["verdict"] = row["verdict"]
        out["paper_claim"] = row["paper_claim"]
        rows.append(out)
    return fill_missing(pd.DataFrame(rows))


def outside_tuning(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs of the paper's tables: not the tuned/untuned runs of ``python -m loraven.tune`` (two learning
    rates of one method would be averaged into one level; they have their own table, analysis/tuned.py), and not
    re-scored adapters (``rescore``: trained on another task; they appear beside their source in the comparison)."""
    if "tuning_role" in runs:
        runs = runs[runs["tuning_role"].isna()]
    if "rescore_source" in runs:
        runs = runs[runs["rescore_source"].isna()]
    return runs


def params_text(value: Any) -> str:
    """A trainable-parameter count with thousands separators; missing → "not measured"."""
    if isinstance(value, (int, float)) and not math.isnan(float(value)):
        return f"{int(round(float(value))):,}"
    return NOT_MEASURED


# ----------------------------------------------------------------------------------------- runs.csv

CONFIG_FIELDS = (
    "seed",
    "job",
    "experiment_name",
    "adapter.name",
    "adapter.mode",
    "adapter.r",
    "adapter.rank",
    "adapter.r_max",
    "adapter.r_min",
    "adapter.alpha",
    "adapter.target_modules",
    "scheduler.name",
    "task.name",
    "model.kind",
    "model.name_or_path",
    "trainer.lr",
    "trainer.steps",
    "trainer.batch_size",
    "energy.name",
    "device",
)
_DROP = ("config", "bench", "adapter.ranks", "train.loss_curve", "traceback")


def runs_table(records: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Every run (failed and skipped too, with reasons), flattened; huge blobs dropped, key config kept."""
    rows = []
    for r in records:
        slim = {k: v for k, v in r.items() if k not in ("config", "bench") and not k.startswith("_")}
        flat = pd.json_normalize(slim).iloc[0].to_dict()
        flat = {k: v for k, v in flat.items() if not any(k == d or k.startswith(d + ".") for d in _DROP)}
        flat = {k: (str(v) if isinstance(v, (list, dict)) else v) for k, v in flat.items()}
        config = r.get("config") or {}
        for field in CONFIG_FIELDS:
            value: Any = config
            for part in field.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if value is not None:
                flat[f"config.{field}"] = str(value) if isinstance(value, (list, dict)) else value
        flat["seed"] = seed_of(r)
        flat["n_bench_rows"] = len(r.get("bench") or [])
        flat["run_dir"] = r.get(RUN_DIR_KEY)
        rows.append(flat)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    first = [
        c
        for c in (
            "experiment",
            "run_id",
            "status",
            "reason",
            "seed",
            "adapter.type",
            "adapter.scheduler",
            "metrics.task",
            "metrics.accuracy",
            "metrics.mse",
            "energy.kwh",
            "energy.method",
        )
        if c in table
    ]
    table = table[first + [c for c in table.columns if c not in first]]
    table["reason"] = table["reason"].where(table["reason"].notna(), "none") if "reason" in table else "none"
    return table.sort_values(["experiment", "status", "run_id"], na_position="last").reset_index(drop=True)
