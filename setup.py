"""Package layout for setuptools (the rest of the metadata is in pyproject.toml).

The Hydra configs live in ``conf/`` at the top of the repository, where Hydra projects keep them, and ship inside
the wheel as the package ``loraven.conf`` so that an installed loraven carries them (``loraven.CONF_DIR``).
"""

from setuptools import find_packages, setup

CONF_GLOBS = ["*.yaml", "*/*.yaml", "*/*/*.yaml", "*/*/*/*.yaml"]

setup(
    packages=[*find_packages(include=["loraven", "loraven.*", "analysis", "analysis.*"]), "loraven.conf"],
    package_dir={"loraven.conf": "conf"},
    package_data={"loraven.conf": CONF_GLOBS, "loraven.tasks": ["templates/*.yaml"]},
)
