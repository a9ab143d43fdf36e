"""Linking commands (issue #12) on the correlator side: the owning partition writes the audit events."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from stormwatch.commands import incidents as cli
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.incident import IncidentEvent, IncidentState, RootCauseInfo
from stormwatch.streams.core.groups import GroupState, IncidentRuntime
from stormwatch.streams.core.projection import IncidentProjection, to_summary
from tests.kit.engine import Driver, at, config, note

FAST = """
defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 1s
state_time_resolution: 1s
"""

DB = '{cluster="prod"}database/orders'
ROOT = RootCauseInfo(
    component=DB,
    kind="database",
    name="orders",
    first_firing_at=datetime(2027, 1, 1, tzinfo=UTC),
    decided_by="first_firing",
)
PATH = [DB, '{cluster="prod"}service/checkout']


def opened(d: Driver, *names: str) -> list[str]:
    """One incident per alert name, in name order."""
    d.alerts([note({"alertname": name, "service": name.lower()}, at(0)) for name in names])
    d.tick(at(40))
    d.commit()
    return [e.incident_id for e in sorted(d.of_type("opened"), key=lambda e: e.snapshot.title)]


def linker(d: Driver, action: OperatorAction, incident_id: str, command_id: str, **kwargs: Any) -> None:
    d.command(action, incident_id, by="linker", command_id=command_id, **kwargs)


def link(d: Driver, member: str, primary: str, n: int = 1) -> None:
    """What the linker sends for one ``Linked`` decision: one command to each side."""
    kw: dict[str, Any] = {"relation": "upstream", "paths": [PATH], "reason": "checkout depends on orders"}
    linker(d, OperatorAction.LINK, member, f"link:{member}:{n}", link_into=primary, **kw)
    linker(d, OperatorAction.LINK_MEMBER, primary, f"member:{member}:{n}", member=member, **kw)


def of(d: Driver, incident_id: str) -> list[IncidentEvent]:
    return [e for e in d.events if e.incident_id == incident_id]


def test_a_member_gets_linked_and_the_primary_member_added_and_its_root_cause() -> None:
    d = Driver(config(FAST))
    primary, member = opened(d, "A", "B")
    link(d, member, primary)
    linker(d, OperatorAction.ROOT_CAUSE, primary, "root:1", root_cause=ROOT, paths=[PATH], reason="earliest")
    d.commit()
    linked, added, rooted = of(d, member)[-1], of(d, primary)[-2], of(d, primary)[-1]
    assert (linked.type.value, linked.actor, linked.seq) == ("linked", "linker", 2)
    assert linked.cause == f"linked into {primary}: checkout depends on orders"
    assert linked.details == {
        "command_id": f"link:{member}:1",
        "link_into": primary,
        "relation": "upstream",
        "paths": [PATH],
        "reason": "checkout depends on orders",
    }
    assert linked.snapshot.linked_into == primary and linked.snapshot.members == []
    assert (added.type.value, added.details["member"], added.snapshot.members) == (
        "member_added",
        member,
        [member],
    )
    assert rooted.type.value == "root_cause_changed" and rooted.actor == "linker"
    assert rooted.cause == f"root cause {DB} (first_firing)"
    assert rooted.details["previous"] is None and rooted.details["reason"] == "earliest"
    assert rooted.details["root_cause"]["component"] == DB and rooted.details["paths"] == [PATH]
    assert rooted.snapshot.root_cause == ROOT and rooted.snapshot.members == [member]
    assert [e.seq for e in of(d, primary)] == [1, 2, 3]


def test_a_late_upstream_alert_re_roots_and_records_the_previous_root() -> None:
    d = Driver(config(FAST))
    (primary,) = opened(d, "A")
    linker(d, OperatorAction.ROOT_CAUSE, primary, "root:1", root_cause=ROOT)
    later = ROOT.model_copy(update={"component": '{cluster="prod"}host/db-1', "kind": "host", "name": "db-1"})
    linker(d, OperatorAction.ROOT_CAUSE, primary, "root:2", root_cause=later)
    d.commit()
    last = of(d, primary)[-1]
    assert last.details["previous"] == DB and last.cause.endswith(f", was {DB}")
    assert last.snapshot.root_cause is not None and last.snapshot.root_cause.name == "db-1"


def test_replayed_command_ids_are_ignored() -> None:
    d = Driver(config(FAST))
    primary, member = opened(d, "A", "B")
    link(d, member, primary)
    link(d, member, primary)  # the linker's transaction replayed after a crash: same ids
    d.commit()
    assert [e.type.value for e in d.events[2:]] == ["linked", "member_added"]
    assert d.engine.stats["commands_duplicate"] == 2


def test_commands_that_cannot_apply_are_refused_and_change_nothing() -> None:
    d = Driver(config(FAST))
    primary, member, other = opened(d, "A", "B", "C")
    link(d, member, primary)
    d.commit()
    first = len(d.events)
    linker(d, OperatorAction.LINK, other, "r1", link_into=other)
    linker(d, OperatorAction.LINK, other, "r2", link_into="not-an-incident")
    linker(d, OperatorAction.LINK, member, "r3", link_into=primary)
    linker(d, OperatorAction.LINK_MEMBER, member, "r4", member=other)
    linker(d, OperatorAction.LINK_MEMBER, primary, "r5", member=member)
    linker(d, OperatorAction.UNLINK, other, "r6")
    linker(d, OperatorAction.UNLINK_MEMBER, primary, "r7", member=other)
    linker(d, OperatorAction.ROOT_CAUSE, member, "r8", root_cause=ROOT)
    linker(d, OperatorAction.ROOT_CAUSE, primary, "r9")
    d.commit()
    refused = d.events[first:]
    assert [e.type.value for e in refused] == ["refused"] * 9
    assert [e.cause for e in refused] == [
        f"cannot link into {other}: an incident is not linked to itself",
        "cannot link into 'not-an-incident': give another incident id",
        f"already linked into {primary}",
        f"{member} is a member of {primary}; only a primary has members",
        f"{member} is already a member",
        f"{other} is not linked into another incident",
        f"{other} is not a member of {primary}",
        f"{member} is a member of {primary}; its primary has the root cause",
        "root_cause needs a root_cause",
    ]
    assert refused[0].details == {"command_id": "r1", "action": "link", "reason": refused[0].cause}
    assert all(e.actor == "linker" for e in refused)
    assert refused[-1].snapshot.members == [member] and refused[-1].snapshot.root_cause is None


def test_a_closed_incident_refuses_linking() -> None:
    d = Driver(config(FAST))
    primary, member = opened(d, "A", "B")
    d.command(OperatorAction.MERGE, member, merge_into=primary, command_id="m1")
    link(d, member, primary)
    d.commit()
    events = of(d, member)
    assert [e.type.value for e in events] == ["opened", "merged", "refused"]
    assert events[-1].cause == f"incident {member} is closed; only annotate is allowed"


def test_an_operator_splits_a_member_out() -> None:
    d = Driver(config(FAST))
    primary, member = opened(d, "A", "B")
    link(d, member, primary)
    d.command(OperatorAction.UNLINK, member, by="alice", command_id="s1", reason="split by an operator")
    d.command(OperatorAction.UNLINK_MEMBER, primary, by="alice", command_id="s2", member=member)
    d.commit()
    unlinked, left = of(d, member)[-1], of(d, primary)[-1]
    assert (unlinked.type.value, unlinked.actor) == ("unlinked", "operator:alice")
    assert unlinked.details["linked_from"] == primary and unlinked.snapshot.linked_into is None
    assert (left.type.value, left.details["member"], left.snapshot.members) == ("unlinked", member, [])


def test_a_primary_linked_into_another_hands_over_members_and_root() -> None:
    d = Driver(config(FAST))
    first, second, member = opened(d, "A", "B", "C")
    link(d, member, second)
    linker(d, OperatorAction.ROOT_CAUSE, second, "root:1", root_cause=ROOT)
    link(d, second, first)
    d.commit()
    moved = of(d, second)[-1]
    assert moved.type.value == "linked" and moved.details["members"] == [member]
    assert moved.snapshot.members == [] and moved.snapshot.root_cause is None
    assert moved.snapshot.linked_into == first


def test_restore_keeps_links_members_and_root_cause() -> None:
    d = Driver(config(FAST))
    primary, member = opened(d, "A", "B")
    link(d, member, primary)
    linker(d, OperatorAction.ROOT_CAUSE, primary, "root:1", root_cause=ROOT)
    d.commit()
    before = {g.gkhash: g.incident for g in d.engine.state.groups.values()}
    d.restart()
    after = {g.gkhash: g.incident for g in d.engine.state.groups.values()}
    assert after == before
    link(d, member, primary)  # replayed after the restore: still known
    d.command(OperatorAction.ANNOTATE, primary, note="db team paged", command_id="n1")
    d.commit()
    last = d.events[-1]
    assert last.type.value == "annotated" and last.snapshot.members == [member]
    assert last.snapshot.root_cause == ROOT


def test_an_unlinked_incident_encodes_as_before_and_old_records_decode() -> None:
    inc = IncidentRuntime("i", IncidentState.OPEN, 1)
    assert len(inc.to_obj()) == 19  # no linking fields: the record older versions wrote
    assert IncidentRuntime.from_obj(inc.to_obj()) == inc
    inc.members = ["m"]
    inc.root_cause = ROOT.model_dump(mode="json", exclude={"schema_version"})
    group = GroupState("g", "{}", "r", {}, incident=inc)
    assert GroupState.decode_meta("g", group.encode_meta()).incident == inc


def test_projection_json_and_tables_show_members_and_root_cause() -> None:
    d = Driver(config(FAST))
    primary, member = opened(d, "A", "B")
    link(d, member, primary)
    linker(d, OperatorAction.ROOT_CAUSE, primary, "root:1", root_cause=ROOT)
    d.commit()
    projection = IncidentProjection()
    for event in d.events:
        projection.apply(event)
    p, m = projection.get(primary), projection.get(member)
    assert p is not None and m is not None
    assert (p.members, p.root_cause, m.linked_into) == ([member], ROOT, primary)
    summary = to_summary(p)
    assert list(summary)[-4:] == ["linked_into", "members", "root_cause", "muted"]
    assert summary["members"] == [member] and summary["root_cause"]["component"] == DB
    assert "schema_version" not in summary["root_cause"]
    assert to_summary(m)["linked_into"] == primary and to_summary(m)["root_cause"] is None
    now = datetime(2027, 1, 1, tzinfo=UTC)
    table = cli.render_incident_table([p, m], now)
    assert "ROOT CAUSE" in table and "database/orders" in table and f"-> {primary}" in table
    timeline = cli.render_timeline(p, projection.timeline(primary), now)
    assert f"members (1): {member}" in timeline and f"root cause {DB} (first_firing" in timeline
    assert f"linked into {primary}" in cli.render_timeline(m, projection.timeline(member), now)


def test_the_contract_carries_the_decision_payload() -> None:
    cmd = OperatorCommand(
        command_id="c",
        action=OperatorAction.ROOT_CAUSE,
        incident_id="x",
        by="linker",
        at=datetime(2027, 1, 1, tzinfo=UTC),
        root_cause=ROOT,
        paths=[PATH],
    )
    assert OperatorCommand.from_bytes(cmd.to_bytes()) == cmd
