"""Event time: the watermarks of the raw partitions, and the reorder buffer that waits for them.

Alerts wait in the buffer until ``watermark - allowed_lateness`` passes their event time; they
are then released in ``AlertNote.sort_key`` order (equal keys in log order), so any arrival order
within the allowed lateness gives the same sequence. Anything behind what was released is late.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from stormwatch.streams.core import wire

__all__ = ["Buffered", "ReorderBuffer", "Watermarks", "WireRoute"]

WireRoute = tuple[str, str, str, dict[str, str]]  # gkhash, group_key, rule, group labels


@dataclass(slots=True, eq=False)
class Buffered:
    """A notification waiting for event time to pass it, with what applying it needs."""

    key: tuple[Any, ...]
    offset: int
    kind: str  # "a" alert, "i" inhibitor, "k" key-only
    note: wire.AlertNote
    route: WireRoute | None
    inhibit_rule: str | None = None


_BUFFER_ORDER = attrgetter("key")


class Watermarks:
    """The latest watermark of each raw partition; event time is their minimum, once all spoke."""

    def __init__(self) -> None:
        self.marks: dict[str, int] = {}
        self.expected_sources = 1

    def update(self, marks: dict[str, int], sources: int) -> bool:
        """Take newer watermarks; False (and nothing changes) when none moved forward."""
        moved = False
        for source, watermark in marks.items():
            if watermark > self.marks.get(source, -1):
                self.marks[source] = watermark
                moved = True
        if moved:
            self.expected_sources = max(self.expected_sources, sources)
        return moved

    def low(self) -> int | None:
        """The lowest watermark, or None until every raw partition has sent one."""
        if len(self.marks) < self.expected_sources:
            return None
        return min(self.marks.values())


class ReorderBuffer:
    """Waiting alerts, and the point up to which event time has been applied.

    The waiting alerts are kept by event time, each list in log order, with a heap of those
    times: advancing takes the due lists and sorts only them by key (stable: equal keys keep log
    order); a heap of all alerts by key cost twice as much per alert.
    """

    def __init__(self) -> None:
        self.clock: int | None = None  # event time up to which everything has been applied
        self.bound: tuple[Any, ...] | None = None  # sort key of the last released alert
        self._waiting: dict[int, list[Buffered]] = {}
        self._times: list[int] = []

    def __len__(self) -> int:
        return sum(len(waiting) for waiting in self._waiting.values())

    def admit(
        self, items: list[tuple[wire.AlertNote, WireRoute | None, str | None]], offset: int
    ) -> list[Buffered]:
        """Buffer the notifications of one input record; returns the late ones, in record order."""
        late: list[Buffered] = []
        clock, bound = self.clock, self.bound
        for note, route, inhibit_rule in items:
            kind = "i" if inhibit_rule else ("a" if route is not None else "k")
            key = note.sort_key(kind)
            item = Buffered(key, offset, kind, note, route, inhibit_rule)
            # Late: behind what has been applied already (the clock, or the last released alert).
            if (clock is not None and note.event_ms < clock) or (bound is not None and key <= bound):
                late.append(item)
                continue
            waiting = self._waiting.get(note.event_ms)
            if waiting is None:
                self._waiting[note.event_ms] = [item]
                heapq.heappush(self._times, note.event_ms)
            else:
                waiting.append(item)
        return late

    def due(self, target: int) -> list[Buffered]:
        """Take out every alert at or before ``target``, in release order."""
        ready: list[Buffered] = []
        times = self._times
        while times and times[0] <= target:
            ready += self._waiting.pop(heapq.heappop(times))
        ready.sort(key=_BUFFER_ORDER)
        return ready

    def released(self, item: Buffered) -> None:
        """``item`` is being applied: time is at its event time, and nothing before it may follow."""
        self.set_clock(item.key[0])
        self.bound = item.key

    def set_clock(self, t: int) -> None:
        if self.clock is None or t > self.clock:
            self.clock = t

    def earliest(self, default: int) -> int:
        """The event time of the earliest waiting alert."""
        return self._times[0] if self._times else default

    def earliest_or_none(self) -> int | None:
        """The event time of the earliest waiting alert, or None when none waits."""
        return self._times[0] if self._times else None

    def oldest_offset(self, default: int) -> int:
        """The input offset of the oldest record with an alert still waiting (the commit point)."""
        # each waiting list is in log order: its first alert came from its oldest record
        return min((waiting[0].offset for waiting in self._waiting.values()), default=default)
