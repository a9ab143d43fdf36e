"""The mitigation agent's decisions: incident events, approvals, results and timers in; commands and
audit results out. Pure: no I/O, no clock (every call gets ``now_ms``), deterministic.

A workflow *run* works through its steps one at a time (a *lane*; the escalation steps are a
second lane). For the current step the planner renders the parameters, asks the guards, and then
either records a refusal, asks for approval, or dispatches a ``MitigationCommand`` with a
deterministic ``command_id = xxh3_128(incident, workflow, run, step, attempt)``. The run moves on
when the executor's result comes back (or the step is refused, denied, expired, or got no
result in time), following the step's retry and ``on_failure`` policy.

Approval fails closed: a step waits for an operator unless its compiled ``ApprovalPolicy``
exempts it, and the incident's labels (chosen by whoever sent the alert) can only add that
requirement, never lift it (docs/security.md, "Approvals"). URL parameters are rendered with
each substituted value as one percent-encoded path segment (``render_params``).

Every decision becomes a ``CommandResult`` (requested, awaiting_approval, approved, denied,
expired, refused, dry_run, failed), which the correlator turns into an incident event: the
audit log shows each automated action, who approved it and how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import xxhash

from stormwatch.agents.core.approvals import ApprovalDecision, Decision
from stormwatch.agents.core.state import AgentState, IncidentRecord, IncidentView, Lane, Pending, Phase, Run
from stormwatch.agents.core.templating import TemplateError, render_params
from stormwatch.agents.core.workflow import OnFailure, StepSpec, TriggerEvent, WorkflowConfig, WorkflowSpec
from stormwatch.schemas.commands import CommandResult, CommandStatus, MitigationCommand
from stormwatch.schemas.common import ms_from_dt, utc_from_ms
from stormwatch.schemas.durations import format_duration
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentState

__all__ = ["PlanOutput", "Planner", "command_id_for"]

TRIGGERS: dict[IncidentEventType, TriggerEvent] = {
    IncidentEventType.OPENED: TriggerEvent.OPENED,
    IncidentEventType.UPDATED: TriggerEvent.UPDATED,
    IncidentEventType.SEVERITY_CHANGED: TriggerEvent.SEVERITY_CHANGED,
    IncidentEventType.REOPENED: TriggerEvent.REOPENED,
    IncidentEventType.RESOLVED: TriggerEvent.RESOLVED,
}
_UNACKED_STATES = (IncidentState.OPEN, IncidentState.MITIGATING)
_OUTPUT_LIMIT = 2048
STEPS, ESCALATION = "steps", "escalation"


def command_id_for(incident_id: str, workflow: str, run: int, step: str, attempt: int) -> str:
    """Deterministic: a replayed or restarted agent derives the same id for the same decision."""
    text = "\x1f".join((incident_id, workflow, str(run), step, str(attempt)))
    return xxhash.xxh3_128_hexdigest(text.encode())


def _iso(ms: int) -> str:
    return utc_from_ms(ms).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _iso_dt(dt: datetime | None) -> str | None:
    return None if dt is None else _iso(ms_from_dt(dt))


@dataclass
class PlanOutput:
    commands: list[MitigationCommand] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # things worth a log line (ignored approvals ...)

    def __bool__(self) -> bool:
        return bool(self.commands or self.results)


@dataclass
class _Ctx:
    """Where a step lives; passed around instead of five arguments."""

    state: AgentState
    rec: IncidentRecord
    wf: WorkflowSpec
    run: Run
    now_ms: int
    out: PlanOutput


class Planner:
    def __init__(
        self,
        config: WorkflowConfig,
        *,
        dry_run: bool = False,
        dispatch_timeout_ms: int = 5 * 60_000,
        result_grace_ms: int = 60_000,
    ) -> None:
        self.config = config
        self.dry_run = dry_run or config.dry_run
        self.dispatch_timeout_ms = dispatch_timeout_ms
        self.result_grace_ms = result_grace_ms

    # ------------------------------------------------------------------ inputs

    def on_event(
        self, state: AgentState, event: IncidentEvent, now_ms: int, partition: int = 0
    ) -> PlanOutput:
        out = PlanOutput()
        iid = event.incident_id
        rec = state.incidents.get(iid)
        if rec is not None and event.seq <= rec.view.last_seq:
            return out  # already applied (a replay)
        view = IncidentView.of(event)
        if rec is None:
            rec = IncidentRecord(view=view, partition=partition)
            if view.acknowledged_at is None and view.state in _UNACKED_STATES:
                rec.unacked_since_ms = ms_from_dt(view.opened_at)
        else:
            rec.view = view
            rec.partition = partition
        existed = iid in state.incidents
        state.incidents[iid] = rec
        etype = event.type
        at_ms = ms_from_dt(event.at)

        if etype in (IncidentEventType.OPENED, IncidentEventType.REOPENED) and view.state in _UNACKED_STATES:
            since = ms_from_dt(view.opened_at) if etype is IncidentEventType.OPENED else at_ms
            rec.unacked_since_ms = since
            rec.not_ack_due = {
                wf.name: since + wf.not_acknowledged_within_ms
                for wf in self.config.workflows
                if wf.enabled
                and TriggerEvent.NOT_ACKNOWLEDGED in wf.events
                and wf.not_acknowledged_within_ms is not None
            }
        if not self._unacked(rec):
            rec.unacked_since_ms = None
            rec.not_ack_due.clear()
            for run in rec.runs.values():
                run.escalate_due_ms = None

        if view.state in (IncidentState.RESOLVED, IncidentState.CLOSED):
            closing = view.state is IncidentState.CLOSED
            for run in list(rec.runs.values()):
                wf = self.config.get(run.workflow)
                resolved_run = run.trigger == TriggerEvent.RESOLVED.value
                if closing or wf is None or (wf.cancel_when_resolved and not resolved_run):
                    why = "closed" if closing else "resolved"
                    self._cancel_run(state, rec, run, f"cancelled: the incident was {why}", now_ms, out)

        trigger = TRIGGERS.get(etype)
        if trigger is not None and view.state is not IncidentState.CLOSED:
            fields = {
                "type": etype.value,
                "seq": str(event.seq),
                "at": _iso(at_ms),
                "actor": event.actor,
                "cause": event.cause,
            }
            for wf in self.config.workflows:
                if wf.enabled and trigger in wf.events and self._may_start(rec, wf, event.at):
                    self._start(state, rec, wf, trigger.value, fields, now_ms, out)

        self._settle(state, rec, existed=existed)
        if iid in state.incidents:
            state.touch(iid)  # the incident view changed
        return out

    def on_decision(self, state: AgentState, decision: ApprovalDecision, now_ms: int) -> PlanOutput:
        out = PlanOutput()
        found = self._find(state, decision.command_id, Phase.AWAITING_APPROVAL, now_ms, out)
        if found is None:
            out.notes.append(
                f"ignored {decision.decision.value} of {decision.command_id} by {decision.by}: "
                "the command is not awaiting approval"
            )
            return out
        ctx, lane, spec, pending = found
        actor = f"operator:{decision.by}"
        if now_ms >= pending.due_ms:
            self._expire(ctx, lane, spec, pending, f"the answer of {decision.by} came after the deadline")
        elif decision.decision is Decision.DENY:
            reason = decision.note or "denied without a reason"
            out.results.append(
                self._result(ctx, spec, pending, CommandStatus.DENIED, actor=actor, reason=reason)
            )
            self._unindex(state, pending)
            self._step_done(ctx, lane, spec, pending.attempt, ok=False, retryable=False)
        else:
            out.results.append(
                self._result(ctx, spec, pending, CommandStatus.APPROVED, actor=actor, reason=decision.note)
            )
            self._unindex(state, pending)
            lane.pending = None
            verdict = state.guards.check(
                spec.guards,
                action=spec.action,
                target=pending.target,
                incident_targets=ctx.rec.targets,
                now_ms=now_ms,
            )
            if not verdict.allowed:
                out.results.append(
                    self._result(ctx, spec, pending, CommandStatus.REFUSED, reason=verdict.reason)
                )
                self._step_done(ctx, lane, spec, pending.attempt, ok=False, retryable=False)
            else:
                self._dispatch(
                    ctx,
                    lane,
                    spec,
                    pending.command_id,
                    pending.attempt,
                    pending.target,
                    pending.params,
                    approved=True,
                )
        state.touch(ctx.rec.view.incident_id)
        self._settle(state, ctx.rec, existed=True)
        return out

    def on_result(self, state: AgentState, result: CommandResult, now_ms: int) -> PlanOutput:
        """An executor's report (started, succeeded, failed); the agent's own results are ignored."""
        out = PlanOutput()
        if result.status not in (CommandStatus.STARTED, CommandStatus.SUCCEEDED, CommandStatus.FAILED):
            return out
        if result.actor.startswith("agent:"):
            return out
        if result.status is not CommandStatus.STARTED:
            state.guards.record_finished(result.command_id)
        found = self._find(state, result.command_id, Phase.DISPATCHED, now_ms, out)
        if found is None or result.status is CommandStatus.STARTED:
            return out
        ctx, lane, spec, pending = found
        ok = result.status is CommandStatus.SUCCEEDED
        self._unindex(state, pending)
        lane.pending = None
        self._step_done(ctx, lane, spec, pending.attempt, ok=ok, retryable=result.retryable)
        state.touch(ctx.rec.view.incident_id)
        self._settle(state, ctx.rec, existed=True)
        return out

    def on_timers(self, state: AgentState, now_ms: int) -> PlanOutput:
        """Fire everything due at ``now_ms``: unacknowledged triggers, escalations, expiries, retries."""
        out = PlanOutput()
        for iid in sorted(state.incidents):
            rec = state.incidents.get(iid)
            if rec is None:
                continue
            for name, due in sorted(rec.not_ack_due.items()):
                if due > now_ms:
                    continue
                del rec.not_ack_due[name]
                state.touch(iid)
                wf = self.config.get(name)
                if wf is None or not wf.enabled or not self._unacked(rec):
                    continue
                if self._may_start(rec, wf, utc_from_ms(now_ms)):
                    within = format_duration(wf.not_acknowledged_within_ms or 0)
                    fields = {
                        "type": TriggerEvent.NOT_ACKNOWLEDGED.value,
                        "seq": str(rec.view.last_seq),
                        "at": _iso(now_ms),
                        "actor": "agent",
                        "cause": f"not acknowledged within {within}",
                    }
                    self._start(state, rec, wf, TriggerEvent.NOT_ACKNOWLEDGED.value, fields, now_ms, out)
            for run in list(rec.runs.values()):
                self._run_timers(state, rec, run, now_ms, out)
            self._settle(state, rec, existed=True)
        state.guards.prune(now_ms, self.config.guard_window_ms)
        return out

    def next_due(self, state: AgentState) -> int | None:
        """The earliest time ``on_timers`` has something to do (None: nothing scheduled)."""
        dues: list[int] = []
        for rec in state.incidents.values():
            dues.extend(rec.not_ack_due.values())
            for run in rec.runs.values():
                if run.escalate_due_ms is not None:
                    dues.append(run.escalate_due_ms)
                dues.extend(lane.pending.due_ms for lane in run.lanes.values() if lane.pending is not None)
        return min(dues) if dues else None

    # ------------------------------------------------------------------ runs

    def _unacked(self, rec: IncidentRecord) -> bool:
        since = rec.unacked_since_ms
        if since is None or rec.view.state not in _UNACKED_STATES:
            return False
        ack = rec.view.acknowledged_at
        return ack is None or ms_from_dt(ack) < since

    def _may_start(self, rec: IncidentRecord, wf: WorkflowSpec, at: datetime) -> bool:
        if wf.name in rec.runs or rec.run_counts.get(wf.name, 0) >= wf.max_runs:
            return False
        v = rec.view
        return wf.conditions.holds(v.labels, v.severity, v.firing_count, at)

    def _start(
        self,
        state: AgentState,
        rec: IncidentRecord,
        wf: WorkflowSpec,
        trigger: str,
        event_fields: dict[str, str],
        now_ms: int,
        out: PlanOutput,
    ) -> None:
        number = rec.run_counts.get(wf.name, 0) + 1
        rec.run_counts[wf.name] = number
        escalate_due = None
        if wf.escalate_after_ms is not None and self._unacked(rec):
            escalate_due = now_ms + wf.escalate_after_ms
        run = Run(
            workflow=wf.name,
            run=number,
            trigger=trigger,
            started_ms=now_ms,
            event=event_fields,
            lanes={STEPS: Lane(lane=STEPS)},
            escalate_due_ms=escalate_due,
        )
        rec.runs[wf.name] = run
        state.touch(rec.view.incident_id)
        ctx = _Ctx(state, rec, wf, run, now_ms, out)
        self._begin_step(ctx, run.lanes[STEPS], attempt=1)

    def _escalate(self, ctx: _Ctx) -> None:
        run = ctx.run
        run.escalate_due_ms = None
        if run.escalated or not ctx.wf.escalation:
            return
        run.escalated = True
        lane = Lane(lane=ESCALATION)
        run.lanes[ESCALATION] = lane
        self._begin_step(ctx, lane, attempt=1)

    def _run_timers(
        self, state: AgentState, rec: IncidentRecord, run: Run, now_ms: int, out: PlanOutput
    ) -> None:
        wf = self.config.get(run.workflow)
        if wf is None:
            self._cancel_run(
                state, rec, run, "cancelled: the workflow is no longer in the workflow file", now_ms, out
            )
            return
        ctx = _Ctx(state, rec, wf, run, now_ms, out)
        if run.escalate_due_ms is not None and run.escalate_due_ms <= now_ms:
            state.touch(rec.view.incident_id)
            if self._unacked(rec):
                self._escalate(ctx)
            else:
                run.escalate_due_ms = None
        for name in (STEPS, ESCALATION):
            lane = run.lanes.get(name)
            if lane is None or lane.pending is None or lane.pending.due_ms > now_ms:
                continue
            if rec.runs.get(run.workflow) is not run:
                return
            state.touch(rec.view.incident_id)
            pending = lane.pending
            spec = self._spec(ctx, lane)
            if spec is None:  # the step is no longer in the workflow file: end this lane
                out.notes.append(
                    f"{rec.view.incident_id}: step {pending.step!r} of {run.workflow} is no longer in the "
                    "workflow file; its lane ends"
                )
                self._unindex(state, pending)
                run.lanes.pop(name, None)
                continue
            if pending.phase is Phase.AWAITING_APPROVAL:
                self._expire(ctx, lane, spec, pending, "nobody approved or denied it in time")
            elif pending.phase is Phase.DISPATCHED:
                waited = format_duration(max(now_ms - pending.created_ms, 0))
                reason = (
                    f"no result from an executor within {waited}; not retried, because the action may "
                    "have run (is `stormwatch executor` running?)"
                )
                failed = self._result(
                    ctx, spec, pending, CommandStatus.FAILED, reason=reason, retryable=False
                )
                out.results.append(failed)
                state.guards.record_finished(pending.command_id)
                self._unindex(state, pending)
                lane.pending = None
                self._step_done(ctx, lane, spec, pending.attempt, ok=False, retryable=False)
            else:
                lane.pending = None
                self._begin_step(ctx, lane, attempt=pending.attempt)
        self._finish_run_if_done(ctx)

    def _cancel_run(
        self, state: AgentState, rec: IncidentRecord, run: Run, reason: str, now_ms: int, out: PlanOutput
    ) -> None:
        """Stop a run. A command already sent runs to its end (it cannot be recalled); a pending
        approval request is closed as expired so the audit log does not show it open forever."""
        wf = self.config.get(run.workflow)
        for lane in run.lanes.values():
            pending = lane.pending
            if pending is None:
                continue
            self._unindex(state, pending)
            if pending.phase is Phase.AWAITING_APPROVAL:
                out.results.append(
                    CommandResult(
                        command_id=pending.command_id,
                        incident_id=rec.view.incident_id,
                        workflow=run.workflow,
                        step=pending.step,
                        action=pending.action,
                        status=CommandStatus.EXPIRED,
                        at=utc_from_ms(now_ms),
                        actor=f"agent:{run.workflow}",
                        reason=reason,
                        target=pending.target,
                        attempt=pending.attempt,
                        retryable=False,
                    )
                )
            lane.pending = None
        del rec.runs[run.workflow]
        state.touch(rec.view.incident_id)
        if wf is None:
            out.notes.append(f"run {run.run} of {run.workflow} for {rec.view.incident_id}: {reason}")

    # ------------------------------------------------------------------ steps

    def _spec(self, ctx: _Ctx, lane: Lane) -> StepSpec | None:
        """The lane's current step; a pending command's step is found by name, so a workflow file
        edited between restarts (steps reordered) still continues from the right step."""
        steps = ctx.wf.lane(lane.lane)
        if lane.pending is not None:
            for i, spec in enumerate(steps):
                if spec.name == lane.pending.step:
                    lane.index = i
                    return spec
            return None
        return steps[lane.index] if 0 <= lane.index < len(steps) else None

    def _context(
        self, ctx: _Ctx, spec: StepSpec, attempt: int, command_id: str
    ) -> dict[str, dict[str, str | None]]:
        v = ctx.rec.view
        return {
            "incident": {
                "id": v.incident_id,
                "title": v.title,
                "severity": v.severity.value,
                "state": v.state.value,
                "group_key": v.group_key,
                "rule": v.rule,
                "alert_count": str(v.alert_count),
                "firing_count": str(v.firing_count),
                "opened_at": _iso_dt(v.opened_at),
                "acknowledged_at": _iso_dt(v.acknowledged_at),
                "assignee": v.assignee,
                "reopen_count": str(v.reopen_count),
            },
            "event": dict(ctx.run.event),
            "labels": dict(v.labels),
            "workflow": {"name": ctx.wf.name, "run": str(ctx.run.run)},
            "step": {"name": spec.name, "attempt": str(attempt)},
            "command": {"id": command_id},
        }

    def _begin_step(self, ctx: _Ctx, lane: Lane, attempt: int) -> None:
        """Decide the lane's current step: refuse, dry-run, ask for approval, or dispatch."""
        spec = self._spec(ctx, lane)
        if spec is None:
            ctx.run.lanes.pop(lane.lane, None)
            self._finish_run_if_done(ctx)
            return
        state, rec, out = ctx.state, ctx.rec, ctx.out
        iid = rec.view.incident_id
        cid = command_id_for(iid, ctx.wf.name, ctx.run.run, spec.name, attempt)
        probe = Pending(
            command_id=cid,
            step=spec.name,
            action=spec.action,
            attempt=attempt,
            phase=Phase.DISPATCHED,
            due_ms=ctx.now_ms,
            created_ms=ctx.now_ms,
        )
        try:
            template_ctx = self._context(ctx, spec, attempt, cid)
            target = spec.target.render(template_ctx) if spec.target is not None else None
            params = render_params(spec.params, template_ctx, spec.url_params)
        except TemplateError as exc:
            reason = f"cannot render the step's parameters: {exc}"
            out.results.append(
                self._result(ctx, spec, probe, CommandStatus.FAILED, reason=reason, retryable=False)
            )
            self._step_done(ctx, lane, spec, attempt, ok=False, retryable=False)
            return
        probe.target = target
        probe.params = params
        verdict = state.guards.check(
            spec.guards, action=spec.action, target=target, incident_targets=rec.targets, now_ms=ctx.now_ms
        )
        if self.dry_run or ctx.wf.dry_run:
            if not verdict.allowed:
                would = f"would be refused: {verdict.reason}"
            elif spec.needs_approval(rec.view.labels):
                would = "would wait for approval, then be sent to an executor"
            else:
                would = "would be sent to an executor"
            shown = orjson.dumps({"action": spec.action, "target": target, "params": params}).decode()
            dry = self._result(
                ctx,
                spec,
                probe,
                CommandStatus.DRY_RUN,
                reason=f"dry run: {would}",
                output=shown[:_OUTPUT_LIMIT],
            )
            out.results.append(dry)
            self._step_done(ctx, lane, spec, attempt, ok=True, retryable=False)
            return
        if not verdict.allowed:
            out.results.append(self._result(ctx, spec, probe, CommandStatus.REFUSED, reason=verdict.reason))
            self._step_done(ctx, lane, spec, attempt, ok=False, retryable=False)
            return
        if spec.needs_approval(rec.view.labels):
            due = ctx.now_ms + spec.approval_ttl_ms
            probe.phase = Phase.AWAITING_APPROVAL
            probe.due_ms = due
            lane.pending = probe
            state.commands[cid] = (iid, ctx.wf.name, lane.lane)
            reason = (
                f"waiting for an operator: `stormwatch approve {cid} --by NAME` or "
                f"`stormwatch deny {cid} --by NAME --reason TEXT` before {_iso(due)}"
            )
            asked = self._result(
                ctx, spec, probe, CommandStatus.AWAITING_APPROVAL, reason=reason, expires_at=utc_from_ms(due)
            )
            out.results.append(asked)
            return
        self._dispatch(ctx, lane, spec, cid, attempt, target, params, approved=False)

    def _dispatch(
        self,
        ctx: _Ctx,
        lane: Lane,
        spec: StepSpec,
        cid: str,
        attempt: int,
        target: str | None,
        params: dict[str, Any],
        *,
        approved: bool,
    ) -> None:
        now = ctx.now_ms
        iid = ctx.rec.view.incident_id
        ctx.state.guards.record_dispatch(cid, action=spec.action, target=target, incident_id=iid, now_ms=now)
        if target and target not in ctx.rec.targets:
            ctx.rec.targets.append(target)
        expires = now + self.dispatch_timeout_ms
        pending = Pending(
            command_id=cid,
            step=spec.name,
            action=spec.action,
            attempt=attempt,
            phase=Phase.DISPATCHED,
            due_ms=expires + spec.timeout_ms + self.result_grace_ms,
            target=target,
            params=params,
            created_ms=now,
        )
        lane.pending = pending
        ctx.state.commands[cid] = (iid, ctx.wf.name, lane.lane)
        ctx.out.commands.append(
            MitigationCommand(
                command_id=cid,
                incident_id=iid,
                workflow=ctx.wf.name,
                step=spec.name,
                attempt=attempt,
                action=spec.action,
                target=target,
                params=params,
                timeout_s=spec.timeout_ms / 1000,
                dry_run=False,
                requires_approval=approved,
                status=CommandStatus.APPROVED if approved else CommandStatus.REQUESTED,
                created_at=utc_from_ms(now),
                expires_at=utc_from_ms(expires),
            )
        )
        ctx.out.results.append(self._result(ctx, spec, pending, CommandStatus.REQUESTED))
        ctx.state.touch(iid)

    def _expire(self, ctx: _Ctx, lane: Lane, spec: StepSpec, pending: Pending, why: str) -> None:
        reason = f"approval request expired at {_iso(pending.due_ms)}: {why}"
        ctx.out.results.append(
            self._result(ctx, spec, pending, CommandStatus.EXPIRED, reason=reason, retryable=False)
        )
        self._unindex(ctx.state, pending)
        lane.pending = None
        self._step_done(ctx, lane, spec, pending.attempt, ok=False, retryable=False)

    def _step_done(
        self, ctx: _Ctx, lane: Lane, spec: StepSpec, attempt: int, *, ok: bool, retryable: bool
    ) -> None:
        """The current step ended: next step, retry, or the on_failure policy."""
        ctx.state.touch(ctx.rec.view.incident_id)
        lane.pending = None
        if ok:
            self._next_step(ctx, lane)
            return
        if retryable and attempt <= spec.retries:
            due = ctx.now_ms + spec.backoff.delay_ms(attempt)
            cid = command_id_for(ctx.rec.view.incident_id, ctx.wf.name, ctx.run.run, spec.name, attempt + 1)
            lane.pending = Pending(
                command_id=cid,
                step=spec.name,
                action=spec.action,
                attempt=attempt + 1,
                phase=Phase.RETRY_WAIT,
                due_ms=due,
                created_ms=ctx.now_ms,
            )
            return
        policy = spec.on_failure
        if policy is OnFailure.CONTINUE:
            self._next_step(ctx, lane)
        elif policy is OnFailure.ESCALATE and lane.lane == STEPS:
            ctx.run.lanes.pop(STEPS, None)
            self._escalate(ctx)
            self._finish_run_if_done(ctx)
        else:  # abort (and escalate inside the escalation lane, which validation forbids)
            ctx.run.lanes.pop(lane.lane, None)
            if lane.lane == STEPS:
                ctx.run.escalate_due_ms = None
            self._finish_run_if_done(ctx)

    def _next_step(self, ctx: _Ctx, lane: Lane) -> None:
        lane.index += 1
        self._begin_step(ctx, lane, attempt=1)

    def _finish_run_if_done(self, ctx: _Ctx) -> None:
        run = ctx.run
        if not run.lanes and run.escalate_due_ms is None and ctx.rec.runs.get(run.workflow) is run:
            del ctx.rec.runs[run.workflow]
            ctx.state.touch(ctx.rec.view.incident_id)

    # ------------------------------------------------------------------ helpers

    def _find(
        self, state: AgentState, command_id: str, phase: Phase, now_ms: int, out: PlanOutput
    ) -> tuple[_Ctx, Lane, StepSpec, Pending] | None:
        where = state.commands.get(command_id)
        if where is None:
            return None
        iid, workflow, lane_name = where
        rec = state.incidents.get(iid)
        run = rec.runs.get(workflow) if rec is not None else None
        lane = run.lanes.get(lane_name) if run is not None else None
        pending = lane.pending if lane is not None else None
        wf = self.config.get(workflow)
        if rec is None or run is None or lane is None or pending is None or pending.command_id != command_id:
            state.commands.pop(command_id, None)
            return None
        if pending.phase is not phase or wf is None:
            return None
        ctx = _Ctx(state, rec, wf, run, now_ms, out)
        spec = self._spec(ctx, lane)
        if spec is None:
            return None
        return ctx, lane, spec, pending

    def _unindex(self, state: AgentState, pending: Pending) -> None:
        state.commands.pop(pending.command_id, None)

    def _result(
        self,
        ctx: _Ctx,
        spec: StepSpec,
        pending: Pending,
        status: CommandStatus,
        *,
        actor: str | None = None,
        reason: str | None = None,
        output: str | None = None,
        expires_at: datetime | None = None,
        retryable: bool = True,
    ) -> CommandResult:
        return CommandResult(
            command_id=pending.command_id,
            incident_id=ctx.rec.view.incident_id,
            workflow=ctx.wf.name,
            step=spec.name,
            action=spec.action,
            status=status,
            at=utc_from_ms(ctx.now_ms),
            actor=actor or f"agent:{ctx.wf.name}",
            reason=reason,
            output=output,
            target=pending.target,
            attempt=pending.attempt,
            expires_at=expires_at,
            retryable=retryable,
        )

    def _settle(self, state: AgentState, rec: IncidentRecord, *, existed: bool) -> None:
        """Keep an incident's record only while it matters: runs, timers, or run counts until it
        closes. Changes are marked by whoever made them; this only marks deletions."""
        iid = rec.view.incident_id
        closed = rec.view.state is IncidentState.CLOSED
        keep = bool(rec.runs or rec.not_ack_due or (rec.run_counts and not closed))
        if keep:
            state.incidents[iid] = rec
        else:
            state.incidents.pop(iid, None)
            if existed:
                state.touch(iid)
