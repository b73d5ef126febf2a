"""How several tasks' fine-tuning examples are mixed into one training stream.

The training loop (``train.lm_batches``) draws batches from a seeded permutation of one list of pairs, so a
task's share of every batch is, in expectation, its share of that list. Mixing therefore builds the list:
task t contributes ``c_t`` pairs, its ``n_t`` distinct documents repeated (whole copies first, then the first
``c_t mod n_t`` in the order given — our seeded hash order), with

    c_t = round(s · w_t),  s = max_u n_u / w_u   (so every document appears at least once)

and the weight ``w_t`` set by the rule:

- ``equal``: w_t = 1 — every task the same share (the smallest task is repeated most);
- ``proportional``: w_t = n_t — examples-proportional (T5), each document once: the biggest task dominates;
- ``temperature``: w_t = n_t^(1/T) — between the two (T = 1 proportional, T → ∞ equal; mT5 used T ≈ 3.3).

``n_t`` is the task's fine-tuning part after ``task.max_train_docs``. The list is interleaved by each pair's
relative position in its task's stream, so any window of it (not only the whole) keeps the shares; the loop's
permutation then sets the order. Everything is deterministic: no randomness here beyond the given order.

Plain code, because neither datasets' ``interleave_datasets`` (probabilities, but sampled streams of Dataset
objects, not counts over pairs) nor lm-eval (evaluation only) builds a weighted list of pairs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from loraven.errors import ConfigError

MIXING_RULES = ("equal", "proportional", "temperature")
Pair = TypeVar("Pair")


def mixture_counts(sizes: Mapping[str, int], rule: str, temperature: float | None = None) -> dict[str, int]:
    """How many training pairs each task contributes (see the module docstring); ``rule`` and ``temperature`` are
    validated by the task's schema (:class:`loraven.tasks.benchmarks.SuiteConfig`)."""
    empty = [name for name, n in sizes.items() if n <= 0]
    if empty:
        raise ConfigError(f"task(s) {', '.join(empty)} have no fine-tuning documents to mix")
    if rule == "equal":
        weights = {name: 1.0 for name in sizes}
    elif rule == "proportional":
        weights = {name: float(n) for name, n in sizes.items()}
    else:
        weights = {name: float(n) ** (1.0 / float(temperature)) for name, n in sizes.items()}  # type: ignore[arg-type]
    scale = max(n / weights[name] for name, n in sizes.items())
    return {name: max(n, round(scale * weights[name])) for name, n in sizes.items()}


def mix(pairs_by_task: Mapping[str, Sequence[Pair]], rule: str, temperature: float | None = None) -> list[Pair]:
    """One list holding each task's pairs ``mixture_counts`` times in total, interleaved in proportion."""
    counts = mixture_counts({name: len(p) for name, p in pairs_by_task.items()}, rule, temperature)
    keyed = []
    for order, (name, pairs) in enumerate(pairs_by_task.items()):
        c = counts[name]
        for i in range(c):
            keyed.append(((i + 0.5) / c, order, pairs[i % len(pairs)]))
    keyed.sort(key=lambda item: (item[0], item[1]))
    return [pair for _, _, pair in keyed]
