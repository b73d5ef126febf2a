"""loraven: a benchmarking and experiment-tracking harness for low-rank adaptation."""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs live in conf/ at the top of the repository (one source of truth) and ship inside the wheel
# as loraven/conf (setup.py maps the folder); run.py, the console command, the benchmarks and the tests all read
# them from CONF_DIR: the checkout's conf/ when running from a source tree, the packaged copy once installed.
_SOURCE_CONF = Path(__file__).resolve().parent.parent / "conf"
_PACKAGED_CONF = Path(__file__).resolve().parent / "conf"
CONF_DIR = _SOURCE_CONF if (_SOURCE_CONF / "config.yaml").is_file() else _PACKAGED_CONF
