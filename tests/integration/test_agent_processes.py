"""The agent and executor as real `stormwatch` processes: SIGKILL them mid-workflow and check that
no step ever runs twice, and that a bad workflow file is refused before anything starts."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from stormwatch.agents.core.approvals import Decision
from stormwatch.agents.executor import RESTARTED_REASON
from stormwatch.config import Settings
from stormwatch.kafka.client import read_topic
from stormwatch.schemas.commands import CommandStatus
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from tests.kit.agents import by_status, commands, decide, incident_event, incident_id, publish_events, results
from tests.kit.paths import ROOT
from tests.kit.pipeline import TEST_RULES
from tests.kit.records import produce_records
from tests.kit.waits import wait_for
from tests.kit.workers import Workers

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

# The real CLI; the agent's commands are added in case the lead has not registered the module yet.
RUNNER = (
    "import sys\n"
    "from stormwatch import cli\n"
    "if 'stormwatch.commands.agent' not in cli.COMMAND_MODULES:\n"
    "    cli.COMMAND_MODULES.append('stormwatch.commands.agent')\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


class AgentWorkers:
    """`stormwatch` workers on one config file: the test's topics, and ``script`` allowlisted for exec."""

    def __init__(self, settings: Settings, workdir: Path, script: str) -> None:
        self.workdir = workdir
        self.config = workdir / "config.yaml"
        config = {
            "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
            "topics": settings.topics.model_dump(),
            "agent": {"allow_programs": [script]},
        }
        self.config.write_text(yaml.safe_dump(config))
        self.workers = Workers()

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-c", RUNNER, "--config", str(self.config), *args]

    def start(self, name: str, *args: str) -> None:
        self.workers.start(name, self.cli(*args), self.workdir / f"{name}.log")

    def kill(self, name: str) -> None:
        self.workers.kill(name)

    def check_alive(self) -> None:
        self.workers.check_alive()

    def stop(self) -> None:
        self.workers.stop()


def step_script(tmp_path: Path, pause_s: float) -> tuple[str, Path]:
    """Appends "INCIDENT STEP" to a file, then takes ``pause_s`` (the action's duration)."""
    out = tmp_path / "executed.log"
    script = tmp_path / "step.sh"
    script.write_text(f'#!/bin/sh\necho "$1 $2" >> {out}\nsleep {pause_s}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), out


def workflow_file(tmp_path: Path, script: str, on_failure: str = "abort") -> Path:
    steps = [
        {
            "name": f"step{n}",
            "action": "exec",
            "params": {"argv": [script, "{{ incident.id }}", f"step{n}"]},
            "timeout": "30s",
            "on_failure": on_failure,
            "approval": {"required": False, "reason": "the test's step script"},
        }
        for n in (1, 2, 3)
    ]
    doc = {"workflows": [{"name": "remediate", "trigger": {"events": ["opened"]}, "steps": steps}]}
    path = tmp_path / "workflows.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_sigkill_of_the_agent_mid_workflow_runs_no_step_twice(settings: Settings, tmp_path: Path) -> None:
    script, executed = step_script(tmp_path, 0.3)
    flows = workflow_file(tmp_path, script)
    workers = AgentWorkers(settings, tmp_path, script)
    ids = [incident_id() for _ in range(4)]
    expected = {f"{i} step{n}" for i in ids for n in (1, 2, 3)}
    try:
        workers.start("executor", "executor", "--instance-id", "e1")
        workers.start("agent", "agent", "--workflows", str(flows))
        publish_events(
            settings, [incident_event(i, 1, IncidentEventType.OPENED, labels={"svc": "a"}) for i in ids]
        )
        for kills in (2, 6):  # kill once early in the workflows, once in their middle
            wait_for(
                f"{kills} executed steps", lambda kills=kills: len(lines(executed)) >= kills, timeout_s=40
            )
            workers.check_alive()
            assert len(lines(executed)) < len(expected), "the workflows finished before the kill"
            workers.kill("agent")
            workers.start("agent", "agent", "--workflows", str(flows))
        wait_for("every step of every workflow", lambda: set(lines(executed)) >= expected, timeout_s=45)
        time.sleep(2)  # anything run twice would show up by now
        workers.check_alive()
    finally:
        workers.stop()
    assert Counter(lines(executed)) == Counter(expected)  # each step exactly once
    sent = commands(settings)
    assert len(sent) == len(expected) == len({c.command_id for c in sent})
    seen = Counter((r.command_id, r.status) for r in results(settings))
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
    assert sum(1 for _, status in seen if status is CommandStatus.SUCCEEDED) == len(expected)


def test_sigkill_of_the_executor_mid_action_is_reported_and_not_rerun(
    settings: Settings, tmp_path: Path
) -> None:
    script, executed = step_script(tmp_path, 6)
    flows = workflow_file(tmp_path, script, on_failure="continue")
    workers = AgentWorkers(settings, tmp_path, script)
    iid = incident_id()
    try:
        workers.start("agent", "agent", "--workflows", str(flows))
        workers.start("executor", "executor", "--instance-id", "e1")
        publish_events(settings, [incident_event(iid, 1, IncidentEventType.OPENED, labels={"svc": "a"})])
        wait_for("step1 to start", lambda: lines(executed) == [f"{iid} step1"], timeout_s=40)
        workers.kill("executor")
        workers.start("executor", "executor", "--instance-id", "e1")
        wait_for("step2 to start", lambda: f"{iid} step2" in lines(executed), timeout_s=45)
        workers.check_alive()
    finally:
        workers.stop()
    assert lines(executed).count(f"{iid} step1") == 1
    step1 = [r for r in results(settings) if r.step == "step1"]
    assert [r.status for r in step1] == [CommandStatus.REQUESTED, CommandStatus.STARTED, CommandStatus.FAILED]
    assert step1[-1].reason == RESTARTED_REASON and step1[-1].retryable is False


def test_a_malformed_workflow_file_is_refused_with_a_precise_message(
    settings: Settings, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "workflows:\n"
        "  - name: restart\n"
        "    trigger: {events: [opened]}\n"
        "    steps:\n"
        "      - name: restart\n"
        "        action: exec\n"
        "        params:\n"
        '          argv: ["{{ labels.program }}", "--now"]\n'
        "        guards: {rate_limit: {max: 3, per: 1hour}}\n"
    )
    workers = AgentWorkers(settings, tmp_path, "/bin/true")
    validate = subprocess.run(
        workers.cli("workflows", "validate", str(bad)), capture_output=True, text=True, cwd=ROOT
    )
    assert validate.returncode == 1
    assert (
        f"{bad}:9: workflows[0].steps[0].guards.rate_limit.per: invalid duration '1hour'" in validate.stderr
    )
    agent = subprocess.run(
        workers.cli("agent", "--workflows", str(bad)), capture_output=True, text=True, cwd=ROOT
    )
    assert agent.returncode == 2
    assert agent.stderr.startswith("stormwatch agent: error: the workflow file is invalid:\n")
    assert f"{bad}:9: workflows[0].steps[0].guards.rate_limit.per: invalid duration '1hour'" in agent.stderr
    bad.write_text(bad.read_text().replace("1hour", "1h"))
    agent = subprocess.run(
        workers.cli("agent", "--workflows", str(bad)), capture_output=True, text=True, cwd=ROOT
    )
    assert agent.returncode == 2
    expected = f"{bad}:8: workflows[0].steps[0].params.argv[0]: the program must be a literal absolute path"
    assert expected in agent.stderr
    assert commands(settings) == []


AUDITED = """
workflows:
  - name: restart-cart
    trigger: {events: [opened]}
    conditions: {match: ['alertname="CrashLoop"']}
    steps:
      - name: announce
        action: log
        params: {message: "restarting {{ labels.service }}"}
      - name: restart
        action: exec
        target: "{{ labels.service }}"
        params: {argv: ["SCRIPT", "{{ incident.id }}", "restart"]}
        approval: required
"""


def test_the_audit_log_shows_every_automated_action(settings: Settings, tmp_path: Path) -> None:
    """The whole loop: raw alert -> incident -> agent -> approval -> executor -> results -> incident events."""
    script, executed = step_script(tmp_path, 0)
    flows = tmp_path / "workflows.yaml"
    flows.write_text(AUDITED.replace("SCRIPT", script))
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    workers = AgentWorkers(settings, tmp_path, script)
    alert = [
        {"labels": {"alertname": "CrashLoop", "service": "cart"}, "annotations": {"summary": "cart loops"}}
    ]
    produce_records(
        settings.kafka.bootstrap_servers,
        settings.topics.raw,
        [(int(time.time() * 1000), orjson.dumps(alert))],
    )

    def events() -> list[IncidentEvent]:
        return [
            IncidentEvent.from_bytes(m.value() or b"")
            for m in read_topic(settings, settings.topics.incidents)
        ]

    def mitigation(status: str) -> list[IncidentEvent]:
        return [e for e in events() if e.details.get("status") == status]

    try:
        workers.start("ingest", "ingest", "--rules", str(rules), "--instance-id", "i1")
        workers.start("correlate", "correlate", "--rules", str(rules), "--instance-id", "c1")
        workers.start("agent", "agent", "--workflows", str(flows))
        workers.start("executor", "executor", "--instance-id", "e1")
        asked = wait_for("the approval request in the audit log", lambda: mitigation("awaiting_approval"), 50)
        workers.check_alive()
        command_id = asked[0].details["command_id"]
        decide(settings, command_id, Decision.APPROVE, "alice", "cart is down anyway")
        wait_for(
            "the restart to succeed",
            lambda: [e for e in mitigation("succeeded") if e.details["step"] == "restart"],
            40,
        )
    finally:
        workers.stop()
    timeline = [e for e in events() if e.details.get("workflow") == "restart-cart"]
    seen = [(e.details["step"], e.details["status"], e.type.value, e.actor) for e in timeline]
    assert seen == [
        ("announce", "requested", "mitigation", "agent:restart-cart"),
        ("announce", "started", "mitigating", "executor:e1"),
        ("announce", "succeeded", "mitigation", "executor:e1"),
        ("restart", "awaiting_approval", "mitigation", "agent:restart-cart"),
        ("restart", "approved", "mitigation", "operator:alice"),
        ("restart", "requested", "mitigation", "agent:restart-cart"),
        ("restart", "started", "mitigation", "executor:e1"),
        ("restart", "succeeded", "mitigation", "executor:e1"),
    ]
    approved = next(e for e in timeline if e.details["status"] == "approved")
    assert (
        approved.details["command_id"] == command_id and approved.details["reason"] == "cart is down anyway"
    )
    assert lines(executed) == [f"{timeline[0].incident_id} restart"]
    assert len(by_status(results(settings), CommandStatus.SUCCEEDED)) == 2
