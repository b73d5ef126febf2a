"""The layout's promises, checked: a method is one folder (its registry entry carries everything the harness
needs), no method name leaks out of ``loraven/adapters``, and a new method runs end to end with no edit
elsewhere (a rank-1 toy registered here, as a new folder would register itself)."""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from loraven.adapters.base import (
    _REGISTRY,
    AdaptedModel,
    AdapterContext,
    available_adapters,
    display_label,
    get_adapter,
    label_order,
    register_adapter,
)
from loraven.adapters.targets import output_head, resolve_targets
from loraven.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# The package is also called loraven: these literals name the package (logger, cache folder, W&B project),
# not the method.
PACKAGE_NAME_USES = {
    ("loraven/cli.py", "loraven"),
    ("loraven/job.py", "loraven"),
    ("loraven/train.py", "loraven"),
    ("loraven/models.py", "loraven"),
    ("loraven/track.py", "loraven"),
}


def _method_literals(path: Path, names: set[str]) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in names or any(
                text.startswith(f"{n}_") and text[len(n) + 1 :] in ("static", "linear", "energy") for n in names
            ):
                hits.append((node.lineno, text))
        elif isinstance(node, (ast.Name, ast.Attribute, ast.arg, ast.FunctionDef)):
            ident = (
                getattr(node, "id", None)
                or getattr(node, "attr", None)
                or getattr(node, "arg", None)
                or getattr(node, "name", None)
            )
            if ident and any(f"{n}_" in ident or ident.endswith(f"_{n}") for n in names if "_" in n):
                hits.append((node.lineno, ident))
    return hits


def test_no_method_name_outside_the_adapters_package() -> None:
    names = set(available_adapters()) - {"none"}  # "none" is also every group's off switch (energy, tracking)
    leaks = []
    files = [*(ROOT / "loraven").rglob("*.py"), *(ROOT / "analysis").rglob("*.py"), ROOT / "run.py"]
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("loraven/adapters/"):
            continue
        leaks += [
            f"{rel}:{line}: {text!r}"
            for line, text in _method_literals(path, names)
            if (rel, text) not in PACKAGE_NAME_USES
        ]
    assert not leaks, "method names outside loraven/adapters (move them into the registry entry):\n" + "\n".join(leaks)


def test_the_leak_check_finds_a_planted_name(tmp_path: Path) -> None:
    planted = tmp_path / "bad.py"
    planted.write_text('if adapter == "dora":\n    pass\nlora_ar_mode = 1\nx = "loraven_linear"\n')
    found = {text for _, text in _method_literals(planted, {"dora", "lora_ar", "loraven"})}
    assert found == {"dora", "lora_ar_mode", "loraven_linear"}


def test_registry_entries_carry_labels_order_and_baseline() -> None:
    assert display_label("none") == "dense" and get_adapter("none").baseline
    assert label_order()[0] == "dense"  # the baseline sorts first
    assert display_label("unknown_method", "linear") == "unknown_method+linear"  # shown as is, never a crash


def test_one_target_resolver_for_every_method() -> None:
    from loraven.models import build_mlp, build_tiny_llama

    llama, _ = build_tiny_llama(seed=0)
    names = list(resolve_targets(llama, "all-linear"))
    assert names and not any(n.endswith("lm_head") for n in names)
    assert output_head(llama) is llama.get_output_embeddings()
    mlp = build_mlp(8, [6], 3)
    assert list(resolve_targets(mlp, "all-linear")) == ["0"]  # an MLP's last layer is its head
    with pytest.raises(ConfigError, match="valid names: .*q_proj"):
        resolve_targets(llama, ["qkv"])
    from loraven.adapters.loraven import find_targets

    assert find_targets(llama, "all-linear") == names  # LoRAven uses the same rule


# ------------------------------------------------------------------ a new method: one module, nothing else


class _Rank1(nn.Module):
    """Frozen W plus a trainable rank-1 update u·vᵀ (a toy in the spirit of VeRA's shared-vector methods)."""

    def __init__(self, base: nn.Linear) -> None:
        super().__init__()
        self.base = base
        self.u = nn.Parameter(torch.zeros(base.out_features))
        self.v = nn.Parameter(torch.randn(base.in_features) / base.in_features**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.v).unsqueeze(-1) * self.u


class _Rank1Adapted(AdaptedModel):
    def __init__(self, model: nn.Module, layers: dict[str, _Rank1]) -> None:
        super().__init__(model)
        self.layers = layers

    def ranks(self) -> dict[str, int]:
        return dict.fromkeys(self.layers, 1)

    def prepare_for_inference(self) -> None:
        with torch.no_grad():
            for layer in self.layers.values():
                layer.base.weight += torch.outer(layer.u, layer.v)
                layer.u.zero_()


def _apply_rank1(model: nn.Module, cfg: Mapping[str, Any], ctx: AdapterContext) -> AdaptedModel:
    model.requires_grad_(False)
    layers = {}
    for name, module in resolve_targets(model, cfg.get("target_modules", "all-linear"), (nn.Linear,)).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layers[name] = _Rank1(module)
        setattr(parent, child, layers[name])
    return _Rank1Adapted(model, layers)


@pytest.fixture
def toy_method():
    register_adapter(
        "toy_rank1", labels={"static": "toy rank-1"}, order=50, match_rank=lambda cfg, rank, mode: dict(cfg)
    )(_apply_rank1)
    yield "toy_rank1"
    _REGISTRY.pop("toy_rank1", None)


def test_a_new_method_runs_end_to_end_with_no_edit_elsewhere(
    toy_method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from analysis.load import load_results, runs_frame
    from loraven.bench import methods
    from loraven.bench.overhead import compose_config
    from loraven.job import run_job

    cfg = compose_config(
        [
            "model=tiny_llama",
            "trainer=smoke",
            "tracking=none",
            "energy=none",
            "task.n_test=8",
            f"results_dir={tmp_path}/results",
        ]
    )
    cfg["adapter"] = {"name": toy_method, "target_modules": "all-linear"}
    cfg["scheduler"] = {"name": "static"}
    result = run_job(cfg, progress=False)
    assert result["status"] == "completed", result.get("reason")
    assert result["adapter"]["label"] == "toy rank-1" and set(result["adapter"]["ranks"].values()) == {1}
    on_disk = json.loads((tmp_path / "results" / "default" / result["run_id"] / "result.json").read_text())
    assert runs_frame(load_results(tmp_path / "results"))["level"].tolist() == ["toy rank-1"]
    assert on_disk["model"]["trainable_params"] > 0
    # the benchmarks list it too (its YAML would sit in conf/adapter/)
    conf = tmp_path / "conf"
    (conf / "adapter").mkdir(parents=True)
    (conf / "adapter" / f"{toy_method}.yaml").write_text(f"adapter:\n  name: {toy_method}\n")
    (conf / "scheduler").mkdir()
    (conf / "scheduler" / "static.yaml").write_text("name: static\n")
    monkeypatch.setattr(methods, "CONF_DIR", conf)
    assert toy_method in methods.bench_methods()
    adapter_cfg, scheduler_cfg = methods.method_configs(toy_method, 4)
    assert adapter_cfg["name"] == toy_method and scheduler_cfg["name"] == "static"
