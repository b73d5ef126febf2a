"""Evidence for the fault tests: what a run started, written to a file only when a test asks for it.

With ``LORAVEN_TEST_EVENTS=<file>`` set, the harness appends one line per milestone (``model_load``,
``tracker_start``, ``record_write``, ``config_write``) with the pid, so a test can prove that a refused config
touched nothing: no model was loaded, no W&B run started, no record written. Unset (always, outside tests), this
does nothing.
"""

from __future__ import annotations

import os

EVENTS_ENV = "LORAVEN_TEST_EVENTS"


def event(name: str) -> None:
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    with open(path, "a") as fh:
        fh.write(f"{os.getpid()} {name}\n")
