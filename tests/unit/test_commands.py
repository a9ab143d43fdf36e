"""Operator commands and mitigation results: one handler per action, each outcome an audit event."""

from __future__ import annotations

from datetime import UTC, datetime

from stormwatch.schemas.commands import CommandResult, CommandStatus, OperatorAction
from stormwatch.schemas.incident import IncidentState
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core import commands, wire
from tests.kit.engine import Driver, at, config, iso, note

FAST = """
defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 1s
state_time_resolution: 1s
"""


def opened(d: Driver, *names: str) -> list[str]:
    d.alerts([note({"alertname": name, "service": "db"}, at(0)) for name in names])
    d.tick(at(40))
    d.commit()
    return [e.incident_id for e in sorted(d.of_type("opened"), key=lambda e: e.snapshot.title)]


def test_every_operator_action_has_exactly_one_handler() -> None:
    incident, partition = set(commands._INCIDENT_HANDLERS), set(commands._PARTITION_HANDLERS)
    assert incident | partition == set(OperatorAction)
    assert not incident & partition


def test_a_merged_incident_refuses_everything_but_annotations() -> None:
    d = Driver(config(FAST))
    a, b = opened(d, "A", "B")
    d.command(OperatorAction.MERGE, a, merge_into=b, command_id="m1")
    d.command(OperatorAction.ASSIGN, a, assignee="bob", command_id="c1")
    d.command(OperatorAction.ACKNOWLEDGE, a, command_id="c2")
    d.command(OperatorAction.ANNOTATE, a, note="merged by mistake?", command_id="c3")
    d.commit()
    events = [e for e in d.events if e.incident_id == a]
    assert [e.type.value for e in events] == ["opened", "merged", "refused", "refused", "annotated"]
    assert all(e.to_state is IncidentState.CLOSED for e in events[1:])
    assert events[2].cause == f"incident {a} is closed; only annotate is allowed"
    assert events[3].details["action"] == "acknowledge" and "closed is final" in events[3].cause
    assert events[4].details == {"command_id": "c3", "note": "merged by mistake?"}


def test_a_merge_needs_another_incident_to_merge_into() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    d.command(OperatorAction.MERGE, a, merge_into=a, command_id="m1")
    d.command(OperatorAction.MERGE, a, merge_into="not-an-incident", command_id="m2")
    out = d.commit()
    refused = d.of_type("refused")
    assert [e.cause for e in refused] == [
        f"cannot merge into {a!r}: give another incident id",
        "cannot merge into 'not-an-incident': give another incident id",
    ]
    assert out.feedback == [] and d.events[-1].to_state is IncidentState.OPEN


def test_commands_missing_what_they_need_are_refused_with_the_reason() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    d.command(OperatorAction.ASSIGN, a, command_id="c1")
    d.command(OperatorAction.ANNOTATE, a, command_id="c2")
    d.command(OperatorAction.SET_SEVERITY, a, command_id="c3")
    d.commit()
    assert [e.cause for e in d.of_type("refused")] == [
        "assign needs an assignee",
        "annotate needs a note",
        "set_severity needs a severity",
    ]
    assert d.engine.stats["commands_refused"] == 3


def silence_add(d: Driver, silence_id: str) -> None:
    d.command(
        OperatorAction.SILENCE_ADD,
        silence=Silence(
            silence_id=silence_id,
            matchers=[Matcher.parse('service="db"')],
            starts_at=iso(at(0)),
            ends_at=iso(at(3600)),
            created_by="alice",
        ),
    )


def test_only_partition_zero_publishes_silences_and_reports_unknown_ones() -> None:
    for partition in (0, 1):
        d = Driver(config(FAST), partition=partition)
        silence_add(d, "s1")
        d.command(OperatorAction.SILENCE_EXPIRE, silence_id="s1")
        d.command(OperatorAction.SILENCE_EXPIRE, silence_id="s1")  # already expired: nothing more
        d.command(OperatorAction.SILENCE_EXPIRE, silence_id="nope")
        out = d.commit()
        assert [key for key, _ in out.silences] == (["s1", "s1"] if partition == 0 else [])
        assert len(out.dead_letters) == (1 if partition == 0 else 0)
        assert d.engine.silences.by_id["s1"].expired_at is not None  # every partition applies it


def result(incident_id: str, status: CommandStatus, command_id: str = "r1") -> bytes:
    res = CommandResult(
        command_id=command_id,
        incident_id=incident_id,
        workflow="restart-db",
        step="restart",
        action="restart_pod",
        status=status,
        at=datetime(2027, 1, 1, tzinfo=UTC),
        actor="agent:restart-db",
        target="db-0",
    )
    return wire.encode_result(res.to_bytes())


def test_a_started_mitigation_moves_the_incident_to_mitigating_and_repeats_are_ignored() -> None:
    d = Driver(config(FAST))
    (a,) = opened(d, "A")
    d.write(result(a, CommandStatus.STARTED))
    d.write(result(a, CommandStatus.STARTED))  # redelivered
    d.write(result(a, CommandStatus.SUCCEEDED))
    d.write(result("inc-0000000000000000-1", CommandStatus.SUCCEEDED))
    out = d.commit()
    kinds = [(e.type.value, e.to_state) for e in d.events[1:]]
    assert kinds == [("mitigating", IncidentState.MITIGATING), ("mitigation", IncidentState.MITIGATING)]
    assert d.events[1].details == {
        "command_id": "r1",
        "workflow": "restart-db",
        "step": "restart",
        "action": "restart_pod",
        "status": "started",
        "target": "db-0",
    }
    assert [dl.reason.value for dl in out.dead_letters] == ["unknown_incident"]
