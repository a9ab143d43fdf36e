"""Benchmarks and long-running checks: ``stormwatch bench``, ``python -m stormwatch.bench.soak``,
``python -m stormwatch.bench.chaos`` and ``python -m stormwatch.bench.readmodel``.

Entry-point layer (docs/architecture.md): it starts pipelines of its own and measures them; the
workloads, the results format and the procedure are in bench/README.md and docs/performance.md.
"""

__all__ = [
    "alertmanager",
    "chaos",
    "chart",
    "floor",
    "idle",
    "linking",
    "notify",
    "notify_outage",
    "pipeline",
    "procstat",
    "quality",
    "readmodel",
    "results",
    "runner",
    "soak",
    "workloads",
]
