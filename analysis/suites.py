"""Per-task tables of benchmark suites (``task=commonsense``, ``task=glue``): the table every PEFT paper prints.

For each group (analysis.groups) whose runs score several tasks (``metrics.per_task``): one row per configuration
(the same rows as the comparison), trainable parameters as a count and a share of the model, each task's accuracy
``value [lo, hi] (n)``, the macro average, and the gain over the untrained model (``metrics.base_per_task``:
the same documents scored before fine-tuning). A first row shows the untrained model itself.

For the commonsense suite the LoRA-AR README's numbers sit beside ours in ``paper_*`` columns — measured on
LLaMA3-8B, another model, so they orient and are never compared with a verdict (analysis/paper.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd

from analysis import intervals as iv
from analysis import paper
from analysis.compare import GroupComparison
from analysis.stats import NOT_MEASURED, NOT_REPORTED

BASE_ROW = "untrained model (before fine-tuning)"


def _task_value(entry: Any) -> tuple[float, float, float]:
    """(accuracy, stderr, n) of one ``per_task`` entry; NaN where absent."""
    if not isinstance(entry, Mapping):
        return math.nan, math.nan, math.nan

    def num(key: str) -> float:
        try:
            return float(entry.get(key))
        except (TypeError, ValueError):
            return math.nan

    return num("accuracy"), num("accuracy_stderr"), num("n")


def suite_tasks(runs: pd.DataFrame) -> list[str]:
    """The tasks the group's runs scored, in the PEFT tables' order (unknown tasks after, by name)."""
    seen = {t for entry in runs["per_task"] for t in (entry or {})}
    known = [t for t in paper.COMMONSENSE_TASKS if t in seen]
    return known + sorted(seen - set(known))


def _cell(runs: pd.DataFrame, column: str, task: str) -> iv.Interval:
    """One task's accuracy over the runs: one run → Wilson over its documents; several → bootstrap over seeds."""
    values = [_task_value((entry or {}).get(task)) for entry in runs[column]]
    accs = [v[0] for v in values if math.isfinite(v[0])]
    if not accs:
        return iv.NAN_INTERVAL
    if len(values) == 1:
        acc, se, n = values[0]
        return iv.single_run_accuracy(acc, n, se)
    return iv.bootstrap_mean(accs, "across seeds")


def _average(entry: Mapping[str, Any], tasks: list[str]) -> tuple[float, float]:
    """Macro average over ``tasks`` and its stderr (√Σse² / T), NaN when a task is missing."""
    values = [_task_value(entry.get(t)) for t in tasks]
    if not values or any(not math.isfinite(v[0]) for v in values):
        return math.nan, math.nan
    mean = sum(v[0] for v in values) / len(values)
    se = (
        math.sqrt(sum(v[1] ** 2 for v in values)) / len(values)
        if all(math.isfinite(v[1]) for v in values)
        else math.nan
    )
    return mean, se


def _average_interval(runs: pd.DataFrame, column: str, tasks: list[str]) -> tuple[iv.Interval, dict[Any, float], float]:
    """The macro average's interval (normal from stderrs for one run, clipped to [0, 1]; bootstrap over seeds for
    several), the per-seed averages and one run's stderr."""
    per_seed: dict[Any, float] = {}
    ses = []
    for seed, run_id, entry in zip(runs["seed"], runs["run_id"], runs[column], strict=True):
        mean, se = _average(entry or {}, tasks)
        if math.isfinite(mean):
            per_seed[seed if seed == seed and seed is not None else run_id] = mean
            ses.append(se)
    if not per_seed:
        return iv.NAN_INTERVAL, {}, math.nan
    if len(per_seed) == 1 and len(runs) == 1:
        (value,) = per_seed.values()
        what = f"one run: macro average of {len(tasks)} tasks, lm-eval stderrs, clipped to [0, 1]"
        return iv.normal_unit(value, ses[0], what), per_seed, ses[0]
    return iv.bootstrap_mean(list(per_seed.values()), "across seeds"), per_seed, math.nan


def _put(row: dict[str, Any], name: str, interval: iv.Interval) -> None:
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = interval.value, interval.lo, interval.hi
    row[f"{name}_n"], row[f"{name}_method"] = interval.n, interval.method


def suite_table(comparison: GroupComparison) -> pd.DataFrame:
    """The per-task table of one group (empty when its runs score a single task)."""
    runs = comparison.runs
    if runs.empty or int(runs["n_tasks"].max()) < 2:
        return pd.DataFrame()
    tasks = suite_tasks(runs)
    commonsense = comparison.key.get("family") == "commonsense"
    rows = []
    base_runs = runs[runs["base_per_task"].map(bool)].head(1)  # the untrained model: the same cached scores
    if len(base_runs):
        base: dict[str, Any] = {"row": BASE_ROW, "label": None, "trainable_params": 0.0, "n_runs": 1}
        base["total_params"] = float(base_runs["total_params"].iloc[0])
        for task in tasks:
            _put(base, task, _cell(base_runs, "base_per_task", task))
        _put(base, "average", _average_interval(base_runs, "base_per_task", tasks)[0])
        _put(base, "gain", iv.NAN_INTERVAL)
        rows.append(base)
    for row in comparison.rows.to_dict("records"):
        part = row["_runs"]
        out: dict[str, Any] = {
            "row": row["row"],
            "label": None if row["rescored"] else row["label"],
            "trainable_params": row["trainable_params"],
            "total_params": row["total_params"],
            "n_runs": len(part),
            "seeds": row["seeds"],
        }
        for task in tasks:
            _put(out, task, _cell(part, "per_task", task))
        average, after, se_after = _average_interval(part, "per_task", tasks)
        _put(out, "average", average)
        _, before, se_before = _average_interval(part, "base_per_task", tasks)
        common = {k: v for k, v in before.items() if k in after}
        gain = iv.seed_difference(after, common, se_after, se_before) if common else iv.NAN_INTERVAL
        _put(out, "gain", gain)
        rows.append(out)
    for out in rows:
        share = 100.0 * out["trainable_params"] / out["total_params"] if out.get("total_params") else math.nan
        out["params_pct"] = share
        ref = paper.paper_commonsense_row(out["label"], share) if commonsense else None
        if commonsense:
            out["paper_params_pct"] = ref["params_pct"] if ref else math.nan
            for task in tasks:
                out[f"paper_{task}"] = ref.get(task, math.nan) if ref else math.nan
            shown = [ref.get(t, math.nan) for t in tasks] if ref else []
            if ref and len(tasks) == len(paper.COMMONSENSE_TASKS):
                out["paper_average"] = ref["average"]
            else:  # a subset of the tasks: the README's values averaged over the same tasks
                out["paper_average"] = sum(shown) / len(shown) if shown and all(v == v for v in shown) else math.nan
    table = pd.DataFrame(rows)
    table.attrs["tasks"] = tasks
    table.attrs["commonsense"] = commonsense
    return table


def _pct(row: Mapping[str, Any], name: str) -> str:
    """``61.2 [55.0, 67.1] (n=250 docs)`` in percent, as the PEFT tables print accuracy."""
    value, lo, hi = row.get(name, math.nan), row.get(f"{name}_lo", math.nan), row.get(f"{name}_hi", math.nan)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return NOT_MEASURED
    method = str(row.get(f"{name}_method", ""))
    n = row.get(f"{name}_n", 0)
    where = method.split("n=")[-1].split(" ")[0] if "Wilson" in method else ""
    count = f"n={where} docs" if where else ("1 run" if method.startswith("one run") else f"n={n} seeds")
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{100 * value:.1f} (no interval) ({count})"
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] ({count})"


def _gain(row: Mapping[str, Any]) -> str:
    value, lo, hi = row.get("gain", math.nan), row.get("gain_lo", math.nan), row.get("gain_hi", math.nan)
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "-" if row["row"] == BASE_ROW else NOT_MEASURED
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{100 * value:+.1f} points (no interval)"
    return f"{100 * value:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points"


def display_suite(table: pd.DataFrame) -> pd.DataFrame:
    """Method | trainable params (count, %) | one column per task | average | gain over untrained | paper_*."""
    if table.empty:
        return table
    tasks = table.attrs.get("tasks", [])
    model = paper.PAPER_COMMONSENSE_MODEL
    rows = []
    for row in table.to_dict("records"):
        params = row["trainable_params"]
        share = row["params_pct"]
        out: dict[str, Any] = {"method": row["row"]}
        if row["row"] == BASE_ROW:
            out["trainable params"] = "-"
        else:
            out["trainable params"] = (
                f"{int(params):,} ({share:.3g} %)" if math.isfinite(params) and math.isfinite(share) else NOT_MEASURED
            )
        for task in tasks:
            out[paper.COMMONSENSE_TASKS.get(task, task)] = _pct(row, task)
        out["average"] = _pct(row, "average")
        out["gain over untrained (average)"] = _gain(row)
        if table.attrs.get("commonsense"):
            pct = row.get("paper_params_pct", math.nan)
            out[f"paper_params % ({model})"] = f"{pct:g} %" if math.isfinite(pct) else NOT_REPORTED
            for task in tasks:
                value = row.get(f"paper_{task}", math.nan)
                out[f"paper_{paper.COMMONSENSE_TASKS.get(task, task)} ({model})"] = (
                    f"{value:g}" if math.isfinite(value) else NOT_REPORTED
                )
            avg = row.get("paper_average", math.nan)
            out[f"paper_average ({model})"] = f"{avg:.4g}" if math.isfinite(avg) else NOT_REPORTED
        rows.append(out)
    return pd.DataFrame(rows)


def suite_note(table: pd.DataFrame) -> str:
    """What the table is and what it is not."""
    tasks = table.attrs.get("tasks", [])
    text = (
        "Accuracy in % (lm-eval `acc`) on each task's held-out part of its validation set, `value [95 % interval] "
        "(n)`: one run → Wilson over its documents, several seeds → bootstrap over seeds; average = macro average "
        "of the tasks shown; gain = average − the untrained model's average on the same documents (one run: "
        "normal interval of both stderrs; several seeds: t over seeds)."
    )
    if table.attrs.get("commonsense"):
        subset = len(tasks) < len(paper.COMMONSENSE_TASKS)
        text += (
            f" `paper_*` columns: {paper.PAPER_COMMONSENSE_SOURCE} — **another model** "
            f"({paper.PAPER_COMMONSENSE_MODEL}, "
            "its own fine-tuning data and full test sets), for orientation only, never compared with a verdict; "
            "where the README has two rows for a method (DoRA) the one with the closest trainable share is shown"
            + ("; paper_average here averages the README's values over the tasks shown" if subset else "")
            + ". The README reports no LoRAven or full fine-tuning row."
        )
    return text
