"""Which layers a method adapts: the one resolver every method, the config checks and the bench use.

peft keeps one matcher for all its tuners; so do we. Before this module the rule existed three times with
different answers (the config check by name, LoRA-AR by ``get_output_embeddings``, LoRAven by its own
output-head guess), so a model could pass the check and then fail, or be adapted differently, per method.

Rule (peft's ``target_modules`` semantics):
- ``all-linear``: every linear layer except the model's output head. The head is the module returned by
  ``get_output_embeddings()`` (``lm_head`` of a causal LM), any layer named ``lm_head``/``score``/
  ``classifier``, and for a plain ``nn.Sequential`` MLP its last linear layer (its head).
- a name or list of names: layers whose dotted name equals an entry or ends with ``.<entry>``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from loraven.errors import ConfigError

HEAD_NAMES = ("lm_head", "score", "classifier")


def linear_classes() -> tuple[type, ...]:
    """``nn.Linear`` and transformers' ``Conv1D`` (GPT-2 style linear layers stored as ``(in, out)``)."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a dependency
        return (nn.Linear,)
    return (nn.Linear, Conv1D)


def output_head(model: nn.Module) -> nn.Module | None:
    """The model's output layer, which ``all-linear`` never adapts (None when it has none we can tell)."""
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        head = get()
        if head is not None:
            return head
    if isinstance(model, nn.Sequential):
        linears = [m for m in model.modules() if isinstance(m, linear_classes())]
        return linears[-1] if linears else None
    return None


def target_names(target_modules: str | Sequence[str]) -> list[str] | None:
    """The names a ``target_modules`` setting lists (None for ``all-linear``); a bad value is a ConfigError."""
    if target_modules == "all-linear":
        return None
    if isinstance(target_modules, str):
        return [target_modules]
    if isinstance(target_modules, Sequence) and target_modules and all(isinstance(t, str) for t in target_modules):
        return list(target_modules)
    raise ConfigError(f"adapter.target_modules={target_modules!r} must be 'all-linear' or a non-empty list of names")


def resolve_targets(
    model: nn.Module, target_modules: str | Sequence[str], classes: tuple[type, ...] | None = None
) -> dict[str, nn.Module]:
    """Name → module of the layers to adapt, in model order; ConfigError naming the valid names if none match.

    ``classes``: the layer types the method can adapt (default: ``nn.Linear`` and ``Conv1D``).
    """
    classes = classes or linear_classes()
    names = target_names(target_modules)
    head = output_head(model) if names is None else None
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, classes):
            continue
        if names is None:
            if module is head or name.rsplit(".", 1)[-1] in HEAD_NAMES:
                continue
        elif not any(name == t or name.endswith(f".{t}") for t in names):
            continue
        found[name] = module
    if not found:
        valid = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, classes)})
        shown = target_modules if isinstance(target_modules, str) else list(target_modules)
        raise ConfigError(
            f"adapter.target_modules={shown!r} matches no linear layer of this model; "
            f"valid names: {', '.join(valid) or '(none)'} (or all-linear)"
        )
    return found


def layer_shape(module: nn.Module) -> tuple[int, int]:
    """``(out_features, in_features)`` of a Linear or Conv1D."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features
    out_features, in_features = int(module.weight.shape[1]), int(module.weight.shape[0])  # Conv1D: (in, out)
    return out_features, in_features


def smallest_side(targets: dict[str, nn.Module]) -> tuple[str, int]:
    """The target layer with the smallest ``min(out, in)`` and that size: the largest rank every target fits."""
    name = min(targets, key=lambda n: min(layer_shape(targets[n])))
    return name, min(layer_shape(targets[name]))
