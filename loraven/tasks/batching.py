"""Batch-size rules every task's batcher shares."""

from __future__ import annotations

import logging

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
