"""Event time: the watermarks of the raw partitions, and the reorder buffer that waits for them.

Alerts wait in the buffer until ``watermark - allowed_lateness`` passes their event time; they
are then released in ``AlertNote.sort_key`` order (equal keys in log order), so any arrival order
within the allowed lateness gives the same sequence. Anything behind what was released is late.

While the buffer is large (``pack_after`` waiting alerts), a record's alerts wait as the record's
bytes and are decoded again when due: a correlator whose clock waits for the linker during a
catch-up reads its whole backlog into this buffer, and decoded alerts cost ~1.3 KB each of small
Python objects, whose arenas CPython keeps resident afterwards (docs/reliability.md, run 3).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from stormwatch.streams.core import wire

__all__ = ["PACK_AFTER", "Buffered", "Notification", "ReorderBuffer", "Watermarks", "WireRoute"]

WireRoute = tuple[str, str, str, dict[str, str]]  # gkhash, group_key, rule, group labels
Notification = tuple[wire.AlertNote, WireRoute | None, str | None]  # note, route, inhibit rule

PACK_AFTER = 10_000
"""Waiting alerts from which a record's alerts wait packed (its bytes, ~230 B an alert, instead
of ~1,300 B of decoded objects). Below it nothing is packed: a steady correlator decodes once."""


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


def _buffered(notification: Notification, offset: int) -> Buffered:
    note, route, inhibit_rule = notification
    kind = "i" if inhibit_rule else ("a" if route is not None else "k")
    return Buffered(note.sort_key(kind), offset, kind, note, route, inhibit_rule)


@dataclass(slots=True, eq=False)
class _PackedRecord:
    """An input record whose waiting alerts are kept as its bytes until the first is due."""

    offset: int
    value: bytes
    unpack: Callable[[bytes], list[Notification]]
    waiting: int = 0
    items: list[Buffered] | None = None  # decoded while some of its alerts are still waiting


@dataclass(slots=True, eq=False)
class _PackedAlert:
    record: _PackedRecord
    index: int

    @property
    def offset(self) -> int:
        return self.record.offset

    def unpacked(self) -> Buffered:
        record = self.record
        if record.items is None:
            record.items = [_buffered(n, record.offset) for n in record.unpack(record.value)]
        item = record.items[self.index]
        record.waiting -= 1
        if record.waiting == 0:  # its last waiting alert: the decoded copy and the bytes go
            record.items, record.value = None, b""
        return item


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

    def __init__(self, pack_after: int = PACK_AFTER) -> None:
        self.clock: int | None = None  # event time up to which everything has been applied
        self.bound: tuple[Any, ...] | None = None  # sort key of the last released alert
        self.pack_after = pack_after
        self._waiting: dict[int, list[Buffered | _PackedAlert]] = {}
        self._times: list[int] = []
        self._count = 0  # waiting alerts
        self._packed = 0  # of which packed

    def __len__(self) -> int:
        return self._count

    @property
    def packed(self) -> int:
        """Waiting alerts kept as their record's bytes."""
        return self._packed

    def admit(
        self,
        items: list[Notification],
        offset: int,
        record: tuple[bytes, Callable[[bytes], list[Notification]]] | None = None,
    ) -> list[Buffered]:
        """Buffer the notifications of one input record; returns the late ones, in record order.

        ``record``: its bytes and how to decode them to ``items`` again, so that its alerts can
        wait packed while the buffer is large."""
        late: list[Buffered] = []
        clock, bound = self.clock, self.bound
        packed = None
        if record is not None and self._count >= self.pack_after:
            packed = _PackedRecord(offset, record[0], record[1])
        for index, (note, route, inhibit_rule) in enumerate(items):
            # _buffered, inlined: this loop runs once per alert, and the call cost 7% of it
            kind = "i" if inhibit_rule else ("a" if route is not None else "k")
            key = note.sort_key(kind)
            item = Buffered(key, offset, kind, note, route, inhibit_rule)
            event_ms = note.event_ms
            # Late: behind what has been applied already (the clock, or the last released alert).
            if (clock is not None and event_ms < clock) or (bound is not None and key <= bound):
                late.append(item)
                continue
            waiting_item: Buffered | _PackedAlert = item
            if packed is not None:
                waiting_item = _PackedAlert(packed, index)
                packed.waiting += 1
                self._packed += 1
            self._count += 1
            waiting = self._waiting.get(event_ms)
            if waiting is None:
                self._waiting[event_ms] = [waiting_item]
                heapq.heappush(self._times, event_ms)
            else:
                waiting.append(waiting_item)
        return late

    def due(self, target: int) -> list[Buffered]:
        """Take out every alert at or before ``target``, in release order."""
        taken: list[Buffered | _PackedAlert] = []
        times = self._times
        while times and times[0] <= target:
            taken += self._waiting.pop(heapq.heappop(times))
        self._count -= len(taken)
        ready: list[Buffered]
        if self._packed:
            ready = []
            for item in taken:
                if isinstance(item, _PackedAlert):
                    self._packed -= 1
                    ready.append(item.unpacked())
                else:
                    ready.append(item)
        else:
            ready = taken  # type: ignore[assignment]  # nothing packed: every item is a Buffered
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
