"""How the transactional loop treats Kafka failures, without a broker: a worker waits out a
broker outage in its restore and rewind steps (it used to exit on errors librdkafka does not
flag retriable), and still stops on fatal errors or when asked to."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from stormwatch.config import Settings
from stormwatch.errors import KafkaUnavailable, UserError
from stormwatch.kafka_io import is_transient
from streams import txloop
from streams.txloop import BatchResult, TransactionalLoop


class _IdleStage:
    def on_assign(self, consumer: object, partitions: object) -> None: ...
    def on_revoke(self, partitions: object) -> None: ...
    def handle(self, messages: object, eof: object) -> BatchResult:
        return BatchResult()

    def idle_work_due(self) -> bool:
        return False


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> TransactionalLoop:
    monkeypatch.setattr(txloop.time, "sleep", lambda _s: None)
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": "127.0.0.1:1"}})
    return TransactionalLoop(
        settings,
        stage=_IdleStage(),
        group_id="g",
        topics=["t"],
        transactional_id="tx",
        max_batch=10,
        lag_interval_s=0,
    )


def _failing(times: int, exc: Exception) -> tuple[Callable[[], None], list[int]]:
    calls = [0]

    def call() -> None:
        calls[0] += 1
        if calls[0] <= times:
            raise exc

    return call, calls


def _kafka(code: int, *, fatal: bool = False) -> KafkaException:
    return KafkaException(KafkaError(code, "test", fatal=fatal))


@pytest.mark.parametrize(
    "exc",
    [
        _kafka(KafkaError._DESTROY_BROKER),
        _kafka(KafkaError.NOT_COORDINATOR),
        _kafka(KafkaError.COORDINATOR_NOT_AVAILABLE),
        _kafka(KafkaError._TRANSPORT),
        KafkaUnavailable("reading the changelog made no progress for 30s"),
    ],
    ids=["destroy-broker", "not-coordinator", "coordinator-unavailable", "transport", "restore-timeout"],
)
def test_restore_and_rewind_wait_out_transient_failures(loop: TransactionalLoop, exc: Exception) -> None:
    call, calls = _failing(3, exc)
    loop._waiting_out_outages("rewind", call)
    assert calls[0] == 4


@pytest.mark.parametrize(
    "exc",
    [
        _kafka(KafkaError._FENCED, fatal=True),
        _kafka(KafkaError.TOPIC_AUTHORIZATION_FAILED),
        UserError("topic t does not exist"),
    ],
    ids=["fatal", "not-authorized", "user-error"],
)
def test_permanent_failures_are_not_retried(loop: TransactionalLoop, exc: Exception) -> None:
    call, calls = _failing(1, exc)
    with pytest.raises(type(exc)):
        loop._waiting_out_outages("rewind", call)
    assert calls[0] == 1


def test_a_stopped_loop_gives_up_instead_of_waiting(loop: TransactionalLoop) -> None:
    loop.stop()
    call, calls = _failing(5, _kafka(KafkaError._TRANSPORT))
    with pytest.raises(txloop._StoppedWhileWaiting):
        loop._waiting_out_outages("rewind", call)
    assert calls[0] == 1


class _UnreachableProducer:
    """Stands in for a producer whose transaction coordinator never answers."""

    def init_transactions(self, timeout: float) -> None:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "no coordinator", retriable=True))

    def flush(self, timeout: float) -> int:
        return 0


def test_a_stop_during_an_outage_ends_the_run_cleanly(loop: TransactionalLoop) -> None:
    """SIGTERM while the loop waits for Kafka: run() returns (no traceback, exit code 0)."""
    loop.producer = _UnreachableProducer()  # type: ignore[assignment]
    loop.stop()
    loop.run()


def test_transactional_calls_retry_only_what_kafka_flags_retriable(loop: TransactionalLoop) -> None:
    # An abortable error must reach the caller, which aborts and rewinds; retrying would loop.
    call, calls = _failing(1, _kafka(KafkaError.NOT_COORDINATOR))
    with pytest.raises(KafkaException):
        loop._retrying("commit", call)
    retriable = KafkaException(KafkaError(KafkaError._TIMED_OUT, "t", retriable=True))
    call, calls = _failing(2, retriable)
    loop._retrying("commit", call)
    assert calls[0] == 3


def test_is_transient() -> None:
    assert is_transient(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert is_transient(KafkaError(KafkaError.UNKNOWN, retriable=True))
    # a new leader answering a watermark query before its followers caught up (cluster fault test)
    assert is_transient(KafkaError(KafkaError.OFFSET_NOT_AVAILABLE))
    assert not is_transient(KafkaError(KafkaError._TRANSPORT, fatal=True))
    assert not is_transient(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    assert not is_transient("not a KafkaError")


def test_a_transactional_call_stuck_past_its_limit_is_given_up(loop: TransactionalLoop) -> None:
    """send_offsets / commit that keep timing out are re-raised, so the loop replaces the producer."""
    timeout = KafkaException(KafkaError(KafkaError._TIMED_OUT, "t", retriable=True))
    call, calls = _failing(100, timeout)
    with pytest.raises(KafkaException):
        loop._retrying("send offsets", call, give_up_after_s=0)
    assert calls[0] == 1
    call, calls = _failing(3, timeout)
    loop._retrying("send offsets", call, give_up_after_s=60)  # within the limit: retried
    assert calls[0] == 4
