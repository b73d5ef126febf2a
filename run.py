"""Entry point: ``python run.py`` (one run) or ``python run.py -m key=a,b`` (a sweep).

Thin on purpose: composition is Hydra's (conf/), the work is :func:`loraven.cli.main`.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from loraven.cli import run_from_hydra

    return run_from_hydra(cfg)


if __name__ == "__main__":
    main()
