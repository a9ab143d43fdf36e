"""The hot-path optimizations behind the benchmark change nothing the pipeline writes.

Each test pins one of them (docs/performance.md, "Optimizations") against the straightforward
form it replaced: checked fields instead of pydantic Alerts in ingest, label-fingerprint routing
keys, compact AlertState, one tick record for many raw partitions, the bucketed reorder buffer,
memoized instants and enum look-ups in the events.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from stormwatch import simulate
from stormwatch.allocator import release_free_memory
from stormwatch.kafka.txloop import TransactionalLoop
from stormwatch.schemas.adapters import parse_record, parse_record_checked
from stormwatch.schemas.common import Severity, ms_from_dt, utc_from_ms
from stormwatch.schemas.incident import AlertChangeKind
from stormwatch.streams.core import wire
from stormwatch.streams.core.emission import severity_of
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.core.groups import NO_CHANGES, SETTLE, AlertState, GroupState
from stormwatch.streams.core.routing import Router
from stormwatch.streams.core.rules import RulesConfig, parse_rules
from stormwatch.streams.core.wire import BoundedMemo
from tests.kit.engine import T0, at, note

FIXTURES = Path(__file__).parent / "fixtures"


def _raw_records() -> list[tuple[bytes, dict[str, bytes] | None, int]]:
    records: list[tuple[bytes, dict[str, bytes] | None, int]] = [
        (path.read_bytes(), None, T0 + i) for i, path in enumerate(sorted(FIXTURES.glob("*.json")))
    ]
    for scenario in ("node-failure", "flapping"):
        for fmt in simulate.FORMATS:
            sim = simulate.generate(
                scenario, size=6, seed=5, fmt=fmt, duration_ms=300_000, eval_interval_ms=30_000
            )
            for i, rec in enumerate(sim):
                if i >= 40:
                    break
                headers = {k: v.encode() for k, v in rec.headers.items()}
                records.append((rec.value, headers, simulate.SIM_EPOCH_MS + rec.t_ms))
    records.append((b"not json", None, T0))
    records.append((b'[{"labels": {}}]', None, T0))
    return records


def test_checked_fields_make_the_same_notes_and_dead_letters() -> None:
    for value, headers, ts in _raw_records():
        kwargs = {"topic": "raw", "partition": 1, "offset": 7, "timestamp_ms": ts, "headers": headers}
        full = parse_record(value, **kwargs)  # type: ignore[arg-type]
        checked = parse_record_checked(value, **kwargs)  # type: ignore[arg-type]
        assert [d.to_bytes() for d in checked.dead_letters] == [d.to_bytes() for d in full.dead_letters]
        event_ms = ms_from_dt(checked.received_at)
        notes = [wire.AlertNote.from_checked(f, event_ms) for f in checked.alerts]
        assert notes == [wire.AlertNote.from_alert(a) for a in full.alerts]
        assert [n.to_wire() for n in notes] == [wire.AlertNote.from_alert(a).to_wire() for a in full.alerts]


def test_label_fingerprint_is_a_routing_cache_key_for_the_same_route() -> None:
    by_fingerprint, by_labels = Router(RulesConfig()), Router(RulesConfig())
    for value, headers, ts in _raw_records():
        result = parse_record_checked(
            value, topic="raw", partition=0, offset=0, timestamp_ms=ts, headers=headers
        )
        for fields in result.alerts:
            if fields.get("source_key") is None:  # what ingest passes the fingerprint for
                labels = fields["labels"]
                assert by_fingerprint.route(labels, fields["fingerprint"]) == by_labels.route(labels)


def test_alert_state_keeps_labels_encoded_and_restores_them_without_parsing() -> None:
    labels = {"alertname": "X", "pod": "p-1", "zone": "ä", "multi": "line\none"}
    annotations = {"summary": "s"}
    alert = AlertState("fp", labels, annotations, "warning", True, 1, 2, 3)
    assert alert.labels == labels and list(alert.labels) == list(labels)
    assert alert.pending == () and alert.flips == ()
    rest = ["fp", "warning", True, 1, 2, 3, [], False, None, False, [], False]
    assert alert.encode() == b"\n".join((orjson.dumps(labels), orjson.dumps(annotations), orjson.dumps(rest)))
    restored = AlertState.decode(alert.encode())
    assert restored == alert and restored.labels == labels
    assert restored.encode() == alert.encode()
    # the first format (one JSON array) still restores: changelogs written before it
    first = orjson.dumps(
        ["fp", labels, annotations, "warning", True, 1, 2, 3, [], False, None, False, [], False]
    )
    assert AlertState.decode(first) == alert
    for kept in (alert._encoded, restored._encoded):
        assert sys.getsizeof(kept) == 33 + len(kept)  # exact-size copies, not orjson's 4 KiB buffer
    assert alert.same_annotations({"summary": "s"})
    assert not alert.same_annotations({"summary": "t"})
    reordered = AlertState("fp", labels, {"a": "1", "b": "2"}, "warning", True, 1, 2, 3)
    assert reordered.same_annotations({"b": "2", "a": "1"})  # dict equality, not byte equality
    alert.mark(AlertChangeKind.JOINED, 5)
    alert.mark(AlertChangeKind.JOINED, 6)
    assert alert.pending == (("joined", 5, None),)  # one change: a tuple, the smallest form
    assert AlertState.decode(alert.encode()) == alert  # restored as lists: equal all the same
    alert.mark(AlertChangeKind.UPDATED, 7)
    assert alert.pending == [("joined", 5, None), ("updated", 7, None)]
    assert b'[["joined",5,null],["updated",7,null]]' in alert.encode()  # the record is unchanged
    alert.pending = NO_CHANGES
    assert AlertState("fp", labels, annotations, "warning", True, 1, 2, 3).pending == ()


RULES = """
defaults: {group_wait: 5s, group_interval: 10s, resolve_timeout: 20s, reopen_window: 5s, close_after: 10s}
allowed_lateness: 200ms
state_time_resolution: 1s
"""


def _log(ticks: str) -> list[bytes]:
    """Three groups of alerts over a minute; ticks from three raw partitions, one or three per record."""
    log: list[bytes] = []
    router = Router(parse_rules(RULES))
    for second in range(0, 60, 2):
        notes = [
            note(
                {"alertname": f"A{g}", "pod": f"p{i}"}, at(second + i / 10), firing=second < 40 or i % 2 == 0
            )
            for g in range(3)
            for i in range(4)
        ]
        by_group: dict[str, list[wire.AlertNote]] = {}
        for n in notes:
            by_group.setdefault(router.route(n.labels).gkhash, []).append(n)
        for gkhash, group_notes in by_group.items():
            route = router.route(group_notes[0].labels)
            log.append(
                wire.encode_alert_batch(
                    gkhash, route.group_key, route.rule.name, route.group_labels, group_notes
                )
            )
        marks = {f"raw/{p}": at(second + 1) for p in range(3)}
        if ticks == "one":
            log.extend(wire.encode_tick(src, wm, 3) for src, wm in marks.items())
        else:
            log.append(wire.encode_ticks(marks, 3))
    return log


def _events(log: list[bytes]) -> list[bytes]:
    engine = PartitionEngine(parse_rules(RULES), 0)
    events: list[bytes] = []
    for offset, value in enumerate(log):
        engine.process(value, offset)
        events += [e.to_bytes() for e in engine.take_output().events]
    return events


def test_one_record_of_ticks_advances_time_like_a_tick_per_partition() -> None:
    single, multi = _events(_log("one")), _events(_log("many"))
    assert len(single) > 5
    assert multi == single


def test_equal_keys_are_applied_in_log_order() -> None:
    """Two notifications equal in time, identity and content, differing in endsAt: the later one in
    the log is applied last, however they were buffered."""
    rules = parse_rules(RULES)
    labels = {"alertname": "Dup", "pod": "p"}
    router = Router(rules)
    route = router.route(labels)
    for first, second in ((at(90), at(80)), (at(80), at(90))):
        engine = PartitionEngine(rules, 0)
        batch = [note(labels, at(1), ends=first), note(labels, at(1), ends=second)]
        engine.process(
            wire.encode_alert_batch(route.gkhash, route.group_key, "default", route.group_labels, batch), 0
        )
        engine.process(wire.encode_tick("raw/0", at(3), 1), 1)
        alert = engine.groups[route.gkhash].alerts[batch[0].fingerprint]
        assert alert.ends_ms == second


def test_a_restored_engine_writes_its_release_bound() -> None:
    """The restored bound holds the tiebreak as bytes; the next state write must encode it."""
    rules = parse_rules(RULES)
    engine = PartitionEngine(rules, 0)
    log = _log("many")
    for offset, value in enumerate(log[:20]):
        engine.process(value, offset)
    state = {k: v for k, v in engine.take_output().state.items() if v is not None}
    restored = PartitionEngine(rules, 0)
    restored.restore(state)
    restored.process(wire.encode_ticks({f"raw/{p}": at(120) for p in range(3)}, 3), 20)
    meta = orjson.loads(restored.take_output().state["p"])
    assert meta["bound"] == orjson.loads(state["p"])["bound"]


def _loop() -> TransactionalLoop:
    """A loop without Kafka clients, for its batch sizing arithmetic only."""
    loop = TransactionalLoop.__new__(TransactionalLoop)
    loop.max_batch = 5_000
    loop.max_batch_bytes = 8 * 1024 * 1024
    loop._record_bytes = 0.0
    return loop


def test_batches_follow_the_record_size() -> None:
    loop = _loop()
    assert loop._batch_size() == 100  # nothing known yet: a modest first batch
    loop._learn_size(100, 100 * 150_000)  # Prometheus pushes of 256 alerts
    assert loop._batch_size() == 55
    loop._learn_size(100, 100 * 600)  # then single alerts: the mean moves halfway each batch
    assert loop._batch_size() == 111
    for _ in range(20):
        loop._learn_size(1_000, 1_000 * 600)
    assert loop._batch_size() == 5_000  # capped by max_batch
    loop.max_batch_bytes = None
    assert loop._batch_size() == 5_000


@pytest.mark.parametrize("times", [1, 2])
def test_release_free_memory_is_harmless(times: int) -> None:
    for _ in range(times):
        release_free_memory()


def test_timer_heap_of_flapping_alerts_stays_small_and_is_compacted_rarely() -> None:
    """Every flip of a flapping alert pushes a settle timer; only the latest is live. Compaction
    keeps exactly the live entries and then waits for the heap to double (it once ran on every
    push here, 75% of the flapping workload's CPU)."""
    group = GroupState(gkhash="g", group_key="k", rule="default", group_labels={})
    alerts = [AlertState(f"fp{i}", {"i": str(i)}, {}, "warning", True, 0, 0, None) for i in range(10)]
    for alert in alerts:
        alert.flapping = True
        group.alerts[alert.fingerprint] = alert
    pushes = scanned = 0
    for flip in range(1, 2001):
        for alert in alerts:
            alert.flips = [flip]
            size = len(group.heap) + 1
            group.push_timer(alert.settle_ms(500), SETTLE, alert.fingerprint, 300_000, 500)
            pushes += 1
            if len(group.heap) < size:  # compacted: every entry was looked at
                scanned += size
    assert len(group.heap) <= 64
    live = [e for e in group.heap if group.timer_live(e, 300_000, 500)]
    assert sorted(live) == sorted((a.settle_ms(500), SETTLE, a.fingerprint) for a in alerts)
    assert scanned <= 2 * pushes  # amortized O(1) per push


@pytest.mark.parametrize("ms", [0, 1, 999, T0, T0 + 1_234, 253_402_300_799_000])
def test_memoized_instants_and_severities_are_the_plain_ones(ms: int) -> None:
    memo = BoundedMemo(utc_from_ms)
    assert memo(ms) == utc_from_ms(ms) and memo(ms) is memo(ms)
    for severity in Severity:
        assert severity_of(severity.value) is Severity(severity.value)
    with pytest.raises(ValueError):
        severity_of("catastrophic")  # as Severity("catastrophic")


def test_the_instant_memo_stays_bounded() -> None:
    memo = BoundedMemo(utc_from_ms, size=4096)
    for ms in range(4096 * 3):
        assert memo(ms) == utc_from_ms(ms)
    assert len(memo) <= 4096
