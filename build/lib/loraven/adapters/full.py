"""``adapter=none``: the dense baseline (full fine-tuning of every weight)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from loraven.adapters.base import AdaptedModel, AdapterContext, register_adapter
from loraven.adapters.options import AdapterOptions


class FullSettings(AdapterOptions):
    """Full fine-tuning has nothing to set (``param_budget`` is accepted and recorded as not applied)."""

    name: Literal["none"]


@register_adapter(
    "none", schedulers=("static",), config=FullSettings, labels={"static": "dense"}, order=0, baseline=True
)
def apply_full(model: nn.Module, settings: FullSettings, ctx: AdapterContext) -> AdaptedModel:
    """Full fine-tune: every parameter trains; this is the paper's 'dense' level."""
    for p in model.parameters():
        p.requires_grad_(True)
    return AdaptedModel(model)
