"""Topology suggestions from the audit log: whose incidents follow whose (issue #12).

A topology file is only as good as what its author knew. The audit log knows more: when a
database's incidents are usually followed, within a minute or two, by incidents of a service, the
service most likely depends on the database. This module counts that, per ordered pair of
components in one scope, from the openings of incidents, and proposes ``depends_on`` edges for a
person to review; nothing here changes a topology.

For components A and B of one scope:

- ``openings(A)``: incidents whose group labels name A;
- ``support(A, B)``: openings of A followed, strictly later and at most ``window_ms`` after, by an
  opening that names B and not A (an opening followed by several of B's counts once);
- ``confidence(A, B) = support(A, B) / openings(A)``.

B depends_on A is proposed when support and confidence reach their minimums, the order is clear
(``support(A, B) > support(B, A)``: a noisy component that opens all the time precedes things as
often as it follows them), the topology does not already relate A and B, and the other
suggested edges do not imply it. Pure and deterministic: the same openings give the same
suggestions in the same order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, replace

from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.streams.core.topology import (
    ComponentId,
    Edge,
    LabelComponent,
    RelationKind,
    Scope,
    Topology,
    TopologyConfig,
)

__all__ = [
    "SUGGEST_LABEL_COMPONENTS",
    "Cooccurrences",
    "Opening",
    "Suggestion",
    "Suggestions",
    "count_cooccurrences",
    "openings_from_events",
    "suggest_edges",
    "suggestion_topology",
]

SUGGEST_LABEL_COMPONENTS: tuple[LabelComponent, ...] = (
    LabelComponent(label="service", kind="service"),
    LabelComponent(label="deployment", kind="workload"),
    LabelComponent(label="node", kind="node"),
    LabelComponent(label="kubernetes_node", kind="node"),
    LabelComponent(label="instance", kind="host", strip_port=True),
    LabelComponent(label="database", kind="database"),
)
"""The labels that name a component when no topology file says so. Group labels, not alert
labels, are mapped, so per-replica labels (``pod``) are left out: a pod's incidents do not recur."""


def suggestion_topology() -> Topology:
    """The topology suggestions use without a topology file: the labels above, scoped by ``cluster``."""
    return Topology(TopologyConfig(scope_labels=["cluster"], label_components=list(SUGGEST_LABEL_COMPONENTS)))


@dataclass(frozen=True, slots=True)
class Opening:
    """One incident's opening: when its group started (epoch ms) and the components its group
    labels name (all in one scope), with the edges those labels imply between them."""

    incident_id: str
    at_ms: int
    components: frozenset[ComponentId]
    implied: frozenset[Edge] = frozenset()

    @property
    def scope(self) -> Scope | None:
        return next(iter(self.components)).scope if self.components else None


def openings_from_events(events: Iterable[IncidentEvent], topology: Topology) -> list[Opening]:
    """The opening of every incident in ``events`` (its first ``opened`` event; re-deliveries and
    other event types are ignored), in (time, incident id) order.

    The time is the snapshot's ``opened_at``, the first alert of the group, not the event's
    ``at``: that comes a rule's ``group_wait`` later, and rules differ in group_wait.
    """
    seen: set[str] = set()
    out: list[Opening] = []
    for event in events:
        if event.type is not IncidentEventType.OPENED or event.incident_id in seen:
            continue
        seen.add(event.incident_id)
        labels = event.snapshot.group_labels
        out.append(
            Opening(
                incident_id=event.incident_id,
                at_ms=ms_from_dt(event.snapshot.opened_at),
                components=topology.components_of(labels),
                implied=topology.implied_edges(labels),
            )
        )
    out.sort(key=lambda o: (o.at_ms, o.incident_id))
    return out


@dataclass(frozen=True, slots=True)
class Cooccurrences:
    """What the counting found: openings per component and support per ordered pair (A, B)."""

    openings: Counter[ComponentId]
    support: Counter[tuple[ComponentId, ComponentId]]
    incidents: int  # openings that named at least one component
    unnamed: int  # openings whose group labels name no component
    scopes: int

    def confidence(self, a: ComponentId, b: ComponentId) -> float:
        return self.support[(a, b)] / self.openings[a] if self.openings[a] else 0.0


def count_cooccurrences(openings: Iterable[Opening], window_ms: int) -> Cooccurrences:
    """Count, per scope, how often an opening of A is followed within ``window_ms`` by one of B
    (see the module docstring). Openings at the same millisecond say nothing about order and are
    not counted as following each other."""
    if window_ms <= 0:
        raise ValueError("the window must be longer than 0")
    by_scope: dict[Scope, list[Opening]] = {}
    unnamed = 0
    for opening in openings:
        scope = opening.scope
        if scope is None:
            unnamed += 1
            continue
        by_scope.setdefault(scope, []).append(opening)
    counted: Counter[ComponentId] = Counter()
    support: Counter[tuple[ComponentId, ComponentId]] = Counter()
    incidents = 0
    for scope in sorted(by_scope):
        items = sorted(by_scope[scope], key=lambda o: (o.at_ms, o.incident_id))
        incidents += len(items)
        for i, first in enumerate(items):
            counted.update(first.components)
            followers: set[ComponentId] = set()
            for later in items[i + 1 :]:
                if later.at_ms - first.at_ms > window_ms:
                    break
                if later.at_ms > first.at_ms:
                    followers.update(later.components)
            followers.difference_update(first.components)
            support.update((a, b) for a in first.components for b in followers)
    return Cooccurrences(counted, support, incidents, unnamed, len(by_scope))


@dataclass(frozen=True, slots=True)
class Suggestion:
    """``dependent`` probably depends on ``dependency``: the dependency's incidents are usually
    followed by the dependent's (``support`` of its ``dependency_openings``), rarely the other way
    round (``reverse_support``). ``common_dependency``: a component both depend on, by the
    topology or the other suggested edges; its failures alone would make them fail together, so
    the reviewer should check that the pair is more than siblings (it is only marked: siblings
    can depend on each other too)."""

    dependent: ComponentId
    dependency: ComponentId
    support: int
    confidence: float
    dependency_openings: int
    reverse_support: int
    common_dependency: ComponentId | None = None


@dataclass(frozen=True, slots=True)
class Suggestions:
    """The proposed edges, by dependent then dependency. Left out: ``known``, pairs that qualified
    but the topology already relates; ``redundant``, edges the topology with the other suggested
    edges already implies (C after A, when C follows B and B follows A); ``unclear``, pairs that
    followed each other as often both ways."""

    edges: tuple[Suggestion, ...]
    known: int
    redundant: int
    unclear: int
    counts: Cooccurrences


def suggest_edges(
    counts: Cooccurrences,
    *,
    min_support: int,
    min_confidence: float,
    topology: Topology | None = None,
    extra_edges: Iterable[Edge] = (),
) -> Suggestions:
    """The edges worth a review: enough support and confidence, a clear order, and not already
    related by ``topology`` (declared edges plus ``extra_edges``, within its ``link.max_hops``:
    what the linker would relate anyway needs no new edge). Of a chain, only its links are kept:
    an edge that the others already imply is left out, the weakest first, so the reviewer sees
    ``orders -> orders-db`` and ``checkout -> orders``, not also ``checkout -> orders-db``."""
    graph = topology if topology is not None else Topology()
    edges = frozenset(extra_edges)
    found: list[Suggestion] = []
    known = 0
    unclear: set[frozenset[ComponentId]] = set()
    for (a, b), support in counts.support.items():
        confidence = counts.confidence(a, b)
        if support < min_support or confidence < min_confidence:
            continue
        reverse = counts.support[(b, a)]
        if reverse >= support:
            if reverse == support:
                unclear.add(frozenset((a, b)))
            continue
        if topology is not None and topology.related({b}, {a}, extra_edges=edges) is not None:
            known += 1
            continue
        found.append(Suggestion(b, a, support, confidence, counts.openings[a], reverse))
    # Removing an edge only when a relation remains without it keeps what the rest relates.
    kept = sorted(found, key=lambda s: (s.confidence, s.support, s.dependent, s.dependency))
    for weakest in list(kept):
        others = edges.union(Edge(s.dependent, s.dependency) for s in kept if s is not weakest)
        if graph.related({weakest.dependent}, {weakest.dependency}, extra_edges=others) is not None:
            kept.remove(weakest)
    kept.sort(key=lambda s: (s.dependent, s.dependency))
    if topology is not None and kept:
        siblings = _with_common_upstream(topology)
        for i, s in enumerate(kept):
            others = edges.union(Edge(o.dependent, o.dependency) for o in kept if o is not s)
            relation = siblings.related({s.dependent}, {s.dependency}, extra_edges=others)
            if relation is not None and relation.kind is RelationKind.COMMON_UPSTREAM:
                kept[i] = replace(s, common_dependency=relation.via)
    return Suggestions(tuple(kept), known, len(found) - len(kept), len(unclear), counts)


def _with_common_upstream(topology: Topology) -> Topology:
    """The same declarations, relating siblings too (``link.common_upstream``)."""
    if topology.link.common_upstream:
        return topology
    link = topology.link.model_copy(update={"common_upstream": True})
    return Topology(topology.config.model_copy(update={"link": link, "components": topology.declared()}))
