"""The agent's decisions, driven by hand-made incident events, results, approvals and times."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from stormwatch.agents.core.approvals import ApprovalDecision, Decision
from stormwatch.agents.core.planner import Planner, PlanOutput, command_id_for
from stormwatch.agents.core.state import AgentState
from stormwatch.agents.core.workflow import parse_workflows
from stormwatch.agents.executors import available_executors
from stormwatch.schemas.commands import CommandResult
from stormwatch.schemas.commands import CommandStatus as S
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import IncidentEvent, IncidentSnapshot, IncidentState
from stormwatch.schemas.incident import IncidentEventType as E

T0 = 1_700_000_000_000
MIN = 60_000
INC = "inc-00000000000000aa-1"
LABELS = {"alertname": "CrashLoop", "service": "checkout", "env": "prod"}

RESTART = """
workflows:
  - name: restart
    trigger: {events: [opened, reopened]}
    conditions: {match: ['alertname="CrashLoop"'], min_severity: error}
    max_runs: 2
    steps:
      - name: announce
        action: log
        params: {message: "restarting {{ labels.service }} for {{ incident.id }} ({{ event.type }})"}
        on_failure: continue
      - name: restart
        action: exec
        target: "{{ labels.service }}"
        params: {argv: [/usr/local/bin/restart, "{{ labels.service }}"]}
        retries: 1
        backoff: {initial: 30s}
        guards: {rate_limit: {max: 3, per: 1h}}
        approval: {required: false, reason: "restarts run unattended in these tests"}
        on_failure: escalate
      - name: verify
        action: log
        params: {message: "restarted {{ labels.service }}"}
    escalation:
      steps:
        - name: page
          action: webhook
          params: {url: "https://pager.example.com/hook", body: {incident: "{{ incident.id }}"}}
          approval: {required: false, reason: "a page cannot wait for an approval"}
"""
UNATTENDED = 'approval: {required: false, reason: "restarts run unattended in these tests"}'
"""The restart step's exemption; tests that need an approval replace it."""


class World:
    """A planner, its state, a clock, and the compacted records a restart would read back."""

    def __init__(self, yaml: str, *, dry_run: bool = False) -> None:
        self.planner = Planner(
            parse_workflows(textwrap.dedent(yaml), executors=available_executors()),
            dry_run=dry_run,
            dispatch_timeout_ms=MIN,
            result_grace_ms=10_000,
        )
        self.state = AgentState()
        self.now = T0
        self.seqs: dict[str, int] = {}
        self.records: dict[str, bytes] = {}
        self.log: list[PlanOutput] = []

    def _done(self, out: PlanOutput) -> PlanOutput:
        for key, value in self.state.take_changes().items():
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value
        self.log.append(out)
        return out

    def restart(self) -> None:
        self.state = AgentState.restore(dict(self.records))

    def event(
        self,
        etype: E,
        state: IncidentState = IncidentState.OPEN,
        *,
        incident: str = INC,
        labels: dict[str, str] | None = None,
        severity: Severity = Severity.CRITICAL,
        acked_at: int | None = None,
        firing: int = 2,
    ) -> PlanOutput:
        seq = self.seqs.get(incident, 0) + 1
        self.seqs[incident] = seq
        snapshot = IncidentSnapshot(
            state=state,
            severity=severity,
            title="Checkout is crash-looping",
            group_key="default:{...}",
            group_labels=LABELS if labels is None else labels,
            rule="default",
            alert_count=firing,
            firing_count=firing,
            opened_at=utc_from_ms(T0),
            acknowledged_at=utc_from_ms(acked_at) if acked_at is not None else None,
        )
        event = IncidentEvent(
            event_id=f"e{seq}",
            incident_id=incident,
            seq=seq,
            type=etype,
            from_state=None,
            to_state=state,
            at=utc_from_ms(self.now),
            actor="correlator",
            cause="test",
            snapshot=snapshot,
        )
        return self._done(self.planner.on_event(self.state, event, self.now))

    def result(
        self, command_id: str, status: S, *, retryable: bool = True, incident: str = INC
    ) -> PlanOutput:
        res = CommandResult(
            command_id=command_id,
            incident_id=incident,
            workflow="w",
            step="s",
            action="a",
            status=status,
            at=utc_from_ms(self.now),
            actor="executor:test",
            retryable=retryable,
        )
        return self._done(self.planner.on_result(self.state, res, self.now))

    def decide(
        self, command_id: str, decision: Decision, by: str = "alice", note: str | None = None
    ) -> PlanOutput:
        d = ApprovalDecision(
            command_id=command_id, decision=decision, by=by, at=utc_from_ms(self.now), note=note
        )
        return self._done(self.planner.on_decision(self.state, d, self.now))

    def advance(self, ms: int) -> PlanOutput:
        self.now += ms
        return self._done(self.planner.on_timers(self.state, self.now))


def statuses(out: PlanOutput) -> list[tuple[str, str]]:
    return [(r.step, r.status.value) for r in out.results]


def only_command(out: PlanOutput) -> Any:
    assert len(out.commands) == 1, out
    return out.commands[0]


def test_opened_incident_triggers_the_workflow_with_rendered_parameters() -> None:
    w = World(RESTART)
    out = w.event(E.OPENED)
    cmd = only_command(out)
    assert (cmd.workflow, cmd.step, cmd.action, cmd.attempt) == ("restart", "announce", "log", 1)
    assert cmd.params == {"message": f"restarting checkout for {INC} (opened)"}
    assert cmd.command_id == command_id_for(INC, "restart", 1, "announce", 1)
    assert cmd.expires_at == utc_from_ms(T0 + MIN)
    assert statuses(out) == [("announce", "requested")]
    assert out.results[0].actor == "agent:restart"


def test_steps_run_one_after_another() -> None:
    w = World(RESTART)
    first = only_command(w.event(E.OPENED))
    assert w.result(first.command_id, S.STARTED).commands == []
    second = only_command(w.result(first.command_id, S.SUCCEEDED))
    assert second.step == "restart" and second.params == {"argv": ["/usr/local/bin/restart", "checkout"]}
    assert second.target == "checkout"
    third = only_command(w.result(second.command_id, S.SUCCEEDED))
    assert third.step == "verify"
    done = w.result(third.command_id, S.SUCCEEDED)
    assert done.commands == [] and done.results == []
    assert w.state.incidents[INC].runs == {}
    assert w.state.incidents[INC].run_counts == {"restart": 1}


def test_conditions_decide_which_workflow_runs() -> None:
    w = World(RESTART)
    assert not w.event(E.OPENED, severity=Severity.WARNING)
    assert not w.event(E.OPENED, incident="inc-00000000000000bb-1", labels={"alertname": "DiskFull"})
    assert w.state.incidents == {}  # incidents no workflow cares about leave no state behind
    assert w.records == {}


def test_failure_is_retried_with_backoff_then_escalated() -> None:
    w = World(RESTART)
    announce = only_command(w.event(E.OPENED))
    restart = only_command(w.result(announce.command_id, S.SUCCEEDED))
    assert w.result(restart.command_id, S.FAILED).commands == []  # waits for the backoff
    assert w.planner.next_due(w.state) == T0 + 30_000
    assert w.advance(29_999).commands == []
    retry = only_command(w.advance(1))
    assert (retry.step, retry.attempt) == ("restart", 2)
    assert retry.command_id == command_id_for(INC, "restart", 1, "restart", 2) != restart.command_id
    page = only_command(w.result(retry.command_id, S.FAILED))  # retries exhausted: on_failure escalate
    assert (page.step, page.action) == ("page", "webhook")
    assert page.params == {"url": "https://pager.example.com/hook", "body": {"incident": INC}}
    w.result(page.command_id, S.SUCCEEDED)
    assert w.state.incidents[INC].runs == {}  # 'verify' never ran


def test_outcome_unknown_failures_are_not_retried() -> None:
    w = World(RESTART)
    announce = only_command(w.event(E.OPENED))
    restart = only_command(w.result(announce.command_id, S.SUCCEEDED))
    page = only_command(w.result(restart.command_id, S.FAILED, retryable=False))
    assert page.step == "page"


def test_on_failure_continue() -> None:
    w = World(RESTART)
    announce = only_command(w.event(E.OPENED))
    assert only_command(w.result(announce.command_id, S.FAILED)).step == "restart"


def test_guard_refuses_the_fourth_restart_within_the_hour_and_records_why() -> None:
    w = World(RESTART)
    for n in range(4):
        incident = f"inc-00000000000000{n:02x}-1"
        announce = only_command(w.event(E.OPENED, incident=incident))
        out = w.result(announce.command_id, S.SUCCEEDED, incident=incident)
        if n < 3:
            restart = only_command(out)
            assert restart.step == "restart"
            w.result(restart.command_id, S.SUCCEEDED, incident=incident)
            w.now += 5 * MIN
        else:
            refused = [r for r in out.results if r.status is S.REFUSED]
            assert len(refused) == 1
            assert refused[0].step == "restart" and refused[0].target == "checkout"
            assert refused[0].reason is not None
            assert refused[0].reason.startswith(
                "rate limit: exec on 'checkout' already ran 3 time(s) in the last 1h"
            )
            assert [c.step for c in out.commands] == ["page"]  # on_failure: escalate


def test_approval_granted() -> None:
    # The exemption with a label matcher that adds the requirement back (LABELS has env="prod").
    yaml = RESTART.replace(UNATTENDED, UNATTENDED[:-1] + ", required_when: ['env=\"prod\"']}")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    out = w.result(announce.command_id, S.SUCCEEDED)
    assert out.commands == [] and statuses(out) == [("restart", "awaiting_approval")]
    asked = out.results[0]
    assert asked.expires_at == utc_from_ms(T0 + 30 * MIN)
    assert f"stormwatch approve {asked.command_id} --by NAME" in (asked.reason or "")
    w.restart()  # pending approvals survive a restart
    w.now += MIN
    approved = w.decide(asked.command_id, Decision.APPROVE, note="go ahead")
    assert statuses(approved) == [("restart", "approved"), ("restart", "requested")]
    assert approved.results[0].actor == "operator:alice" and approved.results[0].reason == "go ahead"
    cmd = only_command(approved)
    assert cmd.command_id == asked.command_id and cmd.requires_approval
    assert cmd.params == {"argv": ["/usr/local/bin/restart", "checkout"]}
    again = w.decide(asked.command_id, Decision.APPROVE, by="bob")  # a second answer changes nothing
    assert not again and again.notes


def test_approval_denied() -> None:
    yaml = RESTART.replace(UNATTENDED, "approval: required")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    asked = w.result(announce.command_id, S.SUCCEEDED).results[0]
    denied = w.decide(asked.command_id, Decision.DENY, by="carol", note="not during the sale")
    assert statuses(denied)[0] == ("restart", "denied")
    assert denied.results[0].actor == "operator:carol" and denied.results[0].reason == "not during the sale"
    assert only_command(denied).step == "page"  # a denial is a failed step: on_failure escalate


def test_approval_expires() -> None:
    yaml = RESTART.replace(UNATTENDED, "approval: required\n        approval_ttl: 2m")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    asked = w.result(announce.command_id, S.SUCCEEDED).results[0]
    assert w.advance(2 * MIN - 1).results == []
    expired = w.advance(1)
    assert statuses(expired)[0] == ("restart", "expired")
    assert "nobody approved or denied it in time" in (expired.results[0].reason or "")
    assert only_command(expired).step == "page"
    late = w.decide(asked.command_id, Decision.APPROVE)
    assert not late


def test_an_answer_after_the_deadline_counts_as_expired() -> None:
    yaml = RESTART.replace(UNATTENDED, "approval: required\n        approval_ttl: 2m")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    asked = w.result(announce.command_id, S.SUCCEEDED).results[0]
    w.now += 3 * MIN  # the agent was behind: the timer has not fired yet
    out = w.decide(asked.command_id, Decision.APPROVE, by="dave")
    assert statuses(out)[0] == ("restart", "expired")
    assert "the answer of dave came after the deadline" in (out.results[0].reason or "")


def test_approval_is_checked_against_the_guards_again() -> None:
    yaml = """
    workflows:
      - name: w
        trigger: {events: [opened]}
        steps:
          - name: restart
            action: exec
            target: "{{ labels.service }}"
            params: {argv: [/bin/restart]}
            approval: required
            guards: {cooldown: 10m}
    """
    w = World(yaml)
    asked_1 = w.event(E.OPENED).results[0]
    asked_2 = w.event(E.OPENED, incident="inc-00000000000000bb-1").results[0]
    assert only_command(w.decide(asked_1.command_id, Decision.APPROVE))
    out = w.decide(asked_2.command_id, Decision.APPROVE)
    assert statuses(out) == [("restart", "approved"), ("restart", "refused")]
    assert (out.results[1].reason or "").startswith("cooldown: exec on 'checkout' last ran at")


def test_dry_run_decides_everything_and_executes_nothing() -> None:
    w = World(RESTART, dry_run=True)
    out = w.event(E.OPENED)
    assert out.commands == []
    assert statuses(out) == [("announce", "dry_run"), ("restart", "dry_run"), ("verify", "dry_run")]
    assert out.results[1].reason == "dry run: would be sent to an executor"
    assert '"argv":["/usr/local/bin/restart","checkout"]' in (out.results[1].output or "")
    assert w.state.guards.history == {} and w.state.guards.in_flight == {}


def test_dry_run_per_workflow_reports_what_guards_would_say() -> None:
    yaml = RESTART.replace("max_runs: 2\n", "max_runs: 2\n    dry_run: true\n").replace(
        UNATTENDED, "approval: required"
    )
    w = World(yaml)
    out = w.event(E.OPENED)
    assert out.results[1].reason == "dry run: would wait for approval, then be sent to an executor"


def test_not_acknowledged_trigger_fires_only_without_an_ack() -> None:
    yaml = """
    workflows:
      - name: escalate
        trigger: {events: [not_acknowledged], not_acknowledged_within: 15m}
        conditions: {min_severity: error}
        steps:
          - {name: notify, action: log, params: {message: "{{ incident.id }} unacked: {{ event.cause }}"}}
    """
    w = World(yaml)
    assert not w.event(E.OPENED)
    assert not w.event(E.OPENED, incident="inc-00000000000000bb-1")
    w.now += 5 * MIN
    w.event(E.ACKNOWLEDGED, IncidentState.ACKNOWLEDGED, incident="inc-00000000000000bb-1", acked_at=w.now)
    assert w.advance(10 * MIN - 1).commands == []
    fired = w.advance(1)
    cmd = only_command(fired)
    assert cmd.incident_id == INC and cmd.params == {"message": f"{INC} unacked: not acknowledged within 15m"}
    assert w.advance(60 * MIN).commands == []  # once


def test_escalation_when_nobody_acknowledges_the_run() -> None:
    yaml = RESTART.replace("    escalation:\n", "    escalation:\n      not_acknowledged_within: 15m\n")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    restart = only_command(w.result(announce.command_id, S.SUCCEEDED))
    verify = only_command(w.result(restart.command_id, S.SUCCEEDED))
    w.result(verify.command_id, S.SUCCEEDED)
    assert "restart" in w.state.incidents[INC].runs  # kept until the escalation timer is decided
    page = only_command(w.advance(15 * MIN))
    assert page.step == "page"
    w.result(page.command_id, S.SUCCEEDED)
    assert w.state.incidents[INC].runs == {}


def test_acknowledging_cancels_the_escalation_timer() -> None:
    yaml = RESTART.replace("    escalation:\n", "    escalation:\n      not_acknowledged_within: 15m\n")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    w.now += MIN
    w.event(E.ACKNOWLEDGED, IncidentState.ACKNOWLEDGED, acked_at=w.now)
    assert w.planner.next_due(w.state) == T0 + MIN + 30_000 + 10_000  # only the result deadline is left
    restart = only_command(w.result(announce.command_id, S.SUCCEEDED))
    verify = only_command(w.result(restart.command_id, S.SUCCEEDED))
    w.result(verify.command_id, S.SUCCEEDED)
    assert w.advance(30 * MIN).commands == []
    assert w.state.incidents[INC].runs == {}


def test_resolution_cancels_the_run_and_closes_open_approval_requests() -> None:
    yaml = RESTART.replace(UNATTENDED, "approval: required")
    w = World(yaml)
    announce = only_command(w.event(E.OPENED))
    asked = w.result(announce.command_id, S.SUCCEEDED).results[0]
    out = w.event(E.RESOLVED, IncidentState.RESOLVED)
    assert statuses(out) == [("restart", "expired")]
    assert out.results[0].command_id == asked.command_id
    assert out.results[0].reason == "cancelled: the incident was resolved"
    assert not w.decide(asked.command_id, Decision.APPROVE)
    assert w.state.incidents[INC].runs == {}
    assert w.state.incidents[INC].run_counts == {"restart": 1}  # kept for max_runs until it closes
    w.event(E.CLOSED, IncidentState.CLOSED)
    assert INC not in w.state.incidents and not any(k.startswith("incident/") for k in w.records)


def test_a_command_in_flight_finishes_after_cancellation_and_frees_its_slot() -> None:
    w = World(RESTART)
    announce = only_command(w.event(E.OPENED))
    w.event(E.RESOLVED, IncidentState.RESOLVED)
    assert announce.command_id in w.state.guards.in_flight
    assert not w.result(announce.command_id, S.SUCCEEDED)
    assert w.state.guards.in_flight == {}


def test_reopening_starts_a_second_run_with_new_command_ids() -> None:
    w = World(RESTART)
    first = only_command(w.event(E.OPENED))
    w.event(E.RESOLVED, IncidentState.RESOLVED)
    w.result(first.command_id, S.SUCCEEDED)
    second = only_command(w.event(E.REOPENED))
    assert second.step == "announce" and second.command_id == command_id_for(INC, "restart", 2, "announce", 1)
    assert "(reopened)" in second.params["message"]
    w.event(E.RESOLVED, IncidentState.RESOLVED)
    assert not w.event(E.REOPENED)  # max_runs: 2


def test_no_result_in_time_fails_the_step_without_retrying() -> None:
    w = World(RESTART)
    announce = only_command(w.event(E.OPENED))
    restart = only_command(w.result(announce.command_id, S.SUCCEEDED))
    deadline = MIN + 30_000 + 10_000  # dispatch timeout + step timeout (default 30s) + grace
    assert w.advance(deadline - 1).results == []
    out = w.advance(1)
    failed = out.results[0]
    assert (failed.command_id, failed.status, failed.retryable) == (restart.command_id, S.FAILED, False)
    assert failed.reason is not None and failed.reason.startswith("no result from an executor within 1m40s")
    assert only_command(out).step == "page"
    assert restart.command_id not in w.state.guards.in_flight
    assert not w.result(restart.command_id, S.SUCCEEDED)  # a late result changes nothing


def test_template_errors_fail_the_step_with_the_reason() -> None:
    yaml = """
    workflows:
      - name: w
        trigger: {events: [opened]}
        steps:
          - {name: s, action: log, params: {message: "ns {{ labels.namespace }}"}}
    """
    w = World(yaml)
    out = w.event(E.OPENED)
    assert out.commands == [] and statuses(out) == [("s", "failed")]
    assert "labels.namespace has no value for this incident" in (out.results[0].reason or "")
    assert out.results[0].retryable is False


def test_duplicate_events_are_ignored() -> None:
    w = World(RESTART)
    w.event(E.OPENED)
    w.seqs[INC] = 0  # the same event again (seq 1)
    assert not w.event(E.OPENED)


def test_a_restart_between_any_two_inputs_changes_nothing() -> None:
    """Restoring the persisted records after every input gives exactly the uninterrupted outputs."""

    def scenario(w: World, restart: bool) -> list[tuple[str, str, str]]:
        seen: list[tuple[str, str, str]] = []

        def note(out: PlanOutput) -> PlanOutput:
            seen.extend((c.command_id, c.step, "command") for c in out.commands)
            seen.extend((r.command_id, r.step, r.status.value) for r in out.results)
            if restart:
                w.restart()
            return out

        announce = only_command(note(w.event(E.OPENED)))
        note(w.result(announce.command_id, S.STARTED))
        restart_cmd = only_command(note(w.result(announce.command_id, S.SUCCEEDED)))
        note(w.result(restart_cmd.command_id, S.FAILED))
        retry = only_command(note(w.advance(30_000)))
        page = only_command(note(w.result(retry.command_id, S.FAILED)))
        note(w.result(page.command_id, S.SUCCEEDED))
        note(w.event(E.RESOLVED, IncidentState.RESOLVED))
        note(w.event(E.REOPENED))
        return seen

    assert scenario(World(RESTART), restart=True) == scenario(World(RESTART), restart=False)


@pytest.mark.parametrize("attempt", [1, 2])
def test_command_ids_are_derived(attempt: int) -> None:
    a = command_id_for(INC, "restart", 1, "restart", attempt)
    assert a == command_id_for(INC, "restart", 1, "restart", attempt)
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != command_id_for(INC, "restart", 2, "restart", attempt)
    assert a != command_id_for("inc-00000000000000bb-1", "restart", 1, "restart", attempt)


def test_an_edited_workflow_file_continues_by_step_name() -> None:
    w = World(RESTART)
    announce = only_command(w.event(E.OPENED))
    restart = only_command(w.result(announce.command_id, S.SUCCEEDED))
    # The file changes while 'restart' runs: a new first step, and 'verify' is gone.
    edited = RESTART.replace(
        "    steps:\n      - name: announce",
        "    steps:\n      - {name: new-first, action: log, params: {message: x}}\n      - name: announce",
    ).replace(
        '      - name: verify\n        action: log\n        params: {message: "restarted {{ labels.service }}"}\n',
        "",
    )
    w.planner = Planner(
        parse_workflows(textwrap.dedent(edited), executors=available_executors()),
        dispatch_timeout_ms=MIN,
        result_grace_ms=10_000,
    )
    w.restart()
    done = w.result(restart.command_id, S.SUCCEEDED)
    assert done.commands == [] and w.state.incidents[INC].runs == {}  # 'restart' was the last step now


def test_timer_passes_with_nothing_due_write_nothing() -> None:
    """on_timers runs after every batch; it must not rewrite state records that did not change."""
    w = World(RESTART)
    only_command(w.event(E.OPENED))
    w.event(E.OPENED, incident="inc-00000000000000bb-1")
    w.now += 1000
    assert not w.planner.on_timers(w.state, w.now)
    assert w.state.take_changes() == {}
