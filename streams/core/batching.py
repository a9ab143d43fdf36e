"""Turns parsed alerts into correlator input records: one batch per group, plus broadcasts.

This is the ingest stage's decision, kept pure so that the stage (stormwatch.streams.ingest), the
offline replay (stormwatch.streams.core.replay) and the tests route alerts the same way: by label
set to a group key (one record per group key and poll batch, so the correlator pays its per-record
cost per group, not per alert), and to every partition when every partition must see the alert
(inhibition sources, and resolves/acknowledges that carry only a source key).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from stormwatch.schemas.adapters import CheckedResult
from stormwatch.schemas.common import ms_from_dt
from stormwatch.streams.core import wire
from stormwatch.streams.core.routing import Route, Router
from stormwatch.streams.core.rules import RulesConfig

__all__ = ["AlertBatcher"]

_MS_MEMO_SIZE = 4096


class AlertBatcher:
    """Collects the alerts of one poll batch; ``drain`` gives one record per group key."""

    def __init__(self, rules: RulesConfig) -> None:
        self.router = Router(rules)
        self._inhibit_rules = rules.inhibit_rules
        self._buckets: dict[str, tuple[Route, list[wire.AlertNote]]] = {}
        self._ms_memo: dict[datetime, int] = {}

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

    def _to_ms(self, when: datetime) -> int:
        """``ms_from_dt``, memoized: the alerts of one push mostly share startsAt and endsAt."""
        ms = self._ms_memo.get(when)
        if ms is None:
            if len(self._ms_memo) >= _MS_MEMO_SIZE:
                self._ms_memo.clear()
            ms = self._ms_memo[when] = ms_from_dt(when)
        return ms
