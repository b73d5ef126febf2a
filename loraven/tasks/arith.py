"""``task=arith_mc``: a generated, seeded multiple-choice arithmetic task (no network, disjoint splits).

Questions are ``a + b`` with two-digit operands; distractors sit close to the answer (±1, ±2, ±10, ±11)
so that guessing by magnitude does not work (chance = 1 / n_choices). Train and test come from disjoint
(a, b) pairs, so the test split measures generalisation rather than recall.
"""

from __future__ import annotations

import random
from typing import Any

OFFSETS = (-11, -10, -2, -1, 1, 2, 10, 11)


def generate(
    seed: int, n_train: int, n_test: int, n_choices: int = 4, low: int = 10, high: int = 99
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
