"""The mitigation agent's state: what it knows about incidents, its workflow runs and guard history.

All of it is written to the compacted agent state topic in the same transaction as the commands
and results it led to, and read back on start. So after a crash the agent continues from the
last committed decision: it never re-decides a step it already sent, and a pending approval,
retry or escalation timer survives the restart with its original deadline.

Records (key -> JSON value):
- ``incident/{incident_id}``: an ``IncidentRecord`` (the incident as last seen, its active runs,
  run counts, timers and the targets touched for it);
- ``guard/...``: the guard state (see agents.guards).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from stormwatch.agents.core.guards import RECORD_PREFIX as GUARD_PREFIX
from stormwatch.agents.core.guards import GuardState
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import IncidentEvent, IncidentSnapshot, IncidentState

__all__ = [
    "AgentState",
    "IncidentRecord",
    "IncidentView",
    "Lane",
    "Pending",
    "Phase",
    "Run",
]

INCIDENT_PREFIX = "incident/"


class IncidentView(BaseModel):
    """The fields of the latest incident event the agent needs (conditions, templates, timers)."""

    incident_id: str
    state: IncidentState
    severity: Severity
    title: str
    group_key: str
    rule: str
    labels: dict[str, str]
    alert_count: int
    firing_count: int
    opened_at: datetime
    acknowledged_at: datetime | None = None
    assignee: str | None = None
    reopen_count: int = 0
    last_seq: int

    @classmethod
    def of(cls, event: IncidentEvent) -> IncidentView:
        """The view of the incident as the event's snapshot shows it (``labels``: its group labels)."""
        return cls(
            incident_id=event.incident_id,
            labels=dict(event.snapshot.group_labels),
            last_seq=event.seq,
            **event.snapshot.model_dump(include=_FROM_SNAPSHOT),
        )


# The view's fields that the snapshot has under the same name: copied, not listed a second time.
_FROM_SNAPSHOT = set(IncidentView.model_fields) & set(IncidentSnapshot.model_fields)


class Phase(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # due: when the request expires
    DISPATCHED = "dispatched"  # due: when the agent stops waiting for an executor's result
    RETRY_WAIT = "retry_wait"  # due: when the next attempt starts


class Pending(BaseModel):
    """The command a lane is waiting on, with everything needed to send it later."""

    command_id: str
    step: str
    action: str
    attempt: int
    phase: Phase
    due_ms: int
    target: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_ms: int


class Lane(BaseModel):
    """A sequence of steps being worked through: the workflow's steps, or its escalation steps."""

    lane: str  # "steps" or "escalation"
    index: int = 0
    pending: Pending | None = None


class Run(BaseModel):
    """One run of one workflow for one incident."""

    workflow: str
    run: int
    trigger: str  # the trigger event (opened, ..., not_acknowledged)
    started_ms: int
    event: dict[str, str]  # the triggering event's template fields (type, seq, at, actor, cause)
    lanes: dict[str, Lane] = Field(default_factory=dict)
    escalated: bool = False
    escalate_due_ms: int | None = None


class IncidentRecord(BaseModel):
    # Restoring a partition parses every record at once: cached strings would pin its memory
    # arenas for good (schemas.common.Contract says more).
    model_config = ConfigDict(cache_strings=False)

    view: IncidentView
    partition: int = 0  # incident topic partition: timers wait until it is caught up
    runs: dict[str, Run] = Field(default_factory=dict)  # active runs by workflow name
    run_counts: dict[str, int] = Field(default_factory=dict)
    unacked_since_ms: int | None = None  # (re)opened and not acknowledged since
    not_ack_due: dict[str, int] = Field(default_factory=dict)  # workflow -> when its trigger fires
    targets: list[str] = Field(default_factory=list)  # distinct targets touched (blast radius)


@dataclass
class AgentState:
    """Everything the planner reads and changes; ``take_changes`` gives the records to write."""

    incidents: dict[str, IncidentRecord] = field(default_factory=dict)
    guards: GuardState = field(default_factory=GuardState)
    dirty: set[str] = field(default_factory=set)  # incident ids changed or deleted
    # Not persisted (rebuilt): command id -> (incident id, workflow, lane) of pending commands.
    commands: dict[str, tuple[str, str, str]] = field(default_factory=dict)

    def touch(self, incident_id: str) -> None:
        self.dirty.add(incident_id)

    def reindex(self) -> None:
        self.commands = {}
        for iid, rec in self.incidents.items():
            for run in rec.runs.values():
                for lane in run.lanes.values():
                    if lane.pending is not None:
                        self.commands[lane.pending.command_id] = (iid, run.workflow, lane.lane)

    def take_changes(self) -> dict[str, bytes | None]:
        """Record key -> value (None: tombstone) of everything changed since the last call."""
        out: dict[str, bytes | None] = {}
        for iid in sorted(self.dirty):
            rec = self.incidents.get(iid)
            out[INCIDENT_PREFIX + iid] = None if rec is None else orjson.dumps(rec.model_dump(mode="json"))
        self.dirty.clear()
        for key, value in self.guards.take_changes().items():
            out[key] = None if value is None else orjson.dumps(value)
        return out

    @classmethod
    def restore(cls, records: dict[str, bytes]) -> AgentState:
        """Rebuild from the latest value of every record key (as read from the compacted topic)."""
        incidents: dict[str, IncidentRecord] = {}
        guard_records: dict[str, Any] = {}
        for key, value in records.items():
            if key.startswith(INCIDENT_PREFIX):
                rec = IncidentRecord.model_validate_json(value)
                incidents[key.removeprefix(INCIDENT_PREFIX)] = rec
            elif key.startswith(GUARD_PREFIX):
                guard_records[key] = orjson.loads(value)
        state = cls(incidents=incidents, guards=GuardState.restore(guard_records))
        state.reindex()
        return state

    def pending_approvals(self) -> list[tuple[IncidentRecord, Run, Pending]]:
        """Commands awaiting an operator's answer (for `stormwatch approvals`)."""
        out = []
        for rec in self.incidents.values():
            for run in rec.runs.values():
                for lane in run.lanes.values():
                    p = lane.pending
                    if p is not None and p.phase is Phase.AWAITING_APPROVAL:
                        out.append((rec, run, p))
        return out
