"""The partition's groups and what changed since the last transaction, kept by one owner.

Every module of the engine changes groups and alerts through ``PartitionState``, so each change
is marked for the state codec as it happens, and everything a transaction writes (events, dead
letters, feedback, silences, observations) collects in one ``EngineOutput``.
"""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass, field

from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.streams.core.groups import AlertState, GroupState
from stormwatch.streams.core.linkgate import LinkOutput
from stormwatch.streams.core.rules import CorrelationRule, RulesConfig

__all__ = ["EngineOutput", "Observation", "PartitionState"]


@dataclass(slots=True)
class Observation:
    """A measurement for the metrics layer (MTTA, MTTR, decision latency)."""

    name: str
    seconds: float
    severity: str
    rule: str


@dataclass(slots=True)
class EngineOutput:
    events: list[IncidentEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    feedback: list[tuple[str, bytes]] = field(
        default_factory=list
    )  # (key, OperatorCommand) for commands topic
    silences: list[tuple[str, bytes | None]] = field(default_factory=list)  # compacted silences topic
    state: dict[str, bytes | None] = field(default_factory=dict)
    observations: list[Observation] = field(default_factory=list)
    commit_offset: int | None = None  # next input offset to commit for this partition
    links: list[LinkOutput] = field(default_factory=list)  # group notes and promises for the linker
    cross: list[tuple[str, bytes]] = field(default_factory=list)  # (gkhash, timed command) for another group


class PartitionState:
    """Groups by gkhash, keyed alerts by fingerprint, counters, and the pending transaction."""

    def __init__(self, config: RulesConfig, partition: int, source_topic: str) -> None:
        self.partition = partition
        self.source_topic = source_topic
        self.rules: dict[str, CorrelationRule] = {r.name: r for r in config.rules}
        self.default_rule = config.rules[-1]
        self.groups: dict[str, GroupState] = {}
        self.keyed_index: dict[str, str] = {}  # fingerprint -> gkhash, for keyed alerts only
        self.stats: Counter[str] = Counter()
        self.out = EngineOutput()
        self.dirty_groups: set[str] = set()
        self.dirty_alerts: set[tuple[str, str]] = set()
        self.deleted: set[str] = set()
        self.meta_dirty = False  # the partition record (time, silences, inhibitors) changed

    def rule(self, group: GroupState) -> CorrelationRule:
        """The group's rule; the catch-all when the rules file no longer has it."""
        return self.rules.get(group.rule, self.default_rule)

    def add_group(self, group: GroupState) -> None:
        self.groups[group.gkhash] = group
        self.deleted.discard(group.gkhash)
        self.dirty_groups.add(group.gkhash)

    def touch_group(self, group: GroupState) -> None:
        self.dirty_groups.add(group.gkhash)

    def touch_alert(self, group: GroupState, alert: AlertState) -> None:
        self.dirty_alerts.add((group.gkhash, alert.fingerprint))

    def drop_alert(self, group: GroupState, fingerprint: str) -> None:
        alert = group.alerts.pop(fingerprint, None)
        if alert is not None:
            self.dirty_alerts.add((group.gkhash, fingerprint))
            if alert.keyed and self.keyed_index.get(fingerprint) == group.gkhash:
                del self.keyed_index[fingerprint]

    def drop_group(self, group: GroupState) -> None:
        self.groups.pop(group.gkhash, None)
        self.deleted.add(group.gkhash)
        self.dirty_groups.discard(group.gkhash)

    def dead_letter(self, reason: DeadLetterReason, detail: str, raw: bytes, offset: int, at_ms: int) -> None:
        self.stats["dead_letters"] += 1
        self.out.dead_letters.append(
            DeadLetter(
                reason=reason,
                detail=detail,
                original=base64.b64encode(raw).decode(),
                original_size=len(raw),
                source_topic=self.source_topic,
                source_partition=self.partition,
                source_offset=offset,
                at=utc_from_ms(at_ms),
            )
        )

    def start_transaction(self, *, keep_meta: bool = False) -> EngineOutput:
        """The output collected so far; marks and output start afresh for the next transaction
        (``keep_meta``: the partition record was not written, so it is still to write)."""
        out = self.out
        self.dirty_groups = set()
        self.dirty_alerts = set()
        self.deleted = set()
        self.meta_dirty = keep_meta
        self.out = EngineOutput()
        return out
