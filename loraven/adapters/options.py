"""Option schemas every method shares: its name, the parameter budget, and the target-module selector."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import AfterValidator, Field

from loraven.schema import Section


def _targets(value: str | list[str]) -> str | list[str]:
    """``all-linear`` or a non-empty list of module-name suffixes (a single other name becomes a one-item list)."""
    from loraven.adapters.targets import target_names

    target_names(value)  # the shared resolver's own format check (one error wording for every method)
    if isinstance(value, str):
        return value if value == "all-linear" else [value]
    return [str(v) for v in value]


TargetModules = Annotated[str | list[str], AfterValidator(_targets)]


class AdapterOptions(Section):
    """What every ``cfg.adapter`` has: the method's name and an optional trainable-parameter budget."""

    where: ClassVar[str] = "adapter"

    name: str
    param_budget: int | None = Field(default=None, ge=1)  # a trainable count each method's size is fitted to
