"""Which receivers an incident goes to: the route tree, with Alertmanager's semantics.

A route matches when all its matchers do. The search is depth-first and left to right: at each
matching route the children are tried in order, the first matching child ends the search at
that level unless it says ``continue: true``, and a route none of whose children match is a
result itself. The root has no matchers, so every incident gets at least the root's receiver.
Settings (receiver, intervals, ``notify_on``, ``after_ack``) were inherited when the file was
compiled; mute and active time intervals are not inherited, as in Alertmanager.

Matchers see the incident, not single alerts: its group labels (the correlation rule's
``group_by``), and, under reserved names that take precedence over a group label of the same
name, ``severity`` (the incident's, after any operator override), ``rule``, ``state`` and, when
the incident has one, ``root_cause``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from stormwatch.agents.core.notify_config import NotifierConfig, RouteNode
from stormwatch.agents.core.timeintervals import TimeIntervalSet
from stormwatch.schemas.incident import IncidentSnapshot

__all__ = ["RESERVED_LABELS", "matching_routes", "muted_by", "route", "route_labels"]

RESERVED_LABELS = ("severity", "rule", "state", "root_cause")
"""Names the incident's own fields are matched under (they win over group labels)."""


def route_labels(snapshot: IncidentSnapshot) -> dict[str, str]:
    """The label set routes match: group labels, then the incident's reserved fields.

    ``root_cause`` is the root cause the linker named, as ``kind/name`` (``database/orders-db``,
    ``node/ip-10-1-2-3``: the component without its scope, which the group labels carry); absent,
    the label is absent, so ``root_cause=""`` matches and ``root_cause=~".+"`` does not. A member
    of a linked incident has none: its primary is the one notified.
    """
    labels = dict(snapshot.group_labels)
    labels["severity"] = snapshot.severity.value
    labels["rule"] = snapshot.rule
    labels["state"] = snapshot.state.value
    root_cause = snapshot.root_cause
    if root_cause is not None:
        labels["root_cause"] = f"{root_cause.kind}/{root_cause.name}"
    else:
        labels.pop("root_cause", None)
    return labels


def matching_routes(node: RouteNode, labels: Mapping[str, str]) -> list[RouteNode]:
    """Every route the labels end at, in tree order (Alertmanager's ``Route.Match``)."""
    plain = dict(labels)
    if not all(m.matches(plain) for m in node.matchers):
        return []
    found: list[RouteNode] = []
    for child in node.routes:
        matched = matching_routes(child, plain)
        found.extend(matched)
        if matched and not child.continue_:
            break
    return found or [node]


def route(config: NotifierConfig, labels: Mapping[str, str]) -> tuple[RouteNode, ...]:
    """The routes an incident with ``labels`` notifies through, one per receiver.

    Alertmanager sends once per matching route; here a receiver that two routes reach (with
    ``continue``) gets one notification, on the first route's settings, because a notification's
    id is (incident, event, receiver) and the receiver is told about an incident once per event.
    """
    seen: set[str] = set()
    out: list[RouteNode] = []
    for node in matching_routes(config.route, labels):
        if node.receiver not in seen:
            seen.add(node.receiver)
            out.append(node)
    return tuple(out)


def muted_by(
    intervals: Mapping[str, TimeIntervalSet],
    mute: Sequence[str],
    active: Sequence[str],
    at_ms: int,
) -> str | None:
    """Why a route is muted at ``at_ms``, or None: inside a mute interval, or outside every
    active interval (when it has any). Names no longer defined (a changed file) are skipped."""
    for name in mute:
        interval = intervals.get(name)
        if interval is not None and interval.contains_ms(at_ms):
            return f"muted by time interval {name!r}"
    known = [intervals[name] for name in active if name in intervals]
    if known and not any(i.contains_ms(at_ms) for i in known):
        return f"outside the active time intervals {', '.join(repr(i.name) for i in known)}"
    return None
