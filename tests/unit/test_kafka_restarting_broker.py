"""Reading offsets and metadata while a broker restarts: waited out, never a fatal UserError.

After the chaos run's broker crash four workers exited while restoring their state: the restarted
broker listed the state topic's partitions, and the watermark query for one of them a moment later
failed with librdkafka's "Local: Unknown partition" (its cache lagged the broker). The consumer is a
stand-in raising the errors librdkafka raised there; the chaos run is the real test.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stormwatch.config import load_settings
from stormwatch.errors import KafkaUnavailable, UserError
from stormwatch.kafka.client import ErrorTracker, _topic_partitions, _watermarks


class _Watermarks:
    def __init__(self, failures: list[int]) -> None:
        self.failures = failures  # error codes raised before the answer, in order

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0)))
        return 3, 42


def test_an_unknown_partition_right_after_the_metadata_is_asked_again() -> None:
    consumer = _Watermarks([KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_PARTITION])
    assert _watermarks(consumer, "state", 0, timeout_s=5) == (3, 42)  # type: ignore[arg-type]


def test_a_partition_unknown_for_the_whole_timeout_is_kafka_unavailable() -> None:
    consumer = _Watermarks([KafkaError._UNKNOWN_PARTITION] * 1000)
    with pytest.raises(KafkaUnavailable, match=r"state partition 0 within 0\.3s"):
        _watermarks(consumer, "state", 0, timeout_s=0.3)  # type: ignore[arg-type]


def test_a_refusal_is_a_user_error_at_once() -> None:
    consumer = _Watermarks([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(UserError, match="cannot read the offsets of state partition 0") as raised:
        _watermarks(consumer, "state", 0, timeout_s=5)  # type: ignore[arg-type]
    assert type(raised.value) is UserError


class _Metadata:
    def __init__(self, error: int | None) -> None:
        self.error = None if error is None else KafkaError(error)

    def list_topics(self, topic: str, timeout: float) -> Any:
        found = SimpleNamespace(error=self.error, partitions={0: None, 1: None})
        return SimpleNamespace(topics={topic: found})

    def poll(self, timeout: float) -> None:
        return None


def _partitions(error: int | None) -> list[int]:
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"})
    return _topic_partitions(_Metadata(error), ErrorTracker(), settings, "state", 1.0)  # type: ignore[arg-type]


def test_a_topic_without_a_leader_yet_is_kafka_unavailable() -> None:
    assert _partitions(None) == [0, 1]
    with pytest.raises(KafkaUnavailable, match="metadata of topic state is not available yet"):
        _partitions(KafkaError.LEADER_NOT_AVAILABLE)


def test_a_missing_topic_stays_a_user_error_with_the_fix() -> None:
    with pytest.raises(UserError, match="stormwatch topics create") as raised:
        _partitions(KafkaError.UNKNOWN_TOPIC_OR_PART)
    assert type(raised.value) is UserError
