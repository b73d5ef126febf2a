"""``task=arith_mc``: a generated, seeded multiple-choice arithmetic task (no network, disjoint splits).

Questions are ``a + b`` with two-digit operands; distractors sit close to the answer (±1, ±2, ±10, ±11) so that
guessing by magnitude does not work (chance = 1 / n_choices). Train and test come from disjoint (a, b) pairs, so
the test split measures generalisation rather than recall.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from loraven.tasks.base import register_task
from loraven.tasks.lm import LMTask, fingerprint, lm_eval_task, render_mc_task
from loraven.tasks.options import LMOptions
from loraven.tasks.splits import split_fingerprint

OFFSETS = (-11, -10, -2, -1, 1, 2, 10, 11)
LOW, HIGH = 10, 99
N_PAIRS = (HIGH - LOW + 1) ** 2


class ArithConfig(LMOptions):
    seed: int = Field(ge=0)
    n_train: int = Field(ge=1)
    n_test: int = Field(ge=1)
    n_choices: int = Field(ge=2, le=len(OFFSETS) + 1)

    @model_validator(mode="after")
    def _fits(self) -> ArithConfig:
        if self.n_train + self.n_test > N_PAIRS:
            raise ValueError(
                f"task.n_train + task.n_test = {self.n_train + self.n_test} exceeds the {N_PAIRS} distinct "
                "two-digit pairs"
            )
        return self


def generate(
    seed: int, n_train: int, n_test: int, n_choices: int = 4, low: int = LOW, high: int = HIGH
) -> dict[str, list[dict[str, Any]]]:
    """Both splits as lists of ``{question, choices, label}`` docs (choices are strings)."""
    if n_choices < 2 or n_choices > len(OFFSETS) + 1:
        raise ValueError(f"task.n_choices={n_choices} must be in 2..{len(OFFSETS) + 1}")
    pairs = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1)]
    if n_train + n_test > len(pairs):
        raise ValueError(f"task.n_train + task.n_test = {n_train + n_test} exceeds the {len(pairs)} distinct pairs")
    rng = random.Random(seed)
    rng.shuffle(pairs)
    return {
        "train": [_doc(a, b, n_choices, rng) for a, b in pairs[:n_train]],
        "test": [_doc(a, b, n_choices, rng) for a, b in pairs[n_train : n_train + n_test]],
    }


def _doc(a: int, b: int, n_choices: int, rng: random.Random) -> dict[str, Any]:
    answer = a + b
    wrong = rng.sample([answer + o for o in OFFSETS], n_choices - 1)
    choices = [answer, *wrong]
    rng.shuffle(choices)
    return {
        "question": f"Question: What is {a} + {b}?",
        "choices": [str(c) for c in choices],
        "label": choices.index(answer),
    }


@register_task("arith_mc", config=ArithConfig, family="generated")
def build_arith_mc(settings: ArithConfig, data_root: Path) -> LMTask:
    """Generated 2-digit addition, n-way multiple choice, scored by lm-eval (acc)."""
    cfg = settings.dump()
    params = {k: int(cfg[k]) for k in ("seed", "n_train", "n_test", "n_choices")}
    docs = generate(params["seed"], params["n_train"], params["n_test"], params["n_choices"])
    digest = fingerprint({"kind": "arith_mc", **params, **split_fingerprint(cfg)})
    folder = render_mc_task("arith_mc", docs, data_root, digest, cfg, params["seed"])
    return lm_eval_task(cfg, ["arith_mc"], str(folder), digest, include_defaults=False)
