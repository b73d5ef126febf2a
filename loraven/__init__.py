"""loraven: a benchmarking and experiment-tracking harness for low-rank adaptation."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs (config.yaml and its groups) ship inside the package, so an installed loraven carries
# them; run.py, the benchmarks and the tests all read them from here.
CONF_DIR = Path(__file__).resolve().parent / "conf"
