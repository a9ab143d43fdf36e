"""Correlator and linker partitions wired together in memory (no broker), under any schedule.

Plays Kafka for issue #12's loop: each partition has an input log; a *step* of one partition
reads some of its unread records, processes them and commits at once, appending its output to
the logs it writes (as one transaction would) and keeping its state records (as the compacted
changelog). A *crash* drops a partition's in-memory state and rebuilds it from those records,
replaying from its committed offset. The audit log must not depend on the schedule or crashes.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.schemas.topology import TopologyUpdate
from stormwatch.streams.core import wire
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.core.ids import gkhash_of_incident
from stormwatch.streams.core.linkgate import LinkSetup
from stormwatch.streams.core.linkpartition import LinkerPartition, TopologyLog
from stormwatch.streams.core.routing import Router
from stormwatch.streams.core.rules import RulesConfig
from stormwatch.streams.core.topology import Topology, TopologyConfig

SOURCE = "alerts.raw/0"

CASCADE_TOPOLOGY = """
scope_labels: [cluster]
label_components:
  - {label: service, kind: database, match: ['service=~".+-db"']}
  - {label: service, kind: service}
  - {label: node, kind: node}
  - {label: pod, kind: pod}
link: {window: 10m, delay: 5s, max_wait: 10m}
components:
  - {kind: database, name: orders-db}
  - {kind: service, name: checkout, depends_on: [database/orders-db]}
  - {kind: service, name: payments, depends_on: [database/orders-db]}
  - {kind: service, name: search}
"""
"""A database two services use, and a service of its own: the topology of the cascade tests."""


def partition_of_key(key: str, partitions: int) -> int:
    return zlib.crc32(key.encode()) % partitions


@dataclass
class _Part:
    log: list[bytes] = field(default_factory=list)
    committed: int = 0
    state: dict[str, bytes] = field(default_factory=dict)


@dataclass
class LinkLoop:
    rules: RulesConfig
    topology: TopologyConfig
    correlators: int = 2
    linkers: int = 2
    topology_log: TopologyLog = field(default_factory=TopologyLog)
    events: list[IncidentEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.router = Router(self.rules)
        self.setup = LinkSetup(Topology(self.topology), self.correlators, self.linkers)
        self.c_parts = [_Part() for _ in range(self.correlators)]
        self.l_parts = [_Part() for _ in range(self.linkers)]
        self.engines = [self._engine(p) for p in range(self.correlators)]
        self.linker_parts = [self._linker(p) for p in range(self.linkers)]

    def _engine(self, partition: int) -> PartitionEngine:
        engine = PartitionEngine(self.rules, partition, "test.input", linking=self.setup)
        engine.restore(dict(self.c_parts[partition].state))
        return engine

    def _linker(self, partition: int) -> LinkerPartition:
        part = LinkerPartition(self.topology, partition, self.correlators, self.linkers, self.topology_log)
        part.restore(dict(self.l_parts[partition].state))
        return part

    # ------------------------------------------------------------------ the ingest role

    def alerts(self, notes: list[wire.AlertNote]) -> None:
        for n in notes:
            route = self.router.route(n.labels, n.fingerprint)
            value = wire.encode_alert_batch(
                route.gkhash, route.group_key, route.rule.name, route.group_labels, [n]
            )
            self.c_parts[partition_of_key(route.gkhash, self.correlators)].log.append(value)

    def tick(self, at: int) -> None:
        for part in self.c_parts:
            part.log.append(wire.encode_tick(SOURCE, at, 1))

    def command(self, action: OperatorAction, incident_id: str, command_id: str, **fields: Any) -> None:
        """An operator's command, to the partition of its incident (as ingest routes it)."""
        cmd = OperatorCommand(
            command_id=command_id,
            action=action,
            incident_id=incident_id,
            by="alice",
            at=utc_from_ms(0),
            **fields,
        )
        gkhash = gkhash_of_incident(incident_id)
        assert gkhash is not None
        self.c_parts[partition_of_key(gkhash, self.correlators)].log.append(
            wire.encode_command(cmd.to_bytes())
        )

    def topology_change(self, at: int, update: TopologyUpdate) -> None:
        self.topology_log.add(at, update)

    # ------------------------------------------------------------------ the runner role

    def pending(self) -> list[tuple[str, int]]:
        """Partitions with unread input."""
        out = [
            ("c", p) for p, part in enumerate(self.c_parts) if self.engines[p].processed + 1 < len(part.log)
        ]
        return out + [("l", p) for p, part in enumerate(self.l_parts) if part.committed < len(part.log)]

    def step(self, kind: str, partition: int, max_records: int) -> None:
        if kind == "c":
            self._step_correlator(partition, max_records)
        else:
            self._step_linker(partition, max_records)

    def _step_correlator(self, partition: int, max_records: int) -> None:
        part, engine = self.c_parts[partition], self.engines[partition]
        end = min(len(part.log), engine.processed + 1 + max_records)
        for offset in range(max(part.committed, engine.processed + 1), end):
            engine.process(part.log[offset], offset)
        out = engine.take_output()
        self.events.extend(out.events)
        for link in out.links:
            self.l_parts[link.partition].log.append(link.value)
        _keep(part.state, out.state)
        part.committed = out.commit_offset if out.commit_offset is not None else part.committed

    def _step_linker(self, partition: int, max_records: int) -> None:
        part, linker = self.l_parts[partition], self.linker_parts[partition]
        end = min(len(part.log), part.committed + max_records)
        for offset in range(part.committed, end):
            linker.process(part.log[offset], offset)
        linker.release()
        out = linker.take_output()
        assert not out.bad_records, out.bad_records
        for key, value in out.commands:
            self.c_parts[partition_of_key(key, self.correlators)].log.append(value)
        for p, value in out.marks:
            self.c_parts[p].log.append(value)
        _keep(part.state, out.state)
        # the records written for what each batch touched add up to the whole state
        assert part.state == linker.state_records(), "incremental state records drifted from the state"
        part.committed = end

    def crash(self, kind: str, partition: int) -> None:
        """Lose the partition's memory; rebuild from its state records, replay from the commit."""
        if kind == "c":
            engine = self.engines[partition] = self._engine(partition)
            part = self.c_parts[partition]
            for offset in range(part.committed, engine.processed + 1):
                engine.process(part.log[offset], offset)
            # replays are not re-applied: `processed` says how far the state already is
        else:
            self.linker_parts[partition] = self._linker(partition)

    def run(self, rnd: random.Random | None = None, *, crashes: float = 0.0, limit: int = 100_000) -> None:
        """Steps until no input is left: in order (rnd None) or at random, crashing sometimes."""
        for _ in range(limit):
            ready = self.pending()
            if not ready:
                return
            if rnd is None:
                kind, partition = ready[0]
                self.step(kind, partition, 1_000_000)
                continue
            kind, partition = rnd.choice(ready)
            if crashes and rnd.random() < crashes:
                self.crash(kind, partition)
            self.step(kind, partition, rnd.randint(1, 20))
        raise AssertionError("the loop did not settle")

    def audit_log(self) -> dict[str, list[bytes]]:
        """Each incident's events in order, as bytes: what two runs must agree on."""
        by_incident: dict[str, list[IncidentEvent]] = {}
        for event in self.events:
            by_incident.setdefault(event.incident_id, []).append(event)
        out = {}
        for iid, events in sorted(by_incident.items()):
            seqs = [e.seq for e in events]
            assert seqs == list(range(1, len(seqs) + 1)), f"{iid}: seq {seqs}"
            out[iid] = [e.to_bytes() for e in events]
        return out

    def stats(self) -> dict[str, Any]:
        total: dict[str, int] = {}
        for engine in self.engines:
            for key in ("link_notes", "link_late_commands"):
                total[key] = total.get(key, 0) + engine.stats[key]
        return total


def _keep(state: dict[str, bytes], changes: dict[str, bytes | None]) -> None:
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value


__all__ = ["CASCADE_TOPOLOGY", "LinkLoop", "partition_of_key"]
