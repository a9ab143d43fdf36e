"""Reading topic configs right after a topic was created: a broker behind on metadata is asked again.

The admin client is replaced by a stand-in that answers as a broker does while KRaft has not yet
spread a new topic to it (UNKNOWN_TOPIC_OR_PART for that topic); the real broker is in the
integration tests (`stormwatch topics create` on the 3-node cluster).
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from stormwatch.errors import UserError
from stormwatch.kafka.topics import _live_configs
from tests.kit.topics import make_settings

_BOTH = lambda: {"fast", "slow"}  # noqa: E731  # the metadata lists both topics


class _Entry:
    def __init__(self, value: str) -> None:
        self.value = value


class _Admin:
    """Answers ``behind`` times with ``error`` for topic ``slow``, then its configs."""

    def __init__(self, behind: int, error: int = KafkaError.UNKNOWN_TOPIC_OR_PART) -> None:
        self.behind = behind
        self.error = error
        self.calls: list[list[str]] = []

    def describe_configs(self, resources: list[Any], request_timeout: float) -> dict[Any, Future[Any]]:
        self.calls.append([r.name for r in resources])
        out: dict[Any, Future[Any]] = {}
        for resource in resources:
            future: Future[Any] = Future()
            if resource.name == "slow" and self.behind > 0:
                self.behind -= 1
                future.set_exception(KafkaException(KafkaError(self.error)))
            else:
                future.set_result({"cleanup.policy": _Entry("delete")})
            out[resource] = future
        return out


def test_a_topic_the_broker_does_not_know_yet_is_asked_for_again() -> None:
    admin = _Admin(behind=2)
    configs = _live_configs(admin, ["fast", "slow"], make_settings("127.0.0.1:1"), 5.0, _BOTH)  # type: ignore[arg-type]
    assert configs == {"fast": {"cleanup.policy": "delete"}, "slow": {"cleanup.policy": "delete"}}
    assert admin.calls == [["fast", "slow"], ["slow"], ["slow"]]  # only the one behind, again


def test_another_error_or_a_topic_that_never_appears_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot read topic configs"):
        _live_configs(
            _Admin(1, KafkaError.TOPIC_AUTHORIZATION_FAILED),
            ["slow"],
            make_settings("127.0.0.1:1"),
            5.0,
            _BOTH,
        )  # type: ignore[arg-type]
    with pytest.raises(UserError, match="Unknown topic"):
        _live_configs(_Admin(10**6), ["slow"], make_settings("127.0.0.1:1"), 0.5, _BOTH)  # type: ignore[arg-type]


def test_a_topic_deleted_after_the_listing_is_left_out_not_an_error() -> None:
    """CI of 00c21e2: `topics check` right after a topic was deleted. The metadata still listed it,
    the configs request answered UNKNOWN_TOPIC_OR_PART for 10 s, and the check failed instead of
    reporting the topic missing."""
    admin = _Admin(10**6)
    configs = _live_configs(admin, ["fast", "slow"], make_settings("127.0.0.1:1"), 5.0, lambda: {"fast"})  # type: ignore[arg-type]
    assert configs == {"fast": {"cleanup.policy": "delete"}}
    assert admin.calls == [["fast", "slow"]]  # not asked again: the listing no longer has it
