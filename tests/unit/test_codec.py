"""The state codec: changelog records keep their bytes, and restoring them rebuilds the same state."""

from __future__ import annotations

import orjson

from stormwatch.schemas.commands import OperatorAction
from stormwatch.schemas.incident import AlertChangeKind
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core import codec
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.core.groups import AlertState
from stormwatch.streams.core.inhibition import Inhibitions
from stormwatch.streams.core.muting import Suppression, SuppressionKind
from stormwatch.streams.core.reorder import ReorderBuffer, Watermarks
from stormwatch.streams.core.silencing import Silences
from tests.kit.engine import Driver, at, config, iso, note

RULES = """
defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 1s
state_time_resolution: 1s
inhibit_rules:
  - name: node-down
    source_match: ['alertname="NodeDown"']
    target_match: ['alertname!="NodeDown"']
    equal: [node]
"""


def muted_alert(reason: Suppression | None) -> AlertState:
    return AlertState("fp", {"alertname": "PodCrash"}, {}, "warning", True, 1, 2, None, suppressed=reason)


def test_an_alert_record_holds_its_reason_as_the_historical_string() -> None:
    reason = Suppression.of(SuppressionKind.INHIBIT, "node-down")
    record = muted_alert(reason).encode()
    rest = orjson.loads(record.rsplit(b"\n", 1)[1])
    assert rest[8] == "inhibit:node-down"
    restored = AlertState.decode(record)
    assert restored.suppressed is reason
    assert restored.encode() == record
    assert orjson.loads(muted_alert(None).encode().rsplit(b"\n", 1)[1])[8] is None


def test_an_alert_record_of_the_first_format_restores_its_reason() -> None:
    first = orjson.dumps(
        [
            "fp",
            {"alertname": "PodCrash"},
            {},
            "warning",
            True,
            1,
            2,
            None,
            [],
            False,
            "silence:s1",
            False,
            [],
            False,
        ]
    )
    restored = AlertState.decode(first)
    assert restored.suppressed == Suppression(SuppressionKind.SILENCE, "s1")
    assert restored == muted_alert(Suppression.of(SuppressionKind.SILENCE, "s1"))


def test_the_partition_record_restores_to_parts_that_write_it_again_byte_for_byte() -> None:
    rules = config(RULES)
    marks, buffer, silences = Watermarks(), ReorderBuffer(), Silences()
    inhibitions = Inhibitions(rules.inhibit_rules, 300_000, 1000)
    marks.update({"raw/0": at(50), "raw/1": at(40)}, sources=2)
    first = note({"alertname": "A"}, at(3))
    buffer.admit([(first, ("0123456789abcdef", "{}", "default", {}), None)], 0)
    buffer.released(buffer.due(at(5))[0])  # the bound holds a lazy Tiebreak while running
    silences.add(
        Silence(
            silence_id="s1",
            matchers=[Matcher.parse('service="db"')],
            starts_at=iso(at(0)),
            ends_at=iso(at(600)),
            created_by="alice",
        )
    )
    inhibitions.apply("node-down", note({"alertname": "NodeDown", "node": "n1"}, at(1)), at(1))
    record = codec.encode_meta(
        watermarks=marks, buffer=buffer, processed=17, silences=silences, inhibitions=inhibitions
    )

    marks2, buffer2, silences2 = Watermarks(), ReorderBuffer(), Silences()
    inhibitions2 = Inhibitions(rules.inhibit_rules, 300_000, 1000)
    processed = codec.restore_meta(
        record, watermarks=marks2, buffer=buffer2, silences=silences2, inhibitions=inhibitions2
    )
    assert processed == 17
    again = codec.encode_meta(
        watermarks=marks2, buffer=buffer2, processed=processed, silences=silences2, inhibitions=inhibitions2
    )
    assert again == record
    assert silences2.muted({"service": "db"}, at(1)) == Suppression(SuppressionKind.SILENCE, "s1")
    assert inhibitions2.muted({"alertname": "X", "node": "n1"}, at(2)) is not None


def test_a_restored_engine_holds_the_state_it_was_restored_from() -> None:
    """Silenced and inhibited alerts included: every record re-encodes to the bytes it came from."""
    d = Driver(config(RULES))
    d.command(
        OperatorAction.SILENCE_ADD,
        silence=Silence(
            silence_id="s1",
            matchers=[Matcher.parse('service="db"')],
            starts_at=iso(at(0)),
            ends_at=iso(at(3600)),
            created_by="alice",
        ),
    )
    d.alerts([note({"alertname": "NodeDown", "node": "n1"}, at(0))])
    d.alerts([note({"alertname": "PodCrash", "node": "n1", "pod": f"p{i}"}, at(1)) for i in range(3)])
    d.alerts([note({"alertname": "DBDown", "service": "db", "i": str(i)}, at(1)) for i in range(3)])
    d.alerts([note({"alertname": "PodCrash", "node": "n2", "pod": "p9"}, at(1))])
    d.tick(at(60))
    d.commit()
    reasons = {
        a.suppressed for g in d.engine.groups.values() for a in g.alerts.values() if a.suppressed is not None
    }
    assert reasons == {
        Suppression(SuppressionKind.SILENCE, "s1"),
        Suppression(SuppressionKind.INHIBIT, "node-down"),
    }

    restored = PartitionEngine(config(RULES), 0, "test.input")
    restored.restore(dict(d.state))
    state = restored.state
    state.dirty_groups = set(state.groups)
    state.dirty_alerts = {(g.gkhash, fp) for g in state.groups.values() for fp in g.alerts}
    state.meta_dirty = True
    out = restored.take_output()
    assert out.state == d.state


def test_a_restored_alert_keeps_its_pending_changes_as_the_live_one_does() -> None:
    """Decoded as they are written, one pending change is a list of a list, with a new kind string
    and time: four more objects per alert, so a correlator held twice the blocks per alert after a
    restore or a takeover (issue #17). Restored, they are what ``mark`` keeps, and write the same bytes."""
    live = AlertState("fp", {"alertname": "A"}, {}, "warning", True, 1_000, 1_000, None)
    live.mark(AlertChangeKind.JOINED, 1_000)
    restored = AlertState.decode(live.encode())
    assert restored.pending is live.pending  # the one tuple the alerts that joined then share
    assert restored.encode() == live.encode()
    live.mark(AlertChangeKind.RESOLVED, 2_000, "rule-1")
    again = AlertState.decode(live.encode())
    assert again.pending == [("joined", 1_000, None), ("resolved", 2_000, "rule-1")]
    assert again.pending[0][0] is AlertChangeKind.JOINED.value and again.encode() == live.encode()
    again.mark(AlertChangeKind.UPDATED, 3_000)
    assert len(again.pending) == 3 and again == AlertState.decode(again.encode())
