"""Fine-tuning methods, each registered by name (see :mod:`loraven.adapters.base`)."""

from loraven.adapters.base import (
    AdaptedModel,
    AdapterContext,
    ConfigError,
    IncompatibleCombination,
    apply_adapter,
    available_adapters,
    check_combination,
    get_adapter,
    register_adapter,
)

__all__ = [
    "AdaptedModel",
    "AdapterContext",
    "ConfigError",
    "IncompatibleCombination",
    "apply_adapter",
    "available_adapters",
    "check_combination",
    "get_adapter",
    "register_adapter",
]
