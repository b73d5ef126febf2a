"""What the step-time and inference benchmarks compare: a base LM and the methods applied to it at rank r.

Methods are the registry's benchmark variants (:meth:`AdapterSpec.bench_variants`): ``<adapter>`` for a
method with one scheduler, ``<adapter>_<scheduler>`` for each scheduler of a dynamic method (e.g.
``loraven_linear``). Each adapter's settings start from its own ``conf/adapter/<name>.yaml`` (the values a
user's run gets) with only the rank set, by the method's own ``match_rank`` (its registry entry), so the
benchmark measures what ``python run.py adapter=X`` trains. ``rank_mode`` says how rank r is matched:
``uniform`` (r on every layer) or ``budget`` (the parameter count of rank r, spread as the method allocates).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from loraven import CONF_DIR
from loraven.adapters.base import (
    RANK_MATCH_MODES,
    AdaptedModel,
    AdapterContext,
    AdapterSpec,
    apply_adapter,
    registered_specs,
)
from loraven.errors import ConfigError

MODELS = ("smollm2", "tiny")


def bench_methods() -> dict[str, tuple[AdapterSpec, str]]:
    """Every benchmark method name → (its adapter's registry entry, scheduler), in table order."""
    return {variant: (spec, sched) for spec in registered_specs() for variant, sched in spec.bench_variants().items()}


def _load_group(group: str, name: str) -> dict[str, Any]:
    """``conf/<group>/<name>.yaml`` as a dict (its ``adapter:`` section for adapter files)."""
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no config file {path} for {group}={name}")
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(data, dict)
    data.pop("defaults", None)
    return dict(data.get("adapter", data)) if group == "adapter" else data


def method_configs(method: str, rank: int, rank_mode: str = "uniform") -> tuple[dict, dict]:
    """(adapter_cfg, scheduler_cfg) for a benchmark method name at matched rank ``rank``."""
    methods = bench_methods()
    if method not in methods:
        raise ConfigError(f"unknown benchmark method {method!r}; valid: {', '.join(methods)}")
    if rank_mode not in RANK_MATCH_MODES:
        raise ConfigError(f"rank_mode={rank_mode!r}; valid choices: {', '.join(RANK_MATCH_MODES)}")
    spec, scheduler = methods[method]
    cfg = _load_group("adapter", spec.name)
    if spec.match_rank is not None:
        cfg = spec.match_rank(cfg, rank, rank_mode)
    return cfg, _load_group("scheduler", scheduler)


def build_base(
    model: str = "smollm2",
    layers: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> tuple[nn.Module, str]:
    """The base LM (eval mode, frozen) and its name.

    ``smollm2``: real SmolLM2-135M weights on CPU; on GPU the same architecture random-initialised (step
    time depends on shapes, not values). ``tiny``: the random tiny Llama of the tests. ``layers`` keeps only
    the first N decoder layers (quick runs; times then cover N of the 30 layers plus embeddings and head).
    """
    device = device or torch.device("cpu")
    if model == "smollm2":
        from loraven.models import load_smollm2

        net, _ = load_smollm2(torch.float32)
        name = "SmolLM2-135M-Instruct"
        if device.type == "cuda":
            from transformers import AutoModelForCausalLM

            torch.manual_seed(seed)
            net = AutoModelForCausalLM.from_config(net.config)
            name += " (random init, same shapes)"
    elif model == "tiny":
        from loraven.models import build_tiny_llama

        net, _ = build_tiny_llama(seed=seed)
        name = "tiny-llama-random"
    else:
        raise ConfigError(f"bench model={model!r}; valid choices: {', '.join(MODELS)}")
    if layers is not None:
        n_layers = len(net.model.layers)
        if not 1 <= int(layers) <= n_layers:
            raise ConfigError(f"bench layers={layers}; valid: 1..{n_layers} or null (all)")
        net.model.layers = net.model.layers[: int(layers)]
        net.config.num_hidden_layers = int(layers)
        name += f" (first {layers} of {n_layers} layers)"
    net.requires_grad_(False)
    return net.to(device=device, dtype=dtype).eval(), name


def apply_method(
    base: nn.Module,
    method: str,
    rank: int,
    device: torch.device,
    seed: int = 0,
    rank_mode: str = "uniform",
    total_steps: int = 100,
) -> AdaptedModel:
    """A fresh copy of ``base`` with ``method`` applied (base is never modified)."""
    adapter_cfg, scheduler_cfg = method_configs(method, rank, rank_mode)
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    adapted = apply_adapter(model, adapter_cfg, scheduler_cfg, AdapterContext(total_steps=total_steps, seed=seed))
    adapted.model.to(device)
    return adapted


def token_batch(
    vocab_size: int, batch_size: int, seq_len: int, device: torch.device, seed: int = 0
) -> dict[str, torch.Tensor]:
    """A fixed-length random-token batch, loss on every token: batch_size × seq_len tokens exactly."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab_size, (batch_size, seq_len), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    return {k: v.to(device) for k, v in batch.items()}


def check_methods(methods: Sequence[str]) -> None:
    for method in methods:
        method_configs(method, 8)  # raises ConfigError for unknown names


def param_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])


def optimizer_bytes(state: Mapping[Any, Mapping[str, Any]]) -> int:
    return sum(v.numel() * v.element_size() for s in state.values() for v in s.values() if isinstance(v, torch.Tensor))
