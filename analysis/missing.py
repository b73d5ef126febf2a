"""What a group's comparison cannot tell yet, and the command that would add it (analysis.commands).

* rows without a resolved difference (or without an interval) → more seeds, for them and the reference, up to
  the number the observed spread asks for (at least ``MIN_SEEDS``);
* runs too short to train → the same sweep on the default trainer (or ``trainer.steps`` ≥ ``MIN_TRAIN_STEPS``);
* no full fine-tuning in the group → ``adapter=none`` on the same settings (the paper's claims compare against it);
* energy not measured → the same sweep with ``energy=codecarbon``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
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


def _store(row: dict[str, Any]) -> str | None:
    """Where the row's runs are now: ``<results>/<experiment>/<run_id>`` → ``<results>`` (None for W&B runs)."""
    run_dir = row["_runs"].iloc[0].get("run_dir")
    return str(Path(str(run_dir)).parent.parent) if run_dir else None


def _seeds(rows: list[dict[str, Any]]) -> list[Any]:
    return [s for r in rows for s in r["_runs"]["seed"].dropna().tolist()]


def _commands(rows: list[dict[str, Any]], seeds: str, **replace: str | None) -> tuple[str, ...]:
    """One command per set of rows that a single sweep can run, each with ``seed=<seeds>`` and the replacements
    (a value of None removes the key)."""
    sets = []
    for row in rows:
        overrides = run_overrides(_config(row), _store(row))
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


def _same_method(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["adapter_type"] == b["adapter_type"] and a["scheduler"] == b["scheduler"] and a is not b


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
    trained = [r for r in rows if not r["rescored"]]
    long_enough = [r for r in trained if _is_count(r["steps_min"]) and r["steps_min"] >= iv.MIN_TRAIN_STEPS]
    short = bool(trained) and not long_enough  # every run too short: every command retrains on the default trainer
    fix = _trainer_fix() if short else {}
    longer = " on the default trainer (these runs were too short to train)" if short else ""
    base = long_enough or trained  # the rows a new sweep repeats: never the superseded short ones
    unresolved = [  # re-scored adapters are not re-run here: their seeds are their source runs'
        r
        for r in rows[1:]
        if str(r["verdict"]).startswith((iv.NO_DIFFERENCE, iv.INSUFFICIENT))
        and "identical" not in str(r["verdict"])
        and not r["rescored"]
    ]
    needs = [int(r["seeds_needed"]) for r in unresolved if _is_count(r["seeds_needed"])]
    have = max((len(set(_seeds([r]))) for r in rows), default=1)
    target = max([iv.MIN_SEEDS, have, *needs])
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
        names = lambda rs: ", ".join(r["row"] for r in rs)  # noqa: E731
        short_rows = [r for r in unresolved if "runs too short to train" in str(r["verdict"])]
        chance_rows = [r for r in unresolved if r not in short_rows and "both at chance" in str(r["verdict"])]
        seed_rows = [r for r in unresolved if r not in short_rows and r not in chance_rows]
        superseded = [r for r in short_rows if any(_same_method(r, o) for o in long_enough)]
        retrain = [r for r in short_rows if r not in superseded]
        if retrain:
            chosen = [r for r in [ref, *retrain] if not r["rescored"]]
            seeds = seed_values(_seeds(chosen), target)
            steps = min(float(r["steps_min"]) for r in retrain if _is_count(r["steps_min"]))
            out.append(
                Suggestion(
                    f"{names(retrain)} (and the reference): the runs took {steps:.0f} optimiser steps "
                    f"(< {iv.MIN_TRAIN_STEPS}), too few to train; the same comparison on the default trainer, seeds "
                    f"{seeds}",
                    _commands(chosen, seeds, **_trainer_fix()),
                )
            )
        if superseded:
            out.append(
                Suggestion(
                    f"{names(superseded)}: too short to train; longer runs of the same method are in this group",
                    (),
                )
            )
        if chance_rows:
            out.append(
                Suggestion(
                    f"{names(chance_rows)} and the reference are at chance level: at these settings the model does "
                    "not learn the task, and more seeds would not change that (a larger model, more steps or "
                    "another trainer.lr might)",
                    (),
                )
            )
        if seed_rows:
            chosen = [r for r in [ref, *seed_rows] if not r["rescored"]]
            seeds = seed_values(_seeds(chosen), target)
            need = (
                f"about {max(needs)} seeds a side would resolve the observed difference"
                if needs
                else f"at least {iv.MIN_SEEDS} seeds a side, the same seeds for every row, for a verdict"
            )
            out.append(
                Suggestion(
                    f"more seeds ({seeds}) for {names(seed_rows)} and the reference: {need}",
                    _commands(chosen, seeds, **fix),
                )
            )
    seeds = seed_values(_seeds(trained), target if unresolved and target <= MAX_SUGGESTED_SEEDS else iv.MIN_SEEDS)
    if trained and not any(r["baseline"] for r in trained):
        out.append(
            Suggestion(
                f"a dense reference (full fine-tuning, adapter=none){longer}: the paper's claims compare against it; "
                "full fine-tuning usually wants a ~10× lower trainer.lr",
                _commands([base[0]], seeds, adapter="none", scheduler=None, **_method_keys(base[0]), **fix),
            )
        )
    if trained and str(comparison.key.get("energy_method")) in ("none", "None", "nan"):
        out.append(
            Suggestion(
                f"energy was not measured (energy=none){longer}: the same runs with codecarbon (estimated from "
                "TDP × load on a CPU without RAPL counters); they form a group of their own",
                _commands(base, seeds, energy="codecarbon", **fix),
            )
        )
    return out
