"""Storm suppression at a glance: what came in, what an on-call saw, how fast people answered.

Computed from incidents (their latest snapshots), over the incidents *opened* in a window, so
every figure of one answer describes the same incidents. Counting from the audit log rather than
from Prometheus keeps the console working with no Prometheus, and keeps it to what stormwatch
decided: notifications that never reached an incident (dead letters, alerts muted before any
group opened) are only in the metrics (``stormwatch_alerts_in_total``).

- ``notifications``: alert notifications folded into those incidents: each distinct alert once,
  plus every re-send deduplicated and every notification held back (silenced, inhibited,
  flapping): the snapshot's ``alert_count + deduplicated + suppressed``;
- ``incidents``: incidents opened; ``after_linking``: those an on-call handles on their own (not
  merged into another, not linked into a primary);
- MTTA and MTTR: open to acknowledged and open to resolved, of those that were (the same spans
  as ``stormwatch_time_to_acknowledge_seconds`` and ``stormwatch_time_to_resolve_seconds``).
Merged-away incidents are left out of the alert counts: their alerts moved to the survivor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import Incident, IncidentState

__all__ = ["WINDOWS", "Overview", "overview"]

WINDOWS: dict[str, int] = {
    "15m": 15 * 60_000,
    "1h": 3_600_000,
    "6h": 6 * 3_600_000,
    "24h": 24 * 3_600_000,
    "7d": 7 * 24 * 3_600_000,
}
"""The windows the console offers, by name."""

_DONE = (IncidentState.RESOLVED, IncidentState.CLOSED)


@dataclass(frozen=True, slots=True)
class Overview:
    window_ms: int
    since_ms: int
    until_ms: int
    incidents: int
    after_linking: int
    distinct_alerts: int
    notifications: int
    open_now: int  # opened in the window and not resolved or closed yet
    acknowledged: int
    resolved: int
    mtta_ms: float | None  # mean
    mtta_p50_ms: float | None
    mttr_ms: float | None
    mttr_p50_ms: float | None

    @property
    def ratio(self) -> float | None:
        """Notifications per incident an on-call handles (the storm suppression ratio)."""
        return self.notifications / self.after_linking if self.after_linking else None


def _mean(values: list[int]) -> float | None:
    return sum(values) / len(values) if values else None


def overview(incidents: Iterable[Incident], now_ms: int, window_ms: int) -> Overview:
    since = now_ms - window_ms
    opened = [i for i in incidents if since <= ms_from_dt(i.opened_at) <= now_ms]
    kept = [i for i in opened if i.merged_into is None]
    to_ack = [
        ms_from_dt(i.acknowledged_at) - ms_from_dt(i.opened_at)
        for i in opened
        if i.acknowledged_at is not None
    ]
    to_resolve = [
        ms_from_dt(i.resolved_at) - ms_from_dt(i.opened_at) for i in opened if i.resolved_at is not None
    ]
    return Overview(
        window_ms=window_ms,
        since_ms=since,
        until_ms=now_ms,
        incidents=len(opened),
        after_linking=sum(1 for i in kept if i.linked_into is None),
        distinct_alerts=sum(i.alert_count for i in kept),
        notifications=sum(i.alert_count + i.deduplicated + i.suppressed for i in kept),
        open_now=sum(1 for i in kept if i.state not in _DONE),
        acknowledged=len(to_ack),
        resolved=len(to_resolve),
        mtta_ms=_mean(to_ack),
        mtta_p50_ms=median(to_ack) if to_ack else None,
        mttr_ms=_mean(to_resolve),
        mttr_p50_ms=median(to_resolve) if to_resolve else None,
    )
