"""The one evaluation path: the model in eval mode, scored by its task (lm-eval in memory for LM tasks, direct
metrics for the tensor tasks); the task's ``score`` returns the contract's ``metrics`` section."""

from __future__ import annotations

from typing import Any

from torch import nn

from loraven.tasks.base import Task


def evaluate(model: nn.Module, tokenizer: Any, task: Task, batch_size: int = 32, seed: int = 0) -> dict[str, Any]:
    """Score ``model`` on ``task`` in eval mode (its training mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return task.score(model, tokenizer, batch_size, seed)
    finally:
        model.train(was_training)
