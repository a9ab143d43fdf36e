"""Benchmarks and long-running checks: ``stormwatch bench`` and ``python -m stormwatch.bench.soak``.

Entry-point layer (docs/architecture.md): it starts pipelines of its own and measures them; the
workloads, the results format and the procedure are in bench/README.md and docs/performance.md.
"""

__all__ = [
    "alertmanager",
    "floor",
    "pipeline",
    "procstat",
    "quality",
    "results",
    "runner",
    "soak",
    "workloads",
]
