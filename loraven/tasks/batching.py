"""What every task's batcher shares: the batch-size rules and the resumable epoch iterator."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("loraven")


def fit_batch_size(batch_size: int, rows: int, world: int = 1) -> int:
    """A batch no larger than the training set, with one notice when clamped.

    The epoch loops yield ``rows // batch_size`` batches per pass: with ``batch_size > rows`` that is none,
    forever (a hang, not an error). Clamping keeps short datasets (a small local_mc file) usable.
    """
    if batch_size > rows:
        log.warning(
            "trainer.batch_size=%d is larger than the %d training rows; using batch_size=%d", batch_size, rows, rows
        )
        batch_size = rows
    if batch_size < world:
        raise ValueError(f"batch of {batch_size} rows cannot be split over {world} data-parallel processes")
    return batch_size


class EpochBatches:
    """Endless seeded shuffles of ``rows`` training rows, ``batch_size`` at a time, whose position can be saved.

    Each epoch draws a new permutation from one seeded ``torch.Generator`` and yields ``rows // batch_size``
    batches (the remainder is dropped, as before); ``make_batch(indices)`` turns a slice of the permutation into a
    batch. The state (:meth:`state_dict`) is the generator's state at the start of the current epoch and how many
    batches of it were taken, so a resumed run redraws one permutation instead of replaying every batch
    (mid-run checkpoints, :mod:`loraven.checkpoint`). A plain generator cannot be saved; torch's
    ``RandomSampler`` + ``DataLoader`` would need the same bookkeeping around them, so the few lines are here.
    """

    def __init__(self, rows: int, batch_size: int, seed: int, make_batch: Callable[[torch.Tensor], Any]) -> None:
        self.rows, self.batch_size = int(rows), int(batch_size)
        self.make_batch = make_batch
        self._gen = torch.Generator().manual_seed(int(seed))
        self._epoch_state: torch.Tensor | None = None
        self._order: torch.Tensor | None = None
        self._start = 0
        self.taken = 0  # batches yielded since the start

    def __iter__(self) -> EpochBatches:
        return self

    def __next__(self) -> Any:
        if self._order is None or self._start + self.batch_size > self.rows:
            self._epoch_state = self._gen.get_state()
            self._order = torch.randperm(self.rows, generator=self._gen)
            self._start = 0
        idx = self._order[self._start : self._start + self.batch_size]
        self._start += self.batch_size
        self.taken += 1
        return self.make_batch(idx)

    def state_dict(self) -> dict[str, Any]:
        started = self._epoch_state is not None
        return {
            "rows": self.rows,
            "batch_size": self.batch_size,
            # before the first batch: the generator as seeded (the state alone decides what comes next)
            "epoch_state": (self._epoch_state if started else self._gen.get_state()).clone(),
            "started": started,
            "start": self._start,
            "taken": self.taken,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken; a state of other data is refused."""
        if (int(state["rows"]), int(state["batch_size"])) != (self.rows, self.batch_size):
            raise ValueError(
                f"data position of {state['rows']} rows in batches of {state['batch_size']} does not fit "
                f"{self.rows} rows in batches of {self.batch_size}"
            )
        self.taken, self._start = int(state["taken"]), int(state["start"])
        self._gen.set_state(state["epoch_state"])
        if not state["started"]:
            self._epoch_state, self._order = None, None
            return
        self._epoch_state = self._gen.get_state()
        self._order = torch.randperm(self.rows, generator=self._gen)
