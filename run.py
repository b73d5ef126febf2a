"""Entry point: ``python run.py`` (one run) or ``python run.py -m key=a,b`` (a sweep).

Thin on purpose: composition is Hydra's (the configs ship in the package: ``loraven/conf/``, ``loraven.CONF_DIR``),
the work is :func:`loraven.cli.run_from_hydra`. Two checks come before Hydra: credentials on the command line are
refused (Hydra would write them to .hydra/ first), and interrupts end in one line with exit code 130 (SIGINT) or
143 (SIGTERM). ``python run.py --help`` prints the config groups and the headline commands.
"""

import sys

import hydra
from omegaconf import DictConfig

from loraven import CONF_DIR
from loraven.cli import refuse_credential_overrides, run_guarded


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from loraven.cli import run_from_hydra

    return run_from_hydra(cfg)


if __name__ == "__main__":
    refuse_credential_overrides(sys.argv[1:])
    run_guarded(main)
