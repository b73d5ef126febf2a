"""Errors shared by every layer (the bottom floor: imports nothing from loraven).

Kept apart from the adapters so that checks, tasks, models and the bench can raise a config error without
importing the adapter layer (which used to tie checks ⇄ adapters in an import loop).
"""


class ConfigError(ValueError):
    """A bad user setting: the message names the bad value and the valid choices."""


class IncompatibleCombination(ConfigError):
    """An adapter/scheduler pair that makes no sense (e.g. lora + energy); a multirun records it as skipped."""
