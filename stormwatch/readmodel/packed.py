"""One correlation group's alert records, packed into one buffer (issue #17).

The read model mirrors every active alert of the correlator's state changelog. Kept as one decoded
``AlertState`` per alert (three small objects, about 490 bytes), the alerts of a burst spread over
CPython's 1 MiB small-object arenas: after a broker outage the correlators' catch-up brings the old
episodes' resolved alerts and the new episodes' firing ones together for a few seconds (85,500 ->
118,000 alerts in the chaos run), and the long-lived objects made meanwhile keep those arenas, so
the gateway stayed at each burst's high-water mark (docs/reliability.md, "Run 12"). Here an alert
costs its fingerprint (the dict key) and one int among the small objects; its record lives in its
group's buffer, one block of the C heap, which is handed back when the group goes (the gateway
trims the heap every few seconds). A query decodes the records it reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

__all__ = ["MAX_RECORD_BYTES", "PackedRecords"]

_LENGTH_BITS = 24
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
MAX_RECORD_BYTES = _LENGTH_MASK
"""A record's size is kept in the low 24 bits of its span (16 MiB; a state record is a few hundred
bytes, and Kafka's default message limit is 1 MiB)."""


class PackedRecords:
    """Records by key, their bytes back to back in one ``bytearray``.

    A key maps to one int, ``start << 24 | size``. A record rewritten at the same size or smaller
    stays where it is; a longer one goes to the end, and the bytes it left are counted as garbage.
    When garbage exceeds the live bytes the buffer is rebuilt, so the buffer is at most about
    twice the records it holds and every byte written is copied at most once more on average.
    Not thread-safe, and not to be changed while ``records()`` is being iterated (the read model's
    lock keeps both from happening).
    """

    __slots__ = ("_buffer", "_garbage", "_spans")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._spans: dict[str, int] = {}
        self._garbage = 0

    def __len__(self) -> int:
        return len(self._spans)

    def __contains__(self, key: object) -> bool:
        return key in self._spans

    def put(self, key: str, record: bytes) -> None:
        size = len(record)
        if size > MAX_RECORD_BYTES:
            raise ValueError(f"a record of {size} bytes is larger than {MAX_RECORD_BYTES}")
        span = self._spans.get(key)
        if span is not None:
            start, old = span >> _LENGTH_BITS, span & _LENGTH_MASK
            if size <= old:
                self._buffer[start : start + size] = record
                self._garbage += old - size
                if size != old:
                    self._spans[key] = (start << _LENGTH_BITS) | size
                    self._maybe_compact()
                return
            self._garbage += old
        self._spans[key] = (len(self._buffer) << _LENGTH_BITS) | size
        self._buffer += record
        self._maybe_compact()

    def pop(self, key: str) -> None:
        """Forget ``key``'s record (nothing when it has none)."""
        span = self._spans.pop(key, None)
        if span is None:
            return
        if not self._spans:
            self._buffer = bytearray()  # the whole block back to the C heap
            self._garbage = 0
            return
        self._garbage += span & _LENGTH_MASK
        self._maybe_compact()

    def get(self, key: str) -> bytes | None:
        span = self._spans.get(key)
        if span is None:
            return None
        start = span >> _LENGTH_BITS
        return bytes(self._buffer[start : start + (span & _LENGTH_MASK)])

    def records(self, containing: Sequence[bytes] = ()) -> Iterator[bytes]:
        """Each record that contains every one of ``containing`` (searched where it lies, so the
        records left out are never copied), as a bytes copy, in the order the keys first came."""
        buffer = self._buffer
        with memoryview(buffer) as view:
            for span in self._spans.values():
                start = span >> _LENGTH_BITS
                end = start + (span & _LENGTH_MASK)
                if containing and not _contains_all(buffer, containing, start, end):
                    continue
                yield view[start:end].tobytes()

    @property
    def garbage_bytes(self) -> int:
        return self._garbage

    @property
    def buffer_bytes(self) -> int:
        return len(self._buffer)

    def _maybe_compact(self) -> None:
        if self._garbage * 2 > len(self._buffer):  # more garbage than live bytes
            self._compact()

    def _compact(self) -> None:
        buffer = bytearray()
        spans = self._spans
        with memoryview(self._buffer) as old:
            for key, span in spans.items():  # values change in place; the keys stay
                start, size = span >> _LENGTH_BITS, span & _LENGTH_MASK
                spans[key] = (len(buffer) << _LENGTH_BITS) | size
                buffer += old[start : start + size]
        self._buffer = buffer
        self._garbage = 0


def _contains_all(buffer: bytearray, needles: Sequence[bytes], start: int, end: int) -> bool:
    for needle in needles:  # noqa: SIM110 (no generator: once per record)
        if buffer.find(needle, start, end) < 0:
            return False
    return True
