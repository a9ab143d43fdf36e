"""Cyclic-GC thresholds of the long-running processes: the stream workers and the gateway.

A worker's batch, or a gateway request of 250 alerts, allocates thousands of short-lived
containers (decoded records, notes, label dicts). With Python's default first threshold (700) the
collector scans them while they are still alive and promotes them to older generations, which cost
12-22% of the workers' CPU time (docs/performance.md, "Optimizations"). Reference counting frees
them either way; the collector is only needed for cycles, which these paths do not make.
"""

from __future__ import annotations

import gc

__all__ = ["GC_THRESHOLDS", "tune_gc"]

GC_THRESHOLDS = (50_000, 20, 10)


def tune_gc() -> None:
    """Raise the thresholds, and freeze what start-up built (modules, configuration, state loaded
    so far): it lives as long as the process, so a full collection never scans it again."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()
