"""The correlator's side of linking (issue #12): group notes out, linker decisions in, at fixed times.

A correlator partition with a topology writes one group note per incident event that tells the
linker something (``note_for_event``), keyed by scope, and promises each linker partition how far
its notes are complete (its clock). The linker's decisions come back as commands to apply at
``note time + link.delay`` (held in streams.core.timed until event time reaches it); ``LinkGate``
holds event time back until every linker partition has decided what could be due by then
(``gate``). So the audit log is a function of the input alone, like the correlator's own events:
the linker's speed and restarts decide when a command is applied in wall time, never at which
event time. Only a linker that stays behind longer than ``link.max_wait`` lets time go on
without it; its later commands apply when they arrive (``late``, counted).
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.streams.core import linkwire
from stormwatch.streams.core.groups import GroupState, IncidentRuntime
from stormwatch.streams.core.linking import GroupNote, LinkCommand, SplitCommand, note_for_event, scope_for
from stormwatch.streams.core.topology import Topology

__all__ = ["LinkGate", "LinkOutput", "LinkSetup", "linker_partition_of"]

PROMISE_STEPS_PER_DELAY = 4
"""Promises move in steps of a quarter of ``link.delay`` (2.5 s by default), so an idle pipeline
sends a few a second per pair of partitions, not one per tick; event time still advances three
quarters of the delay per round trip through the linker."""


def linker_partition_of(scope: tuple[str, ...], partitions: int) -> int:
    """The linker partition of a scope: stable across processes and versions (not Python's hash)."""
    return zlib.crc32(linkwire.scope_key(scope).encode()) % partitions


@dataclass(frozen=True, slots=True)
class LinkSetup:
    """What a correlator partition needs to link: the topology (only its labels and scope are
    used here), and how many correlator and linker partitions there are."""

    topology: Topology
    correlator_partitions: int
    linker_partitions: int

    @property
    def delay_ms(self) -> int:
        return self.topology.link.delay_ms

    @property
    def max_wait_ms(self) -> int:
        return self.topology.link.max_wait_ms


@dataclass(frozen=True, slots=True)
class LinkOutput:
    """A record for the linker input: to ``partition``, with ``key`` (None for promises)."""

    partition: int
    key: str | None
    value: bytes


class LinkGate:
    """Notes, requests and promises out; the linker partitions' marks in (the decisions
    themselves wait in the engine's ``TimedCommands``)."""

    def __init__(self, setup: LinkSetup, partition: int, stats: Counter[str]) -> None:
        self.setup = setup
        self.partition = partition
        self.marks: dict[int, int] = {}  # linker partition -> it decided every note before this
        self.promised: int | None = None  # the last promise sent (not persisted: resent after a restart)
        self.skip_to: int | None = None  # a skip record's: time may go this far without the linker
        self.wanted: int | None = None  # the last target asked of ``gate`` and what it allowed
        self.allowed: int | None = None
        self.asked: int | None = None  # event time of the latest note or request sent to the linker
        self.out: list[LinkOutput] = []
        self.stats = stats  # the engine's counters: link_notes, link_late_commands

    # ------------------------------------------------------------------ notes out

    def note(self, group: GroupState, event: IncidentEvent) -> None:
        """The group note of one event, if it tells the linker anything (called as it is emitted)."""
        inc = group.incident
        if inc is None:
            return
        topology = self.setup.topology
        if inc.scope is None:
            inc.scope = list(scope_for(topology, event))

        def labels_of(fingerprint: str) -> Mapping[str, str] | None:
            alert = group.alerts.get(fingerprint)
            return alert.labels if alert is not None else None

        note = note_for_event(topology, event, tuple(inc.scope), labels_of)
        if note is not None:
            self._write(note)

    def _write(self, note: GroupNote) -> None:
        partition = linker_partition_of(note.scope, self.setup.linker_partitions)
        value = linkwire.encode_note(self.partition, self.setup.correlator_partitions, note)
        self.out.append(LinkOutput(partition, linkwire.scope_key(note.scope), value))
        self.stats["link_notes"] += 1
        self._asked(note.t)

    def request(self, inc: IncidentRuntime, cmd: OperatorCommand, t: int) -> str | None:
        """Forward an operator's split or join to the linker partition of the incident's scope;
        a string says why it cannot be."""
        if inc.scope is None:
            return "the incident has no topology scope (it opened before linking was enabled)"
        scope = tuple(inc.scope)
        request: SplitCommand | LinkCommand
        if cmd.action is OperatorAction.SPLIT:
            request = SplitCommand(t, inc.incident_id, cmd.by, cmd.command_id)
        else:
            request = LinkCommand(t, inc.incident_id, cmd.link_into or "", cmd.by, cmd.command_id)
        partition = linker_partition_of(scope, self.setup.linker_partitions)
        value = linkwire.encode_request(self.partition, self.setup.correlator_partitions, request)
        self.out.append(LinkOutput(partition, linkwire.scope_key(scope), value))
        self._asked(t)
        return None

    def _asked(self, t: int) -> None:
        if self.asked is None or t > self.asked:
            self.asked = t

    def answer_due(self) -> int | None:
        """When the linker's answer to the latest note or request applies (its time + the delay),
        while the linker's marks have not passed it; None when nothing is outstanding."""
        if self.asked is None:
            return None
        if len(self.marks) >= self.setup.linker_partitions and min(self.marks.values()) > self.asked:
            return None
        return self.asked + self.setup.delay_ms

    def promise(self, clock: int | None) -> None:
        """Tell every linker partition that no note earlier than ``clock`` will come (in steps)."""
        if clock is None:
            return
        step = max(self.setup.delay_ms // PROMISE_STEPS_PER_DELAY, 1)
        mark = clock - clock % step
        if self.promised is not None and mark <= self.promised:
            return
        self.promised = mark
        value = linkwire.encode_promise(self.partition, self.setup.correlator_partitions, mark)
        self.out.extend(LinkOutput(p, None, value) for p in range(self.setup.linker_partitions))

    def take(self) -> list[LinkOutput]:
        out, self.out = self.out, []
        return out

    # ------------------------------------------------------------------ decisions in

    def mark(self, source: int, watermark: int) -> bool:
        """A linker partition's mark; True when it moved."""
        if watermark > self.marks.get(source, -1):
            self.marks[source] = watermark
            return True
        return False

    def gate(self, target: int) -> int | None:
        """How far event time may go towards ``target``: up to the instant before the earliest
        command that could still come (every linker partition's mark plus the delay), or as far
        as a ``skip`` record allowed; None while neither allows anything."""
        self.wanted = target
        decided = None
        if len(self.marks) >= self.setup.linker_partitions:
            decided = min(self.marks.values()) + self.setup.delay_ms - 1
        allowed = max((x for x in (decided, self.skip_to) if x is not None), default=None)
        self.allowed = None if allowed is None else min(allowed, target)
        return self.allowed

    def skip(self, until: int) -> bool:
        """The stage gave up waiting for the linker (``link.max_wait`` of wall time without a
        mark): event time may go to ``until``; decisions due before it will apply late."""
        if self.skip_to is None or until > self.skip_to:
            self.skip_to = until
            return True
        return False

    @property
    def waiting(self) -> bool:
        """Event time is held back by the linker right now."""
        return self.wanted is not None and (self.allowed is None or self.allowed < self.wanted)

    # ------------------------------------------------------------------ state

    def to_obj(self) -> dict[str, Any]:
        return {
            "marks": {str(k): v for k, v in sorted(self.marks.items())},
            "skip_to": self.skip_to,
            "asked": self.asked,
        }

    def restore(self, obj: Mapping[str, Any]) -> None:
        self.marks = {int(k): int(v) for k, v in obj.get("marks", {}).items()}
        self.skip_to = obj.get("skip_to")
        self.asked = obj.get("asked")
