"""Commands between partitions that apply at a fixed event time, not when they happen to arrive.

The linker's decisions (apply at note time + ``link.delay``) and the muted-alert summaries one
correlator partition sends another (streams.core.mutetally) are written when their sender gets
to them, which depends on scheduling; applied at their own instant instead, they leave the same
audit log in every run. One that arrives after its instant has passed is applied at once and
counted as late (for linker decisions the linker's marks make that rare: streams.core.linkgate).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["TimedCommand", "TimedCommands"]


@dataclass(order=True, frozen=True, slots=True)
class TimedCommand:
    """An OperatorCommand (JSON) waiting for event time ``apply_at``; equal times apply in id order."""

    apply_at: int
    command_id: str
    command: bytes
    offset: int  # of its input record, for a dead letter


class TimedCommands:
    """The commands of one partition waiting for their instant, earliest first."""

    def __init__(self) -> None:
        self._heap: list[TimedCommand] = []

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, command: TimedCommand) -> None:
        heapq.heappush(self._heap, command)

    def next_due(self, target: int) -> TimedCommand | None:
        """The earliest command due at or before ``target``, left in place."""
        return self._heap[0] if self._heap and self._heap[0].apply_at <= target else None

    def earliest(self) -> int | None:
        """When the earliest held command applies, or None."""
        return self._heap[0].apply_at if self._heap else None

    def pop(self) -> TimedCommand:
        return heapq.heappop(self._heap)

    def to_obj(self) -> list[Any]:
        return [[c.apply_at, c.command_id, c.command.decode(), c.offset] for c in sorted(self._heap)]

    def restore(self, rows: list[Any]) -> None:
        self._heap = [TimedCommand(int(a), str(c), str(cmd).encode(), int(o)) for a, c, cmd, o in rows]
        heapq.heapify(self._heap)

    @staticmethod
    def rows_in(meta: Mapping[str, Any]) -> list[Any]:
        return list(meta.get("timed", []))
