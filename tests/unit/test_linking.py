"""The linker's pure core (issue #12): groups linked into one incident with a root cause, on the
shipped topology and the storms' shapes (node failure, database cascade with a late root, bad
deploy, two clusters), operator commands, state round trips, and the note buffer's order."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.loaders import load_topology
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from stormwatch.streams.core.linking import (
    BY_TOPOLOGY,
    EventNotes,
    GroupNote,
    LinkCommand,
    LinkDecision,
    Linked,
    Linker,
    Merged,
    NoteBuffer,
    NoteKind,
    Refused,
    RootCauseChanged,
    SplitCommand,
    Unlinked,
    trim_root,
)
from stormwatch.streams.core.topology import REASON_PATHS, ComponentId, Edge, RelationKind, Topology

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "topology.yaml"
EU, US = "prod-eu-1", "prod-us-1"
MIN = 60_000
WINDOW = 4 * MIN  # deploy/topology.yaml


@pytest.fixture(scope="module")
def topo() -> Topology:
    return Topology(load_topology(EXAMPLE))


def cid(kind: str, name: str, cluster: str = EU) -> ComponentId:
    return ComponentId((cluster,), kind, name)


def group(
    topo: Topology,
    incident: str,
    t: int,
    *alerts: Mapping[str, str],
    kind: NoteKind = NoteKind.OPENED,
    opened: int | None = None,
    cluster: str = EU,
) -> GroupNote:
    """A note as the correlator would write it for a group of these alerts, all firing since it
    opened (30 s before ``t``, the group_wait, unless ``opened`` says otherwise)."""
    opened_ms = t - 30_000 if opened is None else opened
    failing: dict[ComponentId, int] = {}
    edges: set[Edge] = set()
    for alert in alerts:
        labels = {"cluster": cluster, **alert}
        failing.update(dict.fromkeys(topo.failing_components(labels), opened_ms))
        edges |= topo.implied_edges(labels)
    return GroupNote(
        t=t,
        incident_id=incident,
        scope=(cluster,),
        kind=kind,
        opened_ms=opened_ms,
        failing=tuple(sorted(failing.items())),
        edges=tuple(sorted(edges)),
        title=str(alerts[0].get("alertname", "")) if alerts else "",
    )


def node_down(node: str) -> dict[str, str]:
    return {"alertname": "NodeDown", "job": "node-exporter", "node": node}


def pod_alert(service: str, pod: str, node: str, alertname: str = "KubePodNotReady") -> dict[str, str]:
    return {"alertname": alertname, "service": service, "pod": pod, "node": node}


def errors(service: str, pod: str | None = None) -> dict[str, str]:
    return {"alertname": "HighErrorRate", "service": service, **({"pod": pod} if pod else {})}


def db_down(db: str) -> dict[str, str]:
    return {"alertname": "PostgresqlDown", "service": db, "pod": f"{db}-0", "team": "db"}


def kinds(decisions: list[LinkDecision]) -> list[str]:
    return [type(d).__name__ for d in decisions]


def run(linker: Linker, *items: GroupNote | SplitCommand | LinkCommand) -> list[LinkDecision]:
    out: list[LinkDecision] = []
    for item in items:
        out.extend(linker.process(item))
    return out


# --------------------------------------------------------------------------------------------------
# The storms' shapes


def test_a_node_failure_links_every_pod_group_into_the_node_incident(topo: Topology) -> None:
    linker = Linker(topo)
    first = linker.process(group(topo, "inc-node", 60_000, node_down("n1")))
    assert kinds(first) == ["RootCauseChanged"]
    assert isinstance(first[0], RootCauseChanged) and first[0].root.component == cid("node", "n1")
    assert first[0].previous is None and first[0].primary == "inc-node"
    for service in ("cart", "geo"):
        pods = [pod_alert(service, f"{service}-{i}", "n1") for i in range(3)]
        (linked,) = linker.process(group(topo, f"inc-{service}", 130_000, *pods))
        assert isinstance(linked, Linked) and linked.into == "inc-node" and linked.by == BY_TOPOLOGY
        assert linked.relation is not None and linked.relation.kind is RelationKind.UPSTREAM
        assert linked.relation.path[-1] == cid("node", "n1") and linked.relation.relations[-1] == "runs_on"
        assert linked.title == "KubePodNotReady"
    assert linker.members_of("inc-node") == ("inc-node", "inc-cart", "inc-geo")
    assert linker.root_of("inc-node") == cid("node", "n1") and len(linker) == 1


def test_a_late_node_down_merges_the_pod_incidents_and_re_roots(topo: Topology) -> None:
    """Pods of two services on one node share no failing component and, without common
    upstream relations, are two incidents until the node's own alert arrives."""
    linker = Linker(topo)
    run(
        linker,
        group(topo, "inc-cart", 100_000, pod_alert("cart", "cart-1", "n1")),
        group(topo, "inc-geo", 110_000, pod_alert("geo", "geo-1", "n1")),
    )
    assert len(linker) == 2 and linker.root_of("inc-cart") == cid("service", "cart")
    decisions = linker.process(group(topo, "inc-node", 120_000, node_down("n1")))
    assert kinds(decisions) == ["Linked", "Merged", "RootCauseChanged"]
    linked, merged, rerooted = decisions
    assert isinstance(linked, Linked) and linked.into == "inc-cart"
    assert linked.relation is not None and linked.relation.kind is RelationKind.DOWNSTREAM
    assert isinstance(merged, Merged) and (merged.merged, merged.into) == ("inc-geo", "inc-cart")
    assert merged.members == ("inc-geo",) and merged.trigger == "inc-node"
    assert isinstance(rerooted, RootCauseChanged)
    assert rerooted.root.component == cid("node", "n1") and rerooted.previous == cid("service", "cart")
    assert linker.members_of("inc-cart") == ("inc-cart", "inc-node", "inc-geo")
    assert linker.primary_of("inc-geo") == "inc-cart" and len(linker) == 1


def test_a_database_cascade_roots_at_the_database(topo: Topology) -> None:
    linker = Linker(topo)
    decisions = run(
        linker,
        group(topo, "inc-db", 40_000, db_down("accounts-db")),
        group(topo, "inc-accounts", 45_000, errors("accounts", "accounts-1")),
        group(topo, "inc-auth", 50_000, errors("auth", "auth-1")),
        group(topo, "inc-gateway", 55_000, errors("api-gateway", "api-gateway-1")),  # 3 hops up
    )
    assert kinds(decisions) == ["RootCauseChanged", "Linked", "Linked", "Linked"]
    assert all(d.into == "inc-db" for d in decisions if isinstance(d, Linked))
    gateway = decisions[-1]
    assert isinstance(gateway, Linked) and gateway.relation is not None
    # the nearest member explains it: the relation is to the whole incident's components
    assert [c.name for c in gateway.relation.path] == ["api-gateway", "auth"]
    assert linker.root_of("inc-db") == cid("database", "accounts-db")
    # alone with the database, three hops (link.max_hops) still relate it
    alone = Linker(topo)
    alone.process(group(topo, "inc-db", 40_000, db_down("accounts-db")))
    (linked,) = alone.process(group(topo, "inc-gateway", 55_000, errors("api-gateway", "api-gateway-1")))
    assert isinstance(linked, Linked) and linked.relation is not None and linked.relation.hops == 3
    assert [c.name for c in linked.relation.path] == ["api-gateway", "auth", "accounts", "accounts-db"]


def test_a_late_database_re_roots_its_cascade_and_merges_the_siblings(topo: Topology) -> None:
    """accounts and profile both use accounts-db but not each other: before the database's alert
    they are two incidents (auth joins accounts'); the database's group makes them one."""
    linker = Linker(topo)
    before = run(
        linker,
        group(topo, "inc-accounts", 40_000, errors("accounts", "accounts-1")),
        group(topo, "inc-profile", 42_000, errors("profile", "profile-1")),
        group(topo, "inc-auth", 45_000, errors("auth", "auth-1")),
    )
    assert kinds(before) == ["RootCauseChanged", "RootCauseChanged", "Linked"]
    assert linker.root_of("inc-accounts") == cid("service", "accounts") and len(linker) == 2
    late = linker.process(group(topo, "inc-db", 60_000, db_down("accounts-db")))
    assert kinds(late) == ["Linked", "Merged", "RootCauseChanged"]
    assert isinstance(late[1], Merged) and (late[1].merged, late[1].into) == ("inc-profile", "inc-accounts")
    rerooted = late[2]
    assert isinstance(rerooted, RootCauseChanged) and rerooted.previous == cid("service", "accounts")
    assert rerooted.root.component == cid("database", "accounts-db")
    assert rerooted.root.explains >= 3 and len(rerooted.root.paths) <= REASON_PATHS
    assert linker.members_of("inc-accounts") == ("inc-accounts", "inc-auth", "inc-db", "inc-profile")


def test_a_late_upstream_alert_joining_a_linked_group_merges_what_it_explains(topo: Topology) -> None:
    """The database's alert arrives in a group that already exists (a changed note): the same
    rule as for a new group."""
    linker = Linker(topo)
    run(
        linker,
        group(topo, "inc-accounts", 40_000, errors("accounts", "accounts-1")),
        group(topo, "inc-profile", 42_000, errors("profile", "profile-1")),
    )
    changed = group(
        topo, "inc-profile", 70_000, errors("profile", "profile-1"), db_down("accounts-db"), opened=12_000
    )
    decisions = linker.process(GroupNote(**{**_fields(changed), "kind": NoteKind.CHANGED}))
    assert kinds(decisions) == ["Merged", "RootCauseChanged"]
    assert isinstance(decisions[0], Merged) and decisions[0].merged == "inc-profile"
    assert decisions[0].into == "inc-accounts" and decisions[0].trigger == "inc-profile"
    assert linker.root_of("inc-accounts") == cid("database", "accounts-db")


def _fields(note: GroupNote) -> dict[str, object]:
    return {name: getattr(note, name) for name in GroupNote.__dataclass_fields__}


def test_a_bad_deploy_is_one_incident_rooted_at_its_service(topo: Topology) -> None:
    """Three alert names over 8 pods on 4 nodes: three groups, one incident, the service as root
    (the nodes are where, not what)."""
    pods = [("recommendations", f"recommendations-v2-{i}", f"n{i % 4}") for i in range(8)]
    linker = Linker(topo)
    decisions = run(
        linker,
        group(topo, "inc-errors", 40_000, *(pod_alert(*p, alertname="HighErrorRate") for p in pods)),
        group(topo, "inc-crash", 150_000, *(pod_alert(*p, alertname="KubePodCrashLooping") for p in pods)),
        group(
            topo,
            "inc-rollout",
            220_000,
            {
                "alertname": "KubeDeploymentRolloutStuck",
                "deployment": "recommendations",
                "service": "recommendations",
            },
        ),
    )
    assert kinds(decisions) == ["RootCauseChanged", "Linked", "Linked"]
    assert linker.members_of("inc-errors") == ("inc-errors", "inc-crash", "inc-rollout")
    assert linker.root_of("inc-errors") == cid("service", "recommendations")


def test_two_clusters_never_link(topo: Topology) -> None:
    linker = Linker(topo)
    for cluster in (EU, US):
        run(
            linker,
            group(topo, f"inc-db-{cluster}", 40_000, db_down("orders-db"), cluster=cluster),
            group(topo, f"inc-orders-{cluster}", 45_000, errors("orders", "orders-1"), cluster=cluster),
        )
    assert len(linker) == 2
    assert linker.members_of(f"inc-db-{EU}") == (f"inc-db-{EU}", f"inc-orders-{EU}")
    assert linker.members_of(f"inc-db-{US}") == (f"inc-db-{US}", f"inc-orders-{US}")
    assert linker.root_of(f"inc-db-{US}") == cid("database", "orders-db", US)


def test_unrelated_services_never_link(topo: Topology) -> None:
    """email and checkout both end at queue/kafka but neither depends on the other; background
    tooling outside the catalog relates to nothing."""
    linker = Linker(topo)
    decisions = run(
        linker,
        group(topo, "inc-email", 40_000, errors("email", "email-1")),
        group(topo, "inc-checkout", 41_000, errors("checkout", "checkout-1")),
        group(topo, "inc-grafana", 42_000, {"alertname": "HighMemory", "service": "grafana"}),
    )
    assert kinds(decisions) == ["RootCauseChanged"] * 3 and len(linker) == 3


def test_a_victim_of_two_failures_joins_the_earliest_and_merges_none(topo: Topology) -> None:
    """checkout calls orders and payments; both failing on their own does not make them one."""
    linker = Linker(topo)
    run(
        linker,
        group(topo, "inc-orders", 40_000, errors("orders", "orders-1")),
        group(topo, "inc-payments", 41_000, errors("payments", "payments-1")),
    )
    decisions = linker.process(group(topo, "inc-checkout", 50_000, errors("checkout", "checkout-1")))
    assert kinds(decisions) == ["Linked"] and len(linker) == 2
    assert isinstance(decisions[0], Linked) and decisions[0].into == "inc-orders"


def test_the_window_is_measured_from_the_primary_opening(topo: Topology) -> None:
    linker = Linker(topo)
    linker.process(group(topo, "inc-db", 40_000, db_down("orders-db"), opened=10_000))
    inside = linker.process(group(topo, "inc-orders", 300_000, errors("orders"), opened=10_000 + WINDOW))
    assert kinds(inside) == ["Linked"]
    # measured from the primary, not from the latest member: no chain of groups stretches it
    outside = linker.process(
        group(topo, "inc-shipping", 300_000, errors("shipping"), opened=10_000 + WINDOW + 1)
    )
    assert kinds(outside) == ["RootCauseChanged"] and len(linker) == 2


def test_the_same_component_failing_again_continues_its_incident(topo: Topology) -> None:
    """A cron job's runs are groups of their own (each its job_name), one run a window after the
    other: the next run links when the previous one was active within the window."""
    linker = Linker(topo)

    def job(run_no: int, opened: int, kind: NoteKind = NoteKind.OPENED, t: int | None = None) -> GroupNote:
        alert = {"alertname": "KubeJobFailed", "service": "reports", "job_name": f"reports-{run_no}"}
        return group(
            topo, f"inc-run{run_no}", opened + 30_000 if t is None else t, alert, kind=kind, opened=opened
        )

    run(linker, job(1, 0), job(1, 0, NoteKind.RESOLVED, t=4 * MIN + 10_000))
    assert kinds(linker.process(job(2, 4 * MIN + 5_000))) == ["Linked"]  # run 1 resolved 5 s later
    linker.process(job(2, 4 * MIN + 5_000, NoteKind.RESOLVED, t=8 * MIN))
    assert kinds(linker.process(job(3, 8 * MIN + WINDOW + 1))) == ["RootCauseChanged"]  # too long after
    assert len(linker) == 2


def test_a_group_that_names_no_component_never_links(topo: Topology) -> None:
    linker = Linker(topo)
    nothing = group(topo, "inc-x", 40_000, {"alertname": "Watchdog"})
    assert nothing.failing == () and linker.process(nothing) == []
    assert kinds(linker.process(group(topo, "inc-db", 41_000, db_down("orders-db")))) == ["RootCauseChanged"]
    assert len(linker) == 2 and linker.root_of("inc-x") is None


def test_resolved_members_stay_and_the_incident_ends_when_every_member_closed(topo: Topology) -> None:
    linker = Linker(topo)
    db = group(topo, "inc-db", 40_000, db_down("orders-db"))
    orders = group(topo, "inc-orders", 45_000, errors("orders"))

    def again(note: GroupNote, kind: NoteKind, t: int) -> GroupNote:
        return GroupNote(**{**_fields(note), "kind": kind, "t": t})

    run(linker, db, orders, again(orders, NoteKind.RESOLVED, 60_000))
    assert linker.members_of("inc-db") == ("inc-db", "inc-orders") and linker.groups_held == 2
    assert run(linker, again(db, NoteKind.CLOSED, 70_000)) == [] and len(linker) == 1
    assert run(linker, again(orders, NoteKind.CLOSED, 80_000)) == [] and len(linker) == 0
    assert linker.groups_held == 0  # what stormwatch_linker_state shows: nothing kept once all closed
    assert linker.primary_of("inc-orders") is None
    # a closed incident takes no new member, and a closed note for an unknown group is nothing
    assert kinds(linker.process(group(topo, "inc-shipping", 90_000, errors("shipping")))) == [
        "RootCauseChanged"
    ]
    assert linker.process(again(orders, NoteKind.CLOSED, 95_000)) == []


def test_a_linked_incident_that_goes_on_for_hours_keeps_only_its_open_groups(topo: Topology) -> None:
    """A chronic failure (the database stays down) that victim groups keep joining, each closing
    after a while: the closed ones are folded into the incident (their components, edges and
    activity still count: a group an hour later still continues it) instead of each kept whole.
    The hour-long run's linker held ~85 more groups every minute before (issue #17)."""

    def again(note: GroupNote, kind: NoteKind, t: int) -> GroupNote:
        return GroupNote(**{**_fields(note), "kind": kind, "t": t})

    def storm(linker: Linker, start: int, stop: int) -> list[LinkDecision]:
        out: list[LinkDecision] = []
        for i in range(start, stop):  # one victim group every 2 minutes, closed 3 minutes later
            t = 60_000 + i * 2 * MIN
            victim = group(topo, f"inc-orders-{i}", t, errors("orders", f"orders-{i % 3}"))
            out += run(linker, victim)
            if i >= 2:
                old = group(
                    topo, f"inc-orders-{i - 2}", t - 4 * MIN, errors("orders", f"orders-{(i - 2) % 3}")
                )
                out += run(linker, again(old, NoteKind.RESOLVED, t + 1), again(old, NoteKind.CLOSED, t + 2))
        return out

    linker = Linker(topo)
    run(linker, group(topo, "inc-db", 40_000, db_down("orders-db")))
    first = storm(linker, 0, 30)
    assert [d.into for d in first if isinstance(d, Linked)] == ["inc-db"] * 30  # an hour: every one joined
    assert linker.groups_held == 3  # the primary and the two victims still open, not 31
    assert len(linker.members_of("inc-db")) == 31  # closed members stay members
    record = linker.incident_record("inc-db")
    assert record is not None and record["past"]["firing"]  # what they gave, in the state
    run(linker, group(topo, "inc-other-db", 61 * MIN, db_down("billing-db")))
    refused = run(
        linker,
        SplitCommand(62 * MIN, "inc-orders-5", "operator:ana"),
        LinkCommand(62 * MIN, "inc-orders-5", "inc-other-db", "operator:ana"),
    )
    assert [(type(d).__name__, getattr(d, "reason", "")) for d in refused] == [
        ("Refused", "inc-orders-5 is closed: nothing to split"),
        ("Refused", "inc-orders-5 is closed: nothing to link"),
    ]
    # a restore from the state decides the next hour exactly as the running linker does
    restored = Linker.from_dict(topo, orjson.loads(orjson.dumps(linker.to_dict())))
    assert storm(restored, 30, 60) == storm(linker, 30, 60)
    assert restored.to_dict() == linker.to_dict() and linker.groups_held == 4  # with inc-other-db


# --------------------------------------------------------------------------------------------------
# Operator commands


def test_split_takes_a_group_out_for_good_and_link_puts_it_back(topo: Topology) -> None:
    linker = Linker(topo)
    run(
        linker,
        group(topo, "inc-db", 40_000, db_down("orders-db")),
        group(topo, "inc-orders", 45_000, errors("orders")),
        group(topo, "inc-shipping", 50_000, errors("shipping", "shipping-1")),
    )
    split = linker.process(SplitCommand(60_000, "inc-shipping", "operator:ana"))
    assert kinds(split) == ["Unlinked", "RootCauseChanged"]
    assert split[0] == Unlinked(60_000, "inc-shipping", "inc-db", "split by an operator", "operator:ana")
    assert isinstance(split[1], RootCauseChanged) and split[1].primary == "inc-shipping"
    assert split[1].previous == cid("database", "orders-db")
    assert split[1].root.component == cid("service", "shipping")
    assert linker.members_of("inc-db") == ("inc-db", "inc-orders")
    # never linked automatically again: not by its own new components, not by a new group
    more = group(
        topo, "inc-shipping", 70_000, errors("shipping", "shipping-1"), errors("shipping", "shipping-2")
    )
    assert linker.process(GroupNote(**{**_fields(more), "kind": NoteKind.CHANGED, "opened_ms": 20_000})) == []
    assert linker.primary_of("inc-shipping") == "inc-shipping"
    # by hand, it goes back (a primary takes its whole linked incident along)
    back = linker.process(LinkCommand(80_000, "inc-shipping", "inc-orders", "operator:ana"))
    assert kinds(back) == ["Merged"]
    assert isinstance(back[0], Merged) and (back[0].merged, back[0].into, back[0].by) == (
        "inc-shipping",
        "inc-db",
        "operator:ana",
    )
    assert back[0].relation is None and back[0].trigger is None
    # a member linked elsewhere leaves its incident first
    linker.process(group(topo, "inc-email", 90_000, errors("email")))
    moved = linker.process(LinkCommand(95_000, "inc-orders", "inc-email"))
    assert kinds(moved) == ["Unlinked", "Linked", "RootCauseChanged"], "orders failed before email"
    assert isinstance(moved[1], Linked) and moved[1].into == "inc-email" and moved[1].relation is None
    assert linker.members_of("inc-email") == ("inc-email", "inc-orders")


def test_commands_that_cannot_apply_are_refused_and_change_nothing(topo: Topology) -> None:
    linker = Linker(topo)
    run(
        linker,
        group(topo, "inc-db", 40_000, db_down("orders-db")),
        group(topo, "inc-orders", 45_000, errors("orders")),
        group(topo, "inc-us", 45_000, errors("orders"), cluster=US),
    )
    state = linker.to_dict()
    commands: list[tuple[SplitCommand | LinkCommand, str]] = [
        (SplitCommand(1, "inc-nope"), "unknown incident inc-nope"),
        (SplitCommand(1, "inc-us"), "not linked"),
        (SplitCommand(1, "inc-db"), "is the primary of 1 linked groups"),
        (LinkCommand(1, "inc-nope", "inc-db"), "unknown incident inc-nope"),
        (LinkCommand(1, "inc-orders", "inc-nope"), "unknown incident inc-nope"),
        (LinkCommand(1, "inc-orders", "inc-db"), "already linked into inc-db"),
        (LinkCommand(1, "inc-us", "inc-db"), "different scopes"),
    ]
    for command, reason in commands:
        (refused,) = linker.process(command)
        assert isinstance(refused, Refused) and refused.command == command and reason in refused.reason
    assert linker.to_dict() == state


# --------------------------------------------------------------------------------------------------
# State and determinism


def _scenario(topo: Topology) -> list[GroupNote | SplitCommand | LinkCommand]:
    return [
        group(topo, "inc-accounts", 40_000, errors("accounts", "accounts-1")),
        group(topo, "inc-profile", 42_000, errors("profile", "profile-1")),
        group(topo, "inc-node", 43_000, node_down("n1")),
        group(topo, "inc-auth", 45_000, errors("auth", "auth-1")),
        group(topo, "inc-db", 60_000, db_down("accounts-db")),
        group(topo, "inc-geo", 61_000, pod_alert("geo", "geo-1", "n1")),
        SplitCommand(62_000, "inc-auth"),
        group(topo, "inc-auth", 63_000, errors("auth", "auth-1"), kind=NoteKind.RESOLVED, opened=15_000),
        group(topo, "inc-us", 64_000, errors("accounts"), cluster=US),
    ]


def test_state_round_trips_and_a_restored_linker_decides_the_same(topo: Topology) -> None:
    items = _scenario(topo)
    straight = Linker(topo)
    expected = [straight.process(item) for item in items]
    restored = Linker(topo)
    for item, want in zip(items, expected, strict=True):
        data = restored.to_dict()
        assert orjson.loads(orjson.dumps(data, option=orjson.OPT_SORT_KEYS)) == data
        restored = Linker.from_dict(topo, data)
        assert restored.to_dict() == data
        assert restored.process(item) == want
    assert restored.to_dict() == straight.to_dict()
    assert Linker(topo).to_dict() == {"groups": {}, "incidents": []}


def test_a_root_cause_in_a_decision_is_bounded(topo: Topology) -> None:
    pods = [pod_alert(f"svc{i}", f"svc{i}-0", "n1") for i in range(12)]
    firing = {c: 1 for p in pods for c in topo.failing_components({"cluster": EU, **p})}
    firing[cid("node", "n1")] = 0
    edges = {e for p in pods for e in topo.implied_edges({"cluster": EU, **p})}
    root = topo.root_cause(firing, extra_edges=edges)
    trimmed = trim_root(root)
    assert len(root.tier) <= REASON_PATHS and trimmed.explains == root.explains == 24
    assert len(trimmed.candidates) <= REASON_PATHS and len(trimmed.paths) <= REASON_PATHS
    assert trimmed.component == root.component == cid("node", "n1")


# --------------------------------------------------------------------------------------------------
# The note buffer


def _note(incident: str, t: int, service: str = "orders") -> GroupNote:
    return GroupNote(t, incident, (EU,), NoteKind.OPENED, t, ((cid("service", service), t),))


def test_the_buffer_waits_for_every_source_and_releases_in_time_then_id_order() -> None:
    buffer = NoteBuffer(["0", "1"])
    buffer.add("0", _note("inc-b", 10))
    buffer.add("0", _note("inc-a", 10))
    buffer.add("0", _note("inc-c", 30))
    assert buffer.release() == [] and buffer.low() is None, "source 1 has not spoken"
    buffer.advance("1", 20)
    assert [n.incident_id for n in buffer.release()] == ["inc-a", "inc-b"]
    buffer.add("1", _note("inc-d", 25))
    buffer.advance("1", 40)
    assert [n.incident_id for n in buffer.release()] == ["inc-d"], "source 0 is at 30"
    buffer.advance("0", 31)
    assert [n.incident_id for n in buffer.release()] == ["inc-c"] and len(buffer) == 0
    assert buffer.late == 0 and buffer.released_to == 31


def test_an_idle_source_holds_nobody_back_and_what_it_sends_late_is_counted() -> None:
    buffer = NoteBuffer(["0", "1"])
    buffer.idle("1")
    buffer.add("0", _note("inc-a", 10))
    buffer.advance("0", 50)
    assert [n.incident_id for n in buffer.release()] == ["inc-a"]
    buffer.add("1", _note("inc-late", 20))  # behind what was released
    assert buffer.late == 1 and buffer.low() == 20
    assert [n.incident_id for n in buffer.release()] == ["inc-late"]
    buffer.idle("0")
    buffer.idle("1")
    buffer.add("0", _note("inc-z", 60))
    buffer.idle("0")
    assert [n.incident_id for n in buffer.release()] == ["inc-z"], "everyone quiet: all goes"
    with pytest.raises(KeyError, match="unknown source '7'"):
        buffer.add("7", _note("inc-x", 1))
    with pytest.raises(ValueError, match="at least one source"):
        NoteBuffer([])


SERVICES = ("orders", "orders-db", "shipping", "invoices", "email", "checkout")
Stream = list[tuple[int, GroupNote | None]]  # a note, or (None) a watermark at that time


@st.composite
def _streams(draw: st.DrawFn) -> tuple[dict[str, Stream], list[str], list[str]]:
    """Per source partition: notes in time order with watermarks between them; and two orders
    in which the partitions' records reach the linker."""
    streams: dict[str, Stream] = {}
    for source in (str(s) for s in range(draw(st.integers(1, 3)))):
        items: Stream = []
        for i, t in enumerate(sorted(draw(st.lists(st.integers(0, 400_000), max_size=8)))):
            if draw(st.booleans()):
                items.append((t, None))
            service = draw(st.sampled_from(SERVICES))
            failing = ((cid("database" if service.endswith("-db") else "service", service), t),)
            items.append((t, GroupNote(t, f"inc-{source}-{i}", (EU,), NoteKind.OPENED, t, failing)))
        items.append((10**9, None))
        streams[source] = items
    slots = [source for source, items in streams.items() for _ in items]
    return streams, draw(st.permutations(slots)), draw(st.permutations(slots))


def _feed(
    topo: Topology, streams: dict[str, Stream], order: list[str]
) -> tuple[list[str], list[LinkDecision]]:
    buffer, linker = NoteBuffer(streams), Linker(topo)
    position = dict.fromkeys(streams, 0)
    released: list[GroupNote] = []
    for source in order:
        t, note = streams[source][position[source]]
        position[source] += 1
        if note is not None:
            buffer.add(source, note)
        else:
            buffer.advance(source, t)
        released.extend(buffer.release())
    assert len(buffer) == 0 and buffer.late == 0
    decisions = [d for note in released for d in linker.process(note)]
    return [n.incident_id for n in released], decisions


@settings(max_examples=60, deadline=None)
@given(_streams())
def test_any_interleaving_of_the_partitions_gives_the_same_decisions(
    case: tuple[dict[str, Stream], list[str], list[str]],
) -> None:
    topo = Topology(load_topology(EXAMPLE))
    streams, one, other = case
    first, second = _feed(topo, streams, one), _feed(topo, streams, other)
    assert first == second
    notes = [n for items in streams.values() for _, n in items if n is not None]
    assert first[0] == [n.incident_id for n in sorted(notes, key=lambda n: (n.t, n.incident_id))]


# --------------------------------------------------------------------------------------------------
# Notes from incident events


def _event(
    incident: str, seq: int, etype: IncidentEventType, at_ms: int, *changes: AlertChange
) -> IncidentEvent:
    return IncidentEvent(
        event_id=f"{incident}-{seq}",
        incident_id=incident,
        seq=seq,
        type=etype,
        from_state=None,
        to_state=IncidentState.OPEN,
        at=utc_from_ms(at_ms),
        actor="correlator",
        cause="test",
        alerts=list(changes),
        snapshot=IncidentSnapshot(
            state=IncidentState.OPEN,
            severity=Severity.WARNING,
            title="HighErrorRate (cluster=prod-eu-1, service=orders)",
            group_key="g",
            group_labels={"alertname": "HighErrorRate", "cluster": EU, "service": "orders"},
            rule="default",
            alert_count=1,
            firing_count=1,
            opened_at=datetime(2025, 1, 1, tzinfo=UTC),
        ),
    )


def _change(fingerprint: str, kind: AlertChangeKind, at_ms: int, **labels: str) -> AlertChange:
    resolved = kind in (AlertChangeKind.RESOLVED, AlertChangeKind.EXPIRED)
    return AlertChange(
        fingerprint=fingerprint,
        change=kind,
        status=AlertStatus.RESOLVED if resolved else AlertStatus.FIRING,
        severity=Severity.WARNING,
        at=utc_from_ms(at_ms),
        labels=labels or None,
    )


def test_event_notes_follow_a_group_through_its_incident(topo: Topology) -> None:
    t0 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp() * 1000)
    notes = EventNotes(topo)
    pod1 = {"alertname": "HighErrorRate", "cluster": EU, "service": "orders", "pod": "orders-1"}
    opened = notes.notes(
        _event(
            "inc-o",
            1,
            IncidentEventType.OPENED,
            t0 + 30_000,
            _change("f1", AlertChangeKind.JOINED, t0, **pod1),
        )
    )
    (note,) = opened
    assert (note.kind, note.scope, note.opened_ms, note.t) == (NoteKind.OPENED, (EU,), t0, t0 + 30_000)
    assert dict(note.failing) == {cid("pod", "orders-1"): t0, cid("service", "orders"): t0}
    assert note.edges and note.labels[0] == ("alertname", "HighErrorRate")
    # a re-send that changes nothing is no note; a new pod is a changed note
    same = _change("f1", AlertChangeKind.UPDATED, t0 + 40_000)
    assert notes.notes(_event("inc-o", 2, IncidentEventType.UPDATED, t0 + 40_000, same)) == []
    pod2 = {**pod1, "pod": "orders-2"}
    (changed,) = notes.notes(
        _event(
            "inc-o",
            3,
            IncidentEventType.UPDATED,
            t0 + 50_000,
            _change("f2", AlertChangeKind.JOINED, t0 + 45_000, **pod2),
        )
    )
    assert changed.kind is NoteKind.CHANGED and dict(changed.failing)[cid("pod", "orders-2")] == t0 + 45_000
    gone = _change("f1", AlertChangeKind.RESOLVED, t0 + 60_000)
    (resolved,) = notes.notes(_event("inc-o", 4, IncidentEventType.RESOLVED, t0 + 60_000, gone))
    assert resolved.kind is NoteKind.RESOLVED and resolved.failing == (), (
        "a note names what fired in its event"
    )
    (closed,) = notes.notes(_event("inc-o", 5, IncidentEventType.CLOSED, t0 + 90_000))
    assert closed.kind is NoteKind.CLOSED
