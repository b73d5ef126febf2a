"""Which split a run is scored on, and the seeded validation split carved from training data.

A hyperparameter search must never read the split the final numbers are reported on, or the reported numbers
are selected on themselves and flatter whichever method was tuned hardest. So every task can hold out a
*validation* split from its training data (``task.validation_fraction``), never from its test data, and
``task.eval_split`` picks what a run is scored on: ``test`` (the default: final numbers) or ``validation``
(what an Optuna search reads). In validation mode the test documents are not even handed to lm-eval.

The carve is a seeded permutation of the training rows (the task's data seed, not the run seed), so it is the
same for every run seed and every method: a fixed benchmark, like the train/test split itself.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from loraven.errors import ConfigError

EVAL_SPLITS = ("test", "validation")
SPLIT_KEYS = ("eval_split", "validation_fraction")
DEFAULT_DATA_SEED = 1234

Row = TypeVar("Row")


def eval_split_of(cfg: Mapping[str, Any]) -> str:
    return str(cfg.get("eval_split") or "test")


def validation_fraction_of(cfg: Mapping[str, Any]) -> float:
    return float(cfg.get("validation_fraction") or 0.0)


def carve_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(kept, held_out) indices of ``n`` training rows, both sorted; ``round(n·fraction)`` rows held out (at
    least one when the fraction is positive, never all of them)."""
    if fraction <= 0.0 or n == 0:
        return list(range(n)), []
    k = min(max(1, round(n * fraction)), n - 1)
    if k < 1:
        raise ConfigError(f"task.validation_fraction={fraction}: {n} training row(s) cannot be split")
    held = set(random.Random(f"validation:{seed}").sample(range(n), k))
    return [i for i in range(n) if i not in held], sorted(held)


def carve(rows: Sequence[Row], fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    """(train, validation) rows: a seeded, disjoint carve of the training rows (see :func:`carve_indices`)."""
    kept, held = carve_indices(len(rows), fraction, seed)
    return [rows[i] for i in kept], [rows[i] for i in held]


def lm_splits(docs: Mapping[str, list[dict]], cfg: Mapping[str, Any], seed: int) -> dict[str, list[dict]]:
    """The split files an LM task writes: train minus validation always; the evaluated split only.

    In validation mode the test documents are left out entirely, so nothing downstream can read them.
    """
    train, validation = carve(docs["train"], validation_fraction_of(cfg), seed)
    if eval_split_of(cfg) == "validation":
        return {"train": train, "validation": validation}
    return {"train": train, "test": list(docs["test"])}


def split_fingerprint(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What the split options add to a task's fingerprint (nothing at the defaults: old caches stay valid)."""
    out: dict[str, Any] = {}
    if validation_fraction_of(cfg) > 0.0:
        out["validation_fraction"] = validation_fraction_of(cfg)
    if eval_split_of(cfg) != "test":
        out["eval_split"] = eval_split_of(cfg)
    return out
