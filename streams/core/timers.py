"""Group timers: when each group next needs attention, and the heaps that keep those times.

Two levels. Each group keeps a lazy heap of its alerts' expiry and flap-settle times (entries go
stale instead of being removed; ``push_alert_timer`` compacts them); the partition keeps a lazy
heap of groups by the earliest of their due times, ``group_due``. Both are derived state: a
restore rebuilds them from the alerts, so they are never written to the changelog.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import TYPE_CHECKING

from stormwatch.schemas.incident import IncidentState

if TYPE_CHECKING:
    from stormwatch.streams.core.groups import GroupState
    from stormwatch.streams.core.rules import CorrelationRule

__all__ = [
    "EXPIRE",
    "SETTLE",
    "GroupSchedule",
    "alert_timer_live",
    "due_alert_timers",
    "group_due",
    "push_alert_timer",
    "rebuild_alert_timers",
]

# Timer kinds inside a group's alert heap.
EXPIRE = 0
SETTLE = 1

AlertTimer = tuple[int, int, str]  # (due_ms, EXPIRE or SETTLE, fingerprint)


def alert_timer_live(group: GroupState, entry: AlertTimer, resolve_timeout_ms: int, settle_ms: int) -> bool:
    """Whether a heap entry is its alert's current expiry or settle time (else it is stale)."""
    due, kind, fp = entry
    alert = group.alerts.get(fp)
    if alert is None:
        return False
    if kind == EXPIRE:
        return alert.firing and alert.expiry_ms(resolve_timeout_ms) == due
    return alert.flapping and alert.settle_ms(settle_ms) == due


def push_alert_timer(
    group: GroupState, due_ms: int, kind: int, fingerprint: str, resolve_timeout_ms: int, settle_ms: int
) -> None:
    """Add an alert timer; drop the stale entries once the heap has grown past its threshold."""
    heapq.heappush(group.heap, (due_ms, kind, fingerprint))
    if len(group.heap) > group.compact_at:
        group.heap = [e for e in group.heap if alert_timer_live(group, e, resolve_timeout_ms, settle_ms)]
        heapq.heapify(group.heap)
        # Never again before the heap has doubled: compaction stays O(1) per push even when
        # most entries are live (a group of flapping alerts; it was 75% of that workload's CPU).
        group.compact_at = max(64, 2 * len(group.heap), 4 * (len(group.alerts) + 1))


def due_alert_timers(
    group: GroupState, t: int, resolve_timeout_ms: int, settle_ms: int
) -> Iterator[AlertTimer]:
    """Take the live alert timers due at or before ``t`` off the group's heap, earliest first
    (the heap may be compacted between two of them: it is read afresh for each)."""
    while group.heap and group.heap[0][0] <= t:
        entry = heapq.heappop(group.heap)
        if alert_timer_live(group, entry, resolve_timeout_ms, settle_ms):
            yield entry


def rebuild_alert_timers(group: GroupState, resolve_timeout_ms: int, settle_ms: int) -> None:
    """The heap ``push_alert_timer`` would have built one alert at time, made at once (restore):
    at most two entries per alert, so it would never have compacted them."""
    alerts = group.alerts.values()
    group.heap = [(a.expiry_ms(resolve_timeout_ms), EXPIRE, a.fingerprint) for a in alerts if a.firing]
    group.heap += [(a.settle_ms(settle_ms), SETTLE, a.fingerprint) for a in alerts if a.flapping]
    heapq.heapify(group.heap)


def group_due(group: GroupState, rule: CorrelationRule, settle_ms: int) -> int | None:
    """The earliest time the group has something to do: group_wait over, an update to flush, the
    lifetime cap, the quiet period after resolution, or an alert timer. None: nothing, ever."""
    candidates: list[int] = []
    if group.pending_since is not None:
        candidates.append(group.pending_since + rule.group_wait_ms)
    inc = group.incident
    if inc is not None:
        if inc.active:
            candidates.append(inc.opened_ms + rule.max_lifetime_ms)
            if group.has_pending:
                candidates.append(inc.last_emit_ms + rule.group_interval_ms)
        elif inc.state is IncidentState.RESOLVED and inc.resolved_ms is not None:
            candidates.append(inc.resolved_ms + rule.close_delay_ms)
    heap = group.heap
    while heap:
        if alert_timer_live(group, heap[0], rule.resolve_timeout_ms, settle_ms):
            candidates.append(heap[0][0])
            break
        heapq.heappop(heap)
    return min(candidates) if candidates else None


class GroupSchedule:
    """The partition's groups by due time: a lazy heap of (due, gkhash) and each group's current
    due time; a heap entry that is not its group's current time is stale and skipped."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._due: dict[str, int] = {}

    def set(self, gkhash: str, due: int) -> None:
        if self._due.get(gkhash) != due:
            self._due[gkhash] = due
            heapq.heappush(self._heap, (due, gkhash))

    def cancel(self, gkhash: str) -> None:
        self._due.pop(gkhash, None)

    def next_due(self, target: int) -> tuple[int, str] | None:
        """The earliest (due, gkhash) at or before ``target``, left in place; None if there is none."""
        heap = self._heap
        while heap:
            due, gkhash = heap[0]
            if self._due.get(gkhash) != due:
                heapq.heappop(heap)
                continue
            return (due, gkhash) if due <= target else None
        return None

    def earliest(self) -> int | None:
        """The earliest due time of any group (stale heap entries dropped), or None."""
        heap = self._heap
        while heap:
            due, gkhash = heap[0]
            if self._due.get(gkhash) == due:
                return due
            heapq.heappop(heap)
        return None

    def take(self, entry: tuple[int, str]) -> None:
        """Remove ``entry``, which ``next_due`` just returned: its group is about to run."""
        heapq.heappop(self._heap)
        self._due.pop(entry[1], None)
