"""What a group's comparison cannot tell yet, and the command that would add it (analysis.commands).

* rows without a resolved difference (or without an interval) → more seeds, for them and the reference, up to
  the number the observed spread asks for (at least ``MIN_SEEDS``);
* runs too short to train → the same sweep on the default trainer (or ``trainer.steps`` ≥ ``MIN_TRAIN_STEPS``);
* no full fine-tuning in the group → ``adapter=none`` on the same settings (the paper's claims compare against it);
* energy not measured → the same sweep with ``energy=codecarbon``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from analysis import intervals as iv
from analysis.commands import command_line, merge, natural_scheduler, option_values, run_overrides, seed_values
from analysis.compare import GroupComparison

MAX_SUGGESTED_SEEDS = 50  # beyond this, more seeds are not the way: say so instead of printing range(0,400)


@dataclass(frozen=True)
class Suggestion:
    """Why something is missing and the command(s) that would add it."""

    why: str
    commands: tuple[str, ...]


def _config(row: dict[str, Any]) -> dict[str, Any]:
    return dict(row["_runs"].iloc[0]["config"] or {})


def _seeds(rows: list[dict[str, Any]]) -> list[Any]:
    return [s for r in rows for s in r["_runs"]["seed"].dropna().tolist()]


def _commands(rows: list[dict[str, Any]], seeds: str, **replace: str | None) -> tuple[str, ...]:
    """One command per set of rows that a single sweep can run, each with ``seed=<seeds>`` and the replacements
    (a value of None removes the key)."""
    sets = []
    for row in rows:
        overrides = run_overrides(_config(row))
        for key, value in replace.items():
            if key == "trainer" and value is not None:
                overrides = {k: v for k, v in overrides.items() if not k.startswith("trainer.")}
            if value is None:
                overrides.pop(key, None)
            else:
                overrides[key] = value
        overrides["seed"] = seeds
        sets.append(overrides)
    if all(natural_scheduler(s.get("adapter")) == s.get("scheduler") for s in sets if "scheduler" in s):
        sets = [{k: v for k, v in s.items() if k != "scheduler"} for s in sets]  # each adapter picks its own
    unique = [dict(t) for t in dict.fromkeys(tuple(s.items()) for s in sets)]
    return tuple(command_line(c) for c in merge(unique))


def _trainer_fix() -> dict[str, str]:
    default = option_values("trainer", "default") or {}
    fix = {"trainer": "default"}
    if float(default.get("steps") or 0) < iv.MIN_TRAIN_STEPS:
        fix["trainer.steps"] = str(iv.MIN_TRAIN_STEPS)
    return fix


def _is_count(value: Any) -> bool:
    """A seeds-needed cell (a float column: NaN where none applies)."""
    return isinstance(value, (int, float)) and value == value and value > 0


def _method_keys(row: dict[str, Any]) -> dict[str, None]:
    """The method's own overrides (``adapter.r=...``), removed when the command switches method."""
    return {k: None for k in run_overrides(_config(row)) if k.startswith(("adapter.", "scheduler."))}


def suggestions(comparison: GroupComparison) -> list[Suggestion]:
    """Every missing piece of one group, with the exact command(s). When the runs were too short to train,
    every command uses the default trainer (a comparison of untrained runs resolves nothing)."""
    rows = comparison.rows.to_dict("records")
    ref = rows[0]
    out: list[Suggestion] = []
    short = any("runs too short to train" in str(r["verdict"]) for r in rows)
    fix = _trainer_fix() if short else {}
    longer = " on the default trainer (these runs were too short to train)" if short else ""
    unresolved = [
        r
        for r in rows[1:]
        if str(r["verdict"]).startswith((iv.NO_DIFFERENCE, iv.INSUFFICIENT)) and "identical" not in str(r["verdict"])
    ]
    needs = [int(r["seeds_needed"]) for r in unresolved if _is_count(r["seeds_needed"])]
    have = max((len(set(_seeds([r]))) for r in rows), default=1)
    target = max([iv.MIN_SEEDS, have, *needs])
    trained = [r for r in rows if not r["rescored"]]
    if unresolved and target > MAX_SUGGESTED_SEEDS:
        out.append(
            Suggestion(
                f"{', '.join(r['row'] for r in unresolved)}: about {target} seeds a side would be needed at the "
                "observed spread; a difference this small is not worth resolving with seeds (a larger evaluation "
                "set narrows single-run intervals: task.limit / task.n_test)",
                (),
            )
        )
    elif unresolved:
        chosen = [r for r in [ref, *unresolved] if not r["rescored"]]
        seeds = seed_values(_seeds(chosen), target)
        seed_sets = [set(_seeds([r])) for r in chosen]
        more_seeds = min(len(x) for x in seed_sets) < target or len({frozenset(x) for x in seed_sets}) > 1
        names = ", ".join(r["row"] for r in unresolved)
        steps = min(float(r["steps_min"]) for r in rows if _is_count(r["steps_min"])) if short else math.nan
        chance_only = not short and all("both at chance" in str(r["verdict"]) for r in unresolved)
        if short:
            why = (
                f"{names} and the reference: the runs took {steps:.0f} optimiser steps (< {iv.MIN_TRAIN_STEPS}), "
                "too few to train; the same comparison on the default trainer"
                + (f", seeds {seeds}" if more_seeds else "")
            )
        elif chance_only:
            why = (
                f"{names} and the reference are all at chance level: at these settings the model does not learn the "
                "task, and more seeds would not change that (a larger model, more steps or another trainer.lr might)"
            )
        else:
            need = (
                f"about {max(needs)} seeds a side would resolve the observed difference"
                if needs
                else f"at least {iv.MIN_SEEDS} seeds a side, the same seeds for every row, for a verdict"
            )
            why = f"more seeds ({seeds}) for {names} and the reference: {need}"
        out.append(Suggestion(why, () if chance_only else _commands(chosen, seeds, **fix)))
    seeds = seed_values(_seeds(trained), target if unresolved and target <= MAX_SUGGESTED_SEEDS else iv.MIN_SEEDS)
    if trained and not any(r["baseline"] for r in trained):
        out.append(
            Suggestion(
                f"a dense reference (full fine-tuning, adapter=none){longer}: the paper's claims compare against it; "
                "full fine-tuning usually wants a ~10× lower trainer.lr",
                _commands([trained[0]], seeds, adapter="none", scheduler=None, **_method_keys(trained[0]), **fix),
            )
        )
    if trained and str(comparison.key.get("energy_method")) in ("none", "None", "nan"):
        out.append(
            Suggestion(
                f"energy was not measured (energy=none){longer}: the same runs with codecarbon (estimated from "
                "TDP × load on a CPU without RAPL counters); they form a group of their own",
                _commands(trained, seeds, energy="codecarbon", **fix),
            )
        )
    return out
