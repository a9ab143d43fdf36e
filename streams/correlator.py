"""The stateful stage: runs one PartitionEngine per assigned correlator-input partition.

State lives in the compacted changelog topic, written in the same transaction as the incident
events and the input offsets; on assignment a partition's engine is rebuilt from it before any
input is read, so a restart or a rebalance resumes exactly where the last commit left off.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from confluent_kafka import Consumer, Message, TopicPartition

from stormwatch.config import Settings
from stormwatch.kafka.client import read_changelogs, restore_caught_up
from stormwatch.kafka.txloop import HANDLE_BYTES, BatchResult, Output, coordinates
from stormwatch.metrics import PipelineMetrics
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.streams.core.engine import EngineOutput, PartitionEngine
from stormwatch.streams.core.groups import forget_shared
from stormwatch.streams.core.linkgate import LinkSetup
from stormwatch.streams.core.linkwire import encode_link_skip
from stormwatch.streams.core.rules import RulesConfig
from stormwatch.streams.core.wire import ClockDemand, encode_demand

log = logging.getLogger("stormwatch.correlator")

# Input records between two encodings of the events so far. A transaction takes up to 8 MiB of
# input (about 10,000 new alerts); holding all their events as objects until its end fragments the
# heap for good (offline, 1,442 instead of 886 bytes per kept alert; issue #16), while encoding them every
# few hundred records keeps the transient peak small and costs nothing.
EVENTS_EVERY = 256


class CorrelatorStage:
    handle_bytes = HANDLE_BYTES  # a catch-up's batches in parts (stormwatch.kafka.txloop)

    def __init__(
        self,
        settings: Settings,
        rules: RulesConfig,
        metrics: PipelineMetrics | None = None,
        linking: LinkSetup | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.rules = rules
        self.linking = linking
        self.metrics = metrics
        self.engines: dict[int, PartitionEngine] = {}
        self._reported: dict[int, Counter[str]] = {}
        self.restore_seconds = 0.0  # the last assignment's restore
        self._waiting: dict[int, tuple[float, tuple[tuple[int, int], ...]]] = {}  # since, marks
        self._given_up: dict[int, tuple[tuple[int, int], ...]] = {}  # the marks when it gave up
        # Clock demands (streams.core.clock): the last one written per partition, and the partitions
        # assigned since whose demand is still to write (ingest ticks an idle partition only on demand).
        self._demands: dict[int, int | None] = {}
        self._unpublished: set[int] = set()

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = sorted(tp.partition for tp in partitions if tp.topic == self.topics.correlator_input)
        if not mine:
            return
        started = time.monotonic()
        read_s = 0.0

        def restore(todo: list[int]) -> dict[int, int]:
            nonlocal read_s
            # The engines these replace (a rewind, a second read) go before anything is read:
            # built beside them, the new state shares their memory arenas and keeps them when they
            # go (hour run 7: after a broker crash's rewind a correlator held 174 arenas for 55 MB
            # of objects; docs/performance.md, "Memory after faults").
            for partition in todo:
                self.engines.pop(partition, None)
            forget_shared()
            read_started = time.monotonic()
            states = read_changelogs(self.settings, self.topics.correlator_state, todo)
            read_s += time.monotonic() - read_started
            for partition in todo:
                engine = PartitionEngine(
                    self.rules, partition, source_topic=self.topics.correlator_input, linking=self.linking
                )
                engine.restore(states.pop(partition))  # popped: its raw records go as it is built
                self.engines[partition] = engine
            return {p: self.engines[p].processed for p in todo}

        restore_caught_up(consumer, self.topics.correlator_input, mine, restore)
        counts: Counter[str] = Counter()
        for partition in mine:
            engine = self.engines[partition]
            self._unpublished.add(partition)
            self._reported[partition] = Counter(engine.stats)
            counts.update(engine.snapshot_counts())
        self.restore_seconds = time.monotonic() - started
        log.info(
            "restored partitions %s in %.2fs (changelog read %.2fs): %s",
            ",".join(map(str, mine)),
            self.restore_seconds,
            read_s,
            dict(counts),
        )

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        if any(tp.topic == self.topics.correlator_input for tp in partitions):
            forget_shared()
        for tp in partitions:
            if tp.topic == self.topics.correlator_input:
                self.engines.pop(tp.partition, None)
                self._reported.pop(tp.partition, None)
                self._waiting.pop(tp.partition, None)
                self._given_up.pop(tp.partition, None)
                self._demands.pop(tp.partition, None)
                self._unpublished.discard(tp.partition)
                if self.metrics is not None:  # its new owner reports it: a stale value counts it twice
                    self.metrics.open_incidents.labels(partition=str(tp.partition)).set(0)
                    self.metrics.active_alerts.labels(partition=str(tp.partition)).set(0)
                    self.metrics.record_oldest_open(tp.partition, None)

    def idle_work_due(self) -> bool:
        """A transaction with no input: to write the clock demands of newly assigned partitions."""
        return bool(self._unpublished)

    def handle(self, messages: list[Message], eof: set[tuple[str, int]]) -> BatchResult:
        touched: set[int] = set()
        outputs: list[Output] = []
        for n, msg in enumerate(messages, 1):
            _, partition, offset = coordinates(msg)
            engine = self.engines.get(partition)
            if engine is None:  # not ours any more (revoked mid-batch); the new owner replays it
                continue
            engine.process(msg.value() or b"", offset)
            touched.add(partition)
            if n % EVENTS_EVERY == 0:
                for busy in sorted(touched):
                    self._write_events(self.engines[busy].take_events(), outputs)
        offsets: dict[tuple[str, int], int] = {}
        for partition in sorted(touched):
            engine = self.engines[partition]
            self._give_up_waiting(partition, engine, outputs)
            out = engine.take_output()
            self._write(partition, out, outputs)
            if out.commit_offset is not None:
                offsets[(self.topics.correlator_input, partition)] = out.commit_offset
            self._report(partition, engine)
        for partition in sorted(touched | self._unpublished):
            self._demand(partition, outputs)
        self._unpublished.clear()
        return BatchResult(outputs, offsets)

    def _demand(self, partition: int, outputs: list[Output]) -> None:
        """The partition's clock demand, when it changed: the watermark at which it next has
        something to do; the ingest stage ticks it then (issue #16)."""
        engine = self.engines.get(partition)
        if engine is None:
            return
        wanted = engine.wanted_watermark()
        if partition in self._demands and self._demands[partition] == wanted:
            return
        self._demands[partition] = wanted
        demand = ClockDemand(partition, wanted, engine.links is not None)
        outputs.append(Output(self.topics.correlator_clock, encode_demand(demand), str(partition)))

    def _give_up_waiting(self, partition: int, engine: PartitionEngine, outputs: list[Output]) -> None:
        """A linker that has not moved its marks for ``link.max_wait`` (wall time) while event time
        waits for it is down or stuck: a skip record in this partition's own input lets time go
        on without it (a record, so a replay makes the same decision at the same point). Having
        given up, it does not wait again until a mark moves: one stall of ``max_wait``, not one
        per ``max_wait``, while the linker stays down."""
        links = engine.links
        if links is None or not links.waiting or links.wanted is None:
            self._waiting.pop(partition, None)
            return
        marks = tuple(sorted(links.marks.items()))
        now = time.monotonic()
        given_up = self._given_up.get(partition)
        if given_up is not None and given_up != marks:
            del self._given_up[partition]  # the linker is back: wait for it again
            given_up = None
        since = self._waiting.get(partition)
        if given_up is None:
            if since is None or since[1] != marks:
                self._waiting[partition] = (now, marks)
                return
            if (now - since[0]) * 1000 < links.setup.max_wait_ms:
                return
            log.warning(
                "partition %d: no linker mark for %.0fs; going on without the linker "
                "(its late decisions apply when they come) until its marks move again",
                partition,
                now - since[0],
            )
            self._given_up[partition] = marks
        # Ahead of the wanted time, so the skip covers the next ticks too, not one tick each.
        until = links.wanted + links.setup.max_wait_ms
        outputs.append(Output(self.topics.correlator_input, encode_link_skip(until), None, partition))
        self._waiting[partition] = (now, marks)

    def _write_events(self, events: list[IncidentEvent], outputs: list[Output]) -> None:
        topic = self.topics.incidents
        now = time.time()
        for event in events:
            outputs.append(Output(topic, event.to_bytes(), event.incident_id))
            if self.metrics is not None:
                self.metrics.record_event(
                    event.type.value, event.snapshot.severity.value, event.snapshot.rule
                )
                if event.type is IncidentEventType.ROOT_CAUSE_CHANGED and event.snapshot.root_cause:
                    self.metrics.root_causes.labels(kind=event.snapshot.root_cause.kind).inc()
                for change in event.alerts[:32]:
                    self.metrics.processing_latency.observe(max(now - change.at.timestamp(), 0.0))

    def _write(self, partition: int, out: EngineOutput, outputs: list[Output]) -> None:
        t = self.topics
        self._write_events(out.events, outputs)
        for dead in out.dead_letters:
            key = f"{dead.source_topic}/{dead.source_partition}/{dead.source_offset}"
            outputs.append(Output(t.dlq, dead.to_bytes(), key))
            if self.metrics is not None:
                self.metrics.dead_letters.labels(reason=dead.reason.value).inc()
        for key, value in out.feedback:
            outputs.append(Output(t.commands, value, key))
        for silence_id, silence in out.silences:
            outputs.append(Output(t.silences, silence, silence_id))
        for key, value in out.cross:
            outputs.append(Output(t.correlator_input, value, key))
        for link in out.links:
            outputs.append(Output(t.linker_input, link.value, link.key, link.partition))
        for key, state in out.state.items():
            outputs.append(Output(t.correlator_state, state, key, partition))
        if self.metrics is not None:
            for obs in out.observations:
                if obs.name == "mtta":
                    self.metrics.mtta.labels(severity=obs.severity, rule=obs.rule).observe(obs.seconds)
                elif obs.name == "mttr":
                    self.metrics.mttr.labels(severity=obs.severity, rule=obs.rule).observe(obs.seconds)
                elif obs.name == "mtta_notified":
                    labels = {"severity": obs.severity, "rule": obs.rule}
                    self.metrics.mtta_notified.labels(**labels).observe(obs.seconds)

    def _report(self, partition: int, engine: PartitionEngine) -> None:
        if self.metrics is None:
            return
        before = self._reported.get(partition, Counter())
        delta = Counter({k: v - before.get(k, 0) for k, v in engine.stats.items()})
        self.metrics.record_engine_stats(delta)
        self._reported[partition] = Counter(engine.stats)
        counts = engine.snapshot_counts()
        oldest = min(
            (
                g.incident.opened_ms
                for g in engine.groups.values()
                if g.incident is not None and g.incident.active
            ),
            default=None,
        )
        self.metrics.record_oldest_open(partition, oldest)
        self.metrics.open_incidents.labels(partition=str(partition)).set(counts["open_incidents"])
        self.metrics.active_alerts.labels(partition=str(partition)).set(counts["alerts"])
