"""Before Hydra runs: the command line and the config it composes, checked while nothing is written yet.

Hydra writes ``.hydra/{config,overrides,hydra}.yaml`` (and ``multirun.yaml``) before any code of ours runs, so a
credential anywhere in the composed config — on the command line, in a YAML under ``--config-dir`` or
``--config-name``, under a camelCase or nested key, in ``hydra.job.env_set`` — must be refused before Hydra starts.
This module parses the command line with Hydra's own parser, composes the config exactly as ``hydra.main`` will
(same search path, same overrides) and refuses, with one line and exit 2:

- a credential (by key name or by value: :func:`loraven.track.credential_paths`) in any override or composed key;
- an override Hydra cannot parse, a config group option that does not exist, a missing ``--config-dir``: every
  composition error, as one line (Hydra's own report is several lines and exit 1);
- Hydra names that become file names (``hydra.job.name``: the log file) that would leave their folder.

``HYDRA_FULL_ERROR=1`` shows Hydra's full trace instead. What falls short in Hydra: it has no hook between parsing
the command line and writing its output folder, and its composition errors are multi-line with exit 1; so this
composes once more (about 0.1 s) through Hydra's internal ``Hydra.create_main_hydra2``, as ``hydra.main`` does.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from loraven.errors import ConfigError

EXIT_CONFIG = 2


def one_line(message: str) -> str:
    """Hydra's multi-line messages (option lists, search paths, grammar hints) as one line: an indented list under
    a ``...:`` line becomes ``...: a, b, c``; the search path and the HYDRA_FULL_ERROR hint are dropped."""
    parts: list[str] = []
    listing = False
    for raw in str(message).splitlines():
        line = raw.strip()
        if not line or line.startswith(("Set the environment variable HYDRA_FULL_ERROR", "See https://hydra.cc")):
            continue
        if line.startswith("Config search path"):
            break  # only provider lines follow
        if listing and raw[:1] in ("\t", " "):
            parts[-1] += ("" if parts[-1].endswith(":") else ",") + " " + line
            continue
        listing = line.endswith(":")
        parts.append(line)
    text = "; ".join(p.rstrip(":").rstrip(".") if p.endswith((":", ".")) else p for p in parts)
    return text or str(message).strip()


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.stderr.flush()
    sys.exit(EXIT_CONFIG)


def stop_from_callback(err: BaseException) -> None:
    """End the run from inside a Hydra callback: Hydra turns an exception raised in a callback into a warning and
    goes on (``hydra._internal.callbacks``), so a callback that must stop a sweep prints its line and exits 2."""
    if full_error():
        import traceback

        traceback.print_exception(err)
    fail(str(err) if isinstance(err, ConfigError) else one_line(str(err)) + _cause(err))


def is_config_error(err: BaseException) -> bool:
    """Errors that come from what the user gave (exit 2), as opposed to bugs (a trace, exit 1)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from loraven.search import SearchConfigError

    return isinstance(err, (ConfigError, SearchConfigError, HydraException, OmegaConfBaseException))


@contextlib.contextmanager
def one_line_hydra_errors() -> Iterator[None]:
    """Hydra's ``run_and_report`` (which prints several lines and exits 1 for every error raised while composing,
    sweeping or in a callback) reports config errors as one line with exit 2 while this is active; any other error
    keeps Hydra's report (a trace, exit 1). Hydra offers no hook for this; its function is wrapped for the call."""
    from hydra._internal import utils

    original = utils.run_and_report

    def run_and_report(func: Any) -> Any:
        try:
            return func()
        except Exception as err:
            if full_error() or not is_config_error(err):
                return original(lambda failure=err: _reraise(failure))
            fail(one_line(str(err)) + _cause(err))

    utils.run_and_report = run_and_report
    try:
        yield
    finally:
        utils.run_and_report = original


def _reraise(err: BaseException) -> Any:
    raise err


def _cause(err: BaseException) -> str:
    cause = err.__cause__
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(cause, OmegaConfBaseException):
        return f" ({one_line(str(cause).splitlines()[0])})" if str(cause).strip() else ""
    return ""


# ------------------------------------------------------------------------------------------- the checks


def check(argv: Sequence[str]) -> None:
    """Every check of this module on ``argv`` (``sys.argv[1:]``); exits 2 with one line on the first problem."""
    try:
        _check(list(argv))
    except ConfigError as err:
        if full_error():
            raise
        fail(str(err))
    except Exception as err:
        if full_error() or not is_config_error(err):
            raise
        fail(one_line(str(err)) + _cause(err))


def _check(argv: list[str]) -> None:
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.error = lambda message: fail(f"{message} (python run.py --help shows the usage)")  # type: ignore[method-assign]
    args = parser.parse_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return  # Hydra prints and exits; it runs nothing and writes no output folder
    refuse_credentials_in_overrides(args.overrides)
    cfg = compose(args)
    refuse_credentials_in_config(cfg)
    check_hydra_names(cfg)
    check_interpolations(cfg)


def check_interpolations(cfg: Any) -> None:
    """Every interpolation of the job's config resolves (``seed=${nope}`` is one line now, not a job that fails
    inside Hydra). ``${hydra:...}`` needs Hydra's runtime config, set for the check and cleared after."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    holder = HydraConfig.instance()
    saved = holder.cfg
    try:
        holder.set_config(cfg)
        OmegaConf.to_container(job, resolve=True)
    except Exception as err:  # noqa: BLE001 - a ${hydra:runtime...} key unknown before the run: Hydra's to check
        from omegaconf.errors import InterpolationResolutionError

        if isinstance(err, InterpolationResolutionError) and "hydra" not in str(err):
            raise
    finally:
        holder.cfg = saved


def refuse_credentials_in_overrides(overrides: Sequence[str]) -> None:
    """Keys that name a credential and values that are one, at any depth of an override (dicts, lists, sweeps)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from loraven.track import credential_paths, is_credential_key, looks_like_secret

    found: list[str] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element().lstrip("+~")
        if is_credential_key(key) and override.value() not in (None, ""):
            found.append(key)
            continue
        for value in _values(override):
            if isinstance(value, (dict, list)):
                found += [f"{key}.{p}" if not p.startswith("[") else f"{key}{p}" for p in credential_paths(value)]
            elif looks_like_secret(value):
                found.append(key)
    if found:
        raise ConfigError(_credential_message(found, "on the command line"))


def _values(override: Any) -> list[Any]:
    """The plain values an override carries (each element of a choice sweep; a dict or list as it is)."""
    if override.is_sweep_override():
        if override.is_discrete_sweep():
            return list(override.sweep_iterator())
        return []
    return [override.value()]


def refuse_credentials_in_config(cfg: Any) -> None:
    from omegaconf import OmegaConf

    from loraven.track import credential_paths

    tree = OmegaConf.to_container(cfg, resolve=False)
    found = credential_paths(tree)
    if found:
        raise ConfigError(_credential_message(found, "in the composed config (a YAML file it reads)"))


def _credential_message(found: list[str], where: str) -> str:
    keys = ", ".join(dict.fromkeys(found))
    return (
        f"{keys} {where} looks like a credential; Hydra would copy it into .hydra/*.yaml and multirun.yaml, and W&B "
        "into its run files. Pass credentials as environment variables instead (WANDB_API_KEY, HF_TOKEN, "
        "AWS_SECRET_ACCESS_KEY, ...), or in a YAML as an interpolation such as ${oc.env:HF_TOKEN}; "
        "nothing was run or written."
    )


def check_hydra_names(cfg: Any) -> None:
    """Hydra settings that become file or folder names: the log file is ``<output dir>/<hydra.job.name>.log``."""
    from omegaconf import OmegaConf

    from loraven.paths import check_name_part

    name = OmegaConf.select(cfg, "hydra.job.name", default=None)
    if name is not None:
        check_name_part(name, "hydra.job.name")
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
        if value is not None and not str(OmegaConf.to_container(OmegaConf.create({"v": value}))["v"]).strip():
            raise ConfigError(f"{key} is empty; give a folder for Hydra's output")


def compose(args: Any) -> Any:
    """The config ``hydra.main`` will compose for these arguments (with its ``hydra`` node), composed the same way:
    loraven's config folder, ``--config-path``/``--config-name``/``--config-dir``, the same overrides and mode."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import SearchPathException
    from hydra.types import RunMode

    from loraven import CONF_DIR

    config_path = args.config_path if args.config_path is not None else str(CONF_DIR)
    calling_file = str(Path(__file__).resolve().parent / "app.py")  # where hydra_main is defined
    search_path = create_automatic_config_search_path(calling_file, None, config_path)
    if args.config_dir is not None:
        conf_dir = os.path.abspath(args.config_dir)
        if not os.path.isdir(conf_dir):
            raise SearchPathException(f"Additional config directory '{conf_dir}' not found")
        anchor = SearchPathQuery(provider="schema")
        search_path.prepend(provider="command-line", path=f"file://{conf_dir}", anchor=anchor)
    overrides = list(args.overrides)
    OverridesParser.create().parse_overrides(overrides)  # grammar first: its message names the override
    GlobalHydra.instance().clear()
    hydra = Hydra.create_main_hydra2(task_name="app", config_search_path=search_path)  # as hydra.main names it
    try:
        mode = hydra.get_mode(config_name=args.config_name or "config", overrides=overrides)
        multirun = args.multirun or mode == RunMode.MULTIRUN
        run_mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        return hydra.compose_config(
            config_name=args.config_name or "config",
            overrides=overrides,
            run_mode=run_mode,
            with_log_configuration=False,
            from_shell=True,
        )
    finally:
        GlobalHydra.instance().clear()
