"""Event time: watermarks, and the reorder buffer that releases alerts in one order whatever came first."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.streams.core import wire
from stormwatch.streams.core.reorder import Notification, ReorderBuffer, Watermarks, WireRoute
from tests.kit.engine import at, note

ROUTE: WireRoute = ("0123456789abcdef", "{}", "default", {})


def notes(*specs: tuple[str, float]) -> list[Notification]:
    return [(note({"alertname": name}, at(seconds)), ROUTE, None) for name, seconds in specs]


def test_time_waits_until_every_raw_partition_has_a_watermark() -> None:
    marks = Watermarks()
    assert marks.update({"raw/0": at(10)}, sources=2)
    assert marks.low() is None
    assert marks.update({"raw/1": at(5)}, sources=2)
    assert marks.low() == at(5)


def test_only_a_watermark_moving_forward_counts() -> None:
    marks = Watermarks()
    marks.update({"raw/0": at(10)}, sources=1)
    assert not marks.update({"raw/0": at(10)}, sources=3)
    assert marks.expected_sources == 1  # nothing moved: the record changed nothing
    assert not marks.update({"raw/0": at(9)}, sources=1)
    assert marks.low() == at(10)


def test_alerts_wait_until_time_passes_them_and_come_out_in_key_order() -> None:
    buffer = ReorderBuffer()
    assert buffer.admit(notes(("B", 2), ("A", 2), ("C", 1)), offset=0) == []
    assert buffer.admit(notes(("D", 9)), offset=1) == []
    assert len(buffer) == 4
    released = buffer.due(at(5))
    assert released[0].note.labels["alertname"] == "C"  # then A and B, by fingerprint
    assert [item.note.event_ms for item in released] == [at(1), at(2), at(2)]
    assert [item.key for item in released] == sorted(item.key for item in released)
    assert len(buffer) == 1 and buffer.oldest_offset(default=7) == 1


def test_equal_keys_keep_their_log_order() -> None:
    buffer = ReorderBuffer()
    first = note({"alertname": "Dup"}, at(1), ends=at(90))
    second = note({"alertname": "Dup"}, at(1), ends=at(90))
    buffer.admit([(first, ROUTE, None)], offset=0)
    buffer.admit([(second, ROUTE, None)], offset=1)
    assert [item.offset for item in buffer.due(at(5))] == [0, 1]


def test_an_alert_behind_the_clock_or_the_last_released_one_is_late() -> None:
    buffer = ReorderBuffer()
    buffer.admit(notes(("M", 5)), offset=0)
    (item,) = buffer.due(at(5))
    buffer.released(item)
    assert buffer.clock == at(5)
    late = buffer.admit(notes(("A", 5), ("Z", 5), ("X", 4), ("Y", 6)), offset=1)
    # "A" sorts before the released "M" at the same time; "X" is behind the clock
    assert [i.note.labels["alertname"] for i in late] == ["A", "X"]
    assert len(buffer) == 2


def test_the_clock_never_goes_back() -> None:
    buffer = ReorderBuffer()
    buffer.set_clock(at(10))
    buffer.set_clock(at(5))
    assert buffer.clock == at(10)


def test_the_commit_point_is_the_oldest_record_with_an_alert_waiting() -> None:
    buffer = ReorderBuffer()
    assert buffer.oldest_offset(default=3) == 3
    buffer.admit(notes(("A", 9)), offset=4)
    buffer.admit(notes(("B", 1)), offset=5)
    buffer.admit(notes(("C", 9)), offset=6)
    assert buffer.oldest_offset(default=7) == 4
    buffer.due(at(9))
    assert buffer.oldest_offset(default=7) == 7


@given(st.permutations([("A", 1.0), ("B", 1.0), ("C", 0.5), ("D", 2.0), ("E", 0.5)]))
def test_any_arrival_order_releases_the_same_sequence(specs: list[tuple[str, float]]) -> None:
    buffer = ReorderBuffer()
    for offset, spec in enumerate(specs):
        buffer.admit(notes(spec), offset)
    released = [item.note.labels["alertname"] for item in buffer.due(at(3))]
    reference = ReorderBuffer()
    reference.admit(notes(*sorted(specs)), 0)
    assert released == [item.note.labels["alertname"] for item in reference.due(at(3))]


def _packable(specs: list[tuple[str, float]]) -> tuple[list[Notification], tuple[bytes, Any]]:
    """Notifications of one record, with the record's bytes and their decoder."""
    items = notes(*specs)
    value = orjson.dumps([n.to_wire() for n, _, _ in items])

    def unpack(raw: bytes) -> list[Notification]:
        return [(wire.AlertNote.from_wire(row), ROUTE, None) for row in orjson.loads(raw)]

    return items, (value, unpack)


def test_a_large_buffer_keeps_records_packed_and_releases_them_as_decoded_ones() -> None:
    records = [
        [("B", 2), ("A", 2), ("C", 1)],
        [("D", 9), ("A", 1)],
        [("E", 2), ("B", 1), ("F", 12)],
    ]
    plain, packed = ReorderBuffer(), ReorderBuffer(pack_after=2)
    for offset, specs in enumerate(records, start=10):
        items, record = _packable(specs)
        assert plain.admit(items, offset) == []
        assert packed.admit(items, offset, record) == []
    assert len(packed) == len(plain) == 8
    assert packed.packed == 5  # the first record came in while the buffer was small
    assert packed.oldest_offset(default=99) == 10
    for target in (at(1), at(2), at(9), at(20)):
        released, expected = packed.due(target), plain.due(target)
        assert [(i.key[:4], i.offset, i.note, i.route) for i in released] == [
            (i.key[:4], i.offset, i.note, i.route) for i in expected
        ]
    assert len(packed) == 0 and packed.packed == 0


def test_late_alerts_of_a_packed_record_come_back_decoded_at_once() -> None:
    buffer = ReorderBuffer(pack_after=0)
    buffer.set_clock(at(5))
    items, record = _packable([("A", 4), ("B", 6)])
    late = buffer.admit(items, 3, record)
    assert [i.note.labels["alertname"] for i in late] == ["A"]
    assert len(buffer) == 1 and buffer.packed == 1
    (item,) = buffer.due(at(6))
    assert item.note.labels["alertname"] == "B" and item.offset == 3
