"""The linker's pure core (issue #12): label groups linked into one incident with a named root cause.

Label groups stay the unit of dedup and timing; this module decides which of them belong together.
Its input is one *group note* per group-level change (opened, components changed, resolved,
closed), in event-time order, per topology scope (the correlator will write them to
``stormwatch.linker.input`` keyed by scope). Its output is a list of decisions per note: link a
group into an incident, merge two linked incidents, the root cause changed, or (for operator
commands) unlink one. The stage that feeds it from Kafka and turns decisions into correlator
commands comes next; today ``stormwatch quality --topology`` runs it offline over a replay's
incident events (``EventNotes``).

Everything here is a function of the input order: no clock, no randomness, plain state that
``to_dict``/``from_dict`` round-trip. ``NoteBuffer`` puts the notes of several correlator
partitions into one order that does not depend on how they interleaved.

The rule (docs/correlation-rules.md, "How linking decides"): a group that fails something is
linked into the open linked incident of its scope whose components are related to its own
(``Topology.related``, with the implied edges of both) and whose primary opened at most
``link.window`` before or after it (or which failed one of its components that recently); several such incidents are one incident, unless the group only
depends on two or more of them (a victim of several failures: only the earliest of those counts).
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent, IncidentEventType
from stormwatch.streams.core.topology import (
    REASON_PATHS,
    ComponentId,
    Edge,
    Relation,
    RelationKind,
    RootCause,
    Scope,
    Topology,
)

__all__ = [
    "BY_TOPOLOGY",
    "EventNotes",
    "GroupNote",
    "LinkCommand",
    "LinkDecision",
    "Linked",
    "Linker",
    "LinkerInput",
    "Merged",
    "NoteBuffer",
    "NoteKind",
    "Refused",
    "RootCauseChanged",
    "SplitCommand",
    "Unlinked",
    "trim_root",
]

BY_TOPOLOGY = "topology"
"""The ``by`` of an automatic decision; an operator's is ``operator:NAME``."""


class NoteKind(StrEnum):
    OPENED = "opened"  # the group's incident opened
    CHANGED = "changed"  # new failing components, or firing again (reopened)
    RESOLVED = "resolved"
    CLOSED = "closed"  # closed or merged away by the correlator: the group's incident ended


@dataclass(frozen=True, slots=True)
class GroupNote:
    """One group-level change, as the correlator will write it to ``stormwatch.linker.input``.

    ``t``: event time of the change (the correlator's clock); ``opened_ms``: when the group's
    incident opened (its id's ``opened_ms``), which the link window is measured on. ``failing``:
    the components the alerts that fired in this change say are failing, with their firing times;
    ``edges``: their implied edges. The linker adds them up per group (the log is exactly once,
    so nothing is missed). ``title`` and ``labels`` are for reasons only.
    """

    t: int
    incident_id: str
    scope: Scope
    kind: NoteKind
    opened_ms: int
    failing: tuple[tuple[ComponentId, int], ...] = ()
    edges: tuple[Edge, ...] = ()
    title: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SplitCommand:
    """An operator takes a group out of the incident it was linked into; it is never linked
    automatically again (the operator's word stands), but can be linked by hand."""

    t: int
    incident_id: str
    by: str = "operator"
    command_id: str = ""  # the operator's request, which the commands it gives name


@dataclass(frozen=True, slots=True)
class LinkCommand:
    """An operator links a group (with its whole linked incident, if it is a primary) into the
    incident ``into`` belongs to. Only within one scope: the linker is partitioned by scope."""

    t: int
    incident_id: str
    into: str
    by: str = "operator"
    command_id: str = ""


# ------------------------------------------------------------------------------------- decisions


@dataclass(frozen=True, slots=True)
class Linked:
    """``member`` joins the incident of ``into`` (its primary). ``relation`` is why, seen from
    the member (path from its components to the incident's); None when an operator decided."""

    t: int
    member: str
    into: str
    relation: Relation | None
    by: str = BY_TOPOLOGY
    title: str = ""


@dataclass(frozen=True, slots=True)
class Merged:
    """The linked incident of primary ``merged`` (its ``members``, itself first) joins ``into``.
    ``trigger`` is the group that related them (a late upstream alert), ``relation`` the path from
    it to the merged incident; both None when an operator decided."""

    t: int
    merged: str
    into: str
    members: tuple[str, ...]
    relation: Relation | None
    trigger: str | None
    by: str = BY_TOPOLOGY


@dataclass(frozen=True, slots=True)
class RootCauseChanged:
    """The root cause of the incident of ``primary`` is now ``root`` (trimmed to ``REASON_PATHS``
    candidates, tier members and paths); ``previous`` is the root it had, None for a new one."""

    t: int
    primary: str
    root: RootCause
    previous: ComponentId | None


@dataclass(frozen=True, slots=True)
class Unlinked:
    """``member`` left the incident of ``from_primary``; it is an incident of its own again."""

    t: int
    member: str
    from_primary: str
    reason: str
    by: str


@dataclass(frozen=True, slots=True)
class Refused:
    """An operator command that cannot apply, and why; nothing changed."""

    t: int
    command: SplitCommand | LinkCommand
    reason: str


LinkDecision = Linked | Merged | RootCauseChanged | Unlinked | Refused

LinkerInput = GroupNote | SplitCommand | LinkCommand
"""What the linker takes, in one event-time order: the correlator's notes and the operators'
requests it forwards."""


def trim_root(root: RootCause) -> RootCause:
    """A root cause bounded for an audit event: ``explains`` keeps the count, the lists do not grow
    with the incident (a node failure's tier would list every pod)."""
    return dataclasses.replace(root, candidates=root.candidates[:REASON_PATHS], tier=root.tier[:REASON_PATHS])


# ----------------------------------------------------------------------------------------- state


@dataclass(slots=True)
class _Group:
    """What the linker knows of one group's incident."""

    incident_id: str
    scope: Scope
    opened_ms: int
    active_ms: int = 0  # its latest note but closed: when it last opened, changed or resolved
    firing: dict[ComponentId, int] = field(default_factory=dict)
    edges: set[Edge] = field(default_factory=set)
    resolved: bool = False
    closed: bool = False

    def take(self, note: GroupNote) -> bool:
        """Add the note's components; True when anything was new."""
        grew = False
        for component, first in note.failing:
            known = self.firing.get(component)
            if known is None or first < known:
                self.firing[component] = first
                grew = True
        for edge in note.edges:
            if edge not in self.edges:
                self.edges.add(edge)
                grew = True
        return grew


@dataclass(slots=True)
class _Past:
    """The closed members of a linked incident that goes on, folded into one: the components,
    edges and activity they gave it, without a group kept per member. A linked incident open for
    days (a chronic failure that new groups keep joining) otherwise held every group that ever
    joined it: the linker's memory grew by ~85 groups a minute in the hour-long run (issue #17)."""

    firing: dict[ComponentId, int] = field(default_factory=dict)
    edges: set[Edge] = field(default_factory=set)
    active: dict[ComponentId, int] = field(default_factory=dict)


class _Components(Protocol):
    """What a linked incident and its ``past`` both hold: components, edges and activity."""

    firing: dict[ComponentId, int]
    edges: set[Edge]
    active: dict[ComponentId, int]


def _absorb(into: _Components, group: _Group) -> None:
    """Add one group's components, edges and activity."""
    for component, first in group.firing.items():
        known = into.firing.get(component)
        if known is None or first < known:
            into.firing[component] = first
        if group.active_ms > into.active.get(component, group.active_ms - 1):
            into.active[component] = group.active_ms
    into.edges |= group.edges


def _fold(into: _Components, other: _Components) -> None:
    """Add another holder's components (earliest first wins), edges and activity (latest wins)."""
    into.firing = _min_union(into.firing, other.firing)
    into.edges |= other.edges
    for component, active in other.active.items():
        into.active[component] = max(active, into.active.get(component, active))


@dataclass(slots=True)
class _Incident:
    """A linked incident: its primary (the group that opened first), members in the order they
    joined (the primary first), the union of their components, and the root last decided.
    ``manual``: formed by an operator's split, so automatic linking leaves it alone."""

    primary: str
    scope: Scope
    opened_ms: int
    members: list[str]
    firing: dict[ComponentId, int] = field(default_factory=dict)
    edges: set[Edge] = field(default_factory=set)
    active: dict[ComponentId, int] = field(default_factory=dict)  # latest activity of a member failing it
    root: ComponentId | None = None
    manual: bool = False
    past: _Past | None = None  # what its closed members (but the primary) contributed

    @property
    def order(self) -> tuple[int, str]:
        """Which of two incidents survives a merge: the earlier opening, then the lower id."""
        return (self.opened_ms, self.primary)

    def absorb(self, group: _Group) -> None:
        _absorb(self, group)

    def continues(self, group: _Group, window_ms: int) -> bool:
        """Whether the group fails a component that a member failed and was active with at most
        ``window_ms`` before the group opened: the same component failing again (a cron job's
        next run, each run its own group) is the same failure, however long ago it began."""
        return any(
            group.opened_ms - self.active[component] <= window_ms
            for component in group.firing
            if component in self.active
        )


_VICTIM_KINDS = (RelationKind.UPSTREAM, RelationKind.COMMON_UPSTREAM)
"""The group depends on the incident (or both on a third): it does not explain it."""


class Linker:
    """Group notes and operator commands in, link decisions out; see the module docstring.

    One instance holds every scope (the stage will hold the scopes of its partitions). The
    topology is shared, not copied: the stage applies topology records to it in log order.
    """

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._groups: dict[str, _Group] = {}
        self._incidents: dict[str, _Incident] = {}  # by primary
        self._home: dict[str, str] = {}  # group -> primary of its linked incident
        self._scopes: dict[Scope, set[str]] = {}  # scope -> primaries
        self._touched_groups: set[str] = set()
        self._touched_incidents: set[str] = set()

    # ---------------------------------------------------------------------------------- reading

    def primary_of(self, incident_id: str) -> str | None:
        """The primary of the linked incident ``incident_id`` belongs to (itself when alone)."""
        return self._home.get(incident_id)

    def members_of(self, primary: str) -> tuple[str, ...]:
        found = self._incidents.get(primary)
        return tuple(found.members) if found else ()

    def root_of(self, primary: str) -> ComponentId | None:
        found = self._incidents.get(primary)
        return found.root if found else None

    def __len__(self) -> int:
        """Open linked incidents."""
        return len(self._incidents)

    @property
    def groups_held(self) -> int:
        """Groups whose notes the linker keeps (every group of an open linked incident)."""
        return len(self._groups)

    # ---------------------------------------------------------------------------------- input

    def process(self, item: GroupNote | SplitCommand | LinkCommand) -> list[LinkDecision]:
        before = self._home.get(item.incident_id)
        if before is not None:  # every member's group goes if the incident ends
            self._touched_groups.update(self._incidents[before].members)
        if isinstance(item, GroupNote):
            out = self._note(item)
        elif isinstance(item, SplitCommand):
            out = self._split(item)
        else:
            out = self._link(item)
        self._touch(item, before, out)
        return out

    def _note(self, note: GroupNote) -> list[LinkDecision]:
        group = self._groups.get(note.incident_id)
        if group is None:
            if note.kind is NoteKind.CLOSED or note.incident_id in self._home:
                return []  # never heard of, or closed and folded into its incident: nothing to do
            # A first note other than "opened" (the linker started late) counts as the opening.
            group = self._groups[note.incident_id] = _Group(
                note.incident_id, note.scope, note.opened_ms, note.opened_ms
            )
            home = None
        else:
            home = self._incidents[self._home[note.incident_id]]
        grew = group.take(note)
        if note.kind is NoteKind.CLOSED:
            group.closed = True
        else:
            group.resolved = note.kind is NoteKind.RESOLVED
            group.active_ms = max(group.active_ms, note.t)
        out: list[LinkDecision] = []
        new = home is None
        if home is None:
            home = self._join_or_open(group, note, out)
        else:
            home.absorb(group)
            if grew and not home.manual and group.firing and note.kind is not NoteKind.CLOSED:
                home = self._merge_related(group, home, note.t, out)
        if all(g.closed for m in home.members if (g := self._groups.get(m)) is not None):
            self._forget(home)
            return out
        if new or grew or out:  # the root is a function of the components: unchanged, unasked
            self._reroot(home, note.t, out)
        if group.closed and group.incident_id != home.primary:
            self._retire(home, group)
        return out

    def _retire(self, incident: _Incident, group: _Group) -> None:
        """A closed member of an incident that goes on: what it gave the incident stays (its
        components, edges and activity, in ``past``), its group goes; it stays a member."""
        if incident.past is None:
            incident.past = _Past()
        _absorb(incident.past, group)
        del self._groups[group.incident_id]

    # ---------------------------------------------------------------------------------- linking

    def _candidates(self, group: _Group, home: _Incident | None) -> list[tuple[_Incident, Relation]]:
        """Open linked incidents of the group's scope it may join: related, opened within the
        window of the group (or failing the same component within it, ``continues``), not under
        an operator's split; earliest first."""
        if not group.firing:
            return []  # a group that names no component never links: without a topology, as today
        window = self.topology.link.window_ms
        found = []
        for primary in self._scopes.get(group.scope, ()):
            incident = self._incidents[primary]
            if incident is home or incident.manual or not incident.firing:
                continue
            if abs(group.opened_ms - incident.opened_ms) > window and not incident.continues(group, window):
                continue
            relation = self.topology.related(
                group.firing.keys(), incident.firing.keys(), extra_edges=group.edges | incident.edges
            )
            if relation is not None:
                found.append((incident, relation))
        found.sort(key=lambda pair: pair[0].order)
        return found

    @staticmethod
    def _joinable(candidates: list[tuple[_Incident, Relation]]) -> list[tuple[_Incident, Relation]]:
        """The candidates that become one incident with the group: all of them, unless the group
        depends on two or more (it is a victim of several failures, not evidence that they are
        one); then only the earliest of those counts, the others stay apart."""
        victim_of = [pair for pair in candidates if pair[1].kind in _VICTIM_KINDS]
        if len(victim_of) <= 1:
            return candidates
        keep = {id(victim_of[0][0])}
        return [pair for pair in candidates if id(pair[0]) in keep or pair[1].kind not in _VICTIM_KINDS]

    def _join_or_open(self, group: _Group, note: GroupNote, out: list[LinkDecision]) -> _Incident:
        joined = self._joinable(self._candidates(group, None))
        if not joined:
            incident = _Incident(group.incident_id, group.scope, group.opened_ms, [group.incident_id])
            incident.absorb(group)
            self._add(incident)
            return incident
        survivor, relation = joined[0]
        survivor.members.append(group.incident_id)
        survivor.absorb(group)
        self._home[group.incident_id] = survivor.primary
        out.append(Linked(note.t, group.incident_id, survivor.primary, relation, title=note.title))
        for other, why in joined[1:]:
            self._merge(other, survivor, note.t, why, group.incident_id, BY_TOPOLOGY, out)
        return survivor

    def _merge_related(self, group: _Group, home: _Incident, t: int, out: list[LinkDecision]) -> _Incident:
        """New components of a linked group (a late upstream alert joining it) may relate its
        incident to others: the same rule as for a new group, the earliest incident surviving."""
        joined = self._joinable(self._candidates(group, home))
        if not joined:
            return home
        survivor = min([home, *(incident for incident, _ in joined)], key=lambda i: i.order)
        for incident, why in joined:
            if incident is not survivor:
                self._merge(incident, survivor, t, why, group.incident_id, BY_TOPOLOGY, out)
        if home is not survivor:
            why = next(r for i, r in joined if i is survivor)
            self._merge(home, survivor, t, why, group.incident_id, BY_TOPOLOGY, out)
        return survivor

    def _merge(
        self,
        merged: _Incident,
        into: _Incident,
        t: int,
        relation: Relation | None,
        trigger: str | None,
        by: str,
        out: list[LinkDecision],
    ) -> None:
        self._remove(merged)
        into.members.extend(merged.members)
        if merged.past is not None:
            if into.past is None:
                into.past = _Past()
            _fold(into.past, merged.past)
        _fold(into, merged)
        for member in merged.members:
            self._home[member] = into.primary
        out.append(Merged(t, merged.primary, into.primary, tuple(merged.members), relation, trigger, by))

    def _reroot(self, incident: _Incident, t: int, out: list[LinkDecision]) -> None:
        """Decide the root again; a decision only when the component changed (a member joining
        under the same root is in its ``Linked``), so a storm does not repeat the same root."""
        if not incident.firing:
            return
        root = self.topology.root_cause(incident.firing, extra_edges=incident.edges)
        if root.component != incident.root:
            out.append(RootCauseChanged(t, incident.primary, trim_root(root), incident.root))
            incident.root = root.component

    # ---------------------------------------------------------------------------------- commands

    def _split(self, command: SplitCommand) -> list[LinkDecision]:
        primary = self._home.get(command.incident_id)
        if primary is None:
            return [Refused(command.t, command, f"unknown incident {command.incident_id}")]
        incident = self._incidents[primary]
        if len(incident.members) == 1:
            return [Refused(command.t, command, "not linked: it is an incident of its own")]
        if primary == command.incident_id:
            return [
                Refused(
                    command.t,
                    command,
                    f"{primary} is the primary of {len(incident.members) - 1} linked groups; "
                    "split those instead",
                )
            ]
        group = self._groups.get(command.incident_id)
        if group is None:
            return [Refused(command.t, command, f"{command.incident_id} is closed: nothing to split")]
        out: list[LinkDecision] = []
        incident.members.remove(group.incident_id)
        self._rebuild(incident)
        out.append(Unlinked(command.t, group.incident_id, primary, "split by an operator", command.by))
        alone = _Incident(group.incident_id, group.scope, group.opened_ms, [group.incident_id], manual=True)
        alone.absorb(group)
        alone.root = incident.root  # what it was shown as until now
        self._add(alone)
        self._reroot(incident, command.t, out)
        self._reroot(alone, command.t, out)
        return out

    def _link(self, command: LinkCommand) -> list[LinkDecision]:
        source, target = self._home.get(command.incident_id), self._home.get(command.into)
        for name, found in ((command.incident_id, source), (command.into, target)):
            if found is None:
                return [Refused(command.t, command, f"unknown incident {name}")]
        assert source is not None and target is not None
        if source == target:
            return [Refused(command.t, command, f"already linked into {target}")]
        moving, into = self._incidents[source], self._incidents[target]
        if moving.scope != into.scope:
            return [
                Refused(command.t, command, "the incidents are in different scopes; nothing links across")
            ]
        group = self._groups.get(command.incident_id)
        out: list[LinkDecision] = []
        if command.incident_id == source:
            self._merge(moving, into, command.t, None, None, command.by, out)
        elif group is None:
            return [Refused(command.t, command, f"{command.incident_id} is closed: nothing to link")]
        else:
            moving.members.remove(group.incident_id)
            self._rebuild(moving)
            out.append(
                Unlinked(command.t, group.incident_id, source, "linked elsewhere by an operator", command.by)
            )
            into.members.append(group.incident_id)
            into.absorb(group)
            self._home[group.incident_id] = into.primary
            out.append(Linked(command.t, group.incident_id, into.primary, None, command.by))
            self._reroot(moving, command.t, out)
        self._reroot(into, command.t, out)
        return out

    # ---------------------------------------------------------------------------------- bookkeeping

    def _add(self, incident: _Incident) -> None:
        self._incidents[incident.primary] = incident
        self._scopes.setdefault(incident.scope, set()).add(incident.primary)
        for member in incident.members:
            self._home[member] = incident.primary

    def _remove(self, incident: _Incident) -> None:
        del self._incidents[incident.primary]
        primaries = self._scopes[incident.scope]
        primaries.discard(incident.primary)
        if not primaries:
            del self._scopes[incident.scope]

    def _forget(self, incident: _Incident) -> None:
        """Every member closed: the linked incident is over, and nothing links into it any more."""
        self._remove(incident)
        for member in incident.members:
            self._groups.pop(member, None)
            self._home.pop(member, None)

    def _rebuild(self, incident: _Incident) -> None:
        incident.firing, incident.edges, incident.active = {}, set(), {}
        if incident.past is not None:
            _fold(incident, incident.past)
        for member in incident.members:
            group = self._groups.get(member)
            if group is not None:  # else closed, in ``past``
                incident.absorb(group)

    # ---------------------------------------------------------------------------------- state

    def to_dict(self) -> dict[str, Any]:
        """Plain, sorted data: equal states give equal dicts (and equal JSON with sorted keys)."""
        return {
            "groups": {gid: _group_out(g) for gid, g in sorted(self._groups.items())},
            "incidents": [_incident_out(i) for _, i in sorted(self._incidents.items())],
        }

    def group_record(self, incident_id: str) -> dict[str, Any] | None:
        """One group as ``to_dict`` has it; None when the linker no longer knows it."""
        group = self._groups.get(incident_id)
        return None if group is None else _group_out(group)

    def incident_record(self, primary: str) -> dict[str, Any] | None:
        """One linked incident as ``to_dict`` has it; None when there is none with that primary."""
        incident = self._incidents.get(primary)
        return None if incident is None else _incident_out(incident)

    def take_touched(self) -> tuple[set[str], set[str]]:
        """The groups and the primaries whose records may have changed since the last call (a
        superset): what a changelog writes instead of the whole state every time."""
        touched = self._touched_groups, self._touched_incidents
        self._touched_groups, self._touched_incidents = set(), set()
        return touched

    def _touch(
        self, item: GroupNote | SplitCommand | LinkCommand, before: str | None, out: list[LinkDecision]
    ) -> None:
        ids = {item.incident_id, *(p for p in (before, self._home.get(item.incident_id)) if p is not None)}
        if isinstance(item, LinkCommand):
            ids.add(item.into)
            ids.update(p for p in (self._home.get(item.into),) if p is not None)
        for decision in out:
            if isinstance(decision, Linked):
                ids.update((decision.member, decision.into))
            elif isinstance(decision, Merged):
                ids.update((decision.merged, decision.into, *decision.members))
            elif isinstance(decision, RootCauseChanged):
                ids.add(decision.primary)
            elif isinstance(decision, Unlinked):
                ids.update((decision.member, decision.from_primary))
        self._touched_incidents |= ids
        self._touched_groups |= ids

    @classmethod
    def from_dict(cls, topology: Topology, data: Mapping[str, Any]) -> Linker:
        linker = cls(topology)
        for gid, g in data["groups"].items():
            group = _Group(
                gid,
                tuple(g["scope"]),
                g["opened_ms"],
                g["active_ms"],
                resolved=g["resolved"],
                closed=g["closed"],
            )
            group.firing = {component_in(c): first for c, first in g["firing"]}
            group.edges = {edge_in(e) for e in g["edges"]}
            linker._groups[gid] = group
        for i in data["incidents"]:
            first = linker._groups[i["primary"]]
            incident = _Incident(
                i["primary"], first.scope, first.opened_ms, list(i["members"]), manual=i["manual"]
            )
            incident.root = None if i["root"] is None else component_in(i["root"])
            past = i.get("past")
            if past is not None:
                incident.past = _Past(
                    {component_in(c): first for c, first in past["firing"]},
                    {edge_in(e) for e in past["edges"]},
                    {component_in(c): at for c, at in past["active"]},
                )
            linker._rebuild(incident)
            linker._add(incident)
        return linker


def note_to_wire(note: GroupNote) -> list[Any]:
    return [
        note.t,
        note.incident_id,
        list(note.scope),
        note.kind.value,
        note.opened_ms,
        [[component_out(c), first] for c, first in note.failing],
        [edge_out(e) for e in note.edges],
        note.title,
        [list(pair) for pair in note.labels],
    ]


def note_from_wire(row: list[Any]) -> GroupNote:
    t, incident_id, scope, kind, opened_ms, failing, edges, title, labels = row
    return GroupNote(
        t=int(t),
        incident_id=str(incident_id),
        scope=tuple(scope),
        kind=NoteKind(kind),
        opened_ms=int(opened_ms),
        failing=tuple((component_in(c), int(first)) for c, first in failing),
        edges=tuple(edge_in(e) for e in edges),
        title=str(title),
        labels=tuple((str(k), str(v)) for k, v in labels),
    )


def input_to_wire(item: LinkerInput) -> list[Any]:
    """A note as ``note_to_wire``; an operator's request as a list that starts with its kind."""
    if isinstance(item, GroupNote):
        return note_to_wire(item)
    if isinstance(item, SplitCommand):
        return ["split", item.t, item.incident_id, item.by, item.command_id]
    return ["link", item.t, item.incident_id, item.into, item.by, item.command_id]


def input_from_wire(row: list[Any]) -> LinkerInput:
    if row[0] == "split":
        _, t, incident_id, by, command_id = row
        return SplitCommand(int(t), str(incident_id), str(by), str(command_id))
    if row[0] == "link":
        _, t, incident_id, into, by, command_id = row
        return LinkCommand(int(t), str(incident_id), str(into), str(by), str(command_id))
    return note_from_wire(row)


def _group_out(g: _Group) -> dict[str, Any]:
    return {
        "closed": g.closed,
        "edges": sorted(edge_out(e) for e in g.edges),
        "firing": sorted([component_out(c), first] for c, first in g.firing.items()),
        "active_ms": g.active_ms,
        "opened_ms": g.opened_ms,
        "resolved": g.resolved,
        "scope": list(g.scope),
    }


def _incident_out(i: _Incident) -> dict[str, Any]:
    out: dict[str, Any] = {
        "manual": i.manual,
        "members": list(i.members),
        "primary": i.primary,
        "root": None if i.root is None else component_out(i.root),
    }
    if i.past is not None:
        out["past"] = {
            "active": sorted([component_out(c), at] for c, at in i.past.active.items()),
            "edges": sorted(edge_out(e) for e in i.past.edges),
            "firing": sorted([component_out(c), first] for c, first in i.past.firing.items()),
        }
    return out


def _min_union(a: dict[ComponentId, int], b: Mapping[ComponentId, int]) -> dict[ComponentId, int]:
    out = dict(a)
    for component, first in b.items():
        known = out.get(component)
        if known is None or first < known:
            out[component] = first
    return out


def component_out(c: ComponentId) -> list[Any]:
    return [list(c.scope), c.kind, c.name]


def component_in(data: list[Any]) -> ComponentId:
    return ComponentId(tuple(data[0]), data[1], data[2])


def edge_out(e: Edge) -> list[Any]:
    return [component_out(e.dependent), component_out(e.dependency), e.relation, e.mirrored]


def edge_in(data: list[Any]) -> Edge:
    return Edge(component_in(data[0]), component_in(data[1]), data[2], data[3])


# ------------------------------------------------------------------------------------ reordering


class NoteBuffer:
    """Notes from several correlator partitions, released in one order: ``(t, incident_id)``,
    then each source's own order.

    Each source sends its notes in event-time order, and ``advance`` says it will send nothing
    earlier than ``t``; a note is released once every source has passed its time, so the released
    sequence is the same however the sources interleaved. Until every source has been heard from,
    nothing is released (as the correlator's watermark waits for every raw partition). A source
    that goes quiet says ``idle`` and stops holding the others back until it speaks again; a note
    it then sends behind what was released is *late*: released at once, after those, and counted.
    """

    def __init__(self, sources: Iterable[str]) -> None:
        self._marks: dict[str, int | None] = dict.fromkeys(sources)
        if not self._marks:
            raise ValueError("a note buffer needs at least one source")
        self._idle: set[str] = set()
        self._heap: list[tuple[int, str, str, int, LinkerInput]] = []
        self._seq = 0
        self.released_to: int | None = None  # every note before this has been released
        self.late = 0

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, source: str, note: LinkerInput) -> None:
        self._check(source)
        if self.released_to is not None and note.t < self.released_to:
            self.late += 1
        heapq.heappush(self._heap, (note.t, note.incident_id, source, self._seq, note))
        self._seq += 1
        self.advance(source, note.t)

    def advance(self, source: str, t: int) -> None:
        """``source`` will send no note earlier than ``t``."""
        self._check(source)
        self._idle.discard(source)
        mark = self._marks[source]
        if mark is None or t > mark:
            self._marks[source] = t

    def idle(self, source: str) -> None:
        """``source`` has nothing to send; it holds nobody back until its next note or advance."""
        self._check(source)
        self._idle.add(source)

    def low(self) -> int | None:
        """Notes before this time can be released; None while an active source is unheard."""
        marks = [mark for source, mark in self._marks.items() if source not in self._idle]
        if any(mark is None for mark in marks):
            return None
        return min((mark for mark in marks if mark is not None), default=None)

    def release(self) -> list[LinkerInput]:
        if len(self._idle) == len(self._marks):
            return self.flush()  # every source quiet: nothing earlier can come but late
        bounds = [x for x in (self.low(), self.released_to) if x is not None]
        out: list[LinkerInput] = []
        if not bounds:
            return out
        bound = max(bounds)
        while self._heap and self._heap[0][0] < bound:  # late notes too: they cannot wait for order
            out.append(heapq.heappop(self._heap)[-1])
        self.released_to = bound
        return out

    def flush(self) -> list[LinkerInput]:
        """Everything still waiting, in order (the end of the input)."""
        out = [heapq.heappop(self._heap)[-1] for _ in range(len(self._heap))]
        if out and (self.released_to is None or out[-1].t + 1 > self.released_to):
            self.released_to = out[-1].t + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``from_dict`` gives a buffer that releases the same notes the same way."""
        waiting = sorted(self._heap, key=lambda item: item[:4])
        return {
            "marks": dict(sorted(self._marks.items())),
            "idle": sorted(self._idle),
            "released_to": self.released_to,
            "late": self.late,
            "notes": [[source, input_to_wire(note)] for _, _, source, _, note in waiting],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NoteBuffer:
        buffer = cls(data["marks"])
        buffer._marks = {str(k): v for k, v in data["marks"].items()}
        buffer._idle = set(data["idle"])
        buffer.released_to = data["released_to"]
        buffer.late = data["late"]
        for source, row in data["notes"]:
            item = input_from_wire(row)
            heapq.heappush(buffer._heap, (item.t, item.incident_id, source, buffer._seq, item))
            buffer._seq += 1
        return buffer

    def _check(self, source: str) -> None:
        if source not in self._marks:
            raise KeyError(f"unknown source {source!r}; sources: {', '.join(sorted(self._marks))}")


# ------------------------------------------------------------------------------ notes from events


@dataclass(slots=True)
class _Seen:
    scope: Scope
    opened_ms: int
    alerts: dict[str, Mapping[str, str]] = field(default_factory=dict)


_FIRES = (AlertChangeKind.JOINED, AlertChangeKind.REFIRED, AlertChangeKind.LATE)


def scope_for(topology: Topology, event: IncidentEvent) -> Scope:
    """The scope of a group, from the event that opened its incident: its group labels' when the
    rule groups by every scope label, else its first alert's."""
    group_labels = event.snapshot.group_labels
    first = next((c.labels for c in event.alerts if c.labels is not None), None)
    complete = all(label in group_labels for label in topology.scope_labels)
    return topology.scope_of(group_labels if complete or first is None else first)


def note_for_event(
    topology: Topology,
    event: IncidentEvent,
    scope: Scope,
    labels_of: Callable[[str], Mapping[str, str] | None],
) -> GroupNote | None:
    """The group note of one incident event, or None when it tells the linker nothing.

    ``failing`` and ``edges`` are what the alerts that fire in this event name (the linker adds
    them up): ``opened``, ``resolved`` and ``closed`` (or ``merged``, which ends the incident) give
    their notes, a reopen or an alert firing a changed note. ``labels_of`` gives the labels of an
    alert the event names without them (labels travel on ``joined`` changes only).
    """
    failing: dict[ComponentId, int] = {}
    edges: set[Edge] = set()
    # An opening event carries the whole first wave (hundreds of alerts that name the same few
    # components): each distinct naming is matched against the topology once.
    named: dict[tuple[str, ...], tuple[frozenset[ComponentId], frozenset[Edge]]] = {}
    for change in event.alerts:
        if change.change not in _FIRES or change.status is not AlertStatus.FIRING:
            continue
        labels = change.labels if change.labels is not None else labels_of(change.fingerprint)
        if labels is None:
            continue
        key = topology.naming_key(labels)
        answer = named.get(key)
        if answer is None:
            answer = named[key] = (topology.failing_components(labels), topology.implied_edges(labels))
            edges |= answer[1]
        at = ms_from_dt(change.at)
        for component in answer[0]:
            known = failing.get(component)
            if known is None or at < known:
                failing[component] = at
    kind = _NOTE_KINDS.get(event.type)
    if kind is None:
        if not failing:
            return None
        kind = NoteKind.CHANGED
    return GroupNote(
        t=ms_from_dt(event.at),
        incident_id=event.incident_id,
        scope=scope,
        kind=kind,
        opened_ms=ms_from_dt(event.snapshot.opened_at),
        failing=tuple(sorted(failing.items())),
        edges=tuple(sorted(edges)),
        title=event.snapshot.title,
        labels=tuple(sorted(event.snapshot.group_labels.items())),
    )


class EventNotes:
    """Group notes from incident events, for linking offline (``stormwatch quality --topology``)
    and in tests: the notes the correlator writes alongside its events (``note_for_event``), with
    the labels of each alert remembered from its ``joined`` change."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self._seen: dict[str, _Seen] = {}

    def notes(self, event: IncidentEvent) -> list[GroupNote]:
        seen = self._seen.get(event.incident_id)
        if seen is None:
            seen = self._seen[event.incident_id] = _Seen(
                scope_for(self.topology, event), ms_from_dt(event.snapshot.opened_at)
            )
        for change in event.alerts:
            if change.labels is not None:
                seen.alerts[change.fingerprint] = change.labels
        note = note_for_event(self.topology, event, seen.scope, seen.alerts.get)
        if note is not None and note.kind is NoteKind.CLOSED:
            del self._seen[event.incident_id]
        return [] if note is None else [note]


_NOTE_KINDS = {
    IncidentEventType.OPENED: NoteKind.OPENED,
    IncidentEventType.REOPENED: NoteKind.CHANGED,
    IncidentEventType.RESOLVED: NoteKind.RESOLVED,
    IncidentEventType.CLOSED: NoteKind.CLOSED,
    IncidentEventType.MERGED: NoteKind.CLOSED,
}
