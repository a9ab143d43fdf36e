"""Correlator and linker together (issue #12), in memory: linked incidents with their root cause,
and the same audit log whatever the schedule of the partitions and wherever they crash."""

from __future__ import annotations

import random

import pytest

from stormwatch.schemas.commands import OperatorAction
from stormwatch.schemas.incident import IncidentEventType
from stormwatch.schemas.topology import TopologyComponent, TopologyUpdate
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.core.topology import parse_topology
from tests.kit.engine import at, note
from tests.kit.linkloop import CASCADE_TOPOLOGY as TOPOLOGY
from tests.kit.linkloop import LinkLoop

RULES = """
defaults: {group_wait: 10s, group_interval: 1m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 1s
"""


def alert(name: str, seconds: float, cluster: str = "prod", **labels: str) -> object:
    return note({"alertname": name, "cluster": cluster, **labels}, at(seconds))


def cascade(loop: LinkLoop) -> None:
    """Checkout and payments fail first, the database they use a little later (a late upstream
    alert that must re-root the incident); the same failure in another cluster and an unrelated
    service at the same time stay apart."""
    loop.alerts([alert("HighErrorRate", 0, service="checkout", pod=f"checkout-{i}") for i in range(3)])
    loop.alerts([alert("HighErrorRate", 4, service="payments", pod="payments-1")])
    loop.alerts([alert("HighErrorRate", 2, cluster="staging", service="checkout", pod="checkout-1")])
    loop.alerts([alert("HighLatency", 3, service="search")])
    loop.alerts([alert("PostgresDown", 20, service="orders-db")])
    for second in range(0, 3 * 3600, 5):
        loop.tick(at(second))


def new_loop(correlators: int = 2, linkers: int = 2) -> LinkLoop:
    loop = LinkLoop(parse_rules(RULES), parse_topology(TOPOLOGY), correlators, linkers)
    cascade(loop)
    return loop


@pytest.fixture(scope="module")
def reference() -> LinkLoop:
    loop = new_loop()
    loop.run()
    return loop


def by_title(loop: LinkLoop) -> dict[str, str]:
    return {e.snapshot.title: e.incident_id for e in loop.events if e.type is IncidentEventType.OPENED}


def test_a_cascade_is_one_incident_rooted_at_the_database(reference: LinkLoop) -> None:
    ids = by_title(reference)
    db = ids["PostgresDown (cluster=prod, service=orders-db)"]
    checkout = ids["HighErrorRate (cluster=prod, service=checkout)"]
    payments = ids["HighErrorRate (cluster=prod, service=payments)"]
    last = {}
    for event in reference.events:
        last[event.incident_id] = event.snapshot
    # checkout opened first: the primary. The database joined it as the alert upstream of it,
    # and payments with it (it depends on the database too: related once the database failed)
    assert last[payments].linked_into == checkout and last[db].linked_into == checkout
    assert last[checkout].members == [db, payments]
    root = last[checkout].root_cause
    assert root is not None and root.component == '{cluster="prod"}database/orders-db'
    roots = [
        e.snapshot.root_cause.name
        for e in reference.events
        if e.incident_id == checkout
        and e.type is IncidentEventType.ROOT_CAUSE_CHANGED
        and e.snapshot.root_cause
    ]
    assert roots == ["checkout", "orders-db"], "re-rooted by the late database alert"
    # the same alert in another cluster and an unrelated service are incidents of their own
    for title in (
        "HighErrorRate (cluster=staging, service=checkout)",
        "HighLatency (cluster=prod, service=search)",
    ):
        assert last[ids[title]].linked_into is None and last[ids[title]].members == []
    assert reference.stats()["link_late_commands"] == 0


def test_links_apply_at_the_note_time_plus_the_delay(reference: LinkLoop) -> None:
    ids = by_title(reference)
    db = ids["PostgresDown (cluster=prod, service=orders-db)"]
    opened = next(e for e in reference.events if e.incident_id == db and e.type is IncidentEventType.OPENED)
    linked = next(e for e in reference.events if e.incident_id == db and e.type is IncidentEventType.LINKED)
    assert (linked.at - opened.at).total_seconds() == 5.0  # link.delay
    assert linked.actor == "linker" and linked.details["relation"] == "downstream"
    assert linked.details["paths"] == [
        ['{cluster="prod"}database/orders-db', '{cluster="prod"}service/checkout']
    ]


@pytest.mark.parametrize("seed", range(6))
def test_any_schedule_gives_the_same_audit_log(reference: LinkLoop, seed: int) -> None:
    loop = new_loop()
    loop.run(random.Random(seed))
    assert loop.audit_log() == reference.audit_log()


@pytest.mark.parametrize("seed", range(4))
def test_crashes_anywhere_change_nothing(reference: LinkLoop, seed: int) -> None:
    loop = new_loop()
    loop.run(random.Random(100 + seed), crashes=0.15)
    assert loop.audit_log() == reference.audit_log()


def test_partition_counts_do_not_change_the_incidents(reference: LinkLoop) -> None:
    loop = new_loop(correlators=3, linkers=1)
    loop.run(random.Random(7))
    assert {k: len(v) for k, v in loop.audit_log().items()} == {
        k: len(v) for k, v in reference.audit_log().items()
    }
    assert sorted(e.type.value for e in loop.events) == sorted(e.type.value for e in reference.events)


def test_a_topology_change_counts_from_its_time_in_every_schedule() -> None:
    """search gets a dependency on the database at 1s: its alert links in, in every schedule."""
    search = TopologyComponent(kind="service", name="search", depends_on=["database/orders-db"])
    logs = []
    for seed in (None, 1, 2):
        loop = new_loop()
        loop.topology_change(at(1), TopologyUpdate.put(search))
        loop.run(random.Random(seed) if seed is not None else None)
        ids = by_title(loop)
        last = {e.incident_id: e.snapshot for e in loop.events}
        assert last[ids["HighLatency (cluster=prod, service=search)"]].linked_into is not None
        logs.append(loop.audit_log())
    assert logs[0] == logs[1] == logs[2]


def operated(commands: list[tuple[OperatorAction, str, str, dict[str, str]]], seed: int | None) -> LinkLoop:
    """The cascade to its first minute, then operators' commands (titles name the incidents),
    then the rest of the time."""
    loop = LinkLoop(parse_rules(RULES), parse_topology(TOPOLOGY), 2, 2)
    cascade_alerts_only(loop)
    for second in range(0, 60, 5):
        loop.tick(at(second))
    loop.run(random.Random(seed) if seed is not None else None)
    ids = by_title(loop)
    for action, title, command_id, fields in commands:
        loop.command(action, ids[title], command_id, **{k: ids.get(v, v) for k, v in fields.items()})
    for second in range(60, 3 * 3600, 5):
        loop.tick(at(second))
    loop.run(random.Random(seed) if seed is not None else None)
    return loop


def cascade_alerts_only(loop: LinkLoop) -> None:
    loop.alerts([alert("HighErrorRate", 0, service="checkout", pod=f"checkout-{i}") for i in range(3)])
    loop.alerts([alert("HighErrorRate", 4, service="payments", pod="payments-1")])
    loop.alerts([alert("HighErrorRate", 2, cluster="staging", service="checkout", pod="checkout-1")])
    loop.alerts([alert("HighLatency", 3, service="search")])
    loop.alerts([alert("PostgresDown", 20, service="orders-db")])


CHECKOUT = "HighErrorRate (cluster=prod, service=checkout)"
PAYMENTS = "HighErrorRate (cluster=prod, service=payments)"
SEARCH = "HighLatency (cluster=prod, service=search)"
STAGING = "HighErrorRate (cluster=staging, service=checkout)"


def test_an_operator_splits_a_group_out_and_joins_another_in() -> None:
    loop = operated(
        [
            (OperatorAction.SPLIT, PAYMENTS, "op-split", {}),
            (OperatorAction.JOIN, SEARCH, "op-join", {"link_into": CHECKOUT}),
        ],
        None,
    )
    ids = by_title(loop)
    last = {e.incident_id: e.snapshot for e in loop.events}
    assert last[ids[PAYMENTS]].linked_into is None, "split out, and not linked back by the topology"
    assert last[ids[SEARCH]].linked_into == ids[CHECKOUT]
    assert ids[PAYMENTS] not in last[ids[CHECKOUT]].members and ids[SEARCH] in last[ids[CHECKOUT]].members
    answered: dict[str, list[tuple[str, str]]] = {}
    for e in loop.events:
        if e.details.get("request"):
            answered.setdefault(e.details["request"], []).append((e.type.value, e.actor))
    assert sorted(answered["op-split"]) == [("unlinked", "operator:alice")] * 2  # the member and the primary
    assert sorted(answered["op-join"]) == [("linked", "operator:alice"), ("member_added", "operator:alice")]
    for seed in (3, 4):
        assert (
            operated(
                [
                    (OperatorAction.SPLIT, PAYMENTS, "op-split", {}),
                    (OperatorAction.JOIN, SEARCH, "op-join", {"link_into": CHECKOUT}),
                ],
                seed,
            ).audit_log()
            == loop.audit_log()
        )


def test_what_the_linker_cannot_do_is_refused_with_the_reason() -> None:
    loop = operated(
        [
            (OperatorAction.JOIN, STAGING, "op-across", {"link_into": CHECKOUT}),
            (OperatorAction.SPLIT, SEARCH, "op-alone", {}),
        ],
        None,
    )
    refused = {e.details.get("request"): e for e in loop.events if e.type is IncidentEventType.REFUSED}
    assert "different scopes" in refused["op-across"].details["reason"]
    assert "not linked" in refused["op-alone"].details["reason"]


def test_without_a_topology_split_is_refused_at_once() -> None:
    from tests.kit.engine import Driver, config

    d = Driver(config(RULES))
    d.alerts([alert("HighLatency", 0, service="search")])  # type: ignore[list-item]
    d.tick(at(30))
    d.commit()
    (opened,) = d.of_type("opened")
    d.command(OperatorAction.SPLIT, opened.incident_id, command_id="op-1")
    d.commit()
    (refused,) = d.of_type("refused")
    assert "linking is off" in refused.details["reason"]
