"""The read model's packed per-group records (stormwatch.readmodel.packed): the same answers as a
dict of bytes, whatever the sequence of writes and deletes, in a buffer at most about twice the
live records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.readmodel.packed import MAX_RECORD_BYTES, PackedRecords

KEYS = st.sampled_from([f"fp{i}" for i in range(12)])
RECORDS = st.binary(min_size=0, max_size=80)
OPS = st.lists(st.tuples(KEYS, st.none() | RECORDS), max_size=200)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_behaves_as_a_dict_of_bytes(ops: list[tuple[str, bytes | None]]) -> None:
    packed = PackedRecords()
    expected: dict[str, bytes] = {}
    for key, record in ops:
        if record is None:
            packed.pop(key)
            expected.pop(key, None)
        else:
            packed.put(key, record)
            expected[key] = record
        assert len(packed) == len(expected)
        live = sum(len(r) for r in expected.values())
        assert packed.buffer_bytes - packed.garbage_bytes == live  # garbage counted exactly
        assert packed.garbage_bytes * 2 <= packed.buffer_bytes  # compacted before it passes half
    assert list(packed.records()) == list(expected.values())  # first-come order, as a dict keeps
    for needles in ([b"a"], [b"a", b"b"], [b"\x00\x01"]):
        wanted = [r for r in expected.values() if all(n in r for n in needles)]
        assert list(packed.records(needles)) == wanted  # searched in place, same answer
    for key in expected:
        assert key in packed and packed.get(key) == expected[key]
    assert packed.get("absent") is None and "absent" not in packed


def test_same_size_rewrites_stay_in_place() -> None:
    packed = PackedRecords()
    packed.put("a", b"x" * 100)
    packed.put("b", b"y" * 100)
    for i in range(1000):
        packed.put("a", bytes([i % 256]) * 100)
    assert packed.buffer_bytes == 200 and packed.garbage_bytes == 0
    assert packed.get("a") == bytes([999 % 256]) * 100 and packed.get("b") == b"y" * 100


def test_the_last_delete_hands_the_buffer_back() -> None:
    packed = PackedRecords()
    for i in range(500):
        packed.put(f"fp{i}", b"r" * 300)
    assert packed.buffer_bytes == 150_000
    for i in range(500):
        packed.pop(f"fp{i}")
    assert len(packed) == 0 and packed.buffer_bytes == 0 and packed.garbage_bytes == 0
    packed.pop("fp0")  # a delete of a key it does not hold: nothing
    assert len(packed) == 0


def test_growing_records_keep_the_buffer_bounded() -> None:
    packed = PackedRecords()
    for i in range(200):
        packed.put(f"fp{i}", b"a" * 50)
    for n in range(51, 400):  # every record rewritten longer, again and again
        for i in range(200):
            packed.put(f"fp{i}", b"b" * n)
        assert packed.buffer_bytes <= 2 * 200 * n + n
    assert all(r == b"b" * 399 for r in packed.records())


def test_a_record_too_large_is_refused() -> None:
    packed = PackedRecords()
    with pytest.raises(ValueError, match="larger than"):
        packed.put("a", bytes(MAX_RECORD_BYTES + 1))
    assert len(packed) == 0
