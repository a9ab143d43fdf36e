"""Which correlator partitions an ingest worker ticks, and when (issue #16: near-zero idle cost).

Ticks are the log's clock: they carry the watermarks that move a correlator partition's event
time, so its timers fire and its waiting alerts are released. Sending every partition a tick every
``tick_interval_ms`` cost partitions x workers records per interval with no alert at all. Instead a
partition is ticked only while something waits on time:

- it asked: its clock demand (``wire.ClockDemand``, written by the correlator when it changes) names
  the watermark at which it next has something to do, and that watermark has come;
- it is hot: this worker just routed it alerts, which wait ``allowed_lateness`` to be released
  (ticking at once spares them the round trip of a demand);
- a partition that links asked: then every partition is ticked (the linker needs every correlator
  partition's promise before it decides, and promises move with the clocks);
- the heartbeat: every partition, every ``heartbeat_ms`` (0: never), a bound on how stale an idle
  partition's clock gets whatever happens to the demands.

With ``on_demand`` False every partition is ticked every interval, as before. Pure: times come in.

``raw_watermark`` is what a tick says of one raw partition: the newest record timestamp read (the
wall clock once the partition is caught up), but never more than ``max_future_ms`` ahead of the
worker's wall clock. A producer whose clock runs ahead would otherwise move every correlator
partition's event time ahead with its records: everybody's timers would fire early and on-time
alerts would be late (issue #17). Records stamped ahead still count in full for their own alerts:
those wait in the correlator until event time reaches them.
"""

from __future__ import annotations

from stormwatch.streams.core.wire import ClockDemand

__all__ = ["TickPolicy", "raw_watermark"]


class TickPolicy:
    def __init__(self, partitions: int, *, hot_ms: int, heartbeat_ms: int, on_demand: bool = True) -> None:
        self.partitions = partitions
        self.hot_ms = hot_ms
        self.heartbeat_ms = heartbeat_ms
        self.on_demand = on_demand
        self.wanted: dict[int, int] = {}  # partition -> the watermark it waits for
        self.linked: set[int] = set()  # partitions whose demand says they link
        self.hot_until: dict[int, int] = {}
        self.last_heartbeat: int | None = None

    def demand(self, demand: ClockDemand) -> None:
        p = demand.partition
        if demand.wanted is None:
            self.wanted.pop(p, None)
        else:
            self.wanted[p] = demand.wanted
        if demand.linked:
            self.linked.add(p)
        else:
            self.linked.discard(p)

    def routed(self, partition: int, event_ms: int, now_ms: int) -> None:
        """This worker sent ``partition`` something with event time ``event_ms``: tick it until
        the watermark is past that plus the hot time."""
        until = max(event_ms, now_ms) + self.hot_ms
        if until > self.hot_until.get(partition, -1):
            self.hot_until[partition] = until

    def due(self, now_ms: int) -> list[int]:
        """The partitions to tick now, in order."""
        every = range(self.partitions)
        if not self.on_demand or self._heartbeat_due(now_ms):
            return list(every)
        self._cool(now_ms)
        chosen = [p for p in every if self.wanted.get(p, now_ms + 1) <= now_ms or p in self.hot_until]
        return list(every) if chosen and self.linked else chosen

    def ticked(self, partitions: list[int], now_ms: int) -> None:
        if len(partitions) == self.partitions:
            self.last_heartbeat = now_ms

    def next_in(self, now_ms: int) -> int | None:
        """Milliseconds until some partition is due (0: now), None when nothing ever is."""
        if not self.on_demand:
            return 0
        times = list(self.wanted.values())
        if self.hot_until:
            times.append(now_ms)
        if self.heartbeat_ms > 0:
            times.append(now_ms if self.last_heartbeat is None else self.last_heartbeat + self.heartbeat_ms)
        return max(0, min(times) - now_ms) if times else None

    def _heartbeat_due(self, now_ms: int) -> bool:
        if self.heartbeat_ms <= 0:
            return False
        return self.last_heartbeat is None or now_ms - self.last_heartbeat >= self.heartbeat_ms

    def _cool(self, now_ms: int) -> None:
        for p in [p for p, until in self.hot_until.items() if until <= now_ms]:
            del self.hot_until[p]


def raw_watermark(newest_ms: int, now_ms: int, *, caught_up: bool, max_future_ms: int) -> int | None:
    """A raw partition's watermark at wall time ``now_ms``; None while nothing was read (-1)."""
    if caught_up:
        mark = max(now_ms, newest_ms)
    elif newest_ms >= 0:
        mark = newest_ms
    else:
        return None
    return min(mark, now_ms + max_future_ms)
