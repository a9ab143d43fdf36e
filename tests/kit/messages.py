"""Consumed records without a broker: drive a stage's ``handle(messages, eof)`` directly.

``FakeMessage`` has the few accessors of ``confluent_kafka.Message`` the stages read (as
tools/audit_digest.py replays storms), so routing and dead-lettering are unit-testable.
"""

from __future__ import annotations

from collections.abc import Iterable

from stormwatch.kafka.txloop import Output
from stormwatch.streams.core import wire


class FakeMessage:
    """One consumed record: where it was read (topic, partition, offset), when, and what it holds."""

    def __init__(
        self,
        topic: str,
        value: bytes | None,
        *,
        partition: int = 0,
        offset: int = 0,
        timestamp_ms: int = 0,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._topic = topic
        self._value = value
        self._partition = partition
        self._offset = offset
        self._timestamp_ms = timestamp_ms
        self._key = key
        self._headers = headers

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)  # TIMESTAMP_CREATE_TIME

    def value(self) -> bytes | None:
        return self._value

    def __len__(self) -> int:  # as confluent_kafka.Message: the value's size
        return len(self._value or b"")

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None


def ticked_watermarks(outputs: Iterable[Output]) -> list[int]:
    """Every raw-partition watermark the tick records among a stage's ``outputs`` carry, in order."""
    marks: list[int] = []
    for out in outputs:
        assert out.value is not None
        record = wire.decode(out.value)
        if record["t"] == wire.TICKS:
            marks += record["wm"].values()
    return marks
