"""The one "which layers" resolver (loraven/adapters/targets.py) on models whose answer is known by construction."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from loraven.adapters.targets import (
    HEAD_NAMES,
    layer_shape,
    linear_classes,
    output_head,
    resolve_targets,
    smallest_side,
    target_names,
)
from loraven.errors import ConfigError


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.up_proj = nn.Linear(8, 24)
        self.norm = nn.LayerNorm(8)


class _Tower(nn.Module):
    """Two blocks and a head named like an LM's, without ``get_output_embeddings``."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_Block(), _Block()])
        self.lm_head = nn.Linear(8, 50)


class _WithHead(nn.Module):
    """A model that declares its head through ``get_output_embeddings`` under a name the name rule would miss."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 6)
        self.out = nn.Linear(6, 3)

    def get_output_embeddings(self) -> nn.Module:
        return self.out


def test_all_linear_is_every_linear_but_the_head_in_model_order() -> None:
    model = _Tower()
    assert list(resolve_targets(model, "all-linear")) == [
        "layers.0.q_proj",
        "layers.0.up_proj",
        "layers.1.q_proj",
        "layers.1.up_proj",
    ]


def test_the_head_is_found_by_get_output_embeddings_or_as_an_mlps_last_layer() -> None:
    declared = _WithHead()
    assert output_head(declared) is declared.out
    assert list(resolve_targets(declared, "all-linear")) == ["proj"]
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 2))
    assert output_head(mlp) is mlp[4]
    assert list(resolve_targets(mlp, "all-linear")) == ["0", "2"]
    assert output_head(_Tower()) is None  # neither declared nor a Sequential: the name rule covers lm_head
    assert set(HEAD_NAMES) == {"lm_head", "score", "classifier"}


def test_named_targets_match_whole_names_or_dotted_suffixes_only() -> None:
    model = _Tower()
    assert list(resolve_targets(model, ["q_proj"])) == ["layers.0.q_proj", "layers.1.q_proj"]
    assert list(resolve_targets(model, "up_proj")) == ["layers.0.up_proj", "layers.1.up_proj"]
    assert list(resolve_targets(model, ["layers.1.q_proj"])) == ["layers.1.q_proj"]
    assert list(resolve_targets(model, ["lm_head"])) == ["lm_head"]  # named explicitly, the head is allowed
    with pytest.raises(ConfigError, match="matches no linear layer"):
        resolve_targets(model, ["proj"])  # a fragment of a name is not a suffix match


def test_no_match_names_the_valid_layer_names() -> None:
    with pytest.raises(ConfigError, match=r"\['qkv'\].*valid names: lm_head, q_proj, up_proj \(or all-linear\)"):
        resolve_targets(_Tower(), ["qkv"])
    with pytest.raises(ConfigError, match="valid names: \\(none\\)"):
        resolve_targets(nn.Sequential(nn.ReLU()), "all-linear")


@pytest.mark.parametrize("bad", [[], 3, [1, 2], ("q_proj", 5)])
def test_malformed_target_modules_is_a_config_error(bad) -> None:
    with pytest.raises(ConfigError, match="must be 'all-linear' or a non-empty list of names"):
        target_names(bad)


def test_target_names_forms() -> None:
    assert target_names("all-linear") is None
    assert target_names("q_proj") == ["q_proj"]
    assert target_names(("q_proj", "v_proj")) == ["q_proj", "v_proj"]


def test_classes_restrict_what_is_adapted_and_conv1d_shapes_read_transposed() -> None:
    from transformers.pytorch_utils import Conv1D

    model = nn.Module()
    model.attn = Conv1D(12, 4)  # GPT-2 style: weight (in=4, out=12)
    model.mlp = nn.Linear(4, 6)
    assert Conv1D in linear_classes() and nn.Linear in linear_classes()
    assert list(resolve_targets(model, "all-linear")) == ["attn", "mlp"]
    assert list(resolve_targets(model, "all-linear", classes=(nn.Linear,))) == ["mlp"]
    assert layer_shape(model.attn) == (12, 4) and layer_shape(model.mlp) == (6, 4)


def test_smallest_side_is_the_largest_rank_every_target_fits() -> None:
    targets = resolve_targets(_Tower(), "all-linear")
    assert smallest_side(targets) == ("layers.0.q_proj", 8)
    wide = {"a": nn.Linear(16, 32), "b": nn.Linear(64, 12), "c": nn.Linear(20, 20)}
    assert smallest_side(wide) == ("b", 12)


def test_the_real_models_agree_with_peft_on_all_linear() -> None:
    """peft's own all-linear matcher on the tiny Llama picks the same layers (the rule every method shares)."""
    from peft import LoraConfig, get_peft_model

    from loraven.models import build_tiny_llama

    model, _ = build_tiny_llama(seed=0)
    ours = set(resolve_targets(model, "all-linear"))
    torch.manual_seed(0)
    wrapped = get_peft_model(build_tiny_llama(seed=0)[0], LoraConfig(r=2, target_modules="all-linear"))
    theirs = {n.removeprefix("base_model.model.") for n, m in wrapped.named_modules() if hasattr(m, "lora_A")}
    assert ours == theirs


class _HeadFirst(nn.Module):
    """Heads named like a classifier's, nested two levels deep and registered *before* the layers to adapt."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = nn.ModuleDict({"task": nn.ModuleDict({"score": nn.Linear(8, 2)})})
        self.body = nn.ModuleDict({"enc": nn.ModuleDict({"fc": nn.Linear(8, 8)})})
        self.classifier = nn.Linear(8, 3)


def test_head_names_count_at_any_depth_and_do_not_stop_the_search() -> None:
    assert list(resolve_targets(_HeadFirst(), "all-linear")) == ["body.enc.fc"]


def test_the_error_echoes_the_setting_as_given() -> None:
    with pytest.raises(ConfigError, match=r"target_modules='qkv' matches no"):
        resolve_targets(_Tower(), "qkv")
    with pytest.raises(ConfigError, match=r"target_modules=\['qkv'\] matches no"):
        resolve_targets(_Tower(), ("qkv",))
