"""The incidents/timeline/operator/silence commands against a real broker.

Hand-built incident events go to a fresh incident topic through a transactional producer (so
the log ends in transaction markers and holds an aborted batch that must stay invisible); the
commands' output is checked through their handlers, and published commands are read back.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import xxhash
from confluent_kafka.admin import AdminClient, NewTopic

import stormwatch.cli
from stormwatch.commands import incidents, operator, silences
from stormwatch.config import Settings, load_settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import make_producer, produce_sync, read_topic
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.projection import SUMMARY_KEYS

pytestmark = pytest.mark.kafka

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
INC1 = "inc-00000000000000a1-1"
INC2 = "inc-00000000000000b2-1"
INC3 = "inc-00000000000000c3-1"  # has a gap in its seqs
OUR_MODULES = [
    "stormwatch.commands.incidents",
    "stormwatch.commands.operator",
    "stormwatch.commands.silences",
]


@pytest.fixture(scope="module")
def cli_settings(bootstrap: str) -> Iterator[Settings]:
    """Settings whose incident, command and silence topics exist only for this module."""
    suffix = uuid.uuid4().hex[:10]
    names = {
        "incidents": f"it.incidents.{suffix}",
        "commands": f"it.commands.{suffix}",
        "silences": f"it.silences.{suffix}",
    }
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [
        NewTopic(names["incidents"], 3, 1),
        NewTopic(names["commands"], 3, 1),
        NewTopic(names["silences"], 1, 1, config={"cleanup.policy": "compact"}),
    ]
    for future in admin.create_topics(new, operation_timeout=15).values():
        future.result(timeout=20)
    try:
        yield load_settings(kafka={"bootstrap_servers": bootstrap}, topics=names)
    finally:
        for future in admin.delete_topics(list(names.values()), operation_timeout=15).values():
            future.result(timeout=20)


def _event(
    incident_id: str, seq: int, etype: IncidentEventType, state: IncidentState, **snap: object
) -> IncidentEvent:
    opened = T0 + timedelta(minutes=30 if incident_id == INC2 else 0)
    host = incident_id.split("-")[1][-4:]
    snapshot: dict[str, object] = {
        "state": state,
        "severity": Severity.ERROR,
        "title": f"DiskFull on {host}",
        "group_key": f'{{host="{host}"}}',
        "group_labels": {"host": host},
        "rule": "by-host",
        "alert_count": 1,
        "firing_count": 1 if state is not IncidentState.RESOLVED else 0,
        "opened_at": opened,
    }
    snapshot.update(snap)
    alerts = []
    if seq == 1:
        alerts.append(
            AlertChange(
                fingerprint=f"fp-{host}",
                change=AlertChangeKind.JOINED,
                status=AlertStatus.FIRING,
                severity=Severity.ERROR,
                at=opened,
                labels={"alertname": "DiskFull", "host": host},
            )
        )
    return IncidentEvent(
        event_id=xxhash.xxh3_128_hexdigest(f"{incident_id}:{seq}".encode()),
        incident_id=incident_id,
        seq=seq,
        type=etype,
        from_state=None if seq == 1 else IncidentState.OPEN,
        to_state=state,
        at=opened + timedelta(minutes=seq),
        actor="operator:alice" if etype is IncidentEventType.ACKNOWLEDGED else "correlator",
        cause=f"{etype.value} (integration test)",
        rule="by-host",
        alerts=alerts,
        details={"note": "disk cleaned"} if etype is IncidentEventType.ANNOTATED else {},
        snapshot=IncidentSnapshot.model_validate(snapshot),
    )


ACKED = {"acknowledged_at": T0 + timedelta(minutes=2)}
LOG1 = [
    _event(INC1, 1, IncidentEventType.OPENED, IncidentState.OPEN),
    _event(INC1, 2, IncidentEventType.ACKNOWLEDGED, IncidentState.ACKNOWLEDGED, **ACKED),
    _event(INC1, 3, IncidentEventType.ANNOTATED, IncidentState.ACKNOWLEDGED, **ACKED),
    _event(
        INC1,
        4,
        IncidentEventType.RESOLVED,
        IncidentState.RESOLVED,
        **ACKED,
        resolved_at=T0 + timedelta(minutes=4),
    ),
]
LOG2 = [_event(INC2, 1, IncidentEventType.OPENED, IncidentState.OPEN)]
LOG3 = [
    _event(INC3, 1, IncidentEventType.OPENED, IncidentState.OPEN),
    _event(INC3, 3, IncidentEventType.UPDATED, IncidentState.OPEN),
]
ABORTED = _event(INC2, 2, IncidentEventType.RESOLVED, IncidentState.RESOLVED)


@pytest.fixture(scope="module")
def audit_log(cli_settings: Settings) -> list[IncidentEvent]:
    """Write the hand-built log: committed events, one re-delivered event, one aborted batch."""
    topic = cli_settings.topics.incidents
    producer = make_producer(cli_settings, transactional_id=f"it-incidents-{uuid.uuid4().hex}")
    producer.init_transactions(20)
    producer.begin_transaction()
    for e in [*LOG1[:2], *LOG2, *LOG3]:
        producer.produce(topic, key=e.incident_id, value=e.to_bytes())
    producer.commit_transaction(20)
    producer.begin_transaction()
    producer.produce(topic, key=ABORTED.incident_id, value=ABORTED.to_bytes())
    producer.abort_transaction(20)
    producer.begin_transaction()
    for e in [LOG1[1], *LOG1[2:]]:  # LOG1[1] again: an at-least-once re-delivery
        producer.produce(topic, key=e.incident_id, value=e.to_bytes())
    producer.commit_transaction(20)
    return [*LOG1, *LOG2, *LOG3]


def run(argv: list[str], settings: Settings) -> int:
    """Run one of this module's commands through its handler, as stormwatch.cli.main would."""
    parser = argparse.ArgumentParser(prog="stormwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (incidents, operator, silences):
        module.register(sub)
    args = parser.parse_args(argv)
    code: int = args.handler(args, settings)
    return code


def test_incidents_json_lists_summaries_newest_first(
    cli_settings: Settings, audit_log: list[IncidentEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["incidents", "--json"], cli_settings) == 0
    out, err = capsys.readouterr()
    summaries = orjson.loads(out)
    # newest first; INC1 and INC3 opened at the same time, so the id breaks the tie
    assert [s["incident_id"] for s in summaries] == [INC2, INC3, INC1]
    for s in summaries:
        assert tuple(s) == SUMMARY_KEYS
    by_id = {s["incident_id"]: s for s in summaries}
    assert by_id[INC2]["state"] == "open"  # the aborted "resolved" event is invisible
    assert by_id[INC1] == {
        "incident_id": INC1,
        "state": "resolved",
        "severity": "error",
        "title": "DiskFull on 00a1",
        "group_key": '{host="00a1"}',
        "rule": "by-host",
        "alert_count": 1,
        "firing_count": 0,
        "opened_at": T0.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "acknowledged_at": (T0 + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "resolved_at": (T0 + timedelta(minutes=4)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "closed_at": None,
        "assignee": None,
        "reopen_count": 0,
        "last_seq": 4,
        "linked_into": None,
        "members": [],
        "muted": 0,
        "root_cause": None,
    }
    assert f"{INC3} seq 3: gap: seq 2 missing" in err
    assert "ignored 1 duplicate event(s)" in err
    assert err.startswith("stormwatch incidents: warning: ")


def test_incidents_state_filter_and_limit(
    cli_settings: Settings, audit_log: list[IncidentEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    run(["incidents", "--json", "--state", "resolved", "acknowledged"], cli_settings)
    assert [s["incident_id"] for s in orjson.loads(capsys.readouterr().out)] == [INC1]
    run(["incidents", "--json", "--state", "open", "--limit", "1"], cli_settings)
    assert [s["incident_id"] for s in orjson.loads(capsys.readouterr().out)] == [INC2]
    run(["incidents", "--json", "--state", "closed"], cli_settings)
    assert orjson.loads(capsys.readouterr().out) == []


def test_incidents_table(
    cli_settings: Settings, audit_log: list[IncidentEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    run(["incidents", "--limit", "2"], cli_settings)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("INCIDENT")
    assert lines[1].startswith(INC2) and "open" in lines[1] and "DiskFull on 00b2" in lines[1]
    assert lines[-1] == "showing the 2 newest of 3 incidents; raise --limit to see more"
    run(["incidents", "--state", "closed"], cli_settings)
    assert capsys.readouterr().out.startswith(
        f"no incidents in state closed in {cli_settings.topics.incidents}"
    )


def test_timeline_json_is_every_event_in_seq_order(
    cli_settings: Settings, audit_log: list[IncidentEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["timeline", INC1, "--json"], cli_settings) == 0
    out, err = capsys.readouterr()
    events = orjson.loads(out)
    assert [e["seq"] for e in events] == [1, 2, 3, 4]
    assert events == [e.model_dump(mode="json") for e in LOG1]
    assert "duplicate" in err  # the re-delivered seq 2
    run(["timeline", INC2, "--json"], cli_settings)
    assert [e["type"] for e in orjson.loads(capsys.readouterr().out)] == ["opened"]


def test_timeline_table(
    cli_settings: Settings, audit_log: list[IncidentEvent], capsys: pytest.CaptureFixture[str]
) -> None:
    run(["timeline", INC1], cli_settings)
    out = capsys.readouterr().out
    assert out.startswith(f"{INC1}  DiskFull on 00a1")
    assert "note: disk cleaned" in out
    assert "open -> acknowledged" in out and "operator:alice" in out


def test_timeline_of_an_unknown_incident(cli_settings: Settings, audit_log: list[IncidentEvent]) -> None:
    missing = "inc-00000000000000ff-1"
    with pytest.raises(UserError) as info:
        run(["timeline", missing], cli_settings)
    assert str(info.value) == (
        f"no incident {missing} in topic {cli_settings.topics.incidents}; "
        "list them with `stormwatch incidents`"
    )


def _commands(settings: Settings) -> list[tuple[bytes | None, OperatorCommand]]:
    return [
        (m.key(), OperatorCommand.from_bytes(m.value() or b""))
        for m in read_topic(settings, settings.topics.commands)
    ]


def test_ack_publishes_a_well_formed_command(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    before = datetime.now(UTC)
    assert run(["ack", INC2, "--by", "bob", "--note", "on it", "--no-wait"], cli_settings) == 0
    command_id = capsys.readouterr().out.strip()
    uuid.UUID(command_id)  # a uuid4 by default
    found = [(k, c) for k, c in _commands(cli_settings) if c.command_id == command_id]
    assert len(found) == 1
    key, cmd = found[0]
    assert key == INC2.encode()
    assert cmd.action is OperatorAction.ACKNOWLEDGE
    assert (cmd.incident_id, cmd.by, cmd.note) == (INC2, "bob", "on it")
    assert before <= cmd.at <= datetime.now(UTC)

    merge = ["merge", INC3, "--into", INC2, "--by", "bob", "--command-id", "merge-1", "--no-wait"]
    assert run(merge, cli_settings) == 0
    assert capsys.readouterr().out.strip() == "merge-1"
    merged = [c for _, c in _commands(cli_settings) if c.command_id == "merge-1"]
    assert [(c.action, c.incident_id, c.merge_into) for c in merged] == [(OperatorAction.MERGE, INC3, INC2)]


def test_silence_add_and_expire_publish_commands(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["silence", "add", "alertname=DiskFull", 'host=~"00.*"', "--duration", "2h"]
    assert run([*argv, "--by", "ops", "--comment", "cleanup", "--id", "sil-it-1"], cli_settings) == 0
    assert capsys.readouterr().out.strip() == "sil-it-1"
    assert run(["silence", "expire", "sil-it-1", "--by", "ops"], cli_settings) == 0
    expire_id = capsys.readouterr().out.strip()
    published = [(k, c) for k, c in _commands(cli_settings) if k == b"sil-it-1"]
    assert [c.action for _, c in published] == [OperatorAction.SILENCE_ADD, OperatorAction.SILENCE_EXPIRE]
    added = published[0][1].silence
    assert added is not None and added.silence_id == "sil-it-1"
    assert [str(m) for m in added.matchers] == ['alertname="DiskFull"', 'host=~"00.*"']
    assert added.ends_at - added.starts_at == timedelta(hours=2)
    assert (published[1][1].silence_id, published[1][1].command_id) == ("sil-it-1", expire_id)


def test_silence_list_reads_the_compacted_topic(
    cli_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)

    def silence(sid: str, ends: timedelta) -> Silence:
        return Silence(
            silence_id=sid,
            matchers=[Matcher.parse("alertname=X")],
            starts_at=now - timedelta(hours=3),
            ends_at=now + ends,
            created_by="ops",
            comment=f"silence {sid}",
        )

    producer = make_producer(cli_settings)
    topic = cli_settings.topics.silences
    produce_sync(producer, topic, "active", silence("active", timedelta(hours=1)).to_bytes())
    produce_sync(producer, topic, "over", silence("over", -timedelta(hours=1)).to_bytes())
    produce_sync(producer, topic, "deleted", silence("deleted", timedelta(hours=1)).to_bytes())
    produce_sync(producer, topic, "deleted", None)  # tombstone
    produce_sync(producer, topic, "active", silence("active", timedelta(hours=2)).to_bytes())  # latest wins

    run(["silence", "list", "--json"], cli_settings)
    listed = orjson.loads(capsys.readouterr().out)
    assert [(s["silence_id"], s["state"]) for s in listed] == [("active", "active")]
    assert Silence.model_validate(
        {k: v for k, v in listed[0].items() if k != "state"}
    ).ends_at > now + timedelta(minutes=119)
    run(["silence", "list", "--all", "--json"], cli_settings)
    assert sorted(s["silence_id"] for s in orjson.loads(capsys.readouterr().out)) == ["active", "over"]
    run(["silence", "list"], cli_settings)
    out = capsys.readouterr().out
    assert out.startswith("SILENCE") and "active" in out and 'alertname="X"' in out and "over" not in out


def test_cli_main_end_to_end(
    cli_settings: Settings,
    audit_log: list[IncidentEvent],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(stormwatch.cli, "COMMAND_MODULES", OUR_MODULES)
    monkeypatch.setenv("STORMWATCH_TOPICS__INCIDENTS", cli_settings.topics.incidents)
    servers = ["--bootstrap-servers", cli_settings.kafka.bootstrap_servers]
    assert stormwatch.cli.main([*servers, "incidents", "--json", "--state", "resolved"]) == 0
    assert [s["incident_id"] for s in orjson.loads(capsys.readouterr().out)] == [INC1]

    monkeypatch.setenv("STORMWATCH_TOPICS__INCIDENTS", f"it.missing.{uuid.uuid4().hex[:8]}")
    assert stormwatch.cli.main([*servers, "incidents"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("stormwatch incidents: error: topic it.missing.") and "does not exist" in err


def test_unreachable_kafka_is_one_actionable_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stormwatch.cli, "COMMAND_MODULES", OUR_MODULES)
    code = stormwatch.cli.main(["--bootstrap-servers", "127.0.0.1:1", "ack", INC1, "--by", "x"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in err and "make kafka-up" in err
