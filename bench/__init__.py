"""Benchmarks: each prints the figures the README reports, measured in one run."""
