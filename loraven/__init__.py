"""loraven: a benchmarking and experiment-tracking harness for low-rank adaptation."""

__version__ = "0.1.0"
