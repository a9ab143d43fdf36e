"""Benchmarks and long-running checks (``python -m bench.soak``); not part of the installed package."""
