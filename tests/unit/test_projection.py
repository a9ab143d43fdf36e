"""IncidentProjection: folding hand-built audit logs, and catching everything wrong with them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentState,
)
from stormwatch.streams.core.projection import SUMMARY_KEYS, IncidentProjection, IssueKind, to_summary
from tests.kit.events import build_event

T0 = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)
INC = "inc-0123456789abcdef-1"
OTHER = "inc-fedcba9876543210-1"
# the snapshot of ``event`` unless a test says otherwise: HighLatency on api, opened at T0
API_SNAPSHOT: dict[str, Any] = {
    "title": "HighLatency on api",
    "group_key": '{service="api"}',
    "group_labels": {"service": "api"},
    "opened_at": T0,
}


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def joined(fp: str, minutes: float = 0) -> AlertChange:
    return AlertChange(
        fingerprint=fp,
        change=AlertChangeKind.JOINED,
        status=AlertStatus.FIRING,
        severity=Severity.CRITICAL,
        at=at(minutes),
        labels={"alertname": "HighLatency", "instance": fp},
    )


def resolved(fp: str, minutes: float) -> AlertChange:
    return AlertChange(
        fingerprint=fp,
        change=AlertChangeKind.RESOLVED,
        status=AlertStatus.RESOLVED,
        severity=Severity.CRITICAL,
        at=at(minutes),
    )


def event(
    seq: int,
    etype: IncidentEventType,
    from_state: IncidentState | None,
    to_state: IncidentState,
    *,
    incident_id: str = INC,
    minutes: float | None = None,
    alerts: list[AlertChange] | None = None,
    details: dict[str, Any] | None = None,
    event_id: str | None = None,
    actor: str = "correlator",
    **snap: Any,
) -> IncidentEvent:
    """An event whose snapshot is the incident right after it; ``snap`` overrides snapshot fields."""
    return build_event(
        incident_id,
        seq,
        etype,
        from_state,
        to_state,
        at=at(seq if minutes is None else minutes),
        event_id=event_id or xxhash.xxh3_128_hexdigest(f"{incident_id}:{seq}".encode()),
        actor=actor,
        cause=f"{etype.value} for the test",
        alerts=alerts or [],
        details=details,
        **{**API_SNAPSHOT, **snap},
    )


OPEN, ACK, RES, CLOSED = (
    IncidentState.OPEN,
    IncidentState.ACKNOWLEDGED,
    IncidentState.RESOLVED,
    IncidentState.CLOSED,
)
E = IncidentEventType


def lifecycle(incident_id: str = INC) -> list[IncidentEvent]:
    """open -> update -> ack -> resolve -> reopen -> annotate -> assign -> resolve -> close."""
    ack_at, res_at = at(3), at(4)
    return [
        event(
            1,
            E.OPENED,
            None,
            OPEN,
            incident_id=incident_id,
            alerts=[joined("fp-a"), joined("fp-b")],
            alert_count=2,
            firing_count=2,
        ),
        event(
            2,
            E.UPDATED,
            OPEN,
            OPEN,
            incident_id=incident_id,
            alerts=[joined("fp-c", 2), joined("fp-a", 2)],
            alert_count=3,
            firing_count=3,
        ),
        event(
            3,
            E.ACKNOWLEDGED,
            OPEN,
            ACK,
            incident_id=incident_id,
            actor="operator:alice",
            alert_count=3,
            firing_count=3,
            acknowledged_at=ack_at,
        ),
        event(
            4,
            E.RESOLVED,
            ACK,
            RES,
            incident_id=incident_id,
            alerts=[resolved("fp-a", 4), resolved("fp-b", 4), resolved("fp-c", 4)],
            alert_count=3,
            firing_count=0,
            acknowledged_at=ack_at,
            resolved_at=res_at,
        ),
        event(
            5,
            E.REOPENED,
            RES,
            OPEN,
            incident_id=incident_id,
            alerts=[joined("fp-d", 5)],
            alert_count=4,
            firing_count=1,
            acknowledged_at=ack_at,
            reopen_count=1,
        ),
        event(
            6,
            E.ANNOTATED,
            OPEN,
            OPEN,
            incident_id=incident_id,
            details={"note": "db failover in progress"},
            alert_count=4,
            firing_count=1,
            acknowledged_at=ack_at,
            reopen_count=1,
        ),
        event(
            7,
            E.ASSIGNED,
            OPEN,
            OPEN,
            incident_id=incident_id,
            details={"assignee": "bob"},
            alert_count=4,
            firing_count=1,
            acknowledged_at=ack_at,
            reopen_count=1,
            assignee="bob",
        ),
        event(
            8,
            E.ANNOTATED,
            OPEN,
            OPEN,
            incident_id=incident_id,
            details={"note": "failover done"},
            alert_count=4,
            firing_count=1,
            acknowledged_at=ack_at,
            reopen_count=1,
            assignee="bob",
        ),
        event(
            9,
            E.RESOLVED,
            OPEN,
            RES,
            incident_id=incident_id,
            alert_count=4,
            firing_count=0,
            acknowledged_at=ack_at,
            resolved_at=at(9),
            reopen_count=1,
            assignee="bob",
        ),
        event(
            10,
            E.CLOSED,
            RES,
            CLOSED,
            incident_id=incident_id,
            alert_count=4,
            firing_count=0,
            acknowledged_at=ack_at,
            resolved_at=at(9),
            closed_at=at(10),
            reopen_count=1,
            assignee="bob",
        ),
    ]


def fold(events: list[IncidentEvent], **kw: Any) -> IncidentProjection:
    projection = IncidentProjection(**kw)
    for e in events:
        projection.apply(e)
    return projection


def test_full_lifecycle_takes_state_from_the_latest_snapshot() -> None:
    p = fold(lifecycle())
    inc = p.get(INC)
    assert inc is not None
    assert inc.state is CLOSED
    assert inc.severity is Severity.CRITICAL
    assert inc.alert_count == 4 and inc.firing_count == 0
    assert inc.acknowledged_at == at(3) and inc.resolved_at == at(9) and inc.closed_at == at(10)
    assert inc.assignee == "bob"
    assert inc.reopen_count == 1
    assert inc.last_seq == 10 and inc.last_event_at == at(10)
    assert inc.group_labels == {"service": "api"}
    assert p.issues() == [] and p.duplicates == 0 and p.applied == 10


def test_each_prefix_of_the_log_gives_the_state_as_of_that_event() -> None:
    events = lifecycle()
    p = IncidentProjection()
    for e in events:
        p.apply(e)
        inc = p.get(INC)
        assert inc is not None
        assert (inc.state, inc.last_seq) == (e.to_state, e.seq)
    states = [e.to_state for e in p.timeline(INC)]
    assert states == [OPEN, OPEN, ACK, RES, OPEN, OPEN, OPEN, OPEN, RES, CLOSED]


def test_fingerprints_come_from_joined_changes_in_order_without_repeats() -> None:
    inc = fold(lifecycle()).get(INC)
    assert inc is not None
    assert inc.fingerprints == ["fp-a", "fp-b", "fp-c", "fp-d"]


def test_notes_come_from_annotated_events_only() -> None:
    events = lifecycle()
    events[2] = event(3, E.ACKNOWLEDGED, OPEN, ACK, details={"note": "on it"}, acknowledged_at=at(3))
    inc = fold(events).get(INC)
    assert inc is not None
    assert inc.notes == ["db failover in progress", "failover done"]


def test_merge_records_the_target() -> None:
    events = [
        event(1, E.OPENED, None, OPEN, alerts=[joined("fp-a")]),
        event(2, E.MERGED, OPEN, CLOSED, details={"merged_into": OTHER}, closed_at=at(2)),
    ]
    p = fold(events)
    inc = p.get(INC)
    assert inc is not None
    assert inc.merged_into == OTHER and inc.state is CLOSED
    assert to_summary(inc)["state"] == "closed"


def test_exact_duplicates_are_ignored_and_counted() -> None:
    events = lifecycle()
    clean = fold(events)
    noisy = fold([events[0], events[0], events[1], events[2], events[1], *events[3:], events[-1]])
    assert noisy.duplicates == 3
    assert noisy.issues() == []
    assert noisy.get(INC) == clean.get(INC)
    assert [e.seq for e in noisy.timeline(INC)] == list(range(1, 11))


def test_conflicting_duplicate_is_an_issue_and_the_first_copy_wins() -> None:
    events = lifecycle()[:3]
    impostor = event(2, E.UPDATED, OPEN, OPEN, event_id="f" * 32, title="something else")
    p = fold([*events, impostor])
    assert [i.kind for i in p.issues()] == [IssueKind.CONFLICT]
    issue = p.issues()[0]
    assert (issue.incident_id, issue.seq, issue.event_id) == (INC, 2, "f" * 32)
    assert p.duplicates == 0
    assert p.timeline(INC)[1] == events[1]
    inc = p.get(INC)
    assert inc is not None and inc.title == "HighLatency on api"


def test_gap_is_recorded_and_the_later_event_still_applies() -> None:
    events = lifecycle()
    p = fold([*events[:2], *events[4:]])  # seq 3 and 4 are missing
    issues = p.issues()
    assert [i.kind for i in issues] == [IssueKind.GAP]
    assert issues[0].seq == 5 and "seq 3..4 missing" in issues[0].detail
    assert "seq 3..4" in str(issues[0]) and INC in str(issues[0])
    inc = p.get(INC)
    assert inc is not None and inc.state is CLOSED and inc.last_seq == 10


def test_log_that_does_not_start_at_seq_1_is_a_gap() -> None:
    p = fold(lifecycle()[2:])
    assert [(i.kind, i.seq) for i in p.issues()] == [(IssueKind.GAP, 3)]
    assert "seq 1..2 missing" in p.issues()[0].detail
    single = fold([lifecycle()[1]])
    assert "seq 1 missing" in single.issues()[0].detail


def test_event_id_reused_by_another_incident_is_an_issue() -> None:
    first = event(1, E.OPENED, None, OPEN)
    copy = event(1, E.OPENED, None, OPEN, incident_id=OTHER, event_id=first.event_id)
    p = fold([first, copy])
    assert [i.kind for i in p.issues()] == [IssueKind.DUPLICATE_EVENT_ID]
    assert p.issues()[0].incident_id == OTHER
    assert len(p) == 2  # the second incident is still shown


def test_out_of_order_event_is_kept_in_the_timeline_without_rolling_state_back() -> None:
    events = lifecycle()
    p = fold([events[0], events[2], events[1], *events[3:]])
    kinds = [i.kind for i in p.issues()]
    assert kinds == [IssueKind.GAP, IssueKind.OUT_OF_ORDER]
    inc = p.get(INC)
    assert inc is not None and inc.state is CLOSED
    assert [e.seq for e in p.timeline(INC)] == list(range(1, 11))
    assert inc.fingerprints == ["fp-a", "fp-b", "fp-c", "fp-d"]


def test_incidents_are_kept_apart_and_listed_in_log_order() -> None:
    a, b = lifecycle(INC), lifecycle(OTHER)
    interleaved = [e for pair in zip(b[:4], a, strict=False) for e in pair]
    p = fold(interleaved)
    assert [i.incident_id for i in p.incidents()] == [OTHER, INC]
    assert p.issues() == []
    other = p.get(OTHER)
    assert other is not None and other.state is RES and other.last_seq == 4
    assert INC in p and "inc-nope" not in p


def test_unknown_incident() -> None:
    p = fold(lifecycle())
    assert p.get(OTHER) is None
    assert p.timeline(OTHER) == []


def test_without_keep_events_the_list_works_but_no_timeline_is_kept() -> None:
    lean = fold(lifecycle(), keep_events=False)
    full = fold(lifecycle())
    assert lean.get(INC) == full.get(INC)
    assert lean.timeline(INC) == []
    dup = fold([*lifecycle(), lifecycle()[3]], keep_events=False)
    assert dup.duplicates == 1


def test_get_is_cached_until_the_next_event() -> None:
    events = lifecycle()
    p = fold(events[:3])
    first = p.get(INC)
    assert p.get(INC) is first
    p.apply(events[3])
    second = p.get(INC)
    assert second is not first and second is not None and second.state is RES


def test_summary_has_exactly_the_documented_keys() -> None:
    inc = fold(lifecycle()[:3]).get(INC)
    assert inc is not None
    summary = to_summary(inc)
    assert tuple(summary) == SUMMARY_KEYS
    assert summary == {
        "incident_id": INC,
        "state": "acknowledged",
        "severity": "critical",
        "title": "HighLatency on api",
        "group_key": '{service="api"}',
        "rule": "default",
        "alert_count": 3,
        "firing_count": 3,
        "opened_at": "2025-01-31T12:00:00.000Z",
        "acknowledged_at": "2025-01-31T12:03:00.000Z",
        "resolved_at": None,
        "closed_at": None,
        "assignee": None,
        "reopen_count": 0,
        "last_seq": 3,
        "linked_into": None,
        "members": [],
        "muted": 0,
        "root_cause": None,
    }


def test_summary_times_are_utc_whatever_the_event_zone() -> None:
    cet = datetime(2025, 1, 31, 13, 0, 0, 250_000, tzinfo=UTC).astimezone(timezone(timedelta(hours=1)))
    inc = fold([event(1, E.OPENED, None, OPEN, opened_at=cet)]).get(INC)
    assert inc is not None
    assert to_summary(inc)["opened_at"] == "2025-01-31T13:00:00.250Z"


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_redelivering_any_events_never_changes_the_result(data: st.DataObject) -> None:
    events = lifecycle()
    clean = fold(events)
    log: list[IncidentEvent] = []
    extra = 0
    for e in events:
        log.append(e)
        # re-deliver some already-seen events, as an at-least-once reader would
        for _ in range(data.draw(st.integers(0, 2))):
            log.append(data.draw(st.sampled_from(log)))
            extra += 1
    p = fold(log)
    assert p.duplicates == extra
    assert p.issues() == []
    assert p.get(INC) == clean.get(INC)
    assert p.timeline(INC) == clean.timeline(INC)
