"""Topology suggestions (streams.core.cooccurrence) on hand-made audit logs: a database whose
incidents are followed by a service's gives an edge; noise, known edges, unclear orders and other
scopes give none; the same log in any order gives the same answer."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentSnapshot, IncidentState
from stormwatch.streams.core.cooccurrence import (
    Suggestions,
    count_cooccurrences,
    openings_from_events,
    suggest_edges,
    suggestion_topology,
)
from stormwatch.streams.core.topology import ComponentId, Topology, parse_topology

T0 = datetime(2025, 1, 31, tzinfo=UTC)
MINUTE = 60_000


def opened(at_s: float, etype: IncidentEventType = IncidentEventType.OPENED, **labels: str) -> IncidentEvent:
    """An incident event whose group (``labels``) opened ``at_s`` seconds after T0."""
    at = T0 + timedelta(seconds=at_s)
    iid = f"inc-{uuid.uuid4().hex[:16]}-{int(at.timestamp() * 1000)}"
    return IncidentEvent(
        event_id=uuid.uuid4().hex,
        incident_id=iid,
        seq=1,
        type=etype,
        from_state=None,
        to_state=IncidentState.OPEN,
        at=at + timedelta(seconds=30),  # group_wait later: the opening time is the snapshot's
        actor="correlator",
        cause="test",
        snapshot=IncidentSnapshot(
            state=IncidentState.OPEN,
            severity=Severity.ERROR,
            title="test",
            group_key=str(sorted(labels.items())),
            group_labels=labels,
            rule="test",
            alert_count=1,
            firing_count=1,
            opened_at=at,
        ),
    )


def suggest(
    events: list[IncidentEvent],
    topology: Topology | None = None,
    *,
    window_ms: int = 2 * MINUTE,
    min_support: int = 3,
    min_confidence: float = 0.6,
) -> Suggestions:
    topology = topology or suggestion_topology()
    openings = openings_from_events(events, topology)
    implied = [edge for o in openings for edge in o.implied]
    return suggest_edges(
        count_cooccurrences(openings, window_ms),
        min_support=min_support,
        min_confidence=min_confidence,
        topology=topology,
        extra_edges=implied,
    )


def edges(result: Suggestions) -> list[tuple[str, str, int, float]]:
    return [
        (
            f"{s.dependent.kind}/{s.dependent.name}",
            f"{s.dependency.kind}/{s.dependency.name}",
            s.support,
            s.confidence,
        )
        for s in result.edges
    ]


def db_cascades(cluster: str = "eu", times: int = 5, start_s: float = 0) -> list[IncidentEvent]:
    """``times`` database outages an hour apart, each followed 40 s later by the orders service."""
    events = []
    for i in range(times):
        t = start_s + i * 3600
        events.append(opened(t, cluster=cluster, database="orders-db", alertname="PostgresDown"))
        events.append(opened(t + 40, cluster=cluster, service="orders", alertname="HighErrorRate"))
    return events


def test_a_database_followed_by_a_service_suggests_the_service_depends_on_it() -> None:
    events = db_cascades(times=5)
    events.append(opened(5 * 3600 + 10, cluster="eu", database="orders-db"))  # once not followed
    result = suggest(events)
    assert edges(result) == [("service/orders", "database/orders-db", 5, 5 / 6)]
    (s,) = result.edges
    assert s.dependent == ComponentId(("eu",), "service", "orders")
    assert s.dependency_openings == 6 and s.reverse_support == 0
    assert result.counts.incidents == 11 and result.counts.scopes == 1


def test_noise_below_the_thresholds_suggests_nothing() -> None:
    # followed twice only: support 2 < 3
    assert suggest(db_cascades(times=2)).edges == ()
    # followed 3 times out of 10 openings: confidence 0.3 < 0.6
    events = db_cascades(times=3) + [
        opened(20_000 + i * 3600, cluster="eu", database="orders-db") for i in range(7)
    ]
    assert suggest(events).edges == ()
    assert edges(suggest(events, min_confidence=0.3)) == [("service/orders", "database/orders-db", 3, 0.3)]
    # outside the window (2m): 3 minutes later is another story
    late = [
        opened(
            i * 3600 + (0 if i % 2 else 180),
            cluster="eu",
            **({"database": "x"} if i % 2 else {"service": "y"}),
        )
        for i in range(8)
    ]
    assert suggest(late).edges == ()


def test_window_edges_count_and_the_same_millisecond_says_nothing_about_order() -> None:
    at_limit = [
        e for i in range(3) for e in (opened(i * 3600, database="db"), opened(i * 3600 + 120, service="s"))
    ]
    assert edges(suggest(at_limit)) == [("service/s", "database/db", 3, 1.0)]
    past = [
        e
        for i in range(3)
        for e in (opened(i * 3600, database="db"), opened(i * 3600 + 120.001, service="s"))
    ]
    assert suggest(past).edges == ()
    together = [e for i in range(5) for e in (opened(i * 3600, database="db"), opened(i * 3600, service="s"))]
    assert suggest(together).edges == () and not suggest(together).counts.support


def test_edges_the_topology_already_relates_are_left_out() -> None:
    topology = Topology(
        parse_topology(
            """
            label_components:
              - {label: service, kind: service}
              - {label: database, kind: database}
            components:
              - {kind: service, name: orders, depends_on: [database/orders-db]}
            """
        )
    )
    result = suggest(db_cascades(), topology)
    assert result.edges == () and result.known == 1
    # declared the other way round: related all the same, so no edge against the file's word
    reversed_topology = Topology(
        parse_topology(
            "label_components: [{label: service, kind: service}, {label: database, kind: database}]\n"
            "components: [{kind: database, name: orders-db, depends_on: [service/orders]}]\n"
        )
    )
    assert suggest(db_cascades(), reversed_topology).known == 1
    # declared in another cluster only: this cluster still gets the suggestion
    other_cluster = Topology(
        parse_topology(
            "label_components: [{label: service, kind: service}, {label: database, kind: database}]\n"
            "components: [{kind: service, name: orders, scope: {cluster: us}, depends_on: [database/orders-db]}]\n"
        )
    )
    assert edges(suggest(db_cascades(), other_cluster)) == [("service/orders", "database/orders-db", 5, 1.0)]


def test_scopes_are_never_mixed() -> None:
    # the database fails in eu, the service in us, every time: two clusters, no relation
    events = [
        e
        for i in range(6)
        for e in (
            opened(i * 3600, cluster="eu", database="orders-db"),
            opened(i * 3600 + 30, cluster="us", service="orders"),
        )
    ]
    result = suggest(events)
    assert result.edges == () and not result.counts.support and result.counts.scopes == 2
    # the same cascade in two clusters: one edge per cluster, each with its own counts
    both = db_cascades("eu", 4) + db_cascades("us", 3, start_s=900)
    found = suggest(both).edges
    assert [(s.dependent.scope, s.dependency.scope, s.support) for s in found] == [
        (("eu",), ("eu",), 4),
        (("us",), ("us",), 3),
    ]


def test_a_pair_that_follows_both_ways_as_often_is_unclear() -> None:
    events = []
    for i in range(6):
        first, second = (
            ({"database": "db"}, {"service": "s"}) if i % 2 else ({"service": "s"}, {"database": "db"})
        )
        events += [opened(i * 3600, **first), opened(i * 3600 + 30, **second)]
    result = suggest(events, min_confidence=0.5)
    assert result.edges == () and result.unclear == 1
    # a noisy component that opens every minute precedes the database as often as it follows it
    noisy = [opened(m * 60 + 5, service="noisy") for m in range(60 * 5)]
    cascades = [opened(h * 3600 + 1800, database="db") for h in range(5)]
    assert not [s for s in suggest(noisy + cascades).edges if s.dependent.name == "noisy"]


def test_components_shared_by_both_groups_and_unnamed_openings_are_not_counted() -> None:
    # the two groups share the node: the node follows nothing, the service follows the database
    events = [
        e
        for i in range(4)
        for e in (
            opened(i * 3600, node="n1", database="db"),
            opened(i * 3600 + 20, node="n1", service="s"),
            opened(i * 3600 + 25, alertname="Watchdog"),  # names no component
        )
    ]
    result = suggest(events)
    assert edges(result) == [("service/s", "database/db", 4, 1.0)]
    assert result.counts.unnamed == 4
    assert (
        ComponentId(("",), "database", "db"),
        ComponentId(("",), "node", "n1"),
    ) not in result.counts.support


def test_only_the_first_opened_event_of_an_incident_counts() -> None:
    events = db_cascades(times=3)
    redelivered = [e.model_copy() for e in events]
    later = [
        e.model_copy(update={"seq": 2, "type": IncidentEventType.UPDATED, "event_id": uuid.uuid4().hex})
        for e in events
    ]
    reopened = [
        opened(i * 3600 + 50, IncidentEventType.REOPENED, database="orders-db", cluster="eu")
        for i in range(3)
    ]
    result = suggest(events + redelivered + later + reopened)
    assert edges(result) == [("service/orders", "database/orders-db", 3, 1.0)]
    assert result.counts.incidents == 6


def test_the_same_log_in_any_order_gives_the_same_suggestions() -> None:
    events = db_cascades("eu", 5) + db_cascades("us", 4, start_s=600)
    events += [opened(i * 3600 + 70, cluster="eu", service="shipping") for i in range(5)]
    events += [opened(i * 1000 + 7, cluster="eu", instance=f"10.0.0.{i % 3}:9100") for i in range(30)]
    expected = suggest(events)
    assert expected.edges  # something to compare
    for seed in range(5):
        shuffled = list(events)
        random.Random(seed).shuffle(shuffled)
        assert suggest(shuffled) == expected


def test_instance_names_a_host_without_its_port() -> None:
    (opening,) = openings_from_events([opened(0, instance="db-1:9100", cluster="eu")], suggestion_topology())
    assert opening.components == {ComponentId(("eu",), "host", "db-1")}


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="longer than 0"):
        count_cooccurrences([], 0)


def test_of_a_chain_only_its_links_are_suggested() -> None:
    # the database, then orders 40 s later, then checkout 70 s after the database, five times
    events = [
        e
        for i in range(5)
        for e in (
            opened(i * 3600, database="orders-db"),
            opened(i * 3600 + 40, service="orders"),
            opened(i * 3600 + 70, service="checkout"),
        )
    ]
    result = suggest(events)
    assert [(d, u) for d, u, _s, _c in edges(result)] == [
        ("service/checkout", "service/orders"),
        ("service/orders", "database/orders-db"),
    ]
    assert result.redundant == 1 and result.known == 0
    # a topology that declares checkout -> orders: that pair is known, and the database edge of
    # checkout is implied by it with the suggested orders -> orders-db
    declared = Topology(
        parse_topology(
            "label_components: [{label: service, kind: service}, {label: database, kind: database}]\n"
            "components: [{kind: service, name: checkout, depends_on: [service/orders]}]\n"
        )
    )
    result = suggest(events, declared)
    assert [(d, u) for d, u, _s, _c in edges(result)] == [("service/orders", "database/orders-db")]
    assert (result.known, result.redundant) == (1, 1)


def test_siblings_of_a_declared_dependency_are_suggested_but_marked() -> None:
    # invoices and shipping both depend on orders; shipping's incidents follow invoices' every time
    topology = Topology(
        parse_topology(
            "label_components: [{label: service, kind: service}]\n"
            "components:\n"
            "  - {kind: service, name: invoices, depends_on: [service/orders]}\n"
            "  - {kind: service, name: shipping, depends_on: [service/orders]}\n"
        )
    )
    events = [
        e
        for i in range(4)
        for e in (opened(i * 3600, service="invoices"), opened(i * 3600 + 30, service="shipping"))
    ]
    (s,) = suggest(events, topology).edges
    assert (s.dependent.name, s.dependency.name) == ("shipping", "invoices")
    assert s.common_dependency == ComponentId(("",), "service", "orders")
    # unrelated in the topology: nothing to mark
    (plain,) = suggest(events).edges
    assert plain.common_dependency is None
