"""The trainer's defaults: read from ``loraven/conf/trainer/default.yaml``, the one source.

Code used to fall back to its own values when a key was missing (``max_seq_len`` 128 in the loop and the
checks while the YAML said 64); now a trainer config given as a plain mapping (tests, the benchmarks, a
notebook) is completed from the same YAML file that ``python run.py`` composes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from loraven import CONF_DIR


@lru_cache(maxsize=1)
def trainer_defaults() -> dict[str, Any]:
    """``conf/trainer/default.yaml`` as a dict (read once per process)."""
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "trainer" / "default.yaml"), resolve=True)
    assert isinstance(data, dict)
    data.pop("defaults", None)
    return data


def trainer_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg`` completed with the default trainer's values for every key it does not set."""
    return {**trainer_defaults(), **dict(cfg)}
