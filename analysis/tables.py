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
    table["size"] = table["batch"] * table["dim"]
    return table.sort_values(["device", "dtype", "size", "rank"]).drop(columns="size").reset_index(drop=True)


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
            k.replace("_", " "): _times(row[k])
            for k in ("fusion_speedup", "inplace_speedup", "fused_vs_factored")
        }
        out["fusion pays"] = row["fusion_pays"]
        for key in ("original_ms", "fused_ms", "inplace_ms"):
            out[f"paper_{key}"] = row[f"paper_{key}"]
        for key in ("fusion_speedup", "inplace_speedup"):
            out[f"paper_{key}"] = _times(row[f"paper_{key}"], missing=NOT_REPORTED)
        rows.append(out)
    return fill_missing(pd.DataFrame(rows))


def _times(value: float, missing: str = NOT_MEASURED) -> str:
    return missing if value is None or math.isnan(value) else f"{value:.2f}×"


# ----------------------------------------------------------------------------------------- §5.2 energy

ENERGY_KEYS = ["experiment", "model", "task", "energy_method", "level"]
VERDICT_RULE = (
    f"claim reproduced = reduction ≥ {paper.PAPER_ENERGY_REDUCTION_PCT[0]:g} % and retention ≥ "
    f"{paper.PAPER_ACCURACY_RETENTION_PCT:g} % vs dense (same experiment, model, task and energy "
    "method); regression retention = 100 − MSE increase %"
)


def _quality_vs(row: Mapping[str, Any], base: Mapping[str, Any]) -> float:
    """Retention % of the dense model's quality: accuracy ratio, or 100 − MSE increase % for regression."""
    if not math.isnan(row["accuracy_mean"]):
        return row["accuracy_mean"] / base["accuracy_mean"] * 100.0
    if not math.isnan(row["mse_mean"]):
        return 100.0 - (row["mse_mean"] / base["mse_mean"] - 1.0) * 100.0
    return math.nan


def energy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """§5.2: each level's energy and quality, mean ± std over seeds, reduction % and retention % vs the
    dense run of the same experiment/model/task *measured with the same method* (methods are never mixed
    in one comparison), a verdict against the paper's claim, and the paper's claim as a reference row."""
    runs = completed_training(frame)
    warn_mixed_versions(runs, "energy table")
    stats = group_stats(runs, ENERGY_KEYS, ["energy_kwh", "accuracy", "mse"]) if not runs.empty else None
    rows = []
    for row in [] if stats is None else stats.to_dict("records"):
        row["energy_j_mean"], row["energy_j_std"] = (
            row["energy_kwh_mean"] * 3.6e6,
            row["energy_kwh_std"] * 3.6e6,
        )
        same = stats[(stats["level"] == "dense") & _same(stats, row, ENERGY_KEYS[:3])]
        base = same[_eq(same["energy_method"], row["energy_method"])]
        row["reduction_pct"] = row["retention_pct"] = math.nan
        row["note"] = "none"
        if len(base):
            b = base.iloc[0]
            row["reduction_pct"] = (1.0 - row["energy_kwh_mean"] / b["energy_kwh_mean"]) * 100.0
            row["retention_pct"] = _quality_vs(row, b)
        elif len(same):
            row["note"] = f"dense measured with {', '.join(map(str, same['energy_method']))}: not compared"
        else:
            row["note"] = "no dense run"
        row["verdict"] = _verdict(row)
        rows.append(row)
    rows.sort(
        key=lambda r: (
            str(r["experiment"]),
            str(r["model"]),
            str(r["task"]),
            str(r["energy_method"]),
            paper.level_rank(r["level"]),
            r["level"],
        )
    )
    rows.append(
        {
            "level": PAPER_LABEL,
            "verdict": "reference",
            "note": paper.ENERGY_CLAIM,
            "paper_reduction_pct": "–".join(f"{v:g}" for v in paper.PAPER_ENERGY_REDUCTION_PCT),
            "paper_retention_pct": f"≥{paper.PAPER_ACCURACY_RETENTION_PCT:g}",
        }
    )
    columns = [
        "level",
        *ENERGY_KEYS[:4],
        "n",
        "seeds",
        "energy_kwh_mean",
        "energy_kwh_std",
        "energy_j_mean",
        "energy_j_std",
        "accuracy_mean",
        "accuracy_std",
        "mse_mean",
        "mse_std",
        "reduction_pct",
        "retention_pct",
        "verdict",
        "note",
        "paper_reduction_pct",
        "paper_retention_pct",
    ]
    table = pd.DataFrame(rows, columns=columns)
    table["n"] = as_count(table["n"])
    # the claim is the reference for every level's comparison, so every row carries it
    table["paper_reduction_pct"] = rows[-1]["paper_reduction_pct"]
    table["paper_retention_pct"] = rows[-1]["paper_retention_pct"]
    return table


def _eq(series: pd.Series, value: Any) -> pd.Series:
    missing = value is None or (isinstance(value, float) and math.isnan(value))
    return series.isna() if missing else series == value


def _same(stats: pd.DataFrame, row: Mapping[str, Any], keys: Iterable[str]) -> pd.Series:
    mask = pd.Series(True, index=stats.index)
    for key in keys:
        mask &= _eq(stats[key], row[key])
    return mask


def _verdict(row: Mapping[str, Any]) -> str:
    if row["level"] == "dense":
        return "baseline"
    if math.isnan(row["reduction_pct"]) or math.isnan(row["retention_pct"]):
        return NOT_MEASURED
    ok = (
        row["reduction_pct"] >= paper.PAPER_ENERGY_REDUCTION_PCT[0]
        and row["retention_pct"] >= paper.PAPER_ACCURACY_RETENTION_PCT
    )
    return "claim reproduced" if ok else "not reproduced"


def display_energy(table: pd.DataFrame) -> pd.DataFrame:
    """Human §5.2 table; the paper row shows its claim in the measured columns' place, clearly labelled."""
    rows = []
    for row in table.to_dict("records"):
        is_paper = row["level"] == PAPER_LABEL
        out = {"level": row["level"], **{k: row[k] for k in ENERGY_KEYS[:4]}, "n": count(row["n"])}
        for name, key in (
            ("energy kWh", "energy_kwh"),
            ("energy J", "energy_j"),
            ("accuracy", "accuracy"),
            ("mse", "mse"),
        ):
            out[name] = mean_std(row[f"{key}_mean"], row[f"{key}_std"], row["n"])
        out["reduction vs dense %"] = row["paper_reduction_pct"] if is_paper else fmt(row["reduction_pct"], 3)
        out["retention vs dense %"] = row["paper_retention_pct"] if is_paper else fmt(row["retention_pct"], 4)
        out["verdict"], out["note"] = row["verdict"], row["note"] or "none"
        if is_paper:
            out |= {k: "-" for k in (*ENERGY_KEYS[:4], "n", "energy kWh", "energy J", "accuracy", "mse")}
        rows.append(out)
    return fill_missing(pd.DataFrame(rows))


# ----------------------------------------------------------------------------------------- §5.3 accuracy

ACC_KEYS = ["experiment", "model", "task", "level"]


def accuracy_table(frame: pd.DataFrame) -> pd.DataFrame:
    """§5.3: per task, each non-dense level (all levels are shown: picking the best on the test set would
    flatter the method) against dense: retention % (accuracy ratio) or MSE increase % (regression), with
    the paper's claim for that kind of task beside it; kinds we have not run still get a row."""
    runs = completed_training(frame)
    warn_mixed_versions(runs, "accuracy table")
    rows = []
    if not runs.empty:
        stats = group_stats(runs, ACC_KEYS, ["accuracy", "mse"])
        for row in stats.to_dict("records"):
            if row["level"] == "dense":
                continue
            regression = math.isnan(row["accuracy_mean"]) and not math.isnan(row["mse_mean"])
            value = "mse" if regression else "accuracy"
            base = stats[(stats["level"] == "dense") & _same(stats, row, ACC_KEYS[:3])]
            b = base.iloc[0] if len(base) else None
            out = {
                **{k: row[k] for k in ACC_KEYS},
                "kind": paper.task_kind(row["task"], regression),
                "metric": value,
                "n": row["n"],
                "seeds": row["seeds"],
                "dense_n": b["n"] if b is not None else math.nan,
                "dense_mean": b[f"{value}_mean"] if b is not None else math.nan,
                "dense_std": b[f"{value}_std"] if b is not None else math.nan,
                "mean": row[f"{value}_mean"],
                "std": row[f"{value}_std"],
            }
            ratio = out["mean"] / out["dense_mean"]
            out["retention_pct"] = math.nan if regression else ratio * 100.0
            out["mse_increase_pct"] = (ratio - 1.0) * 100.0 if regression else math.nan
            rows.append(out)
    for row in rows:
        claim = paper.PAPER_ACCURACY[row["kind"]]
        row["paper_claim"], row["paper_value"] = claim["claim"], claim["value"]
        ours = row["mse_increase_pct"] if row["kind"] == "regression" else row["retention_pct"]
        row["meets_paper"] = (
            NOT_MEASURED
            if math.isnan(ours)
            else (
                "yes"
                if (ours < claim["value"] if row["kind"] == "regression" else ours >= claim["value"])
                else "no"
            )
        )
    for kind, claim in paper.PAPER_ACCURACY.items():
        if not any(r["kind"] == kind for r in rows):
            rows.append(
                {
                    "kind": kind,
                    "level": NOT_MEASURED,
                    "paper_claim": claim["claim"],
                    "paper_value": claim["value"],
                    "meets_paper": NOT_MEASURED,
                }
            )
    columns = [
        *ACC_KEYS,
        "kind",
        "metric",
        "n",
        "seeds",
        "mean",
        "std",
        "dense_n",
        "dense_mean",
        "dense_std",
        "retention_pct",
        "mse_increase_pct",
        "meets_paper",
        "paper_claim",
        "paper_value",
    ]
    order = list(paper.PAPER_ACCURACY)
    table = pd.DataFrame(rows, columns=columns)
    table["n"], table["dense_n"] = as_count(table["n"]), as_count(table["dense_n"])
    table["_k"] = table["kind"].map(order.index)
    table["_l"] = table["level"].map(paper.level_rank)
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
        out["dense"] = mean_std(row["dense_mean"], row["dense_std"], row["dense_n"])
        out["retention %"] = fmt(row["retention_pct"])
        out["MSE increase %"] = fmt(row["mse_increase_pct"])
        out["meets paper"] = row["meets_paper"]
        out["paper_claim"] = row["paper_claim"]
        rows.append(out)
    return fill_missing(pd.DataFrame(rows))


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
