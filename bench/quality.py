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
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.storms import NOISE, Storm
from stormwatch.streams.core.replay import Replay
from stormwatch.streams.core.rules import RulesConfig

__all__ = [
    "CauseScore",
    "QualityScore",
    "ReplayResult",
    "membership",
    "replay_storm",
    "score",
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


def membership(events: Iterable[IncidentEvent]) -> dict[str, set[str]]:
    """Incident id -> the fingerprints its events name; merged incidents fold into their target."""
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
    return members


@dataclass(slots=True)
class CauseScore:
    """One cause: its alerts, the incidents they are in, and how many are in none."""

    cause: str
    alerts: int
    incidents: list[str] = field(default_factory=list)
    absorbed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "alerts": self.alerts,
            "incidents": len(self.incidents),
            "absorbed": self.absorbed,
        }


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


def score_storm(
    storm: Storm, rules: RulesConfig, *, fmt: str = "prometheus"
) -> tuple[QualityScore, ReplayResult]:
    """Replay ``storm`` with ``rules`` and score the incidents against its truth."""
    result = replay_storm(storm, rules, fmt=fmt)
    truth = storm.truth_by_fingerprint(fmt)
    return score(truth, membership(result.events), [c.id for c in storm.causes]), result
