"""The read model's pure part: changelog, audit-log and silence records in, filtered pages out;
and the Alertmanager API v2 shapes built from it (stormwatch.readmodel.alertmanager)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from stormwatch.readmodel import alertmanager as am
from stormwatch.readmodel.model import (
    FORGOTTEN_PER_KEPT,
    AlertQuery,
    IncidentQuery,
    ReadModel,
    compile_matcher,
    silence_state,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, ms_from_dt
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from stormwatch.schemas.matchers import Matcher, MatchOp
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.groups import AlertState, GroupState, IncidentRuntime
from stormwatch.streams.core.muting import Suppression, SuppressionKind

T0 = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)
NOW_MS = ms_from_dt(T0)


def group_record(gkhash: str, rule: str = "default", incident_id: str | None = None) -> bytes:
    incident = None
    if incident_id is not None:
        incident = IncidentRuntime(incident_id=incident_id, state=IncidentState.OPEN, opened_ms=NOW_MS)
    group = GroupState(
        gkhash=gkhash,
        group_key=f"{{service={gkhash!r}}}",
        rule=rule,
        group_labels={"service": gkhash},
        incident=incident,
    )
    return group.encode_meta()


def alert_record(
    fp: str,
    labels: dict[str, str],
    *,
    firing: bool = True,
    suppressed: Suppression | None = None,
    flapping: bool = False,
    ends_ms: int | None = None,
) -> bytes:
    return AlertState(
        fp,
        labels,
        {"summary": f"about {fp}"},
        "critical",
        firing,
        NOW_MS - 60_000,
        NOW_MS - 10_000,
        ends_ms,
        flapping=flapping,
        suppressed=suppressed,
        member=True,
    ).encode()


def model_with_alerts() -> ReadModel:
    model = ReadModel(resolve_timeouts_ms={"db": 120_000})
    model.apply_state(0, "g/api", group_record("api", incident_id="inc-1"))
    model.apply_state(1, "g/db", group_record("db", rule="db"))
    model.apply_state(0, "p", b"{}")  # the partition record: not needed, ignored
    model.apply_state(0, "a/api/f1", alert_record("f1", {"alertname": "ApiDown", "instance": "a"}))
    model.apply_state(0, "a/api/f2", alert_record("f2", {"alertname": "ApiDown", "instance": "b"}))
    model.apply_state(
        1,
        "a/db/f3",
        alert_record(
            "f3",
            {"alertname": "DbSlow", "instance": "d"},
            suppressed=Suppression.of(SuppressionKind.INHIBIT, "db-under-api"),
        ),
    )
    model.apply_state(
        1, "a/db/f4", alert_record("f4", {"alertname": "DbSlow", "instance": "e"}, firing=False)
    )
    model.apply_state(1, "a/db/f5", alert_record("f5", {"alertname": "DbFlap"}, flapping=True))
    return model


def silence(sid: str, matchers: list[Matcher], *, start_min: float = -5, end_min: float = 60) -> Silence:
    return Silence(
        silence_id=sid,
        matchers=matchers,
        starts_at=T0 + timedelta(minutes=start_min),
        ends_at=T0 + timedelta(minutes=end_min),
        created_by="alice",
        comment="maintenance",
    )


def fps(model: ReadModel, **query: object) -> list[str]:
    return [a.fingerprint for a in model.alerts(AlertQuery(**query), NOW_MS).items]  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- alerts


def test_firing_alerts_sorted_by_fingerprint_with_their_group_and_incident() -> None:
    model = model_with_alerts()
    page = model.alerts(AlertQuery(), NOW_MS)
    assert [a.fingerprint for a in page.items] == ["f1", "f2", "f3", "f5"]  # f4 is resolved
    assert page.total == 4
    f1 = page.items[0]
    assert f1.labels == {"alertname": "ApiDown", "instance": "a"}
    assert f1.annotations == {"summary": "about f1"}
    assert (f1.receivers, f1.incident_id, f1.state) == (("default",), "inc-1", "active")
    assert f1.ends_ms == NOW_MS - 10_000 + 5 * 60_000  # last seen + the default resolve_timeout
    assert page.items[2].ends_ms == NOW_MS - 10_000 + 120_000  # rule db's own resolve_timeout
    assert model.counts()["alerts"] == 5


def test_matchers_receiver_and_pagination() -> None:
    model = model_with_alerts()
    assert fps(model, matchers=(Matcher.parse('alertname="ApiDown"'),)) == ["f1", "f2"]
    assert fps(model, matchers=(Matcher.parse("alertname=~Db.*"), Matcher.parse("instance!=d"))) == ["f5"]
    assert fps(model, receiver=re.compile("db")) == ["f3", "f5"]
    assert fps(model, receiver=re.compile("d")) == []  # the whole name must match
    page = model.alerts(AlertQuery(offset=1, limit=2), NOW_MS)
    assert ([a.fingerprint for a in page.items], page.total) == (["f2", "f3"], 4)


def test_silenced_inhibited_and_active_filters_as_alertmanager() -> None:
    model = model_with_alerts()
    model.apply_silence("s1", silence("s1", [Matcher.parse("instance=a")]).to_bytes(), NOW_MS)
    views = {a.fingerprint: a for a in model.alerts(AlertQuery(), NOW_MS).items}
    assert views["f1"].silenced_by == ("s1",) and views["f1"].state == "suppressed"
    assert views["f3"].inhibited_by == ("db-under-api",) and views["f3"].state == "suppressed"
    assert views["f5"].muted_by == ("flapping",) and views["f5"].state == "suppressed"
    assert fps(model, silenced=False) == ["f2", "f3", "f5"]
    assert fps(model, inhibited=False) == ["f1", "f2", "f5"]
    assert fps(model, active=False) == ["f1", "f3", "f5"]  # only the suppressed ones
    assert fps(model, silenced=False, inhibited=False, active=True) == ["f2", "f5"]  # amtool's default
    # A silence only counts while active: a pending one silences nothing yet.
    model.apply_silence("s2", silence("s2", [Matcher.parse("instance=b")], start_min=5).to_bytes(), NOW_MS)
    assert fps(model, silenced=False) == ["f2", "f3", "f5"]


def test_tombstones_delete_and_alerts_without_a_group_are_dropped() -> None:
    model = model_with_alerts()
    model.apply_state(0, "a/api/f1", None)
    assert fps(model) == ["f2", "f3", "f5"]
    model.apply_state(0, "g/api", None)  # the group went (its alerts' tombstones may come later)
    assert fps(model) == ["f3", "f5"]
    model.apply_state(0, "a/api/f2", None)
    assert model.counts()["alerts"] == 3
    # An alert record before its group record (compaction keeps only the latest of each key)
    model.apply_state(2, "a/new/f9", alert_record("f9", {"alertname": "Late"}))
    assert "f9" not in fps(model)
    model.apply_state(2, "g/new", group_record("new"))
    assert "f9" in fps(model)


def test_groups_as_alertmanager_groups() -> None:
    model = model_with_alerts()
    groups = model.alert_groups(AlertQuery(), NOW_MS)
    assert [(g.rule, [a.fingerprint for a in g.alerts]) for g in groups] == [
        ("db", ["f3", "f5"]),
        ("default", ["f1", "f2"]),
    ]
    assert groups[1].labels == {"service": "api"} and groups[1].incident_id == "inc-1"
    assert [g.rule for g in model.alert_groups(AlertQuery(), NOW_MS, muted=False)] == ["default"]
    doc = am.alert_group_json(groups[1])
    assert set(doc) == {"alerts", "labels", "receiver", "routeLabels"}
    assert doc["receiver"] == {"name": "default"}
    assert model.receivers() == ["db", "default"]


def test_bad_records_are_counted_not_raised() -> None:
    model = ReadModel()
    model.apply_state(0, "a/x/y", b"not a state record")
    model.apply_state(0, "zzz", b"{}")
    model.apply_incident(b"{}")
    model.apply_incident(None)
    model.apply_silence("s", b"[1]", NOW_MS)
    assert model.problems.count == 5
    assert model.problems.first is not None and "a/x/y" in model.problems.first
    assert model.counts()["bad_records"] == 5


# ---------------------------------------------------------------------------- silences


def test_silence_states_filters_and_order() -> None:
    model = ReadModel()
    active_late = silence("a2", [Matcher.parse("alertname=A")], end_min=90)
    active_soon = silence("a1", [Matcher.parse("alertname=B"), Matcher.parse("env=prod")], end_min=30)
    pending = silence("p1", [Matcher.parse("alertname=A")], start_min=10)
    expired = silence("e1", [Matcher.parse("alertname=A")], start_min=-60, end_min=60)
    expired.expired_at = T0 - timedelta(minutes=1)
    for s in (active_late, active_soon, pending, expired):
        model.apply_silence(s.silence_id, s.to_bytes(), NOW_MS - 1000)
    views = model.silences(NOW_MS)
    assert [(v.silence.silence_id, v.state) for v in views] == [
        ("a1", "active"),
        ("a2", "active"),
        ("p1", "pending"),
        ("e1", "expired"),
    ]
    assert [v.silence.silence_id for v in model.silences(NOW_MS, states=["expired", "pending"])] == [
        "p1",
        "e1",
    ]
    selected = model.silences(NOW_MS, matchers=[Matcher.parse("alertname=~A|C")])
    assert [v.silence.silence_id for v in selected] == ["a2", "p1", "e1"]
    assert [v.silence.silence_id for v in model.silences(NOW_MS, matchers=[Matcher.parse("env=prod")])] == [
        "a1"
    ]
    model.apply_silence("a1", None, NOW_MS)  # a tombstone deletes
    assert model.silence("a1", NOW_MS) is None
    assert silence_state(expired, NOW_MS) == "expired"


def test_gettable_silence_shape() -> None:
    s = silence("s1", [Matcher.parse("alertname=A"), Matcher(name="job", op=MatchOp.NRE, value="api|web")])
    s.expired_at = T0 + timedelta(minutes=1)
    model = ReadModel()
    model.apply_silence("s1", s.to_bytes(), NOW_MS + 61_000)
    view = model.silence("s1", NOW_MS + 120_000)
    assert view is not None
    assert am.gettable_silence(view) == {
        "id": "s1",
        "status": {"state": "expired"},
        "updatedAt": "2025-01-31T12:01:01.000Z",
        "annotations": {},
        "comment": "maintenance",
        "createdBy": "alice",
        "endsAt": "2025-01-31T12:01:00.000Z",  # expired early: the end Alertmanager shows
        "matchers": [
            {"isEqual": True, "isRegex": False, "name": "alertname", "value": "A"},
            {"isEqual": False, "isRegex": True, "name": "job", "value": "api|web"},
        ],
        "startsAt": "2025-01-31T11:55:00.000Z",
    }


# ---------------------------------------------------------------------------- incidents


def incident_event(
    incident_id: str, seq: int, state: IncidentState, minutes: float, title: str
) -> IncidentEvent:
    snapshot = IncidentSnapshot(
        state=state,
        severity=Severity.CRITICAL,
        title=title,
        group_key="{service=api}",
        group_labels={"service": "api"},
        rule="default",
        alert_count=1,
        firing_count=1,
        opened_at=T0 + timedelta(minutes=minutes),
    )
    etype = IncidentEventType.OPENED if seq == 1 else IncidentEventType.RESOLVED
    return IncidentEvent(
        event_id=f"{incident_id}-{seq}",
        incident_id=incident_id,
        seq=seq,
        type=etype,
        from_state=None if seq == 1 else IncidentState.OPEN,
        to_state=state,
        at=T0 + timedelta(minutes=minutes + seq),
        actor="correlator",
        cause="test",
        snapshot=snapshot,
    )


def test_incidents_from_the_audit_log_filtered_and_paged() -> None:
    model = ReadModel()
    model.apply_incident(incident_event("inc-a", 1, IncidentState.OPEN, 0, "API down").to_bytes())
    model.apply_incident(incident_event("inc-b", 1, IncidentState.OPEN, 5, "DB slow").to_bytes())
    model.apply_incident(incident_event("inc-a", 2, IncidentState.RESOLVED, 0, "API down").to_bytes())
    model.apply_incident(incident_event("inc-c", 1, IncidentState.OPEN, 10, "Disk full").to_bytes())
    page = model.incidents(IncidentQuery())
    assert [i.incident_id for i in page.items] == ["inc-c", "inc-b", "inc-a"]  # newest first
    opened = model.incidents(IncidentQuery(states=frozenset({IncidentState.OPEN}), limit=1))
    assert ([i.incident_id for i in opened.items], opened.total) == (["inc-c"], 2)
    assert [i.incident_id for i in model.incidents(IncidentQuery(search="db")).items] == ["inc-b"]
    incident = model.incident("inc-a")
    assert incident is not None and incident.state is IncidentState.RESOLVED and incident.last_seq == 2
    assert model.counts()["open_incidents"] == 2


def test_closed_incidents_beyond_the_bound_are_let_go_oldest_closed_first() -> None:
    """The console's memory is bounded: the oldest closed incidents are forgotten (the audit log keeps
    them), open ones never; a later event of a forgotten incident is not a new incident with a gap."""
    model = ReadModel(max_closed_incidents=2)
    for n in range(4):
        model.apply_incident(incident_event(f"inc-{n}", 1, IncidentState.OPEN, n, f"T{n}").to_bytes())
    for n in (2, 0, 1):  # closed in this order
        model.apply_incident(incident_event(f"inc-{n}", 2, IncidentState.CLOSED, n, f"T{n}").to_bytes())
    kept = {i.incident_id for i in model.incidents(IncidentQuery(limit=100)).items}
    assert kept == {"inc-0", "inc-1", "inc-3"}  # inc-2 closed first: let go; inc-3 is open
    assert model.incident("inc-2") is None and "inc-2" not in model.origins
    late = incident_event("inc-2", 3, IncidentState.CLOSED, 2, "T2")
    model.apply_incident(late.to_bytes())
    assert model.incident("inc-2") is None
    assert not model.incident_log.issues()


def test_the_ids_of_forgotten_incidents_are_bounded_too() -> None:
    """A gateway that runs for months keeps the latest FORGOTTEN_PER_KEPT x max_closed_incidents
    ids of forgotten incidents, not one per incident it ever saw."""
    model = ReadModel(max_closed_incidents=2)
    for n in range(40):
        model.apply_incident(incident_event(f"inc-{n}", 1, IncidentState.OPEN, n, f"T{n}").to_bytes())
        model.apply_incident(incident_event(f"inc-{n}", 2, IncidentState.CLOSED, n, f"T{n}").to_bytes())
    assert list(model.forgotten_ids) == [f"inc-{n}" for n in range(38 - FORGOTTEN_PER_KEPT * 2, 38)]
    late = incident_event("inc-37", 3, IncidentState.CLOSED, 37, "T37")  # still remembered
    model.apply_incident(late.to_bytes())
    assert model.incident("inc-37") is None and not model.incident_log.issues()


def test_the_read_model_keeps_no_alert_list_per_incident() -> None:
    """About 100 bytes per alert an incident ever had, which nothing in the console reads."""
    event = incident_event("inc-a", 1, IncidentState.OPEN, 0, "API down")
    joined = AlertChange(
        fingerprint="f1",
        change=AlertChangeKind.JOINED,
        status=AlertStatus.FIRING,
        severity=Severity.CRITICAL,
        at=T0,
        labels={"service": "api"},
    )
    model = ReadModel()
    model.apply_incident(event.model_copy(update={"alerts": [joined]}).to_bytes())
    incident = model.incident("inc-a")
    assert incident is not None and incident.fingerprints == [] and incident.alert_count == 1


# ---------------------------------------------------------------------------- API v2 requests


def test_gettable_alert_shape() -> None:
    model = model_with_alerts()
    view = model.alerts(AlertQuery(), NOW_MS).items[0]
    doc = am.gettable_alert(view)
    assert doc == {
        "annotations": {"summary": "about f1"},
        "endsAt": "2025-01-31T12:04:50.000Z",
        "fingerprint": "f1",
        "receivers": [{"name": "default"}],
        "startsAt": "2025-01-31T11:59:00.000Z",
        "status": {"inhibitedBy": [], "mutedBy": [], "silencedBy": [], "state": "active"},
        "updatedAt": "2025-01-31T11:59:50.000Z",
        "labels": {"alertname": "ApiDown", "instance": "a"},
    }


def test_alert_query_parameters() -> None:
    query = am.alert_query(
        {
            "filter": ['alertname="ApiDown"', '{instance=~"a|b"}'],
            "silenced": ["false"],
            "inhibited": ["0"],
            "active": ["true"],
            "receiver": ["def.*"],
        }
    )
    assert [str(m) for m in query.matchers] == ['alertname="ApiDown"', 'instance=~"a|b"']
    several = am.parse_filter(['{job="a,b", msg="say \\"x,y\\"", env!=dev}'])
    assert [str(m) for m in several] == ['job="a,b"', 'msg="say \\"x,y\\""', 'env!="dev"']
    assert (query.active, query.silenced, query.inhibited, query.unprocessed) == (True, False, False, True)
    assert query.receiver is not None and query.receiver.fullmatch("default")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": ["alertname"]}, "bad matcher format in filter 'alertname'"),
        ({"filter": ['job=~"("']}, "invalid regex"),
        ({"silenced": ["maybe"]}, "use silenced=true or silenced=false"),
        ({"receiver": ["("]}, "failed to parse receiver param"),
        ({"receiver_matchers": ["team=a"]}, "receiver_matchers is not supported"),
    ],
)
def test_bad_query_parameters_say_what_to_fix(params: dict[str, list[str]], message: str) -> None:
    with pytest.raises(am.ApiError, match=re.escape(message)) as caught:
        am.alert_query(params)
    assert caught.value.status == 400


def test_posted_silence() -> None:
    posted = am.posted_silence(
        {
            "matchers": [
                {"name": "alertname", "value": "A", "isRegex": False},
                {"name": "job", "value": "api|web", "isRegex": True, "isEqual": False},
            ],
            "startsAt": "2025-01-31T12:00:00.000Z",
            "endsAt": "2025-01-31T14:00:00+01:00",
            "createdBy": "alice",
            "comment": " upgrade ",
        }
    )
    assert [str(m) for m in posted.matchers] == ['alertname="A"', 'job!~"api|web"']
    assert posted.ends_at - posted.starts_at == timedelta(hours=1)
    assert (posted.silence_id, posted.created_by, posted.comment) == (None, "alice", "upgrade")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "the body must be a JSON object"),
        ({"matchers": []}, "matchers must be a non-empty array"),
        ({"matchers": [{"name": "", "value": "x"}]}, "matchers[0].name must be a non-empty string"),
        ({"matchers": [{"name": "a", "value": "(", "isRegex": True}]}, "matchers[0]: invalid regex"),
        ({"matchers": [{"name": "a", "value": "x"}], "createdBy": ""}, "createdBy must name who"),
        (
            {"matchers": [{"name": "a", "value": "x"}], "createdBy": "me", "startsAt": "soon"},
            "startsAt 'soon' is not an RFC 3339 time",
        ),
        (
            {"matchers": [{"name": "a", "value": "x"}], "createdBy": "me", "startsAt": "2025-01-31T12:00:00"},
            "has no time zone",
        ),
        ({"matchers": [{"name": "a", "value": "x"}], "createdBy": "me"}, "startsAt is missing"),
    ],
)
def test_bad_silences_say_what_to_fix(doc: object, message: str) -> None:
    with pytest.raises(am.ApiError, match=re.escape(message)) as caught:
        am.posted_silence(doc)
    assert caught.value.status == 400


@pytest.mark.parametrize("text", ["a=x", "a!=x", "a=~x|y", "a!~x.*", 'a=""', 'a!=""', "a=~", "b=~.+"])
@pytest.mark.parametrize("labels", [{}, {"a": "x"}, {"a": "y"}, {"a": "xx"}, {"a": ""}, {"b": "z"}])
def test_compiled_matchers_agree_with_the_matcher(text: str, labels: dict[str, str]) -> None:
    matcher = Matcher.parse(text)
    assert compile_matcher(matcher)(labels) is matcher.matches(labels)


def test_the_byte_prefilter_never_hides_a_match() -> None:
    """An equality filter skips alerts whose encoding lacks ``"name":"value"``; values that need
    escaping, and a value found only in the annotations, still give exact answers."""
    model = ReadModel()
    model.apply_state(0, "g/g", group_record("g"))
    tricky = 'say "hi"\\ \n ü <b>'
    model.apply_state(0, "a/g/t", alert_record("t", {"alertname": "A", "msg": tricky}))
    model.apply_state(0, "a/g/u", alert_record("u", {"alertname": "B", "msg": "about t"}))
    assert fps(model, matchers=(Matcher(name="msg", value=tricky),)) == ["t"]
    assert fps(model, matchers=(Matcher(name="summary", value="about t"),)) == []  # an annotation
    assert fps(model, matchers=(Matcher(name="msg", value="about t"), Matcher.parse("alertname=B"))) == ["u"]
