"""Per-group correlation state: the alerts of one group key and its current incident.

These are plain records with (de)serialization to the compacted state topic. All decisions live in
streams.engine; keeping the records dumb makes "restored state == in-memory state" easy to prove.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.incident import AlertChangeKind, IncidentState

ACTIVE_STATES = frozenset({IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.MITIGATING})

MAX_PENDING_CHANGES = 8

# Timer kinds inside a group's alert heap.
EXPIRE = 0
SETTLE = 1


def round_up(ms: int, resolution: int) -> int:
    """Round an epoch-ms time up to the state resolution (so unchanged re-sends don't dirty state)."""
    if resolution <= 1:
        return ms
    return -(-ms // resolution) * resolution


@dataclass(slots=True)
class AlertState:
    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: str
    firing: bool
    starts_ms: int
    seen_ms: int  # last notification, rounded up to the state resolution
    ends_ms: int | None  # the source's endsAt for a firing alert, rounded up
    flips: list[int] = field(default_factory=list)  # status flip times inside the flap window
    flapping: bool = False
    suppressed: str | None = None  # "silence:ID" or "inhibit:RULE" while suppressed
    member: bool = False  # belongs to the group's current incident
    # Changes not yet reported in an incident event: [kind, at_ms, rule], oldest first.
    pending: list[list[Any]] = field(default_factory=list)
    keyed: bool = False  # identified by the source's key: reachable by key-only notifications

    def expiry_ms(self, resolve_timeout_ms: int) -> int:
        return self.ends_ms if self.ends_ms is not None else self.seen_ms + resolve_timeout_ms

    def settle_ms(self, settle_after_ms: int) -> int:
        return (self.flips[-1] if self.flips else self.seen_ms) + settle_after_ms

    @property
    def effectively_firing(self) -> bool:
        """A flapping alert keeps its incident open: its flips are held back until it settles."""
        return self.firing or self.flapping

    def mark(self, kind: AlertChangeKind, at: int, rule: str | None = None) -> None:
        if self.pending and self.pending[-1][0] == kind.value:
            return  # the same change again before it was reported: reported once
        self.pending.append([kind.value, at, rule])
        if len(self.pending) > MAX_PENDING_CHANGES:
            del self.pending[1]  # keep the first (often JOINED) and the latest ones

    def encode(self) -> bytes:
        return orjson.dumps(
            [
                self.fingerprint,
                self.labels,
                self.annotations,
                self.severity,
                self.firing,
                self.starts_ms,
                self.seen_ms,
                self.ends_ms,
                self.flips,
                self.flapping,
                self.suppressed,
                self.member,
                self.pending,
                self.keyed,
            ]
        )

    @classmethod
    def decode(cls, data: bytes) -> AlertState:
        return cls(*orjson.loads(data))


@dataclass(slots=True)
class IncidentRuntime:
    incident_id: str
    state: IncidentState
    opened_ms: int
    seq: int = 0
    title: str = ""
    acknowledged_ms: int | None = None
    mitigating_ms: int | None = None
    resolved_ms: int | None = None
    closed_ms: int | None = None
    assignee: str | None = None
    reopen_count: int = 0
    severity_override: str | None = None
    reported_severity: str | None = None
    deduplicated: int = 0
    suppressed: int = 0
    pending_dedup: int = 0
    pending_suppressed: int = 0
    last_emit_ms: int = 0
    seen_commands: list[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def remember_command(self, command_key: str, keep: int = 64) -> None:
        self.seen_commands.append(command_key)
        if len(self.seen_commands) > keep:
            del self.seen_commands[: len(self.seen_commands) - keep]

    def to_obj(self) -> list[Any]:
        return [
            self.incident_id,
            self.state.value,
            self.opened_ms,
            self.seq,
            self.title,
            self.acknowledged_ms,
            self.mitigating_ms,
            self.resolved_ms,
            self.closed_ms,
            self.assignee,
            self.reopen_count,
            self.severity_override,
            self.reported_severity,
            self.deduplicated,
            self.suppressed,
            self.pending_dedup,
            self.pending_suppressed,
            self.last_emit_ms,
            self.seen_commands,
        ]

    @classmethod
    def from_obj(cls, row: list[Any]) -> IncidentRuntime:
        inc = cls(*row)
        inc.state = IncidentState(row[1])
        return inc


@dataclass(slots=True)
class GroupState:
    gkhash: str
    group_key: str
    rule: str
    group_labels: dict[str, str]
    alerts: dict[str, AlertState] = field(default_factory=dict)
    pending_since: int | None = None  # group_wait running since (event time of the first alert)
    incident: IncidentRuntime | None = None
    has_pending: bool = False  # some member alert has unreported changes (derived; not persisted)
    # Lazy min-heap of (due_ms, kind, fingerprint); stale entries are skipped when popped.
    heap: list[tuple[int, int, str]] = field(default_factory=list)

    def push_timer(self, due_ms: int, kind: int, fingerprint: str) -> None:
        heapq.heappush(self.heap, (due_ms, kind, fingerprint))
        if len(self.heap) > 64 and len(self.heap) > 4 * (len(self.alerts) + 1):
            self.heap = [entry for entry in self.heap if self._may_be_live(entry)]
            heapq.heapify(self.heap)

    def _may_be_live(self, entry: tuple[int, int, str]) -> bool:
        _, kind, fp = entry
        alert = self.alerts.get(fp)
        if alert is None:
            return False
        if kind == EXPIRE:
            return alert.firing
        return alert.flapping

    def encode_meta(self) -> bytes:
        return orjson.dumps(
            {
                "gk": self.group_key,
                "r": self.rule,
                "gl": self.group_labels,
                "ps": self.pending_since,
                "inc": self.incident.to_obj() if self.incident is not None else None,
            }
        )

    @classmethod
    def decode_meta(cls, gkhash: str, data: bytes) -> GroupState:
        obj = orjson.loads(data)
        inc = obj.get("inc")
        return cls(
            gkhash=gkhash,
            group_key=obj["gk"],
            rule=obj["r"],
            group_labels=obj["gl"],
            pending_since=obj.get("ps"),
            incident=IncidentRuntime.from_obj(inc) if inc is not None else None,
        )
