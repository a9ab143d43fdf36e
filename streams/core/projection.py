"""Rebuild incidents from the audit log (the incident topic), checking the log as it goes.

Pure: feed it ``IncidentEvent``s in log order, read incidents back. Each event carries a full
snapshot of the incident, so the state is simply the snapshot of the highest seq seen; what
snapshots do not carry (which fingerprints joined, operator notes, the merge target) is
accumulated from the events. Because the log is the audit trail, the fold also verifies it:
seq contiguous from 1 per incident, event ids unique. Problems are recorded, never raised, so
one bad record cannot hide every other incident from an operator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stormwatch.schemas.common import rfc3339
from stormwatch.schemas.incident import AlertChangeKind, Incident, IncidentEvent, IncidentEventType


class IssueKind(StrEnum):
    GAP = "gap"  # seqs missing before this one
    CONFLICT = "conflict"  # same incident and seq as an earlier event, different event_id (ignored)
    DUPLICATE_EVENT_ID = "duplicate_event_id"  # event_id already used by another incident/seq
    OUT_OF_ORDER = "out_of_order"  # arrived after a higher seq of the same incident


@dataclass(frozen=True)
class IntegrityIssue:
    """One way the audit log breaks its contract, with enough context to find the record."""

    kind: IssueKind
    incident_id: str
    seq: int
    event_id: str
    detail: str

    def __str__(self) -> str:
        return f"{self.incident_id} seq {self.seq}: {self.kind.value}: {self.detail}"


@dataclass
class _Fold:
    """What the projection keeps per incident."""

    latest: IncidentEvent
    event_ids: dict[int, str] = field(default_factory=dict)  # seq -> event_id
    events: dict[int, IncidentEvent] = field(default_factory=dict)  # only with keep_events
    joined: dict[str, int] = field(default_factory=dict)  # fingerprint -> seq of its first JOINED
    notes: list[tuple[int, int, str]] = field(default_factory=list)  # (seq, index in event, note)
    merged_into: tuple[int, str] | None = None  # (seq, incident_id) of the latest MERGED
    cached: Incident | None = None


class IncidentProjection:
    """Folds incident events into incidents and keeps each incident's timeline.

    ``keep_events=False`` keeps only what the incident list needs (not the timelines, nor the
    alert changes of the latest event), for folding a long audit log in bounded memory per
    incident. ``keep_fingerprints=False`` does not collect which alerts joined (``Incident.fingerprints``
    stays empty): for a long-lived reader such as the console's read model, where that list is
    most of an incident's memory (about 100 bytes per alert it ever had) and nothing reads it.
    """

    def __init__(self, *, keep_events: bool = True, keep_fingerprints: bool = True) -> None:
        self._keep_events = keep_events
        self._keep_fingerprints = keep_fingerprints
        self._folds: dict[str, _Fold] = {}
        self._event_owner: dict[str, tuple[str, int]] = {}  # event_id -> (incident_id, seq)
        self._issues: list[IntegrityIssue] = []
        self.duplicates = 0  # exact re-deliveries ignored (same incident, seq and event_id)
        self.applied = 0

    def apply(self, event: IncidentEvent) -> None:
        """Fold one event in; duplicates are ignored, contract breaches recorded in ``issues()``."""
        fold = self._folds.get(event.incident_id)
        if fold is not None:
            known = fold.event_ids.get(event.seq)
            if known is not None:
                if known == event.event_id:
                    self.duplicates += 1
                else:
                    self._issue(
                        IssueKind.CONFLICT,
                        event,
                        f"event {event.event_id} differs from {known} already at this seq; kept the first",
                    )
                return
        owner = self._event_owner.get(event.event_id)
        if owner is not None:
            self._issue(
                IssueKind.DUPLICATE_EVENT_ID,
                event,
                f"event_id {event.event_id} is already used by {owner[0]} seq {owner[1]}",
            )
        else:
            self._event_owner[event.event_id] = (event.incident_id, event.seq)

        if fold is None:
            fold = _Fold(latest=self._latest(event))
            self._folds[event.incident_id] = fold
            if event.seq != 1:
                self._issue(
                    IssueKind.GAP, event, f"{_seq_range(1, event.seq - 1)} missing before the first event"
                )
        elif event.seq > fold.latest.seq:
            if event.seq > fold.latest.seq + 1:
                self._issue(
                    IssueKind.GAP,
                    event,
                    f"{_seq_range(fold.latest.seq + 1, event.seq - 1)} missing (after seq {fold.latest.seq})",
                )
            fold.latest = self._latest(event)
        else:
            self._issue(
                IssueKind.OUT_OF_ORDER,
                event,
                f"arrived after seq {fold.latest.seq}; kept in the timeline, state stays as of that seq",
            )

        self.applied += 1
        fold.event_ids[event.seq] = event.event_id
        if self._keep_events:
            fold.events[event.seq] = event
        self._accumulate(fold, event, self._keep_fingerprints)
        fold.cached = None

    def _latest(self, event: IncidentEvent) -> IncidentEvent:
        """The event kept as the incident's latest: without its alert changes when timelines are
        not kept (only its snapshot, seq and time are read)."""
        if self._keep_events or not event.alerts:
            return event
        return event.model_copy(update={"alerts": []})

    def forget(self, incident_id: str) -> None:
        """Drop an incident and its event ids (a long-lived reader's retention: the console's)."""
        fold = self._folds.pop(incident_id, None)
        if fold is not None:
            for event_id in fold.event_ids.values():
                if self._event_owner.get(event_id, ("",))[0] == incident_id:
                    del self._event_owner[event_id]

    @staticmethod
    def _accumulate(fold: _Fold, event: IncidentEvent, fingerprints: bool) -> None:
        for change in event.alerts if fingerprints else ():
            if change.change is AlertChangeKind.JOINED:
                seen = fold.joined.get(change.fingerprint)
                if seen is None or event.seq < seen:
                    fold.joined[change.fingerprint] = event.seq
        if event.type is IncidentEventType.ANNOTATED:
            note = event.details.get("note")
            if isinstance(note, str) and note:
                fold.notes.append((event.seq, len(fold.notes), note))
        elif event.type is IncidentEventType.MERGED:
            target = event.details.get("merged_into")
            if (
                isinstance(target, str)
                and target
                and (fold.merged_into is None or event.seq > fold.merged_into[0])
            ):
                fold.merged_into = (event.seq, target)

    def _issue(self, kind: IssueKind, event: IncidentEvent, detail: str) -> None:
        self._issues.append(IntegrityIssue(kind, event.incident_id, event.seq, event.event_id, detail))

    def issues(self) -> list[IntegrityIssue]:
        """Integrity problems found so far, in the order they were seen."""
        return list(self._issues)

    def get(self, incident_id: str) -> Incident | None:
        fold = self._folds.get(incident_id)
        if fold is None:
            return None
        if fold.cached is None:
            fold.cached = _build(incident_id, fold)
        return fold.cached

    def incidents(self) -> list[Incident]:
        """Every incident seen, in the order of its first event in the log."""
        out = []
        for incident_id in self._folds:
            incident = self.get(incident_id)
            if incident is not None:
                out.append(incident)
        return out

    def timeline(self, incident_id: str) -> list[IncidentEvent]:
        """The incident's events in seq order (duplicates and conflicting copies left out).

        Empty for an unknown incident, and always empty with ``keep_events=False``.
        """
        fold = self._folds.get(incident_id)
        if fold is None:
            return []
        return [fold.events[s] for s in sorted(fold.events)]

    def __len__(self) -> int:
        return len(self._folds)

    def __contains__(self, incident_id: object) -> bool:
        return incident_id in self._folds


def _seq_range(first: int, last: int) -> str:
    return f"seq {first}" if first == last else f"seq {first}..{last}"


def _build(incident_id: str, fold: _Fold) -> Incident:
    """The latest snapshot, as an ``Incident`` (which extends it), plus what the history adds."""
    latest = fold.latest
    fingerprints = [fp for fp, _ in sorted(fold.joined.items(), key=lambda item: item[1])]
    notes = [note for _, _, note in sorted(fold.notes)]
    return Incident(
        incident_id=incident_id,
        **latest.snapshot.model_dump(exclude=_NOT_COPIED),
        last_seq=latest.seq,
        last_event_at=latest.at,
        fingerprints=fingerprints,
        notes=notes,
        merged_into=fold.merged_into[1] if fold.merged_into is not None else None,
    )


# The snapshot's schema_version is the event's wire format; the Incident takes its own default.
_NOT_COPIED = {"schema_version"}


SUMMARY_KEYS = (
    "incident_id",
    "state",
    "severity",
    "title",
    "group_key",
    "rule",
    "alert_count",
    "firing_count",
    "opened_at",
    "acknowledged_at",
    "resolved_at",
    "closed_at",
    "assignee",
    "reopen_count",
    "last_seq",
    "linked_into",
    "members",
    "root_cause",
    "muted",
)


def to_summary(incident: Incident) -> dict[str, Any]:
    """The stable JSON form of an incident for ``stormwatch incidents --json`` (see docs/cli.md).

    Only these keys, in this order; adding one is a compatible change, renaming or removing one
    is not.
    """
    return {
        "incident_id": incident.incident_id,
        "state": incident.state.value,
        "severity": incident.severity.value,
        "title": incident.title,
        "group_key": incident.group_key,
        "rule": incident.rule,
        "alert_count": incident.alert_count,
        "firing_count": incident.firing_count,
        "opened_at": rfc3339(incident.opened_at),
        "acknowledged_at": rfc3339(incident.acknowledged_at),
        "resolved_at": rfc3339(incident.resolved_at),
        "closed_at": rfc3339(incident.closed_at),
        "assignee": incident.assignee,
        "reopen_count": incident.reopen_count,
        "last_seq": incident.last_seq,
        "linked_into": incident.linked_into,
        "members": list(incident.members),
        "root_cause": None
        if incident.root_cause is None
        else incident.root_cause.model_dump(mode="json", exclude={"schema_version"}),
        "muted": incident.muted,
    }
