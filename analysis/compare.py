"""The comparison the user ran: per group (analysis.groups), one row per configuration with its accuracy
``value [lo, hi] (n)``, the change against a reference (paired by seed where the seeds match), time, energy with
its evidence, trainable parameters, each job's own peak memory, retention when recorded, and a verdict.

The verdict is read off the interval of the difference (analysis.intervals.difference_verdict): ``better`` /
``worse`` only when the whole interval is on one side of zero in the task's own direction (MSE: lower is
better); ``no resolved difference — about N seeds`` when it straddles zero; ``insufficient evidence (why)`` when
the data cannot carry a verdict (no interval, both runs at chance, runs too short to train).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis import intervals as iv
from analysis.groups import GROUP_KEYS, group_title, groups, is_set, method_name, row_keys, short_key, show_setting
from analysis.stats import NOT_MEASURED
from analysis.tables import chance_state

REFERENCE_KEYS = ("adapter", "scheduler", "label")  # plus any setting that differs in a group (lr, r_max, ...)


@dataclass
class GroupComparison:
    """One group's comparison: its key and title, the settings that tell its rows apart, the numeric rows (the
    reference first) and why that row is the reference."""

    key: dict[str, Any]
    title: str
    settings: list[str]
    rows: pd.DataFrame
    reference: str
    reference_why: str
    runs: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)


def parse_reference(text: str | None) -> dict[str, str]:
    """``adapter=lora`` / ``scheduler=linear`` / ``adapter=loraven,scheduler=linear`` / ``lr=0.001`` → a dict;
    a malformed item raises ValueError naming it."""
    if not text:
        return {}
    out = {}
    for item in str(text).replace(" ", ",").split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"--reference {text!r}: {item!r} is not KEY=VALUE (e.g. adapter=lora, scheduler=linear, lr=0.001)"
            )
        out[key.strip()] = value.strip()
    return out


def _per_seed(runs: pd.DataFrame, column: str) -> dict[Any, float]:
    """{seed: mean value of that seed's runs}; a run without a recorded seed counts on its own."""
    values = runs[["seed", "run_id", column]].copy()
    values["key"] = [s if is_set(s) else f"run {r}" for s, r in zip(values["seed"], values["run_id"], strict=True)]
    values = values.dropna(subset=[column])
    return values.groupby("key", sort=False)[column].mean().to_dict()


def _stderr(runs: pd.DataFrame, column: str) -> float:
    """A single run's stderr of its value: lm-eval's (recorded), else √(p(1−p)/n) from its n documents."""
    if column != "accuracy" or len(runs) != 1:
        return math.nan
    run = runs.iloc[0]
    se = run["accuracy_stderr"]
    if math.isfinite(se):
        return float(se)
    p, n = run["accuracy"], run["eval_n"]
    return math.sqrt(p * (1 - p) / n) if math.isfinite(p) and math.isfinite(n) and n > 0 else math.nan


def value_interval(runs: pd.DataFrame, column: str) -> iv.Interval:
    """The row's value: one run → Wilson over its documents (accuracy) or none (MSE); several seeds → the
    percentile bootstrap of the mean across seeds."""
    per_seed = _per_seed(runs, column)
    if not per_seed:
        return iv.NAN_INTERVAL
    if len(per_seed) == 1 and len(runs) == 1:
        run = runs.iloc[0]
        if column == "accuracy":
            return iv.single_run_accuracy(run["accuracy"], run["eval_n"], run["accuracy_stderr"], int(run["n_tasks"]))
        return iv.Interval(float(run[column]), math.nan, math.nan, 1, f"one run: no interval for {column}")
    return iv.bootstrap_mean(list(per_seed.values()), "across seeds")


def _mean_interval(runs: pd.DataFrame, column: str) -> iv.Interval:
    per_seed = _per_seed(runs, column)
    if not per_seed:
        return iv.NAN_INTERVAL
    return iv.bootstrap_mean(list(per_seed.values()))


def _retention(runs: pd.DataFrame) -> iv.Interval:
    """Mean change on the retention tasks: one run → its recorded interval; several → bootstrap across seeds."""
    part = runs.dropna(subset=["retention"])
    if part.empty:
        return iv.NAN_INTERVAL
    if len(part) == 1:
        run = part.iloc[0]
        return iv.Interval(run["retention"], run["retention_lo"], run["retention_hi"], 1, "one run: recorded")
    return _mean_interval(part, "retention")


def _scope(runs: pd.DataFrame) -> str:
    scopes = set(runs["memory_scope"].dropna().astype(str))
    if "whole process" in scopes:
        return "whole process"
    return "job" if scopes == {"job"} else (", ".join(sorted(scopes)) or NOT_MEASURED)


def _row_name(label: str, adapter_type: str, scheduler: str, show_scheduler: bool, task: Any, rescored: bool) -> str:
    name = method_name(label, adapter_type)
    if show_scheduler:
        name += f" · scheduler={scheduler}"
    if rescored:
        name += f" (re-scored on {task})"
    return name


def _pick_reference(rows: list[dict[str, Any]], wanted: Mapping[str, str]) -> tuple[int, str]:
    """Index of the reference row and why: the user's ``--reference`` when it names exactly one row (the first
    by table order when several match), else full fine-tuning (``adapter.baseline``), else the first method by
    ``adapter.order``."""
    trained = [i for i, r in enumerate(rows) if not r["rescored"]] or list(range(len(rows)))
    note = ""
    if wanted:
        matches = [i for i in trained if all(_matches(rows[i], k, v) for k, v in wanted.items())]
        spec = ",".join(f"{k}={v}" for k, v in wanted.items())
        if matches:
            extra = f" (first of {len(matches)} matching rows)" if len(matches) > 1 else ""
            return matches[0], f"--reference {spec}{extra}"
        note = f"--reference {spec} matches no row in this group; "
    base = [i for i in trained if rows[i]["baseline"]]
    if base:
        return base[0], note + "full fine-tuning (adapter.baseline) is in the group"
    return trained[0], note + "no full fine-tuning in this group: the first method by adapter.order"


def _matches(row: Mapping[str, Any], key: str, value: str) -> bool:
    if key == "adapter":
        return str(row["adapter_type"]) == value
    if key == "scheduler":
        return str(row["scheduler"]) == value
    if key == "label":
        return str(row["label"]) == value
    for full, text in row["settings"].items():
        if key in (full, short_key(full)):
            shown = show_setting(text)
            try:
                return math.isclose(float(shown), float(value))
            except ValueError:
                return shown == value
    return False


def _reasons(row_runs: pd.DataFrame, ref_runs: pd.DataFrame, column: str) -> list[str]:
    """Why a comparison cannot carry a verdict even with an interval."""
    reasons = []
    if column == "accuracy" and chance_state(row_runs) == "at chance" and chance_state(ref_runs) == "at chance":
        reasons.append("both at chance level")
    steps = pd.concat([row_runs["steps"], ref_runs["steps"]]).dropna()
    if len(steps) and steps.min() < iv.MIN_TRAIN_STEPS:
        reasons.append(f"runs too short to train ({int(steps.min())} steps < {iv.MIN_TRAIN_STEPS})")
    return reasons


def compare_group(key: Mapping[str, Any], runs: pd.DataFrame, wanted: Mapping[str, str]) -> GroupComparison:
    """One group's rows, the reference first, with every column the comparison table shows."""
    settings, keys = row_keys(runs)
    column = "accuracy" if runs["accuracy"].notna().any() else "mse"
    hib = runs["higher_is_better"].dropna()
    higher = bool(hib.iloc[0]) if len(hib) else column == "accuracy"
    # the scheduler is named where it tells rows apart: a method run with several schedulers, or a non-static one
    several = runs.groupby("adapter_type")["scheduler"].nunique()
    rows: list[dict[str, Any]] = []
    for row_key, part in runs.groupby(keys, sort=False):
        adapter_type, scheduler, label, rescored_flag, *values = row_key
        rescored = rescored_flag == "rescored"
        first = part.iloc[0]
        row: dict[str, Any] = {
            "group": group_title(key),
            **{f"group_{k}": key[k] for k in GROUP_KEYS},
            "row": _row_name(
                label,
                adapter_type,
                scheduler,
                scheduler != "static" or several.get(adapter_type, 1) > 1,
                key["task"],
                rescored,
            ),
            "method": method_name(label, adapter_type),
            "adapter_type": adapter_type,
            "scheduler": scheduler,
            "label": label,
            "order": part["level_order"].min(),
            "baseline": bool(part["baseline"].any()) and not rescored,
            "rescored": rescored,
            "rescored_from": ",".join(sorted(str(s) for s in part["rescore_source"].dropna())) if rescored else None,
            "settings": dict(zip(settings, values, strict=True)),
            "metric_column": column,
            "higher_is_better": higher,
            "n_runs": len(part),
            "seeds": ",".join(str(s) for s in sorted(part["seed"].dropna().unique(), key=str)) or None,
            "run_ids": ",".join(str(r) for r in part["run_id"]),
            "_runs": part,
        }
        for setting, value in zip(settings, values, strict=True):
            row[f"setting:{short_key(setting)}"] = show_setting(value)
        row["name"] = row["row"]  # the display table shows the settings in columns of their own
        if settings and not rescored:  # figures and the CSV need a name that tells every row apart
            row["row"] += " · " + " ".join(
                f"{short_key(k)}={show_setting(v)}" for k, v in zip(settings, values, strict=True)
            )
        _put(row, "value", value_interval(part, column))
        row["value_n_docs"] = first["eval_n"] if len(part) == 1 else math.nan
        row["chance"] = chance_state(part) if column == "accuracy" else "no chance level"
        row["steps_min"] = part["steps"].min()
        row["train_s"], row["eval_s"] = part["train_s"].mean(), part["eval_s"].mean()
        energy = _mean_interval(part.assign(energy_j=part["energy_kwh"] * 3.6e6), "energy_j")
        _put(row, "energy_j", energy)
        row["energy_evidence"] = ", ".join(sorted(set(part["energy_evidence"].astype(str))))
        row["energy_below_resolution"] = bool(part["energy_below_resolution"].astype(bool).any())
        row["trainable_params"] = part["trainable_params"].mean()
        row["total_params"] = part["total_params"].mean()
        row["peak_mb"] = part["peak_mb"].mean()
        row["peak_mb_max"] = part["peak_mb"].max()
        row["memory_scope"] = _scope(part)
        row["base_accuracy"] = part["base_accuracy"].mean()
        _put(row, "retention", _retention(part))
        row["retention_tasks"] = ",".join(sorted({t for t in part["retention_tasks"].dropna()})) or None
        rows.append(row)
    rows.sort(
        key=lambda r: (
            r["rescored"],
            r["order"] if math.isfinite(r["order"]) else math.inf,
            r["scheduler"] != "static",
            r["label"],
            tuple(str(v) for v in r["settings"].values()),
        )
    )
    ref_index, why = _pick_reference(rows, wanted)
    rows.insert(0, rows.pop(ref_index))
    ref = rows[0]
    ref_seed = _per_seed(ref["_runs"], column)
    for row in rows:
        row["is_reference"] = row is ref
        if row is ref:
            _put(row, "change", iv.NAN_INTERVAL)
            row["verdict"], row["seeds_needed"] = iv.REFERENCE, None
            continue
        diff = iv.seed_difference(
            _per_seed(row["_runs"], column), ref_seed, _stderr(row["_runs"], column), _stderr(ref["_runs"], column)
        )
        _put(row, "change", diff)
        row["verdict"], row["seeds_needed"] = iv.difference_verdict(
            diff, higher, _reasons(row["_runs"], ref["_runs"], column)
        )
    table = pd.DataFrame(rows)
    return GroupComparison(dict(key), group_title(key), settings, table, ref["row"], why, runs)


def _put(row: dict[str, Any], name: str, interval: iv.Interval) -> None:
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = interval.value, interval.lo, interval.hi
    row[f"{name}_n"], row[f"{name}_method"] = interval.n, interval.method


def compare(frame: pd.DataFrame, reference: str | Mapping[str, str] | None = None) -> list[GroupComparison]:
    """Every group's comparison (analysis.groups.groups), each against ``reference`` where it names a row."""
    wanted = parse_reference(reference) if isinstance(reference, str) or reference is None else dict(reference)
    return [compare_group(key, runs, wanted) for key, runs in groups(frame)]


def comparison_frame(comparisons: Sequence[GroupComparison]) -> pd.DataFrame:
    """All groups' rows in one numeric frame (the CSV): intervals in ``_lo``/``_hi`` columns, no run objects."""
    if not comparisons:
        return pd.DataFrame()
    frames = [c.rows.drop(columns=["_runs", "settings"]) for c in comparisons]
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------------------- display


def _num(value: Any, digits: int = 3) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return NOT_MEASURED
    return f"{value:.{digits}g}"


def n_text(row: Mapping[str, Any], name: str) -> str:
    """``n=200 documents, 1 seed`` for one run, ``n=3 seeds`` across seeds."""
    n = row.get(f"{name}_n") or 0
    method = str(row.get(f"{name}_method", ""))
    docs = row.get("value_n_docs", math.nan)
    if "Wilson" in method and math.isfinite(docs):
        return f"n={int(docs)} docs, 1 seed"
    if "macro average" in method and math.isfinite(docs):
        tasks = method.split("macro average of ")[-1].split(" tasks")[0]
        return f"n={int(docs)} docs in {tasks} tasks, 1 seed"
    if method.startswith("one run"):
        return "1 seed"
    return f"n={int(n)} seeds" if n else "n=0"


def show_value(row: Mapping[str, Any], name: str = "value", digits: int = 3) -> str:
    """``0.612 [0.55, 0.67] (n=200 docs, 1 seed)``; ``0.61 (1 seed, no interval: why)`` without bounds."""
    value, lo, hi = row.get(name), row.get(f"{name}_lo"), row.get(f"{name}_hi")
    if not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return NOT_MEASURED
    if not all(isinstance(v, (int, float)) and math.isfinite(float(v)) for v in (lo, hi)):
        return f"{value:.{digits}g} (no interval: {row.get(f'{name}_method')})"
    return f"{value:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}] ({n_text(row, name)})"


def show_change(row: Mapping[str, Any]) -> str:
    """``+0.052 [+0.01, +0.09] (paired by seed, t over 3 seeds)``; the reference row says so."""
    if row.get("is_reference"):
        return "reference"
    value, lo, hi = row["change"], row["change_lo"], row["change_hi"]
    if not math.isfinite(value):
        return NOT_MEASURED
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:+.3f} (no interval: {row['change_method']})"
    return f"{value:+.3f} [{lo:+.3f}, {hi:+.3f}] ({row['change_method']})"


def show_energy(row: Mapping[str, Any]) -> str:
    evidence = row.get("energy_evidence") or NOT_MEASURED
    if not math.isfinite(row.get("energy_j", math.nan)):
        return f"not measured ({row.get('group_energy_method')})"
    text = show_value(row, "energy_j", 3).replace("(no interval: one run: no seed interval)", "(1 seed)")
    below = ", below meter resolution" if row.get("energy_below_resolution") else ""
    return f"{text} J, {evidence}{below}"


def show_params(row: Mapping[str, Any]) -> str:
    params, total = row.get("trainable_params", math.nan), row.get("total_params", math.nan)
    if not math.isfinite(params):
        return NOT_MEASURED
    share = f" ({100 * params / total:.3g} %)" if math.isfinite(total) and total > 0 else ""
    return f"{int(round(params)):,}{share}"


def show_memory(row: Mapping[str, Any]) -> str:
    if not math.isfinite(row.get("peak_mb", math.nan)):
        return NOT_MEASURED
    return f"{row['peak_mb']:.0f} MB ({row['memory_scope']})"


def show_seconds(value: Any) -> str:
    return f"{value:.3g} s" if isinstance(value, (int, float)) and math.isfinite(value) else NOT_MEASURED


def display_group(comparison: GroupComparison) -> pd.DataFrame:
    """The human table of one group: the configuration's name and its differing settings, then the numbers."""
    rows = []
    table = comparison.rows
    retention = "retention" in table and table["retention"].notna().any()
    rescored = bool(table["rescored"].any())
    metric = "accuracy" if comparison.rows["metric_column"].iloc[0] == "accuracy" else "mse"
    direction = "higher" if bool(table["higher_is_better"].iloc[0]) else "lower"
    for row in table.to_dict("records"):
        out: dict[str, Any] = {"configuration": row["name"]}
        for setting in comparison.settings:
            out[short_key(setting)] = row.get(f"setting:{short_key(setting)}", "-")
        out[f"{metric} ({direction} is better)"] = show_value(row)
        out["change vs reference"] = show_change(row)
        out["verdict"] = row["verdict"]
        if retention:
            out["retention: mean change"] = show_value(row, "retention")
        if rescored:
            out["source run"] = row["rescored_from"] if is_set(row["rescored_from"]) else "-"
        out["train time"] = show_seconds(row["train_s"])
        out["eval time"] = show_seconds(row["eval_s"])
        out["train energy"] = show_energy(row)
        out["trainable params"] = show_params(row)
        out["peak memory"] = show_memory(row)
        out["seeds"] = row["seeds"] or "-"
        rows.append(out)
    return pd.DataFrame(rows)
