"""The results store (one writer, atomic files) and the W&B tracker.

Store layout: ``<results_dir>/<experiment>/<run_id>/result.json`` (+ config.json, rank traces, the W&B run, ...).
``run_id`` is a stable hash of the config's semantic keys, so the same config (seed included) always
lands in the same folder and a finished run is never repeated.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from loraven.contract import contract_violations
from loraven.files import atomic_write_text

log = logging.getLogger("loraven.track")

# Config keys that change what a run computes; everything else (tracking, paths, energy meter) does not.
SEMANTIC_KEYS = ("model", "adapter", "scheduler", "task", "trainer", "seed", "job", "bench", "rescore")
RESULT_STATUSES = ("completed", "failed", "skipped")
# key names that hold credentials ("hf_token", "WANDB_API_KEY", "aws_secret_access_key", "passwd"), matched
# word by word so that counters such as "tokens_per_s" or "train_tokens" are not taken for one
CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "secret",
        "secrets",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "auth",
        "credential",
        "credentials",
        "apikey",
        "privatekey",
        "cookie",
        "bearer",
        "authorization",
    }
)
CREDENTIAL_SUFFIXES = ("api_key", "private_key", "access_key", "secret_key", "client_secret", "signing_key")
FAILED_ATTEMPT = "result.failed-attempt.json"  # a failed rerun's record, kept beside the completed one it spared
LOCK_NAME = ".claim.lock"  # "this job is being run by pid N on host H" (see ResultsStore.claim)
PROBE_BYTES = 64 * 1024  # the writability probe writes real blocks: an empty file passes on a full disk


# "<service>_key" names a credential too (wandb_key, hf_key), "r_key"/"sort_key" do not
KEY_OWNERS = frozenset({"api", "access", "secret", "private", "signing", "encryption", "master", "wandb", "hf", "aws"})
# values that are credentials whatever their key (well-known token formats with a distinctive prefix)
SECRET_PATTERNS = (
    r"hf_[A-Za-z0-9]{20,}",  # Hugging Face
    r"(?:sk|rk)-[A-Za-z0-9_-]{20,}",  # OpenAI-style secret keys
    r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}",  # GitHub
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",  # AWS access key ids
    r"xox[abprs]-[A-Za-z0-9-]{10,}",  # Slack
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
)


def _key_words(key: Any) -> list[str]:
    """``hf.accessToken`` → ``['access', 'token']``: the last dotted part split on ``_``, ``-`` and camelCase."""
    import re

    name = str(key).rsplit(".", 1)[-1]
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # camelCase → camel_Case (HF_TOKEN stays one word each)
    return [w for w in re.split(r"[_\-\s]+", name.lower()) if w]


def is_credential_key(key: Any) -> bool:
    """Whether a config key name looks like it holds a credential (the last dotted part, in any case style:
    ``hf_token``, ``HF_TOKEN``, ``accessToken``, ``api-key``, ``wandb_key``)."""
    words = _key_words(key)
    joined = "_".join(words)
    if set(words) & CREDENTIAL_WORDS or joined.endswith(CREDENTIAL_SUFFIXES):
        return True
    squashed = "".join(words)
    if squashed in CREDENTIAL_WORDS or squashed.endswith(("apikey", "accesstoken", "authtoken", "privatekey")):
        return True
    return len(words) >= 2 and words[-1] == "key" and words[-2] in KEY_OWNERS


def looks_like_secret(value: Any) -> bool:
    """A string that is a credential whatever key holds it: a well-known token format, or the value of a
    credential-named environment variable of this process (a ``$WANDB_API_KEY`` expanded by the shell)."""
    import re

    if not isinstance(value, str) or len(value) < 8:
        return False
    if any(re.search(pattern, value) for pattern in SECRET_PATTERNS):
        return True
    return any(secret in value for secret in _environment_secrets())


def _environment_secrets() -> list[str]:
    """Values of this process's credential-named environment variables that look like tokens (not PWD's path)."""
    out = []
    for name, secret in os.environ.items():
        if name in ("PWD", "OLDPWD") or not is_credential_key(name):
            continue
        if len(secret) >= 8 and not secret.startswith(("/", "~", ".")) and not any(c.isspace() for c in secret):
            out.append(secret)
    return out


def credential_paths(obj: Any, prefix: str = "") -> list[str]:
    """Dotted paths in a config tree (mappings, lists) whose key looks like a credential and holds a value, or
    whose value looks like a secret. An interpolation (``${oc.env:HF_TOKEN}``) is not a value: it is how a
    credential is meant to be passed, and it is resolved only in memory."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if is_credential_key(key) and _holds_value(value):
                found.append(path)
            else:
                found += credential_paths(value, path)
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found += credential_paths(value, f"{prefix}[{i}]")
    elif looks_like_secret(obj):
        found.append(prefix or "<value>")
    return found


def _holds_value(value: Any) -> bool:
    if value is None or value == "" or value == "???" or value == "<redacted>":
        return False
    return not (isinstance(value, str) and value.strip().startswith("${") and value.strip().endswith("}"))


OFF_WHEN_EMPTY = {"task": ("retention", ("retention", "retention_limit"))}  # (switch, keys it governs)

NON_SEMANTIC_TRAINER_PREFIX = "checkpoint_"  # trainer.checkpoint_*: where a run may resume from, not what it computes


def semantic_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What a run computes: the config sections its id hashes, without options that only say how it runs (thread
    count, checkpoints, where results go). analysis tells configurations apart by these same keys, so records
    written before and after such an option existed still compare as one configuration."""
    semantic = {k: cfg.get(k) for k in SEMANTIC_KEYS if k in cfg}
    for section, (switch, keys) in OFF_WHEN_EMPTY.items():  # an option left off keeps the ids (and base-score
        body = semantic.get(section)  # cache keys) it had before the option existed
        if isinstance(body, Mapping) and not body.get(switch):
            semantic[section] = {k: v for k, v in body.items() if k not in keys}

    if isinstance(semantic.get("trainer"), Mapping):  # a run's id does not change when checkpointing is switched
        trainer = semantic["trainer"]
        semantic["trainer"] = {k: v for k, v in trainer.items() if not str(k).startswith(NON_SEMANTIC_TRAINER_PREFIX)}
    return semantic


def run_id_for(cfg: Mapping[str, Any]) -> str:
    blob = json.dumps(semantic_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def redact(obj: Any) -> Any:
    """Drop values of keys that look like secrets, and values that look like secrets whatever their key (a config
    must never carry a key or token; this is the last line, after the command-line and config-file checks)."""
    if isinstance(obj, Mapping):
        return {
            k: ("<redacted>" if is_credential_key(k) and v not in (None, "") else redact(v)) for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if looks_like_secret(obj):
        return "<redacted>"
    return obj


class ContractViolation(ValueError):
    """A record that breaks the results contract (:mod:`loraven.contract`): never written."""


class ResultsStore:
    def __init__(self, results_dir: str | Path) -> None:
        self.root = Path(results_dir)

    def run_dir(self, experiment: str, run_id: str) -> Path:
        return self.root / experiment / run_id

    def check_writable(self) -> None:
        """Fail before training, not after, if results cannot be written."""
        from loraven.errors import ConfigError

        probe: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            with os.fdopen(fd, "wb") as fh:  # real bytes, flushed to disk: a full disk fails here, not after training
                fh.write(b"\0" * PROBE_BYTES)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as err:
            reason = err.strerror or str(err)
            raise ConfigError(f"results_dir={str(self.root)!r} is not writable ({reason})") from err
        finally:
            if probe is not None:
                with contextlib.suppress(OSError):
                    os.unlink(probe)

    def load(self, experiment: str, run_id: str, quiet: bool = False) -> dict[str, Any] | None:
        """The stored result, or None if absent, truncated, corrupt or off-contract (never trusted).

        ``quiet``: a second look at a file already reported (debug level, not a second warning).
        """
        warn = log.debug if quiet else log.warning
        path = self.run_dir(experiment, run_id) / "result.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            warn("ignoring corrupt %s (%s); the run will be redone", path, err)
            return None
        problems = contract_violations(data)
        if not problems and data.get("run_id") != run_id:
            problems = [f"run_id {data.get('run_id')!r} is not {run_id!r}"]
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            warn("ignoring invalid %s: %s%s; the run will be redone", path, "; ".join(problems[:3]), more)
            return None
        return data

    def write(self, experiment: str, result: Mapping[str, Any]) -> Path:
        """Write ``result.json`` after checking it against the contract (the one :mod:`loraven.contract` the
        job's skeleton is built from and :meth:`load` and the analysis read with); a valid ``completed``
        record is replaced only by a newer completed one.

        A rerun that fails or is interrupted leaves its record in ``result.failed-attempt.json`` beside the
        earlier completed result, which stays what resume and analysis read.
        """
        problems = contract_violations(result)
        if problems:  # a bug in the harness, never the user's: refuse to write a record load() would distrust
            raise ContractViolation(
                f"run {result.get('run_id')}: record breaks the results contract: " + "; ".join(problems[:5])
            )
        from loraven.testhooks import event

        event("record_write")
        run_dir = self.run_dir(experiment, str(result["run_id"]))
        path = run_dir / "result.json"
        if result.get("status") != "completed" and self._has_completed(path):
            path = run_dir / FAILED_ATTEMPT
            log.warning(
                "run %s: this attempt %s (%s); the earlier completed result is kept, this attempt is in %s",
                result["run_id"],
                result.get("status"),
                result.get("reason"),
                path,
            )
        atomic_write_text(path, json.dumps(redact(dict(result)), indent=2, default=_json_default) + "\n")
        return path

    @staticmethod
    def _has_completed(path: Path) -> bool:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        return isinstance(data, dict) and data.get("status") == "completed" and not contract_violations(data)

    def claim(self, experiment: str, run_id: str) -> str | None:
        """Take this job's lock for this process: None when taken, else a line naming the live owner.

        The lock names its owner by (host, pid, start time) (:mod:`loraven.locks`): one left by a process that has
        ended is taken over with a warning; one that cannot be verified (another host's, a legacy lock on a live
        pid, a directory, a garbled file) raises :class:`loraven.locks.LockError` with the command that clears it.
        """
        from loraven import locks

        lock = self.run_dir(experiment, run_id) / LOCK_NAME
        try:
            locks.acquire(lock, f"run {run_id}", on_stale=log.warning)
        except locks.LockError as err:
            if err.state.state == "live":
                return f"claimed by {err.state.detail.removeprefix('held by ')} ({lock})"
            raise
        return None

    def release(self, experiment: str, run_id: str) -> None:
        from loraven import locks

        locks.release(self.run_dir(experiment, run_id) / LOCK_NAME)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- W&B


class Tracker:
    """No-op tracker (tracking=none); the W&B one below has the same methods."""

    url: str | None = None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_table(self, name: str, frame: Any) -> None: ...

    def log_files(self, name: str, paths: list[Path]) -> None: ...

    def summary(self, values: Mapping[str, Any]) -> None: ...

    def log_artifact(self, name: str, kind: str, path: Path, metadata: Mapping[str, Any]) -> bool:
        """Log a folder (saved weights) as an artifact; True if it was logged."""
        return False

    def finish(self, exit_code: int = 0) -> None: ...


class WandbTracker(Tracker):
    """One W&B run per job, offline unless the user asks for online; never prompts for a login.

    After init, a tracking failure (a read-only ``WANDB_DATA_DIR``, a full disk, a dropped connection) is a
    warning: the run's result stands, W&B is only its mirror.
    """

    def __init__(
        self,
        cfg: Mapping[str, Any],
        run_config: Mapping[str, Any],
        run_dir: Path,
        name: str,
        group: str,
        job_type: str,
        tags: list[str],
    ) -> None:
        import wandb

        mode = os.environ.get("WANDB_MODE") or str(cfg.get("mode", "offline"))
        if mode == "online" and not _wandb_logged_in():
            log.warning("W&B: not logged in; logging offline instead (sync later with `wandb sync`)")
            mode = "offline"
        if mode == "online" and not wandb_reachable():
            mode = "offline"  # wandb_reachable said so, once per process (and once per sweep, see SweepSummary)
        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir.mkdir(parents=True, exist_ok=True)
        kwargs = dict(
            project=str(cfg.get("project", "loraven")),
            entity=cfg.get("entity") or None,
            group=group,
            job_type=job_type,
            name=name,
            tags=tags,
            dir=str(run_dir),
            mode=mode,
            config=redact(dict(run_config)),
            reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )
        try:
            self.run = wandb.init(**kwargs)
        except Exception as err:  # W&B unreachable: fall back to offline with one warning
            if mode == "offline":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", err)
            kwargs["mode"] = "offline"
            self.run = wandb.init(**kwargs)
        self.url = getattr(self.run, "url", None)
        self.dir = getattr(self.run, "dir", None)
        self._guard("define_metric", self._define_metrics)

    def _define_metrics(self) -> None:
        """The step axis and the summaries (``loraven.wandb_layout.METRICS``): train/* against the optimizer
        step, train/loss summarised by its min and last value, eval/* by its last (one final evaluation)."""
        from loraven.wandb_layout import METRICS

        for metric in METRICS:
            self.run.define_metric(metric.name, step_metric=metric.step_metric, summary=metric.summary)

    def _guard(self, what: str, fn, *args: Any, **kwargs: Any) -> bool:
        try:
            fn(*args, **kwargs)
            return True
        except Exception as err:  # noqa: BLE001 - tracking is best effort once the run exists
            log.warning("W&B %s failed (%s: %s); the result is unaffected", what, type(err).__name__, err)
            return False

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """``step`` is the optimizer step: logged as ``train/step`` (the x axis of train/*) and as W&B's _step."""
        from loraven.wandb_layout import STEP

        values = dict(metrics) if step is None else {STEP: step, **metrics}
        self._guard("log", self.run.log, values, step=step)

    def log_table(self, name: str, frame: Any) -> None:
        import wandb

        self._guard(f"table {name}", lambda: self.run.log({name: wandb.Table(dataframe=frame)}))

    def log_files(self, name: str, paths: list[Path]) -> None:
        """The run's files (result.json, config.json, rank trace, allocation...) as one artifact; offline it
        waits in the run folder and ``wandb sync`` uploads it with the run."""
        import wandb

        from loraven.wandb_layout import ARTIFACT_TYPE

        present = [Path(p) for p in paths if Path(p).is_file()]

        def put() -> None:
            artifact = wandb.Artifact(name, type=ARTIFACT_TYPE)
            for path in present:
                artifact.add_file(str(path), name=path.name)
            self.run.log_artifact(artifact)

        if present:
            self._guard(f"artifact {name}", put)

    def summary(self, values: Mapping[str, Any]) -> None:
        def write() -> None:
            for key, value in values.items():
                self.run.summary[key] = value

        self._guard("summary", write)

    def log_artifact(self, name: str, kind: str, path: Path, metadata: Mapping[str, Any]) -> bool:
        """The folder as a W&B artifact of type ``kind`` (offline: kept in the run, uploaded by ``wandb sync``).
        ``policy="immutable"``: W&B reads the files where they are instead of staging a copy (the folder is
        complete and never changed after the atomic save)."""
        import wandb

        def log_it() -> None:
            artifact = wandb.Artifact(name, type=kind, metadata=json.loads(json.dumps(dict(metadata), default=str)))
            artifact.add_dir(str(path), policy="immutable")
            self.run.log_artifact(artifact)

        return self._guard(f"artifact {name}", log_it)

    def finish(self, exit_code: int = 0) -> None:
        self._guard("finish", self.run.finish, exit_code=exit_code)


def wandb_run_folder(run_dir: Path) -> Path | None:
    """The newest W&B run folder under a result's folder (``wandb/offline-run-...`` or ``wandb/run-...``).

    ``WandbTracker`` passes the result's folder as ``dir``, so W&B writes ``<run_dir>/wandb/<run folder>`` and
    points ``wandb/latest-run`` at the newest one; ``wandb sync <run folder>`` uploads an offline one.
    """
    wandb_dir = Path(run_dir) / "wandb"
    latest = wandb_dir / "latest-run"
    if latest.is_symlink() and latest.resolve().is_dir():
        return wandb_dir / latest.resolve().name
    try:
        runs = [p for p in wandb_dir.iterdir() if p.is_dir() and p.name.startswith(("offline-run-", "run-"))]
    except OSError:
        return None
    return max(runs, key=lambda p: p.stat().st_mtime) if runs else None


def _wandb_logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


WANDB_PROBE_TIMEOUT_S = 3.0
_reachable: dict[str, bool] = {}  # base URL -> answer, so a process probes once


def wandb_reachable(timeout: float = WANDB_PROBE_TIMEOUT_S) -> bool:
    """One TCP connect to W&B's server (``WANDB_BASE_URL``) with a short timeout, remembered per process.

    Without it, ``wandb.init`` online with a key and no network retries for ~90 s per job. When the server
    is unreachable this says so once and sets ``WANDB_MODE=offline`` for this process and its children.
    """
    from urllib.parse import urlsplit

    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    if url not in _reachable:
        parts = urlsplit(url if "//" in url else f"https://{url}")
        port = parts.port or (80 if parts.scheme == "http" else 443)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=timeout):
                _reachable[url] = True
        except OSError as err:
            _reachable[url] = False
            log.warning(
                "W&B: %s unreachable (%s); logging offline instead (sync later with `wandb sync`)",
                url,
                err.strerror or err,
            )
            os.environ["WANDB_MODE"] = "offline"
    return _reachable[url]


def make_tracker(
    cfg: Mapping[str, Any],
    run_config: Mapping[str, Any],
    run_dir: Path,
    name: str,
    group: str,
    job_type: str,
    tags: list[str],
) -> Tracker:
    """The tracker named by ``cfg.name`` (``tracking=`` group): wandb or none."""
    from loraven.testhooks import event

    kind = cfg.get("name", "none")
    event(f"tracker_start {kind}")
    if kind not in TRACKERS:
        from loraven.errors import ConfigError

        raise ConfigError(f"unknown tracking {kind!r}; valid choices: {', '.join(TRACKERS)}")
    return TRACKERS[str(kind)](cfg, run_config, run_dir, name, group, job_type, tags)


TRACKERS: dict[str, Callable[..., Tracker]] = {"wandb": WandbTracker, "none": lambda *args: Tracker()}


def flatten(prefix: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """``{"energy": {"kwh": 1}}`` → ``{"energy/kwh": 1}`` for W&B summaries (numbers and strings only)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(name, value))
        elif isinstance(value, (int, float, str, bool)) or value is None:
            out[name] = value
    return out
