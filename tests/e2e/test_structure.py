"""The layout's promises, checked: a method is one folder (its registry entry carries everything the harness
needs), no method name leaks out of ``loraven/adapters``, and a new method runs end to end with no edit
elsewhere (a rank-1 toy registered here, as a new folder would register itself)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from loraven.adapters.base import available_adapters, display_label, get_adapter, label_order
from loraven.adapters.targets import output_head, resolve_targets
from loraven.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
# The package is also called loraven: these literals name the package (logger, cache folder, W&B project),
# not the method.
PACKAGE_NAME_USES = {
    ("loraven/cli/app.py", "loraven"),
    ("loraven/cli/hydra_glue.py", "loraven"),
    ("loraven/tasks/batching.py", "loraven"),
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


# ------------------------------------------------------------------ plug-ins from outside the package

PLUGIN_MODULE = """
\"\"\"A user's own method, task kind and energy meter: one module, registered on import, no edit to loraven.\"\"\"
from typing import Literal

import torch
from torch import nn

from loraven.adapters.base import AdaptedModel, register_adapter
from loraven.adapters.options import AdapterOptions, TargetModules
from loraven.adapters.targets import resolve_targets
from loraven.meters.base import EnergyMeter, EnergyReading, NoSettings, register_meter
from loraven.tasks.base import register_task
from loraven.tasks.classic import ClassicTask
from loraven.tasks.options import ClassicOptions


class Rank1Settings(AdapterOptions):
    name: Literal["toy_rank1"]
    target_modules: TargetModules


class Rank1(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base = base
        self.u = nn.Parameter(torch.zeros(base.out_features))
        self.v = nn.Parameter(torch.randn(base.in_features) / base.in_features**0.5)

    def forward(self, x):
        return self.base(x) + (x @ self.v).unsqueeze(-1) * self.u


class Rank1Adapted(AdaptedModel):
    def __init__(self, model, layers):
        super().__init__(model)
        self.layers = layers

    def ranks(self):
        return dict.fromkeys(self.layers, 1)


@register_adapter("toy_rank1", config=Rank1Settings, labels={"static": "toy rank-1"}, order=50)
def apply_rank1(model, settings, ctx):
    model.requires_grad_(False)
    layers = {}
    for name, module in resolve_targets(model, settings.target_modules, (nn.Linear,)).items():
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layers[name] = Rank1(module)
        setattr(parent, child, layers[name])
    return Rank1Adapted(model, layers)


class ParityOptions(ClassicOptions):
    n: int


@register_task("toy_parity", config=ParityOptions, family="custom")
def build_parity(settings, data_root):
    gen = torch.Generator().manual_seed(settings.seed)
    x = torch.randn(settings.n, 8, generator=gen)
    y = (x[:, 0] * x[:, 1] > 0).long()
    cut = int(settings.n * (1 - settings.test_fraction))
    return ClassicTask(
        name="toy_parity", x_train=x[:cut], y_train=y[:cut], x_test=x[cut:], y_test=y[cut:], regression=False,
        info={"in_features": 8, "out_features": 2, "regression": False}, fingerprint=f"parity{settings.n}",
    )


class ConstantPower(EnergyMeter):
    method = "toy-constant-power"

    def __init__(self, watts):
        self.watts = watts

    def measure(self, phase):
        import contextlib, time

        @contextlib.contextmanager
        def box():
            out, start = {}, time.perf_counter()
            yield out
            seconds = time.perf_counter() - start
            kwh = self.watts * seconds / 3.6e6
            out["reading"] = EnergyReading(self.method, "estimated", kwh=kwh, cpu_kwh=kwh, duration_s=seconds)

        return box()


class ToyPowerSettings(NoSettings):
    watts: float


@register_meter("toy_power", config=ToyPowerSettings)
def make_toy_power(settings, run_dir):
    return ConstantPower(settings.watts)
"""


def _plugin_dir(tmp_path: Path) -> Path:
    """A user's folder: their module beside a conf/ of YAMLs that name it with ``_target_``."""
    root = tmp_path / "my_plugins"
    (root / "conf" / "adapter").mkdir(parents=True)
    (root / "conf" / "task").mkdir()
    (root / "conf" / "energy").mkdir()
    (root / "toy_plugins.py").write_text(PLUGIN_MODULE)
    (root / "conf" / "adapter" / "toy_rank1.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /scheduler: static\n"
        "adapter:\n  name: toy_rank1\n  _target_: toy_plugins\n  target_modules: all-linear\n"
        "  param_budget: null\n"
    )
    (root / "conf" / "task" / "toy_parity.yaml").write_text(
        "defaults:\n  - /task_options/classic@_here_\n  - _self_\nkind: toy_parity\n_target_: toy_plugins\nn: 400\n"
    )
    (root / "conf" / "energy" / "toy_power.yaml").write_text("name: toy_power\n_target_: toy_plugins\nwatts: 30.0\n")
    return root


def _git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout


def test_out_of_tree_method_task_and_meter_run_via_config_dir(tmp_path: Path, run_cli) -> None:
    """A method, a task kind and a meter from a user's folder: --config-dir and _target_, zero edits to loraven;
    they run end to end and the analysis shows them from the record alone."""
    before = _git_status()
    plugins = _plugin_dir(tmp_path)
    proc = run_cli(
        [
            "--config-dir",
            str(plugins / "conf"),
            "adapter=toy_rank1",
            "task=toy_parity",
            "energy=toy_power",
            "model=mlp_digits",
            "trainer=classic",
            "trainer.steps=30",
            "tracking=none",
            f"results_dir={tmp_path}/results",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = [json.loads(p.read_text()) for p in (tmp_path / "results").rglob("result.json")]
    assert result["status"] == "completed"
    assert result["adapter"]["label"] == "toy rank-1" and set(result["adapter"]["ranks"].values()) == {1}
    assert result["task"] == {"kind": "toy_parity", "family": "custom", "metric": "acc", "higher_is_better": True}
    assert result["energy"]["method"] == "toy-constant-power" and result["energy"]["evidence"] == "estimated"
    assert result["energy"]["kwh"] > 0
    analysed = subprocess.run(
        [sys.executable, "-m", "analysis", "--results", str(tmp_path / "results"), "--out", str(tmp_path / "rep")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert analysed.returncode == 0, analysed.stderr[-2000:]
    runs = pd.read_csv(tmp_path / "rep" / "tables" / "runs.csv")
    row = runs.iloc[0]
    assert row["adapter.label"] == "toy rank-1" and row["task.kind"] == "toy_parity"
    assert row["energy.evidence"] == "estimated" and row["energy.method"] == "toy-constant-power"
    assert _git_status() == before  # nothing in the repository was touched


def test_a_plugin_target_that_cannot_be_imported_is_one_clear_error(tmp_path: Path, run_cli) -> None:
    plugins = _plugin_dir(tmp_path)
    (plugins / "conf" / "energy" / "toy_power.yaml").write_text("name: toy_power\n_target_: no_such_module\n")
    proc = run_cli(
        ["--config-dir", str(plugins / "conf"), "energy=toy_power", *FAST, f"results_dir={tmp_path}/r"], cwd=tmp_path
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: energy._target_='no_such_module': cannot import it")
    assert not (tmp_path / "r").exists()  # refused before the store was touched


FAST = ["model=mlp_digits", "task=digits", "trainer=classic", "trainer.steps=5", "tracking=none"]


def test_registry_discovers_a_module_dropped_into_its_package(tmp_path: Path, monkeypatch) -> None:
    """In-tree additions are discovered, not listed: a module in the axis's package registers itself."""
    from loraven.registry import Registry

    pkg = tmp_path / "toy_axis"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "first.py").write_text("from toy_axis_registry import REG\nREG.register('first', 1)\n")
    (pkg / "second.py").write_text("from toy_axis_registry import REG\nREG.register('second', 2)\n")
    (tmp_path / "toy_axis_registry.py").write_text(
        "from loraven.registry import Registry\nREG = Registry('toy', 'toy_axis', 'loraven.toy_axis')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from toy_axis_registry import REG  # type: ignore[import-not-found]

    assert isinstance(REG, Registry) and REG.names() == ["first", "second"] and REG.get("second") == 2
    with pytest.raises(ConfigError, match="unknown toy 'thrid' .did you mean third|unknown toy 'thrid'"):
        REG.get("thrid")


def test_analysis_imports_no_training_code_and_no_method_registry() -> None:
    """analysis reads the results store: importing it (and running its CLI's imports) loads no adapter, training
    or job module."""
    code = (
        "import sys, analysis, analysis.cli, analysis.tables, analysis.figures, analysis.report\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('loraven.adapters', 'loraven.train', 'loraven.job',"
        " 'loraven.tasks', 'loraven.meters')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"analysis imported: {out.stdout}"


def test_a_record_missing_a_section_fails_the_contract() -> None:
    from conftest import compose_cfg

    from loraven.contract import SECTIONS, contract_violations
    from loraven.job import new_record

    record = new_record(compose_cfg(["model=tiny_llama"]), "abc", "failed", "why").to_dict()
    assert contract_violations(record) == []
    for section in SECTIONS:
        broken = {k: v for k, v in record.items() if k != section}
        assert f"section {section!r} missing or not a mapping" in contract_violations(broken)
    assert any("schema_version" in p for p in contract_violations({**record, "schema_version": 1}))
    assert any(
        "outside [0, 1]" in p
        for p in contract_violations({**record, "metrics": {**record["metrics"], "accuracy": 7.5}})
    )
