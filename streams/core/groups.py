"""Per-group correlation state: the alerts of one group key and its current incident.

These are plain records with (de)serialization to the compacted state topic. All decisions live in
the engine's modules (streams.core.engine and what it composes); keeping the records dumb makes
"restored state == in-memory state" easy to prove.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import AlertChangeKind, IncidentState
from stormwatch.streams.core.muting import Suppression
from stormwatch.streams.core.timers import EXPIRE, SETTLE, alert_timer_live, push_alert_timer
from stormwatch.streams.core.wire import BoundedMemo

__all__ = [
    "ACTIVE_STATES",
    "EXPIRE",
    "NO_CHANGES",
    "NO_FLIPS",
    "SETTLE",
    "AlertState",
    "GroupState",
    "IncidentRuntime",
    "round_up",
    "shared_ms",
]

ACTIVE_STATES = frozenset({IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.MITIGATING})

MAX_PENDING_CHANGES = 8


def round_up(ms: int, resolution: int) -> int:
    """Round an epoch-ms time up to the state resolution (so unchanged re-sends don't dirty state)."""
    if resolution <= 1:
        return ms
    return shared_ms(-(-ms // resolution) * resolution)


_SHARED_MS: dict[int, int] = {}
_SHARED_MS_MAX = 65_536


def shared_ms(ms: int) -> int:
    """One int object per time value: a million alerts hold a few thousand distinct (rounded)
    times, and each int is 32 bytes (docs/performance.md, "Memory")."""
    found = _SHARED_MS.get(ms)
    if found is None:
        if len(_SHARED_MS) >= _SHARED_MS_MAX:
            _SHARED_MS.clear()
        found = _SHARED_MS[ms] = ms
    return found


def forget_shared() -> None:
    """Drop the values shared across alerts (times, single pending changes), for a worker whose
    state just went (partitions revoked, or rebuilt after a rewind).

    Each of them was made amid the state that used it, so the few thousand left behind sit one or
    two per arena: offline, dropping an engine of 300k alerts gave back 52 of its 246 MB, and
    forgetting these 1,234 objects the rest. A correlator that held every partition for a
    minute after a broker crash kept 790 MB with none left (docs/reliability.md, run 6). They are
    made again as alerts come."""
    _SHARED_MS.clear()
    _ONE_CHANGE.clear()


NO_FLIPS: tuple[()] = ()
NO_CHANGES: tuple[()] = ()
"""Shared empty ``flips`` / ``pending``: most alerts have neither, and an empty list is 56 bytes."""

_SEVERITIES = {s.value: s.value for s in Severity}  # one shared string per severity

_ONE_CHANGE: BoundedMemo[tuple[str, int, str | None], tuple[tuple[str, int, str | None]]] = BoundedMemo(
    lambda change: (change,)
)
"""A pending list of one change, shared by the alerts that made the same change at the same time."""


def _kept(encoded: bytes) -> bytes:
    """A copy of exactly its size: orjson's result keeps its 4 KiB output buffer allocated.

    (Through str: measured several times faster than ``bytes(memoryview(encoded))``.)
    """
    return encoded.decode().encode()


class AlertState:
    """One alert of a group.

    Labels and annotations are kept as their orjson encoding, in the order they came, and decoded
    where an event reports them: as two dicts of short strings they cost about 1.3 KiB per alert,
    encoded about a third of that (docs/performance.md, "Memory"). The properties give equal
    dicts in the same order, and the state record is byte for byte what encoding the dicts gave.
    """

    __slots__ = (
        "_encoded",
        "ends_ms",
        "fingerprint",
        "firing",
        "flapping",
        "flips",
        "keyed",
        "member",
        "pending",
        "seen_ms",
        "severity",
        "starts_ms",
        "suppressed",
    )

    def __init__(
        self,
        fingerprint: str,
        labels: dict[str, str],
        annotations: dict[str, str],
        severity: str,
        firing: bool,
        starts_ms: int,
        seen_ms: int,
        ends_ms: int | None,
        flips: list[int] | tuple[()] = NO_FLIPS,
        flapping: bool = False,
        suppressed: Suppression | None = None,
        member: bool = False,
        pending: Sequence[Sequence[Any]] = NO_CHANGES,
        keyed: bool = False,
    ) -> None:
        self.fingerprint = fingerprint
        # ``labels NL annotations`` in one object: a bytes object costs 33 bytes before its content
        self._encoded = _kept(orjson.dumps(labels) + b"\n" + orjson.dumps(annotations))
        self.severity = _SEVERITIES.get(severity, severity)
        self.firing = firing
        self.starts_ms = shared_ms(starts_ms)
        self.seen_ms = shared_ms(seen_ms)  # last notification, rounded up to the state resolution
        self.ends_ms = None if ends_ms is None else shared_ms(ends_ms)  # the source's endsAt, rounded up
        self.flips: list[int] | tuple[()] = flips or NO_FLIPS  # status flip times inside the flap window
        self.flapping = flapping
        self.suppressed = suppressed  # why a silence or inhibition mutes it, while one does
        self.member = member  # belongs to the group's current incident
        # Changes not yet reported in an incident event: [kind, at_ms, rule], oldest first.
        self.pending: Sequence[Sequence[Any]] = pending or NO_CHANGES
        self.keyed = keyed  # identified by the source's key: reachable by key-only notifications

    @property
    def _labels(self) -> bytes:
        return self._encoded[: self._encoded.index(b"\n")]

    @property
    def _annotations(self) -> bytes:
        return self._encoded[self._encoded.index(b"\n") + 1 :]

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = orjson.loads(self._labels)
        return labels

    @property
    def annotations(self) -> dict[str, str]:
        annotations: dict[str, str] = orjson.loads(self._annotations)
        return annotations

    @annotations.setter
    def annotations(self, annotations: dict[str, str]) -> None:
        self._encoded = _kept(self._labels + b"\n" + orjson.dumps(annotations))

    def same_annotations(self, annotations: dict[str, str]) -> bool:
        """``annotations == self.annotations``, mostly without decoding: a re-send's are the same bytes."""
        return self._encoded.endswith(b"\n" + orjson.dumps(annotations)) or self.annotations == annotations

    def expiry_ms(self, resolve_timeout_ms: int) -> int:
        return self.ends_ms if self.ends_ms is not None else self.seen_ms + resolve_timeout_ms

    def settle_ms(self, settle_after_ms: int) -> int:
        return (self.flips[-1] if self.flips else self.seen_ms) + settle_after_ms

    @property
    def effectively_firing(self) -> bool:
        """A flapping alert keeps its incident open: its flips are held back until it settles."""
        return self.firing or self.flapping

    def mark(self, kind: AlertChangeKind, at: int, rule: str | None = None) -> None:
        pending = self.pending
        change = (kind.value, at, rule)
        if not pending:
            # One change (a new alert's JOINED) is the common case, and until the next event
            # every new alert of a storm holds it. The alerts of one push join at the same instant,
            # so they share one tuple: 370 distinct ones for 94k changes in high-cardinality. Made
            # per alert, these were the most numerous objects freed when an event reported them,
            # leaving holes among what the alerts keep (issue #16). Same JSON either way.
            self.pending = _ONE_CHANGE[change]
            return
        if pending[-1][0] == kind.value:
            return  # the same change again before it was reported: reported once
        changes = pending if isinstance(pending, list) else list(pending)
        changes.append(change)
        if len(changes) > MAX_PENDING_CHANGES:
            del changes[1]  # keep the first (often JOINED) and the latest ones
        self.pending = changes

    def _fields(self) -> tuple[Any, ...]:
        return (
            self.fingerprint,
            self._encoded,
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
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AlertState):
            return NotImplemented
        mine, theirs = self._fields(), other._fields()
        # flips/pending compare equal whether tuples (as kept) or lists (as restored)
        return (
            mine[:7] == theirs[:7]
            and mine[8:11] == theirs[8:11]
            and mine[12] == theirs[12]
            and list(mine[7]) == list(theirs[7])
            and [list(c) for c in mine[11]] == [list(c) for c in theirs[11]]
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"AlertState({self.fingerprint!r}, labels={self.labels!r}, firing={self.firing}, "
            f"member={self.member}, seen_ms={self.seen_ms}, ends_ms={self.ends_ms})"
        )

    def encode(self, reports: int | None = None) -> bytes:
        """``labels NL annotations NL [the other fields]``: orjson escapes every newline inside a
        string, so the two encodings come back by one split, with no JSON parsing, on restore.
        A suppression is written as its ``KIND:ID`` string. ``reports``: its group's
        ``GroupState.reports`` now, so that a restore knows which later reports covered the
        pending changes recorded here."""
        suppressed = self.suppressed
        rest = [
            self.fingerprint,
            self.severity,
            self.firing,
            self.starts_ms,
            self.seen_ms,
            self.ends_ms,
            self.flips,
            self.flapping,
            None if suppressed is None else suppressed.encode(),
            self.member,
            self.pending,
            self.keyed,
        ]
        if reports:
            rest.append(reports)
        return self._encoded + b"\n" + orjson.dumps(rest)

    @classmethod
    def decode(cls, data: bytes, reports: int = 0) -> AlertState:
        """``reports``: its group's ``GroupState.reports`` as restored. A member's pending changes
        recorded before the group's latest report went out in it: the record is not written again
        just to clear them (issue #16: that was a third of all changelog records in a storm)."""
        if data[:1] == b"[":  # the first format, one JSON array (changelogs written before 0.1)
            row = orjson.loads(data)
            row[10] = None if row[10] is None else Suppression.decode(row[10])
            return cls(*row)
        encoded, rest = data.rsplit(b"\n", 1)  # an exact-size copy, as _kept makes
        (
            fingerprint,
            severity,
            firing,
            starts_ms,
            seen_ms,
            ends_ms,
            flips,
            flapping,
            suppressed,
            member,
            pending,
            keyed,
            *written_at,
        ) = orjson.loads(rest)
        if pending and member and reports > (written_at[0] if written_at else 0):
            pending = None
        alert = cls.__new__(cls)  # __init__ would encode the labels and annotations again
        alert.fingerprint = fingerprint
        alert._encoded = encoded
        alert.severity = _SEVERITIES.get(severity, severity)
        alert.firing = firing
        alert.starts_ms = shared_ms(starts_ms)
        alert.seen_ms = shared_ms(seen_ms)
        alert.ends_ms = None if ends_ms is None else shared_ms(ends_ms)
        alert.flips = flips or NO_FLIPS
        alert.flapping = flapping
        alert.suppressed = None if suppressed is None else Suppression.decode(suppressed)
        alert.member = member
        alert.pending = _restored_changes(pending)
        alert.keyed = keyed
        return alert


_CHANGE_KINDS = {kind.value: kind.value for kind in AlertChangeKind}  # one shared string per kind


def _restored_changes(pending: list[list[Any]] | None) -> Sequence[Sequence[Any]]:
    """Pending changes as ``mark`` keeps them: one change as the tuple shared by the alerts that
    made it at the same instant, more as a list of tuples, with shared kinds and times.

    As decoded (a list of lists, a new kind string and time each) they cost four more objects per
    alert than the state had before it was written: a correlator held twice the blocks per alert
    after a restore or a takeover than while it built the same state live (issue #17)."""
    if not pending:
        return NO_CHANGES
    changes = [(_CHANGE_KINDS.get(kind, kind), shared_ms(at), rule) for kind, at, rule in pending]
    if len(changes) == 1:
        return _ONE_CHANGE[changes[0]]
    return changes


_TAIL_DEFAULTS: tuple[Any, ...] = (None, [], None, None, 0)
"""The fields after ``seen_commands``, as an incident has them before linking or muting."""


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
    # Linking (issue #12): the primary it is a member of; on a primary its members and root cause
    # (RootCauseInfo's JSON without schema_version). Written after seen_commands only when set,
    # so an unlinked incident's record is what it was before linking existed.
    linked_into: str | None = None
    members: list[str] = field(default_factory=list)
    root_cause: dict[str, Any] | None = None
    scope: list[str] | None = None  # its topology scope, fixed when it opened (with a topology)
    muted: int = 0  # alerts its alerts muted (streams.core.mutetally)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def remember_command(self, command_key: str, keep: int = 64) -> None:
        self.seen_commands.append(command_key)
        if len(self.seen_commands) > keep:
            del self.seen_commands[: len(self.seen_commands) - keep]

    def to_obj(self) -> list[Any]:
        row = self._base_obj()
        tail = [self.linked_into, self.members, self.root_cause, self.scope, self.muted]
        while tail and tail[-1] == _TAIL_DEFAULTS[len(tail) - 1]:
            tail.pop()  # an incident that never used them has the record it had before them
        return row + tail

    def _base_obj(self) -> list[Any]:
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
    # How many times the member alerts' pending changes went into an event: the alert records say
    # how many there had been when they were written (``AlertState.decode``).
    reports: int = 0
    # Lazy min-heap of (due_ms, kind, fingerprint); stale entries are skipped when popped.
    heap: list[tuple[int, int, str]] = field(default_factory=list)
    compact_at: int = field(default=64, compare=False)  # heap size that triggers dropping stale entries

    # The alert heap's operations live with the other timers (streams.core.timers); bound here as
    # methods, with no call in between, since every new alert and every expiry change pushes one.
    push_timer = push_alert_timer
    timer_live = alert_timer_live

    def mark(self, alert: AlertState, kind: AlertChangeKind, t: int, rule: str | None = None) -> None:
        """Record an unreported change of ``alert``; a member's change is due in the next event."""
        alert.mark(kind, t, rule)
        if alert.member:
            self.has_pending = True

    def encode_meta(self) -> bytes:
        return orjson.dumps(
            {
                "gk": self.group_key,
                "r": self.rule,
                "gl": self.group_labels,
                "ps": self.pending_since,
                "inc": self.incident.to_obj() if self.incident is not None else None,
                **({"rp": self.reports} if self.reports else {}),
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
            reports=obj.get("rp", 0),
        )
