"""Benchmarks, each runnable as `python -m kdx.bench.<name>`."""
