"""Turns parsed alerts into correlator input records: one batch per group, plus broadcasts.

This is the ingest stage's decision, kept pure so that the stage (stormwatch.streams.ingest), the
offline replay (stormwatch.streams.core.replay) and the tests route alerts the same way: by label
set to a group key (one record per group key and poll batch, so the correlator pays its per-record
cost per group, not per alert), and to every partition when every partition must see the alert
(inhibition sources, and resolves/acknowledges that carry only a source key).

With the notes keys (``ingest.notes_key_file``) it also checks the signature of the gateway's notes
records: a verified record is read without re-checking its rows (streams.core.canonical).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

from stormwatch.schemas.adapters import CheckedResult, ParseLimits, parse_record_checked
from stormwatch.schemas.adapters.base import AdapterError, ParseContext
from stormwatch.schemas.adapters.detect import SIGNATURE_HEADER
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.streams.core import wire
from stormwatch.streams.core.canonical import NotesKeys, NotesSignature, decode_notes, is_notes
from stormwatch.streams.core.routing import Route, Router
from stormwatch.streams.core.rules import RulesConfig

__all__ = ["AlertBatcher", "RawRecord"]


class RawRecord(NamedTuple):
    """What one raw record gave: its alerts' notes, its dead letters, the records every
    correlator partition must get, and, for a notes record read with keys, its signature's check."""

    alerts: list[wire.AlertNote]
    dead_letters: list[DeadLetter]
    broadcasts: list[bytes]
    signature: NotesSignature | None = None


class AlertBatcher:
    """Collects the alerts of one poll batch; ``drain`` gives one record per group key.

    ``notes_keys`` verify the gateway's signed notes (None: every notes record is fully checked).
    """

    def __init__(self, rules: RulesConfig, notes_keys: NotesKeys | None = None) -> None:
        self.router = Router(rules)
        self.notes_keys = notes_keys
        self._inhibit_rules = rules.inhibit_rules
        self._buckets: dict[str, tuple[Route, list[wire.AlertNote]]] = {}
        self._to_ms = wire.BoundedMemo(ms_from_dt)

    def add_raw(
        self,
        value: bytes,
        *,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int,
        headers: Mapping[str, bytes] | None,
        limits: ParseLimits,
    ) -> RawRecord:
        """One raw record, as ingest and replay read it: the gateway's parsed notes
        (streams.core.canonical) or any input format through the adapters."""
        if not is_notes(headers):
            result = parse_record_checked(
                value,
                topic=topic,
                partition=partition,
                offset=offset,
                timestamp_ms=timestamp_ms,
                headers=headers,
                limits=limits,
            )
            notes, broadcasts = self.add_record(result)
            return RawRecord(notes, result.dead_letters, broadcasts)
        signature = None
        if self.notes_keys is not None:  # a bad or missing signature is no dead letter: the rows are checked
            assert headers is not None  # is_notes
            signature = self.notes_keys.check(headers.get(SIGNATURE_HEADER), value, timestamp_ms)
        ctx = ParseContext.for_record(topic, partition, offset, timestamp_ms, limits, checked_only=True)
        try:
            decoded = decode_notes(value, timestamp_ms, ctx, trusted=signature is NotesSignature.VALID)
        except AdapterError as exc:
            return RawRecord([], [ctx.dead_letter(exc.reason, exc.detail, value, None)], [], signature)
        except Exception as exc:  # a bug must cost one dead letter, never the stream
            detail = f"internal error reading notes ({type(exc).__name__}: {str(exc)[:200]})"
            dead = ctx.dead_letter(DeadLetterReason.INVALID_ALERT, detail, value, None)
            return RawRecord([], [dead], [], signature)
        sent_everywhere: list[bytes] = []
        for note, has_source_key in decoded:
            sent_everywhere.extend(self.add(note, has_source_key))
        return RawRecord([note for note, _ in decoded], ctx.dead_letters, sent_everywhere, signature)

    def add_record(self, parsed: CheckedResult) -> tuple[list[wire.AlertNote], list[bytes]]:
        """Every alert of one parsed raw record: its notes, and the records every partition must
        get (in the order the alerts came)."""
        event_ms = ms_from_dt(parsed.received_at)
        notes: list[wire.AlertNote] = []
        broadcasts: list[bytes] = []
        for fields in parsed.alerts:
            note = wire.AlertNote.from_checked(fields, event_ms, self._to_ms)
            notes.append(note)
            broadcasts.extend(self.add(note, fields.get("source_key") is not None))
        return notes, broadcasts

    def add(self, note: wire.AlertNote, has_source_key: bool) -> list[bytes]:
        """Bucket ``note`` by its group; return the records every partition must get instead or too."""
        if note.keyed and (not note.firing or "pagerduty_action" in note.annotations):
            # resolve/acknowledge carry only the key: whoever holds that alert applies it
            return [wire.encode_by_key(note)]
        # Routed by label set: a source key may outlive its labels. Without a source key the
        # fingerprint is the label fingerprint, a cheaper cache key for the same route.
        labels = note.labels
        route = self.router.route(labels, None if has_source_key else note.fingerprint)
        bucket = self._buckets.get(route.gkhash)
        if bucket is None:
            self._buckets[route.gkhash] = (route, [note])
        else:
            bucket[1].append(note)
        broadcasts: list[bytes] = []
        for rule in self._inhibit_rules:
            if all(m.matches(labels) for m in rule.source_match):
                broadcasts.append(wire.encode_inhibitor(rule.name, note, route.gkhash))
        return broadcasts

    def drain(self) -> Iterator[tuple[str, bytes]]:
        """(gkhash, alert batch record) per group seen since the last drain, in first-seen order."""
        buckets, self._buckets = self._buckets, {}
        for gkhash, (route, notes) in buckets.items():
            yield (
                gkhash,
                wire.encode_alert_batch(gkhash, route.group_key, route.rule.name, route.group_labels, notes),
            )
