"""``adapter=none``: the dense baseline (full fine-tuning of every weight)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from loraven.adapters.base import AdaptedModel, AdapterContext, register_adapter


@register_adapter("none", schedulers=("static",), labels={"static": "dense"}, order=0, baseline=True)
def apply_full(model: nn.Module, cfg: Mapping[str, Any], ctx: AdapterContext) -> AdaptedModel:
    """Full fine-tune: every parameter trains; this is the paper's 'dense' level."""
    for p in model.parameters():
        p.requires_grad_(True)
    return AdaptedModel(model)
