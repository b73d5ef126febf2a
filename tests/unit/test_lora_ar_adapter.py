"""LoRA-AR through peft and the registry: exact-name rank patterns survive real injection (layers.1 vs
layers.11), mismatches raise, only adapter parameters train, ranks()/artifacts report what peft built."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch

from loraven.adapters import AdapterContext, apply_adapter, get_adapter
from loraven.adapters.lora_ar import ALLOCATION_FILE, LoraARAdapted
from loraven.adapters.lora_ar.inject import check_patterns, inject, pattern_key, resolve_targets
from loraven.errors import ConfigError
from loraven.models import build_tiny_llama


def _tiny(layers: int = 12):
    return build_tiny_llama(seed=0, layers=layers, hidden_size=32, heads=2, intermediate_size=64)[0]


def test_pattern_key_matches_only_its_own_module_in_peft() -> None:
    from peft.utils.other import get_pattern_key

    names = [
        "model.layers.1.self_attn.q_proj",
        "model.layers.11.self_attn.q_proj",
        "base.model.layers.1.self_attn.q_proj",
        "model.layers.1xself_attn.q_proj",
    ]
    keys = [pattern_key(n) for n in names]
    for name, key in zip(names, keys, strict=True):
        assert get_pattern_key(keys, name) == key
        assert [n for n in names if re.match(rf"(.*\.)?({key})$", n)] == [name]
    # the naive (unescaped, unanchored) key would also claim the prefixed module
    assert get_pattern_key(["model.layers.1.self_attn.q_proj"], names[2]) == "model.layers.1.self_attn.q_proj"


def test_check_patterns_rejects_ambiguous_keys() -> None:
    names = ["model.layers.1.q", "x.model.layers.1.q"]
    with pytest.raises(ConfigError, match="resolves to key"):
        check_patterns({"model.layers.1.q": r"model\.layers\.1\.q"}, names)


def test_each_dotted_digit_name_gets_its_own_rank_after_peft_injection() -> None:
    model = _tiny(12)
    names = [f"model.layers.{i}.self_attn.q_proj" for i in range(12)]
    ranks = {n: 2 + i for i, n in enumerate(names)}  # layers.1 -> 3, layers.11 -> 13
    alphas = {n: 3.0 * r for n, r in ranks.items()}
    wrapped = inject(model, ranks, alphas, {})
    built = {
        name.removeprefix("base_model.model."): m
        for name, m in wrapped.named_modules()
        if hasattr(m, "lora_A") and isinstance(getattr(m, "r", None), dict)
    }
    assert set(built) == set(names)
    for name in names:
        assert built[name].r["default"] == ranks[name]
        assert built[name].lora_A["default"].weight.shape[0] == ranks[name]
        assert built[name].lora_alpha["default"] == alphas[name]
    assert built["model.layers.1.self_attn.q_proj"].r["default"] == 3
    assert built["model.layers.11.self_attn.q_proj"].r["default"] == 13


def test_inject_rejects_unknown_module() -> None:
    with pytest.raises(ConfigError, match="not in the model"):
        inject(_tiny(2), {"model.layers.7.self_attn.q_proj": 4}, {"model.layers.7.self_attn.q_proj": 8.0}, {})


def test_all_linear_excludes_the_output_head() -> None:
    model = _tiny(2)
    targets = resolve_targets(model, "all-linear")
    assert len(targets) == 14 and "lm_head" not in targets
    assert list(resolve_targets(model, ["q_proj"])) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    with pytest.raises(ConfigError, match="matches no linear layer"):
        resolve_targets(model, ["qkv"])


def test_registry_applies_lora_ar_end_to_end(tmp_path) -> None:
    assert get_adapter("lora_ar").schedulers == ("static",)
    model = _tiny(12)
    for name, p in model.named_parameters():  # make layer 1's q_proj heavy-tailed so ranks are spread
        if name == "model.layers.1.self_attn.q_proj.weight":
            with torch.no_grad():
                u, _, vh = torch.linalg.svd(p, full_matrices=False)
                p.copy_((u * torch.arange(1, 33).pow(-1.0)) @ vh)
    adapted = apply_adapter(
        model,
        {"name": "lora_ar", "top_n_percentile": 1.0, "r_min": 2, "r_max": 16},
        {"name": "static"},
        AdapterContext(),
    )
    assert isinstance(adapted, LoraARAdapted)

    trainable = [n for n, p in adapted.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)

    alloc = adapted.allocation.table
    ranks = adapted.ranks()
    assert ranks == {m: int(r) for m, r in zip(alloc["module"], alloc["rank"], strict=True)}
    assert len(ranks) == 84 and len(set(ranks.values())) > 3
    assert ranks["model.layers.1.self_attn.q_proj"] == 2  # the engineered heavy-tailed layer

    paths = adapted.write_artifacts(tmp_path)
    assert paths == [tmp_path / ALLOCATION_FILE]
    csv = pd.read_csv(paths[0])
    assert list(csv.columns) == ["module", "alpha_hill", "spikes", "score", "rank"]
    assert dict(zip(csv["module"], csv["rank"], strict=True)) == ranks
    tables = adapted.artifact_tables()
    assert set(tables["lora_ar_allocation"].columns) >= set(csv.columns) | {"selected", "lora_alpha"}

    summary = adapted.summary()
    assert summary["n_selected"] == 84 and summary["budget_mode"] is False
    assert sum(summary["rank_hist"].values()) == 84 and summary["analysis_s"] >= 0
    assert adapted.trainable_param_count() == summary["lora_params"]


def test_registry_partial_selection_and_budget() -> None:
    model = _tiny(4)
    adapted = apply_adapter(
        model, {"name": "lora_ar", "budget_rank": 4, "use_dora": True}, {"name": "static"}, AdapterContext()
    )
    ranks = adapted.ranks()
    assert len(ranks) == 14  # ⌈0.5·28⌉
    summary = adapted.summary()
    assert adapted.trainable_param_count() == summary["achieved_params"]
    assert abs(summary["param_ratio"] - 1.0) <= 96 / summary["target_params"]  # max(in+out) = 64+32
    with pytest.raises(ConfigError, match="budget_rank"):
        apply_adapter(_tiny(2), {"name": "lora_ar", "budget_rank": -1}, {"name": "static"}, AdapterContext())
