"""Cyclic-GC tuning of the long-running processes: the stream workers and the gateway.

A worker's batch, or a gateway request of 250 alerts, allocates thousands of short-lived
containers (decoded records, notes, label dicts). With Python's default first threshold (700) the
collector scans them while they are still alive and promotes them to older generations, which cost
12-22% of the workers' CPU time (docs/performance.md, "Optimizations"). Reference counting frees
them either way; the collector is only needed for cycles, which these paths do not make.

What a transaction leaves behind is state (a correlator's alerts and groups, a million of them in
a high-cardinality storm): every older-generation collection would scan all of it again, so
``SurvivorFreeze`` moves it out of the collector's reach after each commit and sweeps it now and
then for cycles.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

__all__ = ["GC_THRESHOLDS", "SWEEP_INTERVAL_S", "SurvivorFreeze", "tune_gc"]

log = logging.getLogger(__name__)

GC_THRESHOLDS = (50_000, 20, 10)
SWEEP_INTERVAL_S = 600.0
"""How often frozen objects are handed back to the collector for one full collection."""


def tune_gc() -> None:
    """Raise the thresholds, and freeze what start-up built (modules, configuration, state loaded
    so far): it lives as long as the process, so a full collection never scans it again."""
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()


class SurvivorFreeze:
    """Freezes what survived each committed transaction; unfreezes and collects every ``interval_s``.

    Freezing is O(1) (CPython moves its generation lists to the permanent one), and frozen objects
    are still freed by reference counting the moment nothing uses them: only garbage *cycles* among
    them wait, for the next sweep, so memory stays bounded by what one interval can leave behind.
    The correlator's engine makes none (300,000 high-cardinality alerts: 0 unreachable objects);
    a sweep is one full collection, about 0.5 s per 600,000 tracked objects.
    """

    def __init__(
        self, interval_s: float = SWEEP_INTERVAL_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._sweep_due = clock() + interval_s
        self.sweeps = 0

    def committed(self) -> None:
        now = self._clock()
        if now >= self._sweep_due:
            self._sweep_due = now + self.interval_s
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            self.sweeps += 1
            log.debug(
                "GC sweep: %d unreachable objects in %.0f ms", found, (time.perf_counter() - started) * 1000
            )
        gc.freeze()
