"""Consumed records without a broker: drive a stage's ``handle(messages, eof)`` directly.

``FakeMessage`` has the few accessors of ``confluent_kafka.Message`` the stages read (as
tools/audit_digest.py replays storms), so routing and dead-lettering are unit-testable.
"""

from __future__ import annotations


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

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> None:
        return None
