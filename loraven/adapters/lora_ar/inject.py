"""Turn a per-module rank allocation into a peft LoRA model, and prove peft built exactly that.

peft 0.21 resolves ``rank_pattern``/``alpha_pattern`` with ``peft.utils.other.get_pattern_key``: a key
matches a module name when ``re.match(rf"(.*\\.)?({key})$", name)`` succeeds, first key in dict order wins,
and a module no key matches silently falls back to ``LoraConfig.r``. Keys are therefore regexes matched on
a dotted suffix, so ``model.layers.1.self_attn.q_proj`` unescaped would match any character in place of
each dot, and unanchored it would also match ``<prefix>.model.layers.1.self_attn.q_proj``. We emit ``^`` +
``re.escape(name)``: the ``^`` only matches at position 0, forcing the optional prefix group to be empty,
so each key matches exactly one name. (``layers.1.`` vs ``layers.11.`` could never collide on the escaped
dot.) We check this with peft's own matcher before injection and read the ranks back from the built layers
after it; any mismatch is a ConfigError.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from loraven.adapters.lora import wrap_with_peft
from loraven.adapters.targets import resolve_targets
from loraven.errors import ConfigError

__all__ = ["check_patterns", "inject", "pattern_key", "resolve_targets", "verify", "weight_of"]


def weight_of(module: nn.Module):
    """The ``(out, in)`` weight of a Linear / Conv1D (Conv1D stores ``(in, out)``)."""
    w = module.weight
    return w if isinstance(module, nn.Linear) else w.T


def pattern_key(name: str) -> str:
    """A ``rank_pattern`` key that peft matches against ``name`` and nothing else."""
    return "^" + re.escape(name)


def check_patterns(keys: Mapping[str, str], names: Sequence[str]) -> None:
    """Each module must resolve (by peft's own matcher) to its own key, and each key to exactly one module."""
    from peft.utils.other import get_pattern_key

    ordered = list(keys.values())
    for name in names:
        # peft resolves a name no key matches to the name itself
        key, want = get_pattern_key(ordered, name), keys.get(name, name)
        if key != want:
            raise ConfigError(f"rank_pattern: module {name!r} resolves to key {key!r}, expected {want!r}")
    for name, key in keys.items():
        hits = [n for n in names if re.match(rf"(.*\.)?({key})$", n)]
        if hits != [name]:
            raise ConfigError(f"rank_pattern key {key!r} for {name!r} matches {hits}; expected exactly [{name!r}]")


def inject(
    model: nn.Module, ranks: Mapping[str, int], alphas: Mapping[str, float], adapter_cfg: Mapping[str, Any]
) -> nn.Module:
    """Wrap ``model`` with peft LoRA: exactly the modules in ``ranks``, each with its rank and alpha.

    ``adapter_cfg`` supplies dropout / use_dora / use_rslora. Raises ConfigError if peft adapted a
    different set of modules, or any module ended up with another rank or alpha than allocated.
    """
    if not ranks:
        raise ConfigError("LoRA-AR selected no module to adapt; valid: top_n_percentile in (0, 1]")
    all_names = [n for n, _ in model.named_modules()]
    missing = sorted(set(ranks) - set(all_names))
    if missing:
        raise ConfigError(f"allocated modules not in the model: {missing[:5]}")
    keys = {name: pattern_key(name) for name in ranks}
    check_patterns(keys, all_names)
    from peft import LoraConfig

    config = LoraConfig(
        lora_dropout=float(adapter_cfg.get("dropout", 0.0)),
        use_dora=bool(adapter_cfg.get("use_dora", False)),
        use_rslora=bool(adapter_cfg.get("use_rslora", False)),
        bias="none",
        r=max(ranks.values()),
        lora_alpha=max(alphas.values()),
        target_modules=list(ranks),
        rank_pattern={keys[n]: int(r) for n, r in ranks.items()},
        alpha_pattern={keys[n]: float(alphas[n]) for n in ranks},
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrapped = wrap_with_peft(model, config)
    unmatched = [str(w.message) for w in caught if "did not match any targeted module" in str(w.message)]
    if unmatched:
        raise ConfigError(f"peft left rank/alpha patterns unmatched: {unmatched}")
    for w in caught:  # re-emit what we only inspected
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    verify(wrapped, ranks, alphas)
    return wrapped


def injected_layers(model: nn.Module) -> dict[str, nn.Module]:
    """peft LoRA layers by their name in the base model (``base_model.model.`` prefix removed)."""
    out = {}
    for name, module in model.named_modules():
        r = getattr(module, "r", None)
        if isinstance(r, dict) and "default" in r and hasattr(module, "lora_A"):
            out[name.removeprefix("base_model.model.").removeprefix("base_model.")] = module
    return out


def verify(model: nn.Module, ranks: Mapping[str, int], alphas: Mapping[str, float]) -> None:
    """Every allocated module got its rank and alpha; no other module was adapted."""
    layers = injected_layers(model)
    extra, absent = sorted(set(layers) - set(ranks)), sorted(set(ranks) - set(layers))
    if extra or absent:
        raise ConfigError(
            f"peft adapted a different module set than allocated: unexpected {extra[:5]}, missing {absent[:5]}"
        )
    wrong = [
        (n, int(m.r["default"]), ranks[n], float(m.lora_alpha["default"]), alphas[n])
        for n, m in layers.items()
        if int(m.r["default"]) != ranks[n] or float(m.lora_alpha["default"]) != float(alphas[n])
    ]
    if wrong:
        raise ConfigError(f"peft built other ranks/alphas than allocated (module, r, want, alpha, want): {wrong[:5]}")
