"""One partition of the linker input, as a pure function of its records (issue #12).

The linker stage (streams.linker) runs one ``LinkerPartition`` per assigned partition of
``stormwatch.linker.input``: group notes and promises of every correlator partition in,
``NoteBuffer`` puts the notes in one order, ``Linker`` decides, and each decision becomes the
commands that change each incident it touches (``commands_for``), for the correlator partitions
that own them, to apply at ``note time + link.delay``. After them, a mark to every correlator
partition says how far this partition has decided (streams.core.linkwire).

Runtime topology changes (the compacted topology topic) take effect in event time: a record
counts from its timestamp (never earlier than the record before it), and is applied just before
the first note at or after that time, so a replay sees the topology that was in force. The
topology is therefore a function of how far notes were released, and is rebuilt from the topic
on restore rather than stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.incident import RootCauseInfo
from stormwatch.schemas.topology import TopologyUpdate
from stormwatch.streams.core import linkwire
from stormwatch.streams.core.ids import gkhash_of_incident
from stormwatch.streams.core.linking import (
    BY_TOPOLOGY,
    GroupNote,
    LinkDecision,
    Linked,
    Linker,
    LinkerInput,
    Merged,
    NoteBuffer,
    Refused,
    RootCauseChanged,
    SplitCommand,
    Unlinked,
    input_from_wire,
)
from stormwatch.streams.core.links import LINKER
from stormwatch.streams.core.topology import (
    Relation,
    RootCause,
    Topology,
    TopologyChangeError,
    TopologyConfig,
)

__all__ = ["LinkerOutput", "LinkerPartition", "TopologyLog", "commands_for"]


@dataclass(slots=True)
class TopologyLog:
    """The topology topic's records in log order, each with the event time it counts from."""

    updates: list[tuple[int, TopologyUpdate]] = field(default_factory=list)
    refused: int = 0

    def add(self, timestamp_ms: int, update: TopologyUpdate) -> None:
        last = self.updates[-1][0] if self.updates else timestamp_ms
        self.updates.append((max(timestamp_ms, last), update))


@dataclass(slots=True)
class LinkerOutput:
    """One transaction's records: commands (keyed by gkhash, to the correlator input), marks (to
    one correlator partition each) and the partition's state records."""

    commands: list[tuple[str, bytes]] = field(default_factory=list)
    marks: list[tuple[int, bytes]] = field(default_factory=list)
    state: dict[str, bytes | None] = field(default_factory=dict)
    bad_records: list[tuple[int, str, bytes]] = field(default_factory=list)  # offset, why, value


class LinkerPartition:
    """Group notes in, linking commands and marks out; state as plain records (``state_records``)."""

    def __init__(
        self,
        config: TopologyConfig,
        partition: int,
        correlator_partitions: int,
        linker_partitions: int,
        log: TopologyLog,
    ) -> None:
        self.partition = partition
        self.sources = correlator_partitions
        self.partitions = linker_partitions
        self.topology = Topology(config)
        self.linker = Linker(self.topology)
        self.buffer = NoteBuffer([str(p) for p in range(correlator_partitions)])
        self.log = log
        self.applied = 0  # records of ``log`` applied to ``topology``
        self.processed = -1  # highest input offset reflected in the state
        self.decisions = 0  # counts decisions: their commands' ids
        self.sent_mark: int | None = None
        self.stats: dict[str, int] = {"notes": 0, "decisions": 0, "commands": 0, "late_notes": 0}
        self.out = LinkerOutput()
        self._written: dict[str, bytes] = {}

    # ------------------------------------------------------------------ input

    def process(self, value: bytes, offset: int) -> None:
        if offset <= self.processed:
            return  # a replay after a restart: already in the state
        self.processed = offset
        try:
            record = orjson.loads(value)
            kind = record["t"]
            source = str(record["src"])
            if kind in (linkwire.NOTE, linkwire.REQUEST):
                late_before = self.buffer.late
                self.buffer.add(source, input_from_wire(record["note"]))
                self.stats["notes"] += 1
                self.stats["late_notes"] += self.buffer.late - late_before
            elif kind == linkwire.PROMISE:
                self.buffer.advance(source, int(record["wm"]))
            else:
                raise ValueError(f"unknown record kind {kind!r}")
        except (ValueError, KeyError, TypeError, IndexError) as exc:  # orjson's error is a ValueError
            self.out.bad_records.append((offset, f"linker input: {exc!r}", value))

    def release(self) -> None:
        """Decide every note the promises allow, in order; then mark how far that is."""
        for note in self.buffer.release():
            self._apply_topology(note.t)
            self._decide(note)
        mark = self.buffer.released_to
        if mark is not None and (self.sent_mark is None or mark > self.sent_mark):
            self._apply_topology(mark - 1)
            self.sent_mark = mark
            value = linkwire.encode_link_mark(self.partition, self.partitions, mark)
            self.out.marks.extend((p, value) for p in range(self.sources))

    def _apply_topology(self, until: int) -> None:
        updates = self.log.updates
        while self.applied < len(updates) and updates[self.applied][0] <= until:
            try:
                self.topology.apply(updates[self.applied][1])
            except TopologyChangeError:
                self.log.refused += 1
            self.applied += 1

    def _decide(self, item: LinkerInput) -> None:
        apply_at = item.t + self.topology.link.delay_ms
        request = None if isinstance(item, GroupNote) else item.command_id
        for decision in self.linker.process(item):
            self.stats["decisions"] += 1
            self.stats[_stat_key(decision)] = self.stats.get(_stat_key(decision), 0) + 1
            for command in commands_for(decision, self.topology, apply_at, request):
                self.decisions += 1
                command.command_id = f"link-{self.partition}-{self.decisions}"
                target = command.incident_id or ""
                key = gkhash_of_incident(target) or target
                self.out.commands.append((key, linkwire.encode_link_command(apply_at, command.to_bytes())))
                self.stats["commands"] += 1

    # ------------------------------------------------------------------ state

    def take_output(self) -> LinkerOutput:
        """This transaction's records; state records only for what the batch touched (writing
        the whole state each time cost three quarters of the linker's CPU)."""
        out = self.out
        prefix = f"{self.partition}/"
        groups, incidents = self.linker.take_touched()
        changed: dict[str, dict[str, Any] | None] = {}
        changed.update({prefix + "g/" + gid: self.linker.group_record(gid) for gid in groups})
        changed.update({prefix + "i/" + p: self.linker.incident_record(p) for p in incidents})
        for key, record in sorted(changed.items()):
            value = None if record is None else orjson.dumps(record)
            if self._written.get(key) != value and (value is not None or key in self._written):
                out.state[key] = value
                if value is None:
                    del self._written[key]
                else:
                    self._written[key] = value
        meta = self._meta_record()
        if self._written.get(prefix + "meta") != meta:
            out.state[prefix + "meta"] = self._written[prefix + "meta"] = meta
        self.out = LinkerOutput()
        return out

    def state_records(self) -> dict[str, bytes]:
        """The state as compacted records: one per linked incident and group, one for the rest."""
        prefix = f"{self.partition}/"
        linker = self.linker.to_dict()
        records = {prefix + "g/" + gid: orjson.dumps(g) for gid, g in linker["groups"].items()}
        records.update({prefix + "i/" + i["primary"]: orjson.dumps(i) for i in linker["incidents"]})
        records[prefix + "meta"] = self._meta_record()
        return records

    def _meta_record(self) -> bytes:
        return orjson.dumps(
            {
                "processed": self.processed,
                "decisions": self.decisions,
                "sent_mark": self.sent_mark,
                "buffer": self.buffer.to_dict(),
            }
        )

    def restore(self, items: dict[str, bytes]) -> None:
        prefix = f"{self.partition}/"
        groups: dict[str, Any] = {}
        incidents: list[Any] = []
        meta: dict[str, Any] | None = None
        for key, value in items.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if rest == "meta":
                meta = orjson.loads(value)
            elif rest.startswith("g/"):
                groups[rest[2:]] = orjson.loads(value)
            elif rest.startswith("i/"):
                incidents.append(orjson.loads(value))
        incidents.sort(key=lambda i: i["primary"])
        if meta is not None:
            self.processed = int(meta["processed"])
            self.decisions = int(meta["decisions"])
            self.sent_mark = meta["sent_mark"]
            self.buffer = NoteBuffer.from_dict(meta["buffer"])
        released = self.buffer.released_to
        if released is not None:
            self._apply_topology(released - 1)  # the topology in force when the state was written
        self.linker = Linker.from_dict(
            self.topology, {"groups": dict(sorted(groups.items())), "incidents": incidents}
        )
        self._written = self.state_records()


# ---------------------------------------------------------------------------------- commands


_DECISION_NAMES = {Linked: "linked", Merged: "merged", RootCauseChanged: "root_changed", Unlinked: "unlinked"}


def _stat_key(decision: LinkDecision) -> str:
    """``decision:KIND:RELATION``, what ``stormwatch_link_decisions_total`` is labelled with."""
    relation = getattr(decision, "relation", None)
    why = (
        relation.kind.value
        if relation is not None
        else ("operator" if getattr(decision, "by", "") != BY_TOPOLOGY else "-")
    )
    if isinstance(decision, RootCauseChanged):
        why = decision.root.decided_by.value
    return f"decision:{_DECISION_NAMES.get(type(decision), 'refused')}:{why}"


def commands_for(
    decision: LinkDecision, topology: Topology, apply_at: int, request: str | None = None
) -> list[OperatorCommand]:
    """The commands that carry one decision to each incident it changes (ids left to the caller).
    ``request``: the operator's command that asked for it, named in each (``details.request``),
    so the operator's CLI finds the outcome; the operator is their ``by``."""
    at = utc_from_ms(apply_at)
    by = getattr(decision, "by", BY_TOPOLOGY)
    details = {"request": request} if request else {}

    def command(action: OperatorAction, incident_id: str, **fields: Any) -> OperatorCommand:
        return OperatorCommand(
            command_id="",
            action=action,
            incident_id=incident_id,
            by=LINKER if by == BY_TOPOLOGY else by,
            at=at,
            details=details,
            **fields,
        )

    if isinstance(decision, Linked):
        why = _relation_fields(decision.relation, topology)
        return [
            command(OperatorAction.LINK, decision.member, link_into=decision.into, **why),
            command(OperatorAction.LINK_MEMBER, decision.into, member=decision.member, **why),
        ]
    if isinstance(decision, Merged):
        why = _relation_fields(decision.relation, topology)
        if decision.trigger is not None:
            why["reason"] = f"{why.get('reason', 'related')}; found by {decision.trigger}"
        out = []
        for member in decision.members:
            out.append(command(OperatorAction.LINK, member, link_into=decision.into, **why))
            out.append(command(OperatorAction.LINK_MEMBER, decision.into, member=member, **why))
        return out
    if isinstance(decision, RootCauseChanged):
        return [command(OperatorAction.ROOT_CAUSE, decision.primary, **_root_fields(decision.root, topology))]
    if isinstance(decision, Unlinked):
        return [
            command(OperatorAction.UNLINK, decision.member, reason=decision.reason),
            command(
                OperatorAction.UNLINK_MEMBER,
                decision.from_primary,
                member=decision.member,
                reason=decision.reason,
            ),
        ]
    assert isinstance(decision, Refused)
    asked = decision.command
    action = OperatorAction.SPLIT if isinstance(asked, SplitCommand) else OperatorAction.JOIN
    return [
        OperatorCommand(
            command_id="",
            action=action,
            incident_id=asked.incident_id,
            by=LINKER,
            at=at,
            reason=decision.reason,
            details=details,
        )
    ]


def _relation_fields(relation: Relation | None, topology: Topology) -> dict[str, Any]:
    if relation is None:
        return {}
    path = [topology.describe(c) for c in relation.path]
    return {
        "relation": relation.kind.value,
        "paths": [path],
        "reason": f"{relation.kind.value} via {topology.describe(relation.via)} ({relation.hops} hops)",
    }


def _root_fields(root: RootCause, topology: Topology) -> dict[str, Any]:
    info = RootCauseInfo(
        component=topology.describe(root.component),
        kind=root.component.kind,
        name=root.component.name,
        first_firing_at=utc_from_ms(root.first_firing_ms),
        decided_by=root.decided_by.value,
    )
    return {
        "root_cause": info,
        "paths": [[topology.describe(c) for c in path] for path in root.paths],
        "reason": f"the most upstream failing component; explains {root.explains} other(s)",
    }
