"""A trained run's weights as a result: saved atomically beside result.json, described in the record, logged to W&B.

``save_run_artifacts`` is the one place a run's weights are saved (called by the job after evaluation):

- ``<run>/adapter/``: the method's adapter in its standard format (``AdaptedModel.save_adapter``: peft's
  ``save_pretrained`` for LoRA / DoRA / LoRA-AR, a peft LoRA exported from LoRAven's final active-rank factors),
  with ``adapter_config.json``'s ``base_model_name_or_path`` set to a folder the base model loads from;
- ``<run>/model/``: only with ``save.full_model=true``, the whole changed model (full fine-tuning, LoRAven's replace
  mode) as a Hugging Face model folder with its tokenizer. Without it the record says what was not saved and how
  many bytes it would take.

Nothing half-written: each folder is written into a hidden temp folder beside it (``.adapter.tmp-*``), its manifest
(``loraven_manifest.json``: every file's size and sha256, and the folder's digest) is written last, and the folder
is renamed into place. A reader trusts a folder only when its manifest is present and matches its files
(:func:`read_manifest`), so a save killed at any point leaves nothing that looks complete.

The folder digest is the sha256 of the sorted ``path\\0sha256\\n`` lines of its files (the manifest excluded):
deterministic, independent of the order files were written in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from loraven.files import sha256_of
from loraven.schema import Section

log = logging.getLogger(__package__)  # the package logger, as the job's

ADAPTER_DIR = "adapter"
MODEL_DIR = "model"
MANIFEST = "loraven_manifest.json"
MANIFEST_VERSION = 1
FAULT_ENV = "LORAVEN_SAVE_FAULT"  # tests: "adapter" raises after the first file of adapter/ is written


class SaveConfig(Section):
    """``save``: what a completed run keeps of its weights (not part of the run id: saving changes no result)."""

    where: ClassVar[str] = "save"

    adapter: bool = True  # the trained adapter in its standard format, in <run>/adapter/
    full_model: bool = False  # methods without an adapter (full fine-tuning, LoRAven replace mode): <run>/model/


# --------------------------------------------------------------------------- atomic folders with a manifest


def folder_files(folder: Path) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of every file under ``folder`` but the manifest, sorted by path."""
    out = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST:
            out[rel] = {"bytes": path.stat().st_size, "sha256": sha256_of(path)}
    return out


def folder_digest(files: Mapping[str, Mapping[str, Any]]) -> str:
    """The folder's sha256: of the sorted ``path\\0sha256\\n`` lines (deterministic for the same contents)."""
    lines = "".join(f"{rel}\0{meta['sha256']}\n" for rel, meta in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def write_folder(final: Path, write: Callable[[Path], Mapping[str, Any]], shared: bool = False) -> dict[str, Any]:
    """Run ``write(tmp)`` into a hidden temp folder beside ``final``, add the manifest last, rename into place.

    ``write`` returns what the manifest records about the contents (``format``...). Returns the manifest. On any
    failure (an exception, a full disk) the temp folder is removed and ``final`` is left as it was; a process killed
    here leaves only a hidden ``.<name>.tmp-*`` folder without a manifest (removed by the next save in that folder).
    ``shared``: a cache folder other processes may be writing at the same time (same content): their temp folders
    are left alone and a complete folder already in place is kept.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if not shared:  # a run folder has one writer (the job's claim): what is left there is a killed save's
        remove_stale_temps(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        info = dict(write(tmp))
        files = folder_files(tmp)
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            **info,
            "files": files,
            "bytes": sum(f["bytes"] for f in files.values()),
            "sha256": folder_digest(files),
        }
        _write_synced(tmp / MANIFEST, json.dumps(manifest, indent=1, default=str) + "\n")
        if shared:  # rename only onto nothing: a folder another process put there meanwhile is kept
            try:
                os.rename(tmp, final)
                return manifest
            except OSError:
                theirs = read_manifest(final)
                if theirs is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return theirs
        old = None
        if final.exists():  # a rerun replaces its earlier folder: set it aside, rename, then delete it
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
            os.replace(final, old / final.name)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_synced(path: Path, text: str) -> None:
    with path.open("w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def remove_stale_temps(final: Path) -> None:
    """Hidden temp folders an earlier killed save of ``final`` left behind (never a complete folder)."""
    for path in Path(final).parent.glob(f".{Path(final).name}.*-*"):
        if path.is_dir() and (
            path.name.startswith(f".{final.name}.tmp-") or path.name.startswith(f".{final.name}.old-")
        ):
            shutil.rmtree(path, ignore_errors=True)


def read_manifest(folder: Path, verify: bool = False) -> dict[str, Any] | None:
    """The folder's manifest if the folder is complete: the manifest is there and every file it lists exists with
    its size (``verify``: and its sha256), and no other file is present; None otherwise (never trust half a copy)."""
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if folder_digest(files) != manifest["sha256"]:
            return None
        present = {p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file()} - {MANIFEST}
        if present != set(files):
            return None
        for rel, meta in files.items():
            file = Path(folder) / rel
            if file.stat().st_size != meta["bytes"] or (verify and sha256_of(file) != meta["sha256"]):
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


# --------------------------------------------------------------------------- the base model, loadable by path


def base_model_info(model_cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """Where the base model of a run loads from by path (peft's ``base_model_name_or_path``, lm-eval's
    ``pretrained=``) and how it is rebuilt. The embedded SmolLM2 is its safetensors cache (a Hugging Face folder);
    the random tiny Llama is saved once into the cache (rebuilt from its seed, bit-identical); ``model=hf`` is its
    own id or folder; the MLPs have no such folder (rebuilt from the run's seed)."""
    from loraven.models import cache_dir

    kind = str(model_cfg.get("kind"))
    info: dict[str, Any] = {"name": name, "kind": kind, "dtype": model_cfg.get("dtype"), "path": None}
    if kind == "smollm2_135m":
        info.update(path=str(cache_dir() / "smollm2-135m-instruct"), rebuild="python run.py model=smollm2_135m")
    elif kind == "tiny_llama":
        info.update(
            path=str(tiny_base_folder(model_cfg)),
            rebuild=f"loraven.models.build_tiny_llama(seed={model_cfg.get('seed', 0)}, "
            f"**{dict(model_cfg.get('arch', {}))})",
        )
    elif kind == "hf":
        info.update(path=str(model_cfg.get("name_or_path")), rebuild="model=hf model.name_or_path=<path>")
    else:
        info.update(rebuild="rebuilt from the run's seed (no folder: not loadable by path)")
    return info


def tiny_base_folder(model_cfg: Mapping[str, Any]) -> Path:
    """The tiny Llama of ``model_cfg`` as a Hugging Face folder in the cache (written once, atomically): a fresh
    build from its seed, since the run's own copy has the adapter merged into it by now. The folder is keyed by
    what the build produces (its full config, seed, dtype, torch's version: the random init), not by the options
    alone, so a code change to the tiny model is a new folder, never a stale one."""
    import torch

    from loraven.models import build_tiny_llama, cache_dir
    from loraven.tasks.lm import fingerprint

    arch = dict(model_cfg.get("arch", {}))
    seed, dtype = int(model_cfg.get("seed", 0)), str(model_cfg.get("dtype", "float32"))
    with torch.random.fork_rng(devices=[]):  # the build seeds torch's generator; the caller's stream stays as it was
        model, tok = build_tiny_llama(seed=seed, **arch)
    config = {k: v for k, v in model.config.to_dict().items() if k != "transformers_version"}
    key = {"seed": seed, "dtype": dtype, "config": config, "torch": torch.__version__.split("+")[0]}
    folder = cache_dir() / "tiny_llama" / fingerprint(key)
    if read_manifest(folder) is not None:
        return folder

    def write(tmp: Path) -> dict[str, Any]:
        model.to(getattr(torch, dtype) if dtype != "auto" else torch.float32).save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        return {"format": "hf-model", "seed": seed, "arch": arch}

    write_folder(folder, write, shared=True)
    return folder


# --------------------------------------------------------------------------- the run's artifacts


def save_run_artifacts(adapted, loaded, run, run_dir: Path, tracker, run_id: str) -> dict[str, Any]:
    """Save what ``run.top.save`` asks for; returns the record's ``artifacts`` section (``{}`` when saving is off).

    ``adapter``: ``{saved, path, format, bytes, sha256, files, base_model, wandb_artifact, ...}`` or ``{saved: false,
    reason, bytes_if_saved}``; ``model`` the same for the whole-model folder. ``path`` is relative to the run folder.
    A failed save (disk full) is the caller's warning; the result itself stands.
    """
    from loraven.adapters.base import NotSaved

    save: SaveConfig = getattr(run.top, "save", None) or SaveConfig()
    if not (save.adapter or save.full_model):
        return {}
    base = base_model_info(run.raw["model"], loaded.name)
    out: dict[str, Any] = {}
    adapter_reason = None
    if save.adapter:
        try:
            out["adapter"] = _save_one(run_dir / ADAPTER_DIR, adapted.save_adapter, base, loaded, run_id, tracker)
        except NotSaved as why:
            adapter_reason = str(why)
            out["adapter"] = {"saved": False, "reason": adapter_reason}
    if save.full_model:
        try:
            out["model"] = _save_one(run_dir / MODEL_DIR, adapted.save_model, base, loaded, run_id, tracker, whole=True)
        except NotSaved as why:
            out["model"] = {"saved": False, "reason": str(why)}
    elif adapter_reason is not None:  # no adapter and the whole model was not asked for: say what it would take
        nbytes = adapted.changed_bytes()
        out["model"] = {
            "saved": False,
            "reason": f"not asked for: save.full_model=true saves the changed model ({nbytes / 1e6:.1f} MB)",
            "bytes_if_saved": nbytes,
        }
    return out


def _save_one(folder: Path, hook, base: dict[str, Any], loaded, run_id: str, tracker, whole: bool = False) -> dict:
    def write(tmp: Path) -> dict[str, Any]:
        info = dict(hook(tmp))
        if os.environ.get(FAULT_ENV) == folder.name:
            raise OSError(f"simulated failure while writing {folder.name}/ ({FAULT_ENV})")
        if whole and loaded.tokenizer is not None:
            loaded.tokenizer.save_pretrained(str(tmp))
        config = tmp / "adapter_config.json"
        if config.is_file() and base.get("path"):  # peft's pointer to the base model: a folder that loads it
            data = json.loads(config.read_text())
            data["base_model_name_or_path"] = base["path"]
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        return {**info, "base_model": base, "run_id": run_id}

    manifest = write_folder(folder, write)
    entry = {
        "saved": True,
        "path": folder.name,
        **{k: v for k, v in manifest.items() if k not in ("files", "manifest_version", "run_id")},
        "files": len(manifest["files"]),
    }
    name = f"{folder.name}-{folder.parent.name}"  # adapter-<run_id>: W&B artifact names allow [A-Za-z0-9_.-]
    logged = tracker.log_artifact(name, "model", folder, {k: v for k, v in entry.items() if k != "path"})
    if logged:
        entry["wandb_artifact"] = name
    log.info(
        "saved %s (%s, %.2f MB, sha256 %s)", folder, entry.get("format"), entry["bytes"] / 1e6, entry["sha256"][:12]
    )
    return entry


def load_artifact_entry(record: Mapping[str, Any], run_dir: Path) -> tuple[str, Path, dict[str, Any]] | None:
    """(kind ``adapter`` | ``model``, folder, record entry) of a completed run's saved weights whose folder is
    complete and matches the record's sha256; None when nothing usable was saved."""
    artifacts = record.get("artifacts") or {}
    for kind in (ADAPTER_DIR, MODEL_DIR):
        entry = artifacts.get(kind) or {}
        if not entry.get("saved"):
            continue
        folder = Path(run_dir) / str(entry.get("path") or kind)
        manifest = read_manifest(folder)
        if manifest is not None and manifest.get("sha256") == entry.get("sha256"):
            return kind, folder, dict(entry)
    return None
