"""Linking commands (issue #12) applied to the incident a correlator partition holds.

The linker never writes the audit log: each of its decisions arrives as one command per incident
it changes (the member's ``link``, the primary's ``link_member`` ...), routed by gkhash like an
operator's, so the owning partition writes the event and ``seq`` stays contiguous. Each function
here checks the command against the incident and changes it, or returns why it cannot apply
without changing anything; ``Commands`` records the outcome (or the refusal) as an event, so the
event's snapshot already carries the new ``linked_into``, ``members`` and ``root_cause``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.incident import IncidentEventType
from stormwatch.streams.core.groups import IncidentRuntime
from stormwatch.streams.core.ids import gkhash_of_incident

__all__ = ["LINKER", "LINK_ACTIONS", "LinkOutcome", "apply_link_command", "link_actor"]

LINKER = "linker"
"""The ``by`` of the linker stage's commands, and the actor of their events."""


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    """The event a linking command writes: its type, cause and details (besides command_id)."""

    etype: IncidentEventType
    cause: str
    details: dict[str, Any]


def link_actor(cmd: OperatorCommand) -> str:
    """``linker`` for the linker's decisions, ``operator:NAME`` for an operator's."""
    return LINKER if cmd.by == LINKER else f"operator:{cmd.by}"


def apply_link_command(inc: IncidentRuntime, cmd: OperatorCommand) -> LinkOutcome | str:
    """Apply one linking command to ``inc``; a string is the refusal reason (nothing changed)."""
    return _HANDLERS[cmd.action](inc, cmd)


def _link(inc: IncidentRuntime, cmd: OperatorCommand) -> LinkOutcome | str:
    """A member of ``link_into`` from now on. A primary that joins another (a merge of two linked
    incidents) hands its members and root cause over: the linker links each member on its own."""
    target = cmd.link_into or ""
    if problem := _not_another(inc, target, "link into"):
        return problem
    if inc.linked_into == target:
        return f"already linked into {target}"
    details = _relation(cmd, link_into=target)
    if inc.linked_into is not None:
        details["previous"] = inc.linked_into
    if inc.members:
        details["members"] = list(inc.members)
    inc.linked_into, inc.members, inc.root_cause = target, [], None
    return LinkOutcome(IncidentEventType.LINKED, _because(f"linked into {target}", cmd), details)


def _link_member(inc: IncidentRuntime, cmd: OperatorCommand) -> LinkOutcome | str:
    member = cmd.member or ""
    if problem := _not_another(inc, member, "add member"):
        return problem
    if inc.linked_into is not None:
        return f"{inc.incident_id} is a member of {inc.linked_into}; only a primary has members"
    if member in inc.members:
        return f"{member} is already a member"
    inc.members.append(member)
    details = _relation(cmd, member=member)
    return LinkOutcome(IncidentEventType.MEMBER_ADDED, _because(f"{member} linked in", cmd), details)


def _unlink(inc: IncidentRuntime, cmd: OperatorCommand) -> LinkOutcome | str:
    primary = inc.linked_into
    if primary is None:
        return f"{inc.incident_id} is not linked into another incident"
    inc.linked_into = None
    details = _reason(cmd, linked_from=primary)
    return LinkOutcome(IncidentEventType.UNLINKED, _because(f"unlinked from {primary}", cmd), details)


def _unlink_member(inc: IncidentRuntime, cmd: OperatorCommand) -> LinkOutcome | str:
    member = cmd.member or ""
    if member not in inc.members:
        return f"{member or 'no member given'} is not a member of {inc.incident_id}"
    inc.members.remove(member)
    details = _reason(cmd, member=member)
    return LinkOutcome(IncidentEventType.UNLINKED, _because(f"{member} unlinked", cmd), details)


def _root_cause(inc: IncidentRuntime, cmd: OperatorCommand) -> LinkOutcome | str:
    root = cmd.root_cause
    if root is None:
        return "root_cause needs a root_cause"
    if inc.linked_into is not None:
        return f"{inc.incident_id} is a member of {inc.linked_into}; its primary has the root cause"
    previous = inc.root_cause["component"] if inc.root_cause is not None else None
    inc.root_cause = root.model_dump(mode="json", exclude={"schema_version"})
    details: dict[str, Any] = {"root_cause": dict(inc.root_cause), "previous": previous}
    if cmd.paths:
        details["paths"] = [list(p) for p in cmd.paths]
    if cmd.reason:
        details["reason"] = cmd.reason
    text = f"root cause {root.component} ({root.decided_by})" + (f", was {previous}" if previous else "")
    return LinkOutcome(IncidentEventType.ROOT_CAUSE_CHANGED, text, details)


def _not_another(inc: IncidentRuntime, other: str, what: str) -> str | None:
    """Why ``other`` cannot be the other incident of a link, or None when it can."""
    if gkhash_of_incident(other) is None:
        return f"cannot {what} {other!r}: give another incident id"
    if other == inc.incident_id:
        return f"cannot {what} {other}: an incident is not linked to itself"
    return None


def _relation(cmd: OperatorCommand, **details: Any) -> dict[str, Any]:
    if cmd.relation:
        details["relation"] = cmd.relation
    if cmd.paths:
        details["paths"] = [list(p) for p in cmd.paths]
    return _reason(cmd, **details)


def _reason(cmd: OperatorCommand, **details: Any) -> dict[str, Any]:
    if cmd.reason:
        details["reason"] = cmd.reason
    if cmd.details.get("request"):
        details["request"] = cmd.details["request"]  # the operator's split/join it answers
    return details


def _because(text: str, cmd: OperatorCommand) -> str:
    return f"{text}: {cmd.reason}" if cmd.reason else text


_HANDLERS: dict[OperatorAction, Callable[[IncidentRuntime, OperatorCommand], LinkOutcome | str]] = {
    OperatorAction.LINK: _link,
    OperatorAction.LINK_MEMBER: _link_member,
    OperatorAction.UNLINK: _unlink,
    OperatorAction.UNLINK_MEMBER: _unlink_member,
    OperatorAction.ROOT_CAUSE: _root_cause,
}

LINK_ACTIONS = frozenset(_HANDLERS)
"""The actions this module applies."""
