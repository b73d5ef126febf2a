"""Writing a trained method in the field's formats: a peft LoRA adapter folder, or a whole model folder.

The method-specific part stays in each method's folder (its ``AdaptedModel.save_adapter`` / ``save_model``); what
they share is here: peft's own ``save_pretrained`` for peft models, and a peft LoRA folder written from any
method's factors (LoRAven exports its active-rank U·diag(S)·Vᵀ this way) with per-module rank and alpha in
``rank_pattern`` / ``alpha_pattern``. The atomic folder write, the manifest and the record are not here
(:mod:`loraven.artifacts`): these functions write into the temp folder they are given.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"


def pattern_key(name: str) -> str:
    """A ``rank_pattern`` / ``alpha_pattern`` key peft matches against ``name`` and nothing else (``^`` + the
    escaped name; see :mod:`loraven.adapters.lora_ar.inject` for why)."""
    return "^" + re.escape(name)


def save_peft_model(model: nn.Module, folder: Path) -> dict[str, Any]:
    """peft's own ``save_pretrained`` (config + ``adapter_model.safetensors``; a merged model saves the same
    factors). ``save_embedding_layers=False``: no method here trains embeddings, and peft's ``auto`` would look the
    base model up (on the hub for an id) to compare vocabulary sizes."""
    model.save_pretrained(str(folder), safe_serialization=True, save_embedding_layers=False)
    config = model.peft_config["default"]
    return {
        "format": "peft-lora",
        "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
        "use_dora": bool(getattr(config, "use_dora", False)),
    }


def write_peft_lora(
    folder: Path,
    factors: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    alphas: Mapping[str, float],
    dropout: float = 0.0,
) -> dict[str, Any]:
    """A standard peft LoRA folder from per-module factors ``{module name: (A (r×in), B (out×r))}``.

    peft computes ``W0·x + B·A·dropout(x)·(lora_alpha / r)`` per module; ``alphas[name]`` is that module's
    ``lora_alpha`` (so ``alpha / r`` is its scaling). Module names are as in the base model (``model.layers.0
    .self_attn.q_proj``); the keys follow peft's layout (``base_model.model.<name>.lora_A.weight``), written with
    peft's ``LoraConfig.save_pretrained`` and safetensors, so ``PeftModel.from_pretrained`` (and lm-eval's
    ``peft=``) load them. Why not peft's model-level ``save_pretrained``: that needs a peft model around a fresh
    copy of the base model (twice the memory) only to copy these tensors into it.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    if not factors:
        raise ValueError("no adapted module to export")
    ranks = {name: int(a.shape[0]) for name, (a, _) in factors.items()}
    keys = {name: pattern_key(name) for name in factors}
    config = LoraConfig(
        r=max(ranks.values()),
        lora_alpha=float(alphas[max(ranks, key=ranks.__getitem__)]),
        lora_dropout=float(dropout),
        target_modules=list(factors),
        rank_pattern={keys[n]: r for n, r in ranks.items()},
        alpha_pattern={keys[n]: float(alphas[n]) for n in factors},
        bias="none",
        use_rslora=False,
        use_dora=False,
    )
    config.inference_mode = True
    config.save_pretrained(str(folder))
    tensors: dict[str, torch.Tensor] = {}
    for name, (a, b) in factors.items():
        if b.shape[1] != a.shape[0]:
            raise ValueError(f"{name}: B is {tuple(b.shape)}, A is {tuple(a.shape)}; need B (out×r), A (r×in)")
        tensors[f"base_model.model.{name}.lora_A.weight"] = a.detach().to("cpu").contiguous().clone()
        tensors[f"base_model.model.{name}.lora_B.weight"] = b.detach().to("cpu").contiguous().clone()
    save_file(tensors, str(Path(folder) / PEFT_WEIGHTS), metadata={"format": "pt"})
    return {"format": "peft-lora", "peft_type": "LORA", "use_dora": False, "ranks": ranks}


def save_whole_model(model: nn.Module, folder: Path, state_dict: Mapping[str, torch.Tensor] | None = None) -> dict:
    """A whole model: ``save_pretrained`` (safetensors, a Hugging Face model folder: ``pretrained=<folder>`` in
    lm-eval) for transformers models, else the state dict as ``model.safetensors`` (an MLP)."""
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(str(folder), state_dict=dict(state_dict) if state_dict is not None else None)
        return {"format": "hf-model"}
    from safetensors.torch import save_file, save_model

    if state_dict is None:
        save_model(model, str(Path(folder) / "model.safetensors"))
    else:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, str(Path(folder) / "model.safetensors")
        )
    return {"format": "torch-state-dict"}


def state_bytes(tensors: Mapping[str, torch.Tensor] | nn.Module) -> int:
    """Bytes of distinct tensors (tied weights counted once)."""
    items = tensors.state_dict() if isinstance(tensors, nn.Module) else tensors
    seen: dict[tuple[int, int], int] = {}
    for t in items.values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.device.type != "meta" else (id(t), 0)
        seen[key] = t.numel() * t.element_size()
    return sum(seen.values())
