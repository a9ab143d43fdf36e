"""The mitigation agent and executors against a real broker.

Incident events are produced straight to the (per-test) incident topic, built with the schemas,
so these tests exercise the agent, the executors and the operator commands without a correlator.
The agent and executor run in threads of the test process here; tests/integration/
test_agent_crash.py runs them as subprocesses and SIGKILLs them.
"""

from __future__ import annotations

import argparse
import json
import stat
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stormwatch.agents.agent import AgentStage, build_agent_loop
from stormwatch.agents.core.approvals import Decision
from stormwatch.agents.core.planner import Planner
from stormwatch.agents.core.workflow import parse_workflows
from stormwatch.agents.executor import ExecutorStage, build_executor_loop
from stormwatch.agents.executors import ExecutorPolicy, available_executors, create_executors
from stormwatch.commands.agent import run_approvals
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.txloop import TransactionalLoop
from stormwatch.schemas.commands import CommandStatus, MitigationCommand
from stormwatch.schemas.incident import IncidentEventType
from tests.kit.agents import (
    by_status,
    commands,
    decide,
    incident_event,
    incident_id,
    produce,
    publish_events,
    results,
)
from tests.kit.loops import running
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.kafka]


# ---------------------------------------------------------------------------------------------- kit


def agent(settings: Settings, workflows: str) -> TransactionalLoop:
    config = parse_workflows(textwrap.dedent(workflows), executors=available_executors())
    planner = Planner(config, dispatch_timeout_ms=60_000)
    return build_agent_loop(settings, AgentStage(settings, planner))


def executor(
    settings: Settings, *, programs: tuple[str, ...] = (), instance: str = "x1"
) -> TransactionalLoop:
    policy = ExecutorPolicy(allow_programs=programs, kafka=settings.kafka)
    stage = ExecutorStage(settings, create_executors(policy), instance=instance)
    return build_executor_loop(settings, stage, instance)


def recorder(tmp_path: Path) -> tuple[str, Path]:
    """An allowlisted script that appends each of its arguments, bracketed, as one line."""
    out = tmp_path / "calls.log"
    script = tmp_path / "record.sh"
    script.write_text(
        f'#!/bin/sh\nline=""\nfor a in "$@"; do line="$line[$a]"; done\necho "$line" >> {out}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), out


@pytest.fixture
def agent_settings(settings: Settings) -> Settings:
    """Settings with unique, created topics (the approvals topic included)."""
    return settings


# ---------------------------------------------------------------------------------------------- tests

ROUTING = """
workflows:
  - name: restart-crashloop
    trigger: {events: [opened]}
    conditions: {match: ['alertname="CrashLoop"']}
    steps:
      - name: restart
        action: exec
        target: "{{ labels.service }}"
        params:
          argv: ["PROGRAM", "restart", "{{ labels.service }}", "{{ incident.id }}"]
        approval: {required: false, reason: "the test's recorder script"}
  - name: page-on-disk-full
    trigger: {events: [opened]}
    conditions: {match: ['alertname="DiskFull"']}
    steps:
      - {name: page, action: log, params: {message: "disk full on {{ labels.host }}"}}
"""


def test_incident_triggers_the_right_workflow_and_command(agent_settings: Settings, tmp_path: Path) -> None:
    program, calls = recorder(tmp_path)
    iid = incident_id()
    other = incident_id()
    publish_events(
        agent_settings,
        [
            incident_event(
                iid, 1, IncidentEventType.OPENED, labels={"alertname": "CrashLoop", "service": "cart"}
            ),
            incident_event(other, 1, IncidentEventType.OPENED, labels={"alertname": "Unrelated"}),
        ],
    )
    with (
        running(agent(agent_settings, ROUTING.replace("PROGRAM", program))),
        running(executor(agent_settings, programs=(program,))),
    ):
        done = wait_for(
            "the command to succeed", lambda: by_status(results(agent_settings), CommandStatus.SUCCEEDED)
        )
    [cmd] = commands(agent_settings)
    assert (cmd.incident_id, cmd.workflow, cmd.step, cmd.action, cmd.target) == (
        iid,
        "restart-crashloop",
        "restart",
        "exec",
        "cart",
    )
    assert cmd.params == {"argv": [program, "restart", "cart", iid]}
    assert calls.read_text() == f"[restart][cart][{iid}]\n"
    found = results(agent_settings)
    assert [r.status for r in found if r.command_id == cmd.command_id] == [
        CommandStatus.REQUESTED,
        CommandStatus.STARTED,
        CommandStatus.SUCCEEDED,
    ]
    assert done[0].actor == "executor:x1" and done[0].duration_s is not None
    assert all(r.incident_id == iid for r in found)  # the unrelated incident triggered nothing


RATE_LIMITED = """
workflows:
  - name: restart
    trigger: {events: [opened]}
    steps:
      - name: restart
        action: log
        target: "{{ labels.service }}"
        params: {message: "restart {{ labels.service }}"}
        guards:
          rate_limit: {max: 3, per: 1h}
"""


def test_guard_refuses_the_fourth_restart_within_the_hour(agent_settings: Settings) -> None:
    """Two restarts before an agent restart and two after: the guard's history survives it."""
    ids = [incident_id() for _ in range(4)]
    for batch in (ids[:2], ids[2:]):
        with running(agent(agent_settings, RATE_LIMITED)):
            for iid in batch:  # one at a time, so "the fourth" is well defined
                publish_events(
                    agent_settings,
                    [incident_event(iid, 1, IncidentEventType.OPENED, labels={"service": "checkout"})],
                )
                wait_for(
                    f"a decision for {iid}",
                    lambda iid=iid: [r for r in results(agent_settings) if r.incident_id == iid],
                )
    found = {r.incident_id: r for r in results(agent_settings)}  # one result per incident
    assert [found[i].status for i in ids] == [CommandStatus.REQUESTED] * 3 + [CommandStatus.REFUSED]
    refused = found[ids[3]]
    assert refused.target == "checkout"
    assert refused.reason is not None
    assert refused.reason.startswith("rate limit: log on 'checkout' already ran 3 time(s) in the last 1h")
    assert len(commands(agent_settings)) == 3


APPROVAL = """
workflows:
  - name: restart
    trigger: {events: [opened]}
    steps:
      - name: restart
        action: log
        target: "{{ labels.service }}"
        params: {message: "restart {{ labels.service }}"}
        approval: required
        approval_ttl: 4s
"""


def test_approval_granted_denied_and_expired(
    agent_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = {"service": "payments", "env": "production"}
    approve, deny, expire = incident_id(), incident_id(), incident_id()
    with running(agent(agent_settings, APPROVAL)):
        publish_events(
            agent_settings,
            [incident_event(i, 1, IncidentEventType.OPENED, labels=labels) for i in (approve, deny, expire)],
        )
        asked = wait_for(
            "three approval requests",
            lambda: len(r := by_status(results(agent_settings), CommandStatus.AWAITING_APPROVAL)) == 3 and r,
        )
        assert commands(agent_settings) == []
        ids = {r.incident_id: r.command_id for r in asked}
        capsys.readouterr()
        assert run_approvals(argparse.Namespace(json=True), agent_settings) == 0
        listed = json.loads(capsys.readouterr().out)
        assert sorted(p["command_id"] for p in listed) == sorted(ids.values())
        assert {p["target"] for p in listed} == {"payments"} and {p["action"] for p in listed} == {"log"}
        assert run_approvals(argparse.Namespace(json=False), agent_settings) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split() == [
            "COMMAND_ID",
            "INCIDENT",
            "WORKFLOW/STEP",
            "ACTION",
            "TARGET",
            "EXPIRES",
            "(UTC)",
            "TITLE",
        ]
        assert sorted(line.split()[0] for line in table[1:]) == sorted(ids.values())
        decide(agent_settings, ids[approve], Decision.APPROVE, "alice", "go ahead")
        decide(agent_settings, ids[deny], Decision.DENY, "bob", "not during the sale")
        wait_for(
            "the expiry", lambda: by_status(results(agent_settings), CommandStatus.EXPIRED), timeout_s=30
        )
        with pytest.raises(UserError, match="is not awaiting approval"):
            decide(agent_settings, ids[expire], Decision.APPROVE, "carol", "too late")
    found = {(r.incident_id, r.status): r for r in results(agent_settings)}
    approved = found[(approve, CommandStatus.APPROVED)]
    assert approved.actor == "operator:alice" and approved.reason == "go ahead"
    assert (approve, CommandStatus.REQUESTED) in found
    [cmd] = commands(agent_settings)
    assert cmd.incident_id == approve and cmd.requires_approval and cmd.command_id == ids[approve]
    denied = found[(deny, CommandStatus.DENIED)]
    assert denied.actor == "operator:bob" and denied.reason == "not during the sale"
    expired = found[(expire, CommandStatus.EXPIRED)]
    assert expired.reason is not None and "nobody approved or denied it in time" in expired.reason
    assert (deny, CommandStatus.REQUESTED) not in found and (expire, CommandStatus.REQUESTED) not in found


INJECTION = """
workflows:
  - name: restart
    trigger: {events: [opened]}
    steps:
      - name: restart
        action: exec
        target: "{{ labels.service }}"
        params:
          argv: ["PROGRAM", "{{ labels.service }}", "{{ incident.title }}"]
        approval: {required: false, reason: "the test's recorder script"}
"""


def test_templated_parameters_cannot_make_exec_run_a_shell(agent_settings: Settings, tmp_path: Path) -> None:
    program, calls = recorder(tmp_path)
    marker = tmp_path / "pwned"
    evil_service = f"; touch {marker} #"
    evil_title = f"$(touch {marker}) `touch {marker}` && touch {marker}"
    iid = incident_id()
    publish_events(
        agent_settings,
        [
            incident_event(
                iid, 1, IncidentEventType.OPENED, labels={"service": evil_service}, title=evil_title
            )
        ],
    )
    # Commands that did not come from a workflow: a shell, and a program off the allowlist.
    crafted = [
        MitigationCommand(
            command_id=uuid.uuid4().hex,
            incident_id=iid,
            workflow="forged",
            step="s",
            action="exec",
            params={"argv": argv},
            created_at=datetime.now(UTC),
        )
        for argv in (["/bin/sh", "-c", f"touch {marker}"], [str(tmp_path / "other.sh")])
    ]
    produce(
        agent_settings,
        agent_settings.topics.mitigation_commands,
        [(c.incident_id, c.to_bytes()) for c in crafted],
    )
    with (
        running(agent(agent_settings, INJECTION.replace("PROGRAM", program))),
        running(executor(agent_settings, programs=(program,))),
    ):
        wait_for(
            "three final results",
            lambda: (
                len(
                    [
                        r
                        for r in results(agent_settings)
                        if r.status in (CommandStatus.SUCCEEDED, CommandStatus.FAILED)
                    ]
                )
                == 3
            ),
        )
    assert calls.read_text() == f"[{evil_service}][{evil_title}]\n"  # exactly two literal arguments
    assert not marker.exists()
    reasons = sorted(r.reason or "" for r in results(agent_settings) if r.status is CommandStatus.FAILED)
    assert len(reasons) == 2 and all(r.startswith("refused: ") for r in reasons)
    assert any("shell" in r for r in reasons) and any("not on the allowlist" in r for r in reasons)
