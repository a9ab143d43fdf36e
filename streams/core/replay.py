"""Offline replay: raw alert records through parsing, routing and the engine, with no broker.

The two stages do exactly this across Kafka (stormwatch.streams.ingest parses and batches,
stormwatch.streams.correlator runs the engine); here it happens in one process over one
correlator partition, so a file of alerts can be turned into the incidents and audit events the
pipeline would produce, for a what-if on new rules, a test, or a bug report.
docs/architecture.md ("The core on its own") has an example.

Given the notes keys (``ingest.notes_key_file``), replay reads signed notes records as ingest does,
without re-checking their rows; without them every row is checked (the result is the same).
"""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.schemas.adapters import ParseLimits
from stormwatch.schemas.dlq import DeadLetter
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.streams.core import wire
from stormwatch.streams.core.batching import AlertBatcher
from stormwatch.streams.core.canonical import NotesKeys
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.core.rules import RulesConfig

__all__ = ["Replay"]

SOURCE = "replay"


class Replay:
    """Feed records with ``record``, move time with ``advance``, collect with ``take_events``.

    Time is event time, as in the pipeline: a record's timestamp is when it arrived (Kafka's
    record timestamp), and nothing happens between records until ``advance`` says time passed
    (as the ingest stage's ticks do). Operator commands can be fed as encoded wire records with
    ``write``.
    """

    def __init__(
        self, rules: RulesConfig, *, limits: ParseLimits | None = None, notes_keys: NotesKeys | None = None
    ) -> None:
        self.engine = PartitionEngine(rules, 0, SOURCE)
        self.batcher = AlertBatcher(rules, notes_keys)
        self.limits = limits or ParseLimits()
        self.dead_letters: list[DeadLetter] = []
        self._records = 0  # raw records read (their offsets, as dead letters name them)
        self._offset = 0  # correlator input records written
        self._watermark = -1

    def record(self, value: bytes, timestamp_ms: int, headers: Mapping[str, bytes] | None = None) -> None:
        """One raw record (any input format), as if it had been read from the raw topic."""
        result = self.batcher.add_raw(
            value,
            topic=SOURCE,
            partition=0,
            offset=self._records,
            timestamp_ms=timestamp_ms,
            headers=headers,
            limits=self.limits,
        )
        self._records += 1
        self.dead_letters.extend(result.dead_letters)
        for broadcast in result.broadcasts:
            self.write(broadcast)
        for _gkhash, batch in self.batcher.drain():
            self.write(batch)
        self.advance(timestamp_ms)

    def advance(self, watermark_ms: int) -> None:
        """Everything up to ``watermark_ms`` has arrived: timers (group_wait, resolve ...) run."""
        if watermark_ms > self._watermark:
            self._watermark = watermark_ms
            self.write(wire.encode_ticks({f"{SOURCE}/0": watermark_ms}, 1))

    def write(self, value: bytes) -> None:
        """One correlator input record (see stormwatch.streams.core.wire)."""
        self.engine.process(value, self._offset)
        self._offset += 1

    def take_events(self) -> list[IncidentEvent]:
        """The incident events (the audit log) produced since the last call, in order."""
        out = self.engine.take_output()
        self.dead_letters.extend(out.dead_letters)
        return out.events
