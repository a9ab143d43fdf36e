"""Correlation quality: how well incidents match the root causes of a storm with ground truth.

A storm from ``stormwatch.storms`` goes offline through the real pure core
(``stormwatch.streams.core.replay.Replay``: the adapters, the router, the engine, with clock ticks
as the ingest stage writes them), and the incident events that come out are compared with what
the generator knows: which root cause each alert belongs to. An incident's members are the
fingerprints its events name in their alert changes (a merged incident's members count for the
incident it was merged into). docs/simulate.md ("Correlation quality") explains the numbers.

- *wrong merge*: an incident holding alerts of two or more root causes (background alerts do not
  count; a cause with a background alert in its incident is counted in ``noise_merged``);
- *split*: a cause whose alerts are in two or more incidents; ``extra_incidents`` is how many
  more than one;
- *absorbed*: an alert of a cause in no incident at all: muted (inhibited, silenced) in a group
  that never opened, as the pods of a dead node are under a ``NodeDown`` inhibition. It neither
  splits its cause nor joins another; a cause whose every alert is absorbed is *missed* (nobody
  would be told).

With a topology, the incident events also go through the linker's core
(``stormwatch.streams.core.linking``): a group linked into another incident counts as part of it,
like a merged one, and each cause's *root is named correctly* when every incident holding its
alerts names the component the generator broke as its root cause.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.storms import NOISE, Cause, Storm
from stormwatch.streams.core.linking import (
    EventNotes,
    LinkDecision,
    Linked,
    Linker,
    Merged,
    NoteBuffer,
    RootCauseChanged,
    Unlinked,
)
from stormwatch.streams.core.replay import Replay
from stormwatch.streams.core.rules import RulesConfig
from stormwatch.streams.core.topology import ComponentId, Topology

__all__ = [
    "CauseScore",
    "LinkRun",
    "QualityScore",
    "ReplayResult",
    "expected_root",
    "link_events",
    "membership",
    "replay_storm",
    "score",
    "score_replay",
    "score_storm",
]

TICK_MS = 1_000  # clock ticks between records, so timers fire near their time as in the pipeline
DRAIN_MS = 6 * 3_600_000  # after the storm, until every incident has resolved and closed
DRAIN_TICK_MS = 60_000


@dataclass(slots=True)
class ReplayResult:
    """What the core made of a storm: its events, dead letters and notifications."""

    events: list[IncidentEvent]
    dead_letters: int
    records: int
    notifications: int


def replay_storm(storm: Storm, rules: RulesConfig, *, fmt: str = "prometheus") -> ReplayResult:
    """Run ``storm`` through the pure core with ``rules``; time moves with the records, ticking
    every second in between, then runs on for hours so every timer has fired."""
    replay = Replay(rules)
    sim = storm.simulation(fmt)
    events: list[IncidentEvent] = []
    now = sim.start_ms
    records = 0
    for record in sim:
        at = sim.start_ms + record.t_ms
        while now + TICK_MS < at:
            now += TICK_MS
            replay.advance(now)
        replay.record(record.value, at, {k: v.encode() for k, v in record.headers.items()})
        now = max(now, at)
        records += 1
        events.extend(replay.take_events())
    end = now + DRAIN_MS
    while now < end:
        now += DRAIN_TICK_MS
        replay.advance(now)
    events.extend(replay.take_events())
    return ReplayResult(events, len(replay.dead_letters), records, sim.summary.notifications)


def membership(
    events: Iterable[IncidentEvent], primary_of: Mapping[str, str] | None = None
) -> dict[str, set[str]]:
    """Incident id -> the fingerprints its events name; merged incidents fold into their target,
    and with ``primary_of`` (from the linker) linked ones into their primary."""
    members: dict[str, set[str]] = {}
    merged_into: dict[str, str] = {}
    for event in events:
        found = members.setdefault(event.incident_id, set())
        found.update(change.fingerprint for change in event.alerts)
        target = event.details.get("merged_into")
        if event.type is IncidentEventType.MERGED and isinstance(target, str):
            merged_into[event.incident_id] = target
    for incident in list(merged_into):
        root, seen = incident, {incident}
        while root in merged_into and merged_into[root] not in seen:
            root = merged_into[root]
            seen.add(root)
        if root != incident:
            members.setdefault(root, set()).update(members.pop(incident, set()))
    for incident, primary in sorted((primary_of or {}).items()):
        if primary != incident and incident in members:
            members.setdefault(primary, set()).update(members.pop(incident))
    return members


@dataclass(slots=True)
class LinkRun:
    """What the linker made of a replay's incident events: its decisions, and at the end which
    primary each incident is part of and the root cause each primary names."""

    notes: int
    decisions: list[LinkDecision]
    primary_of: dict[str, str]
    roots: dict[str, ComponentId]

    def count(self, kind: type) -> int:
        return sum(1 for d in self.decisions if isinstance(d, kind))


def link_events(events: Iterable[IncidentEvent], topology: Topology) -> LinkRun:
    """Group notes from the events (``EventNotes``), put in order (``NoteBuffer``, one source as
    one correlator partition), through a ``Linker``; decisions folded into membership and roots."""
    source = "replay"
    notes, linker, buffer = EventNotes(topology), Linker(topology), NoteBuffer([source])
    decisions: list[LinkDecision] = []
    count = 0
    for event in events:
        for note in notes.notes(event):
            buffer.add(source, note)
            count += 1
        for item in buffer.release():
            decisions.extend(linker.process(item))
    for item in buffer.flush():
        decisions.extend(linker.process(item))
    primary_of: dict[str, str] = {}
    roots: dict[str, ComponentId] = {}
    for decision in decisions:
        if isinstance(decision, Linked):
            primary_of[decision.member] = decision.into
        elif isinstance(decision, Merged):
            primary_of.update(dict.fromkeys(decision.members, decision.into))
            roots.pop(decision.merged, None)
        elif isinstance(decision, Unlinked):
            primary_of[decision.member] = decision.member
        elif isinstance(decision, RootCauseChanged):
            roots[decision.primary] = decision.root.component
    return LinkRun(count, decisions, primary_of, roots)


def expected_root(cause: Cause, topology: Topology) -> ComponentId:
    """The component the generator broke, as the topology names it. A bad deploy's root is the
    deployment; its alerts name it as the service of that name (whose pods it runs), so that is
    the component a correct root cause names (tests/unit/test_topology.py agrees)."""
    kind, name = cause.root.split("/", 1)
    return ComponentId(topology.scope_of({"cluster": cause.cluster}), _ROOT_KINDS.get(kind, kind), name)


_ROOT_KINDS = {"deployment": "service"}


@dataclass(slots=True)
class CauseScore:
    """One cause: its alerts, the incidents they are in, and how many are in none."""

    cause: str
    alerts: int
    incidents: list[str] = field(default_factory=list)
    absorbed: int = 0
    roots: list[str] | None = None  # with a topology: the root each of its incidents names
    root_named: bool | None = None  # with a topology: every one names the generator's root

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "cause": self.cause,
            "alerts": self.alerts,
            "incidents": len(self.incidents),
            "absorbed": self.absorbed,
        }
        if self.roots is not None:
            out["roots"] = self.roots
            out["root_named"] = self.root_named
        return out


@dataclass(slots=True)
class QualityScore:
    """The counts of docs/simulate.md ("Correlation quality") for one run."""

    causes: int
    noise_alerts: int
    incidents: int
    cause_incidents: int
    noise_incidents: int
    wrong_merges: int
    causes_split: int
    extra_incidents: int
    causes_missed: int
    absorbed_alerts: int
    noise_merged: int
    unknown_alerts: int
    per_cause: list[CauseScore]
    topology: str | None = None  # the topology linked with (its file name), None: not linked
    roots_named: int | None = None  # causes whose root every incident of theirs names
    links: LinkRun | None = None

    @property
    def incidents_per_cause(self) -> float:
        return self.cause_incidents / self.causes if self.causes else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "causes": self.causes,
            "noise_alerts": self.noise_alerts,
            "incidents": self.incidents,
            "cause_incidents": self.cause_incidents,
            "incidents_per_cause": round(self.incidents_per_cause, 3),
            "noise_incidents": self.noise_incidents,
            "wrong_merges": self.wrong_merges,
            "causes_split": self.causes_split,
            "extra_incidents": self.extra_incidents,
            "causes_missed": self.causes_missed,
            "absorbed_alerts": self.absorbed_alerts,
            "noise_merged": self.noise_merged,
            "unknown_alerts": self.unknown_alerts,
            **(
                {
                    "topology": self.topology,
                    "roots_named": self.roots_named,
                    "notes": self.links.notes,
                    "linked": self.links.count(Linked),
                    "merged": self.links.count(Merged),
                    "root_changes": self.links.count(RootCauseChanged),
                }
                if self.topology is not None and self.links is not None
                else {}
            ),
            "per_cause": [c.to_dict() for c in self.per_cause],
        }


def score(truth: Mapping[str, str], members: Mapping[str, set[str]], causes: Sequence[str]) -> QualityScore:
    """Compare incidents (id -> fingerprints) with the truth (fingerprint -> cause id or ``NOISE``).

    ``causes`` lists every cause, including any with no alert in an incident. A fingerprint the
    truth does not know counts in ``unknown_alerts`` (a generator or mapping bug, not quality).
    """
    per_cause = {c: CauseScore(c, 0) for c in causes}
    for cause in truth.values():
        if cause != NOISE:
            per_cause[cause].alerts += 1
    placed: set[str] = set()
    unknown: set[str] = set()
    cause_incidents = noise_incidents = wrong = noise_merged = 0
    for incident in sorted(members):
        found: set[str] = set()
        noise = False
        for fingerprint in members[incident]:
            owner = truth.get(fingerprint)
            if owner is None:
                unknown.add(fingerprint)
            elif owner == NOISE:
                placed.add(fingerprint)
                noise = True
            else:
                placed.add(fingerprint)
                found.add(owner)
        if found:
            cause_incidents += 1
            wrong += len(found) > 1
            noise_merged += noise
            for cause in sorted(found):
                per_cause[cause].incidents.append(incident)
        elif noise:
            noise_incidents += 1
    for fingerprint, cause in truth.items():
        if cause != NOISE and fingerprint not in placed:
            per_cause[cause].absorbed += 1
    counts = [len(c.incidents) for c in per_cause.values()]
    return QualityScore(
        causes=len(per_cause),
        noise_alerts=sum(1 for c in truth.values() if c == NOISE),
        incidents=len(members),
        cause_incidents=cause_incidents,
        noise_incidents=noise_incidents,
        wrong_merges=wrong,
        causes_split=sum(1 for n in counts if n > 1),
        extra_incidents=sum(n - 1 for n in counts if n > 1),
        causes_missed=sum(1 for n in counts if n == 0),
        absorbed_alerts=sum(c.absorbed for c in per_cause.values()),
        noise_merged=noise_merged,
        unknown_alerts=len(unknown),
        per_cause=list(per_cause.values()),
    )


def score_replay(
    storm: Storm,
    result: ReplayResult,
    *,
    fmt: str = "prometheus",
    topology: Topology | None = None,
    topology_name: str = "topology",
) -> QualityScore:
    """Score a replay of ``storm``; with ``topology`` (called ``topology_name``), after linking
    its incidents. One replay serves both, since linking only reads the incident events."""
    truth = storm.truth_by_fingerprint(fmt)
    causes = [c.id for c in storm.causes]
    if topology is None:
        return score(truth, membership(result.events), causes)
    links = link_events(result.events, topology)
    scored = score(truth, membership(result.events, links.primary_of), causes)
    scored.topology, scored.links = topology_name, links
    by_id = {c.id: c for c in storm.causes}
    for cause in scored.per_cause:
        want = expected_root(by_id[cause.cause], topology)
        named = [links.roots.get(incident) for incident in cause.incidents]
        cause.roots = [topology.describe(r) if r is not None else "" for r in named]
        cause.root_named = bool(named) and all(r == want for r in named)
    scored.roots_named = sum(1 for c in scored.per_cause if c.root_named)
    return scored


def score_storm(
    storm: Storm, rules: RulesConfig, *, fmt: str = "prometheus", topology: Topology | None = None
) -> tuple[QualityScore, ReplayResult]:
    """Replay ``storm`` with ``rules`` and score the incidents against its truth (linked first,
    with ``topology``)."""
    result = replay_storm(storm, rules, fmt=fmt)
    return score_replay(storm, result, fmt=fmt, topology=topology), result
