"""Requests that change incidents (operators, the mitigation agent) and their results."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from stormwatch.schemas.common import Contract, Severity
from stormwatch.schemas.incident import RootCauseInfo
from stormwatch.schemas.silence import Silence


class OperatorAction(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    RESOLVE = "resolve"
    ASSIGN = "assign"
    ANNOTATE = "annotate"
    SET_SEVERITY = "set_severity"
    MERGE = "merge"
    SILENCE_ADD = "silence_add"
    SILENCE_EXPIRE = "silence_expire"
    ABSORB = "absorb"  # internal: the correlator tells merge_into's owner what it absorbed
    # Linking (issue #12): the linker's decisions (by "linker") or an operator's, each sent to the
    # partition of the incident it changes, so that partition alone writes its audit events.
    LINK = "link"  # incident_id becomes a member of link_into (a primary)
    LINK_MEMBER = "link_member"  # on the primary incident_id: member joined
    UNLINK = "unlink"  # incident_id is an incident of its own again
    UNLINK_MEMBER = "unlink_member"  # on the primary incident_id: member left
    ROOT_CAUSE = "root_cause"  # on the primary incident_id: the root cause is now root_cause
    # An operator's request to the linker, forwarded by the incident's partition (which knows its
    # scope); the linker's answer comes back as the commands above, or refused.
    SPLIT = "split"  # take incident_id out of the linked incident it is a member of
    JOIN = "join"  # link incident_id (with its members, if a primary) into link_into's incident
    # The notifier (issue #13), by "notifier": one notification's outcome, recorded on the
    # incident's audit log as notified / notify_failed (details: receiver, integration,
    # notification_id, attempt, outcome delivered|given_up, latency_ms, reason).
    NOTIFIED = "notified"
    # Internal, by "correlator": what inhibition muted in one partition over a group_interval
    # window, for the source's group (details.gkhash), recorded on its incident as `muted`.
    MUTED = "muted"


class OperatorCommand(Contract):
    """An operator's request, published on the incident commands topic.

    ``command_id`` makes a retried request idempotent; ``at`` is when the operator asked.
    """

    command_id: str
    action: OperatorAction
    incident_id: str | None = None  # all but the silence actions
    by: str = Field(min_length=1)
    at: datetime
    assignee: str | None = None  # ASSIGN
    note: str | None = None  # ANNOTATE, and an optional comment on any action
    severity: Severity | None = None  # SET_SEVERITY
    merge_into: str | None = None  # MERGE: incident_id that absorbs this one
    silence: Silence | None = None  # SILENCE_ADD
    silence_id: str | None = None  # SILENCE_EXPIRE
    details: dict[str, Any] = Field(default_factory=dict)  # ABSORB: source incident and fingerprints
    link_into: str | None = None  # LINK: the primary; JOIN: any incident of the target
    member: str | None = None  # LINK_MEMBER, UNLINK_MEMBER: the member incident
    relation: str | None = None  # LINK, LINK_MEMBER: how they are related (upstream, shared_host ...)
    # LINK, LINK_MEMBER: the path that relates them; ROOT_CAUSE: from the root down to the earliest
    # components it explains. Component text ids, at most 5 paths (the linker's REASON_PATHS).
    paths: list[list[str]] = Field(default_factory=list, max_length=5)
    root_cause: RootCauseInfo | None = None  # ROOT_CAUSE
    reason: str | None = None  # the linking actions: why, in words


class CommandStatus(StrEnum):
    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    REFUSED = "refused"  # a guard said no (rate limit, cooldown, blast radius)
    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DRY_RUN = "dry_run"


class MitigationCommand(Contract):
    """A step of a workflow to execute; ``command_id`` is derived from (incident, workflow, step, attempt)."""

    command_id: str
    incident_id: str
    workflow: str
    step: str
    attempt: int = 1
    action: str
    target: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = 30.0
    dry_run: bool = False
    requires_approval: bool = False
    status: CommandStatus = CommandStatus.REQUESTED
    created_at: datetime
    approval_expires_at: datetime | None = None
    # Executors must not start the command after this time (report it failed instead): a command
    # that waited in the topic while executors were down may no longer be wanted.
    expires_at: datetime | None = None


class CommandResult(Contract):
    """What became of a mitigation command; the correlator turns each into an incident event."""

    command_id: str
    incident_id: str
    workflow: str
    step: str
    action: str
    status: CommandStatus
    at: datetime
    actor: str
    reason: str | None = None
    output: str | None = None
    duration_s: float | None = None
    target: str | None = None  # what the action acted on (the guards' key)
    attempt: int = 1
    expires_at: datetime | None = None  # AWAITING_APPROVAL: when the request expires
    # FAILED: False when a retry cannot help or could run the action twice (outcome unknown).
    retryable: bool = True
