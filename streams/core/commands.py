"""Operator commands and mitigation results: one small handler per action, dispatched from a table.

Commands are idempotent by ``command_id`` (kept per incident), refused with a reason when the
incident's state does not allow them, and every outcome, refusals included, is an audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stormwatch.schemas.commands import CommandResult, CommandStatus, OperatorAction, OperatorCommand
from stormwatch.schemas.common import ms_from_dt, utc_from_ms
from stormwatch.schemas.dlq import DeadLetterReason
from stormwatch.schemas.incident import IncidentEventType, IncidentState
from stormwatch.streams.core.emission import CORRELATOR, Emitter, incident_severity
from stormwatch.streams.core.groups import GroupState, IncidentRuntime
from stormwatch.streams.core.ids import gkhash_of_incident
from stormwatch.streams.core.incidents import Incidents
from stormwatch.streams.core.lifecycle import Action, transition
from stormwatch.streams.core.links import LINK_ACTIONS, LINKER, apply_link_command, link_actor
from stormwatch.streams.core.silencing import Silences
from stormwatch.streams.core.state import PartitionState

__all__ = ["Commands", "IncidentCommand"]


@dataclass(slots=True)
class IncidentCommand:
    """An operator command for an incident this partition holds, with what its handler needs."""

    cmd: OperatorCommand
    group: GroupState
    inc: IncidentRuntime
    t: int  # event time it applies at
    actor: str
    details: dict[str, Any]  # of the event it writes


# Handled whatever the incident's state: the lifecycle table refuses what a closed incident
# cannot do, and a closed incident can still be annotated. Anything else needs it not closed.
_ANY_STATE = frozenset(
    {
        OperatorAction.ACKNOWLEDGE,
        OperatorAction.RESOLVE,
        OperatorAction.MERGE,
        OperatorAction.ANNOTATE,
        OperatorAction.NOTIFIED,  # a resolved notification can land after the incident closed
    }
)

# What a NOTIFIED command's details may carry onto its audit event (the notifier's fields).
_NOTIFY_FIELDS = (
    "receiver",
    "integration",
    "notification_id",
    "attempt",
    "outcome",
    "latency_ms",
    "delivery_latency_ms",
    "trigger",
    "seq",
    "reason",
    "first",
)


class Commands:
    """Applies the operator commands and mitigation results of the correlator input."""

    def __init__(
        self, state: PartitionState, emitter: Emitter, incidents: Incidents, silences: Silences
    ) -> None:
        self._state = state
        self._emitter = emitter
        self._incidents = incidents
        self._silences = silences
        # Hands an operator's split/join to the linker; a string is why it cannot (linking only).
        self.forward: Callable[[IncidentCommand], str | None] | None = None

    def on_command(self, payload: Any, raw: bytes, offset: int, clock: int | None) -> GroupState | None:
        """Apply one operator command; returns the group whose timers may have changed."""
        try:
            cmd = OperatorCommand.model_validate(payload)
        except ValueError as exc:
            self._dead_letter(
                DeadLetterReason.INVALID_COMMAND, f"operator command: {exc}", raw, offset, clock
            )
            return None
        partition_wide = _PARTITION_HANDLERS.get(cmd.action)
        if partition_wide is not None:
            partition_wide(self, cmd, raw, offset, clock)
            return None
        group, inc = self._incident_for(cmd.incident_id or "")
        if (group is None or inc is None) and cmd.action is OperatorAction.NOTIFIED:
            # A notification about an incident closed and collected since: its outcome stays in
            # the notification log; there is no audit log left to write it on.
            self._state.stats["notified_unknown_incident"] += 1
            return None
        if group is None or inc is None:
            self._dead_letter(
                DeadLetterReason.UNKNOWN_INCIDENT,
                f"{cmd.action.value} for incident {cmd.incident_id}, which this correlator does not hold "
                "(unknown, or closed and collected)",
                raw,
                offset,
                clock,
            )
            return None
        if cmd.command_id in inc.seen_commands:
            self._state.stats["commands_duplicate"] += 1
            return None
        inc.remember_command(cmd.command_id)
        self._state.touch_group(group)
        if cmd.action is OperatorAction.ABSORB:
            actor = CORRELATOR
        elif cmd.action in LINK_ACTIONS:
            actor = link_actor(cmd)
        elif cmd.action is OperatorAction.NOTIFIED:
            actor = cmd.by  # "notifier"
        else:
            actor = f"operator:{cmd.by}"
        details: dict[str, Any] = {"command_id": cmd.command_id}
        if cmd.note:
            details["note"] = cmd.note
        t = clock if clock is not None else ms_from_dt(cmd.at)
        c = IncidentCommand(cmd, group, inc, t, actor, details)
        if inc.state is IncidentState.CLOSED and cmd.action not in _ANY_STATE:
            self._refuse(c, f"incident {inc.incident_id} is closed; only annotate is allowed")
        else:
            _INCIDENT_HANDLERS.get(cmd.action, Commands._not_applicable)(self, c)
        return group

    def on_result(self, payload: Any, raw: bytes, offset: int, clock: int | None) -> GroupState | None:
        """Record one mitigation result on its incident; returns the group whose timers may have changed."""
        try:
            result = CommandResult.model_validate(payload)
        except ValueError as exc:
            self._dead_letter(DeadLetterReason.INVALID_COMMAND, f"command result: {exc}", raw, offset, clock)
            return None
        group, inc = self._incident_for(result.incident_id)
        if group is None or inc is None:
            self._dead_letter(
                DeadLetterReason.UNKNOWN_INCIDENT,
                f"result of {result.command_id} for unknown incident",
                raw,
                offset,
                clock,
            )
            return None
        key = f"{result.command_id}:{result.status.value}"
        if key in inc.seen_commands:
            return None
        inc.remember_command(key)
        self._state.touch_group(group)
        t = clock if clock is not None else ms_from_dt(result.at)
        actor = result.actor or f"agent:{result.workflow}"
        details = _result_details(result)
        cause = f"{result.workflow}/{result.step}: {result.action} {result.status.value}"
        self._state.stats[f"mitigation_{result.status.value}"] += 1
        if result.status is CommandStatus.STARTED and inc.state in (
            IncidentState.OPEN,
            IncidentState.ACKNOWLEDGED,
        ):
            inc.mitigating_ms = t
            self._emitter.transition(
                group, Action.MITIGATE, t=t, actor=actor, cause=cause, rule=None, details=details
            )
        else:
            self._emitter.emit(
                group, IncidentEventType.MITIGATION, t=t, actor=actor, cause=cause, details=details
            )
        return group

    # ------------------------------------------------------------------ partition-wide commands

    def _silence_add(self, cmd: OperatorCommand, raw: bytes, offset: int, clock: int | None) -> None:
        if cmd.silence is None:
            return
        self._silences.add(cmd.silence)
        self._state.meta_dirty = True
        if self._state.partition == 0:  # one partition writes the silences topic
            self._state.out.silences.append((cmd.silence.silence_id, cmd.silence.to_bytes()))

    def _silence_expire(self, cmd: OperatorCommand, raw: bytes, offset: int, clock: int | None) -> None:
        silence = self._silences.get(cmd.silence_id or "")
        if silence is None:
            if self._state.partition == 0:
                reason = f"unknown silence {cmd.silence_id}"
                self._dead_letter(DeadLetterReason.INVALID_COMMAND, reason, raw, offset, clock)
            return
        if self._silences.expire(silence, clock if clock is not None else ms_from_dt(cmd.at)):
            self._state.meta_dirty = True
            if self._state.partition == 0:
                self._state.out.silences.append((silence.silence_id, silence.to_bytes()))

    def _muted(self, cmd: OperatorCommand, raw: bytes, offset: int, clock: int | None) -> None:
        """What another partition's inhibition muted for a group of this one (streams.core.mutetally):
        a ``muted`` event on the group's incident, in any state (a closed NodeDown incident's log
        still says what it muted), its count added to the incident's."""
        del raw, offset
        details = dict(cmd.details)
        group = self._state.groups.get(str(details.pop("gkhash", "")))
        inc = group.incident if group is not None else None
        if group is None or inc is None:
            self._state.stats["muted_unrecorded"] += 1  # the source's group never opened an incident
            return
        if cmd.command_id in inc.seen_commands:
            return
        inc.remember_command(cmd.command_id)
        inc.muted += int(details.get("alerts", 0))
        self._state.touch_group(group)
        t = clock if clock is not None else ms_from_dt(cmd.at)
        cause = (
            f"muted {details.get('alerts', 0)} alert(s), {details.get('notifications', 0)} notification(s) "
            f"by inhibit rule {details.get('rule')}"
        )
        self._emitter.emit(
            group, IncidentEventType.MUTED, t=t, actor=CORRELATOR, cause=cause, details=details
        )

    # ------------------------------------------------------------------ incident commands

    def _acknowledge(self, c: IncidentCommand) -> None:
        if not self._allowed(c, Action.ACKNOWLEDGE):
            return
        c.inc.acknowledged_ms = c.t
        self._emitter.observe("mtta", c.t - c.inc.opened_ms, c.group)
        self._state.stats["incidents_acknowledged"] += 1
        cause = f"acknowledged by {c.cmd.by}"
        self._emitter.transition(
            c.group, Action.ACKNOWLEDGE, t=c.t, actor=c.actor, cause=cause, rule=None, details=c.details
        )

    def _resolve(self, c: IncidentCommand) -> None:
        if not self._allowed(c, Action.RESOLVE):
            return
        c.inc.resolved_ms = c.t
        self._emitter.observe("mttr", c.t - c.inc.opened_ms, c.group)
        self._state.stats["incidents_resolved"] += 1
        cause = f"resolved by {c.cmd.by}"
        self._emitter.transition(
            c.group, Action.RESOLVE, t=c.t, actor=c.actor, cause=cause, rule=None, details=c.details
        )

    def _merge(self, c: IncidentCommand) -> None:
        """Close this incident as merged, and tell the target's partition what it absorbs."""
        target = c.cmd.merge_into or ""
        if gkhash_of_incident(target) is None or target == c.inc.incident_id:
            self._refuse(c, f"cannot merge into {target!r}: give another incident id")
            return
        if not self._allowed(c, Action.MERGE):
            return
        fingerprints = sorted(a.fingerprint for a in c.group.alerts.values() if a.member)
        source_id = c.inc.incident_id
        cause = f"merged into {target} by {c.cmd.by}"
        self._incidents.close(c.group, c.t, cause, None, merge_into=target, actor=c.actor)
        absorb = OperatorCommand(
            command_id=f"absorb:{source_id}",
            action=OperatorAction.ABSORB,
            incident_id=target,
            by=c.cmd.by,
            at=utc_from_ms(c.t),
            details={"from": source_id, "fingerprints": fingerprints},
        )
        self._state.out.feedback.append((target, absorb.to_bytes()))

    def _assign(self, c: IncidentCommand) -> None:
        if not c.cmd.assignee:
            self._refuse(c, "assign needs an assignee")
            return
        c.inc.assignee = c.cmd.assignee
        c.details["assignee"] = c.cmd.assignee
        self._record(c, IncidentEventType.ASSIGNED, f"assigned to {c.cmd.assignee}")

    def _annotate(self, c: IncidentCommand) -> None:
        if not c.cmd.note:
            self._refuse(c, "annotate needs a note")
            return
        self._record(c, IncidentEventType.ANNOTATED, f"note by {c.cmd.by}")

    def _notified(self, c: IncidentCommand) -> None:
        """A notification's outcome (the notifier, issue #13): ``notified`` when a receiver accepted
        it, ``notify_failed`` when it was given up. The state is left as it is; the first delivery
        of an incident is its ``mtta_notified``: from opened to the moment a person was told."""
        sent = c.cmd.details
        receiver = sent.get("receiver")
        if not isinstance(receiver, str) or not receiver:
            self._refuse(c, "notified needs details.receiver")
            return
        c.details.update({k: sent[k] for k in _NOTIFY_FIELDS if k in sent})
        integration = sent.get("integration") or "?"
        if sent.get("outcome", "delivered") != "delivered":
            self._state.stats["notifications_failed"] += 1
            reason = sent.get("reason") or "given up"
            cause = f"notification to {receiver} ({integration}) given up: {reason}"
            self._record(c, IncidentEventType.NOTIFY_FAILED, cause)
            return
        self._state.stats["notifications_delivered"] += 1
        if sent.get("first") is True:
            self._emitter.observe("mtta_notified", ms_from_dt(c.cmd.at) - c.inc.opened_ms, c.group)
        cause = f"notified {receiver} ({integration}), attempt {sent.get('attempt', 1)}"
        self._record(c, IncidentEventType.NOTIFIED, cause)

    def _set_severity(self, c: IncidentCommand) -> None:
        if c.cmd.severity is None:
            self._refuse(c, "set_severity needs a severity")
            return
        before = incident_severity(c.group)
        c.inc.severity_override = c.cmd.severity.value
        c.details["severity"] = c.cmd.severity.value
        cause = f"severity set from {before} to {c.cmd.severity.value} by {c.cmd.by}"
        self._record(c, IncidentEventType.SEVERITY_CHANGED, cause)

    def _absorb(self, c: IncidentCommand) -> None:
        """The other side of a merge: this incident now carries the merged one's alerts' story."""
        c.details.update(c.cmd.details)
        self._record(c, IncidentEventType.ABSORBED, f"absorbed incident {c.cmd.details.get('from')}")

    def _linking(self, c: IncidentCommand) -> None:
        """The linker's decisions and an operator's link/split (streams.core.links)."""
        outcome = apply_link_command(c.inc, c.cmd)
        if isinstance(outcome, str):
            self._refuse(c, outcome)
            return
        c.details.update(outcome.details)
        self._record(c, outcome.etype, outcome.cause)

    def _request(self, c: IncidentCommand) -> None:
        """An operator's split or join goes to the linker (it alone knows the linked incidents);
        the linker's refusal comes back as the same action by ``linker``, recorded here."""
        if c.cmd.by == LINKER:
            self._refuse(c, c.cmd.reason or "refused by the linker")
            return
        if self.forward is None:
            self._refuse(
                c,
                "linking is off: this correlator has no topology (set correlator.topology_file and run "
                "`stormwatch link`)",
            )
            return
        if c.cmd.action is OperatorAction.JOIN:
            target = c.cmd.link_into or ""
            if gkhash_of_incident(target) is None or target == c.inc.incident_id:
                self._refuse(c, f"join needs --into naming another incident, not {target!r}")
                return
        problem = self.forward(c)
        if problem is not None:
            self._refuse(c, problem)

    def _not_applicable(self, c: IncidentCommand) -> None:
        self._refuse(c, f"{c.cmd.action.value} does not apply to an incident")

    # ------------------------------------------------------------------ helpers

    def _allowed(self, c: IncidentCommand, action: Action) -> bool:
        """Whether the lifecycle table allows ``action`` now; refuses the command if not."""
        verdict = transition(c.inc.state, action)
        if not verdict.allowed:
            self._refuse(c, verdict.reason)
        return verdict.allowed

    def _record(self, c: IncidentCommand, etype: IncidentEventType, cause: str) -> None:
        """An event that leaves the incident's state as it is."""
        self._emitter.emit(c.group, etype, t=c.t, actor=c.actor, cause=cause, details=c.details)

    def _refuse(self, c: IncidentCommand, reason: str) -> None:
        self._state.stats["commands_refused"] += 1
        details = {"command_id": c.cmd.command_id, "action": c.cmd.action.value, "reason": reason}
        if c.cmd.details.get("request"):
            details["request"] = c.cmd.details["request"]
        self._emitter.emit(
            c.group, IncidentEventType.REFUSED, t=c.t, actor=c.actor, cause=reason, details=details
        )

    def _incident_for(self, incident_id: str) -> tuple[GroupState | None, IncidentRuntime | None]:
        gkhash = gkhash_of_incident(incident_id)
        group = self._state.groups.get(gkhash) if gkhash else None
        if group is None or group.incident is None or group.incident.incident_id != incident_id:
            return group, None
        return group, group.incident

    def _dead_letter(
        self, reason: DeadLetterReason, detail: str, raw: bytes, offset: int, clock: int | None
    ) -> None:
        self._state.dead_letter(reason, detail, raw, offset, clock if clock is not None else 0)


def _result_details(result: CommandResult) -> dict[str, Any]:
    """What a mitigation event records of the result: the optional fields only when set."""
    details: dict[str, Any] = {
        "command_id": result.command_id,
        "workflow": result.workflow,
        "step": result.step,
        "action": result.action,
        "status": result.status.value,
    }
    if result.reason:
        details["reason"] = result.reason
    if result.target is not None:
        details["target"] = result.target
    if result.attempt != 1:
        details["attempt"] = result.attempt
    if result.expires_at is not None:
        details["expires_at"] = result.expires_at.isoformat()
    return details


_PARTITION_HANDLERS: dict[
    OperatorAction, Callable[[Commands, OperatorCommand, bytes, int, int | None], None]
] = {
    OperatorAction.SILENCE_ADD: Commands._silence_add,
    OperatorAction.SILENCE_EXPIRE: Commands._silence_expire,
    OperatorAction.MUTED: Commands._muted,
}
"""Commands about the partition, not one incident: silences (every partition applies them) and
muted summaries (for a group of this partition, found by gkhash: no incident id is known)."""

_INCIDENT_HANDLERS: dict[OperatorAction, Callable[[Commands, IncidentCommand], None]] = {
    OperatorAction.ACKNOWLEDGE: Commands._acknowledge,
    OperatorAction.RESOLVE: Commands._resolve,
    OperatorAction.MERGE: Commands._merge,
    OperatorAction.ASSIGN: Commands._assign,
    OperatorAction.ANNOTATE: Commands._annotate,
    OperatorAction.SET_SEVERITY: Commands._set_severity,
    OperatorAction.ABSORB: Commands._absorb,
    **dict.fromkeys(LINK_ACTIONS, Commands._linking),
    OperatorAction.SPLIT: Commands._request,
    OperatorAction.JOIN: Commands._request,
    OperatorAction.NOTIFIED: Commands._notified,
}
"""One handler per incident action; an action missing here is refused as not applying."""
