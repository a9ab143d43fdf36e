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

from stormwatch.agents.agent import read_agent_state
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

    def assigned(self, *names: str) -> bool:
        return all(self.workers.assigned(name) for name in names)

    def stop(self) -> None:
        self.workers.stop()


class Steps:
    """The exec steps' program: appends "INCIDENT STEP" to ``executed``, then runs until its step's
    gate is open. Gates are open unless the test closes them, so a test holds every run of a step
    in the middle of the action for as long as it needs (a kill lands there whatever the timing)."""

    def __init__(self, tmp_path: Path, *, closed: tuple[str, ...] = ()) -> None:
        self.executed = tmp_path / "executed.log"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        for step in closed:
            (self.gates / step).touch()
        script = tmp_path / "step.sh"
        script.write_text(
            f'#!/bin/sh\necho "$1 $2" >> {self.executed}\n'
            f'while [ -e "{self.gates}/$2" ]; do sleep 0.05; done\n'
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.script = str(script)

    def open(self, *steps: str) -> None:
        """Let the running and later runs of ``steps`` finish (every step if none is named)."""
        for gate in [self.gates / s for s in steps] if steps else list(self.gates.iterdir()):
            gate.unlink(missing_ok=True)

    def lines(self) -> list[str]:
        return lines(self.executed)

    def started(self, step: str) -> list[str]:
        return [line for line in self.lines() if line.endswith(f" {step}")]


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


def unfinished(settings: Settings) -> set[str]:
    """Ids of the committed commands that have no final result from an executor yet."""
    final = {CommandStatus.SUCCEEDED, CommandStatus.FAILED}
    done = {r.command_id for r in results(settings) if r.status in final and r.actor.startswith("executor:")}
    return {c.command_id for c in commands(settings)} - done


def test_sigkill_of_the_agent_mid_workflow_runs_no_step_twice(settings: Settings, tmp_path: Path) -> None:
    """The agent is killed twice with commands in flight: while step1 runs (its results arrive while
    the agent is down) and while step2 runs (restarted at once). The steps' gates, not their
    durations, hold the workflows there, so the kills cannot miss the middle of the workflows."""
    steps = Steps(tmp_path, closed=("step1", "step2"))
    flows = workflow_file(tmp_path, steps.script)
    workers = AgentWorkers(settings, tmp_path, steps.script)
    ids = [incident_id() for _ in range(4)]
    expected = {f"{i} step{n}" for i in ids for n in (1, 2, 3)}

    def settled() -> bool:
        """Every workflow run ended in the agent's committed state, and every command it sent (in
        the same transactions) has its executor's final result: nothing else will run."""
        state = read_agent_state(settings)
        ended = all(i in state.incidents and not state.incidents[i].runs for i in ids)
        return ended and not unfinished(settings)

    try:
        workers.start("executor", "executor", "--instance-id", "e1")
        workers.start("agent", "agent", "--workflows", str(flows))
        publish_events(
            settings, [incident_event(i, 1, IncidentEventType.OPENED, labels={"svc": "a"}) for i in ids]
        )
        wait_for("a step1 to run", lambda: steps.started("step1"), timeout_s=60, alive=workers.check_alive)
        assert steps.lines() == steps.started("step1")  # held there: no step1 has finished
        workers.kill("agent")
        steps.open("step1")
        # the agent is down, so the committed commands are all there will be until it restarts
        wait_for(
            "the step1 results", lambda: not unfinished(settings), timeout_s=60, alive=workers.check_alive
        )
        workers.start("agent", "agent", "--workflows", str(flows))
        wait_for("a step2 to run", lambda: steps.started("step2"), timeout_s=60, alive=workers.check_alive)
        assert steps.started("step3") == []  # held there: no step2 has finished
        workers.kill("agent")
        workers.start("agent", "agent", "--workflows", str(flows))
        steps.open("step2")
        wait_for(
            "every step of every workflow",
            lambda: set(steps.lines()) >= expected,
            60,
            alive=workers.check_alive,
        )
        wait_for("the workflows to end", settled, timeout_s=60, alive=workers.check_alive)
    finally:
        steps.open()  # a failed test leaves no step program waiting
        workers.stop()
    assert Counter(steps.lines()) == Counter(expected)  # each step exactly once
    sent = commands(settings)
    assert len(sent) == len(expected) == len({c.command_id for c in sent})
    seen = Counter((r.command_id, r.status) for r in results(settings))
    assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
    assert sum(1 for _, status in seen if status is CommandStatus.SUCCEEDED) == len(expected)


def test_sigkill_of_the_executor_mid_action_is_reported_and_not_rerun(
    settings: Settings, tmp_path: Path
) -> None:
    steps = Steps(tmp_path, closed=("step1",))  # step1 runs until the executor is killed
    flows = workflow_file(tmp_path, steps.script, on_failure="continue")
    workers = AgentWorkers(settings, tmp_path, steps.script)
    iid = incident_id()
    try:
        workers.start("agent", "agent", "--workflows", str(flows))
        workers.start("executor", "executor", "--instance-id", "e1")
        publish_events(settings, [incident_event(iid, 1, IncidentEventType.OPENED, labels={"svc": "a"})])
        wait_for("step1 to start", lambda: steps.lines() == [f"{iid} step1"], timeout_s=40)
        workers.kill("executor")
        steps.open("step1")  # the killed executor's step program ends; nobody hears of it
        workers.start("executor", "executor", "--instance-id", "e1")
        wait_for("step2 to start", lambda: f"{iid} step2" in steps.lines(), timeout_s=45)
        workers.check_alive()
    finally:
        steps.open()
        workers.stop()
    assert steps.lines().count(f"{iid} step1") == 1
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
    steps = Steps(tmp_path)
    flows = tmp_path / "workflows.yaml"
    flows.write_text(AUDITED.replace("SCRIPT", steps.script))
    rules = tmp_path / "rules.yaml"
    rules.write_text(TEST_RULES)
    workers = AgentWorkers(settings, tmp_path, steps.script)
    alert = [
        {"labels": {"alertname": "CrashLoop", "service": "cart"}, "annotations": {"summary": "cart loops"}}
    ]

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
        # The alert is stamped when it is produced and resolves resolve_timeout (20 s) later: sent
        # before the workers run, a slow start (a loaded machine) could leave the agent nothing open.
        ready = ("ingest", "correlate", "agent", "executor")
        wait_for("every worker's partitions", lambda: workers.assigned(*ready), 60, alive=workers.check_alive)
        produce_records(
            settings.kafka.bootstrap_servers,
            settings.topics.raw,
            [(int(time.time() * 1000), orjson.dumps(alert))],
        )
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
    assert steps.lines() == [f"{timeline[0].incident_id} restart"]
    assert len(by_status(results(settings), CommandStatus.SUCCEEDED)) == 2
