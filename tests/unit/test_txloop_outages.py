"""How the transactional loop treats Kafka failures, without a broker: a worker waits out a
broker outage in its restore and rewind steps (it used to exit on errors librdkafka does not
flag retriable), and still stops on fatal errors or when asked to. Also how one transaction's
input reaches a stage that takes it in parts (``handle_bytes``)."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from stormwatch.config import Settings
from stormwatch.errors import KafkaUnavailable, UserError
from stormwatch.kafka import txloop
from stormwatch.kafka.client import is_transient
from stormwatch.kafka.txloop import BatchResult, TransactionalLoop


class _IdleStage:
    def on_assign(self, consumer: object, partitions: object) -> None: ...
    def on_revoke(self, partitions: object) -> None: ...
    def handle(self, messages: object, eof: object) -> BatchResult:
        return BatchResult()

    def idle_work_due(self) -> bool:
        return False


@pytest.fixture
def loop(monkeypatch: pytest.MonkeyPatch) -> TransactionalLoop:
    monkeypatch.setattr(txloop, "_retry_pause", lambda _attempt: 0.0)
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
        loop._retrying("commit", call, call_timeout_s=30)
    retriable = KafkaException(KafkaError(KafkaError._TIMED_OUT, "t", retriable=True))
    call, calls = _failing(2, retriable)
    loop._retrying("commit", call, call_timeout_s=30)
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
        loop._retrying("send offsets", call, call_timeout_s=10, give_up_after_s=0)
    assert calls[0] == 1
    call, calls = _failing(3, timeout)
    loop._retrying("send offsets", call, call_timeout_s=10, give_up_after_s=60)  # within the limit: retried
    assert calls[0] == 4


class _TxnProducer:
    """A transactional producer double that records its calls; ``hang_on`` never returns."""

    def __init__(self, hang_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.hang_on = hang_on
        self.released = threading.Event()

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.hang_on:
            self.released.wait()  # like librdkafka waiting on a request that never completes

    def init_transactions(self, timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, *args: object, **kwargs: object) -> None:
        self._call("produce")

    def send_offsets_to_transaction(self, offsets: object, metadata: object, timeout: float) -> None:
        self._call("send_offsets")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit")

    def flush(self, timeout: float) -> int:
        return 0

    def poll(self, timeout: float) -> int:
        return 0


class _AbortingProducer(_TxnProducer):
    """A producer whose transaction is in an abortable error: ``abort_raises`` makes the abort fail too."""

    def __init__(self, abort_raises: KafkaException | None = None, times: int = 1_000_000) -> None:
        super().__init__()
        self.abort_raises = abort_raises
        self.failures_left = times

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort")
        if self.abort_raises is not None and self.failures_left > 0:
            self.failures_left -= 1
            raise self.abort_raises


@pytest.mark.parametrize("abort_fails", [False, True], ids=["abort", "abort-fails"])
def test_a_produce_refused_for_an_erroneous_transaction_state_aborts_and_rewinds(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, abort_fails: bool
) -> None:
    """produce() raising _STATE ("Erroneous state": the transaction already failed) ends in an abort
    and a rewind, or a new producer when the abort fails too, never in the worker's exit."""
    old = _AbortingProducer(_kafka(KafkaError._STATE) if abort_fails else None)
    fresh = _TxnProducer()
    monkeypatch.setattr(txloop, "Producer", lambda conf: fresh)
    rewinds: list[int] = []
    monkeypatch.setattr(loop, "_rewind", lambda: rewinds.append(1))
    loop.producer = old  # type: ignore[assignment]
    loop._recover(_kafka(KafkaError._STATE))
    assert old.calls == ["abort"] and rewinds == [1]
    assert loop.producer is (fresh if abort_fails else old)


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True),
        KafkaError(KafkaError._FATAL, "Unable to produce message: Local: Fatal error"),  # no flag
    ],
    ids=["flagged-fatal", "produce-fatal-code"],
)
def test_a_fatal_producer_error_gets_a_new_producer_and_a_rewind(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, error: KafkaError
) -> None:
    """Hour run 14: produce() on a producer the coordinator had fenced (a catch-up transaction
    rolled back for timeout) raised code _FATAL without the fatal flag, and the correlators exited
    on it, four times in a row for c2. Either way the loop starts over with a new producer."""
    old, fresh = _TxnProducer(), _TxnProducer()
    monkeypatch.setattr(txloop, "Producer", lambda conf: fresh)
    rewinds: list[int] = []
    monkeypatch.setattr(loop, "_rewind", lambda: rewinds.append(1))
    loop.producer = old  # type: ignore[assignment]
    loop._recover(KafkaException(error))
    assert loop.producer is fresh and fresh.calls == ["init"] and rewinds == [1]


class _OrderConsumer:
    """Records what the loop asks of its consumer on an assignment."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def committed(self, partitions: list[object], timeout: float) -> list[object]:
        self.calls.append("committed")
        return partitions

    def incremental_assign(self, partitions: object) -> None:
        self.calls.append("assign")

    def incremental_unassign(self, partitions: object) -> None:
        self.calls.append("unassign")


class _RecordingStage(_IdleStage):
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def on_assign(self, consumer: object, partitions: object) -> None:
        self.calls.append("restore")


def test_an_abort_that_keeps_timing_out_gets_a_new_producer(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a broker crash, ingest's abort timed out every 30 s for minutes with the brokers back
    (retried "until Kafka answers"), and it read nothing meanwhile. Past STUCK_AFTER_S the loop
    gives the abort up: a new producer fences the old one and aborts its transaction."""
    monkeypatch.setattr(txloop, "STUCK_AFTER_S", 0.0)
    timed_out = KafkaException(KafkaError(KafkaError._TIMED_OUT, "t", retriable=True))
    old, fresh = _AbortingProducer(timed_out, times=3), _TxnProducer()  # retried forever, it would pass
    monkeypatch.setattr(txloop, "Producer", lambda conf: fresh)
    rewinds: list[int] = []
    monkeypatch.setattr(loop, "_rewind", lambda: rewinds.append(1))
    loop.producer = old  # type: ignore[assignment]
    loop._recover(
        KafkaException(KafkaError(KafkaError._INCONSISTENT, "6 messages failed", txn_requires_abort=True))
    )
    assert old.calls == ["abort"]
    assert loop.producer is fresh and fresh.calls == ["init"]
    assert rewinds == [1]


def test_stable_offsets_are_fetched_before_the_state_is_restored(loop: TransactionalLoop) -> None:
    """A restore that ran first could stop at a previous owner's open transaction that still
    commits: the state would lack its writes while the offsets skip its input (hour-long run 1)."""
    calls: list[str] = []
    loop.stage = _RecordingStage(calls)
    loop._assign(_OrderConsumer(calls), [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert calls == ["committed", "restore", "assign"]


def test_partitions_assigned_while_stopping_are_neither_waited_for_nor_restored(
    loop: TransactionalLoop,
) -> None:
    """A SIGTERM during a scale-out: the consumer's close serves the pending assignment, whose
    committed-offset read timed out and ended the process with status 1."""
    calls: list[str] = []
    loop.stage = _RecordingStage(calls)
    loop.stop()
    loop._assign(_OrderConsumer(calls), [TopicPartition("t", 0)])  # type: ignore[arg-type]
    assert calls == ["assign"]
    loop._revoke(_OrderConsumer(calls), [TopicPartition("t", 0)])  # type: ignore[arg-type]


class _OffsetsStage(_IdleStage):
    def handle(self, messages: object, eof: object) -> BatchResult:
        return BatchResult(offsets={("t", 0): 5})


def test_a_hung_transactional_call_gets_a_new_producer_and_a_rewind(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """send_offsets_to_transaction that never returns (librdkafka #5456): the loop stops waiting,
    leaves the hung producer to its call, starts a new one and rewinds; the next transaction
    commits. When the hung call returns at last, the old producer is let go."""
    monkeypatch.setattr(txloop, "SEND_OFFSETS_TIMEOUT_S", 0.0)
    monkeypatch.setattr(txloop, "HANG_GRACE_S", 0.2)
    hung, fresh = _TxnProducer(hang_on="send_offsets"), _TxnProducer()
    monkeypatch.setattr(txloop, "Producer", lambda conf: fresh)
    rewinds: list[int] = []
    monkeypatch.setattr(loop, "_rewind", lambda: rewinds.append(1))
    loop.stage = _OffsetsStage()
    loop.producer = hung  # type: ignore[assignment]
    try:
        loop._transact([], set())
        assert hung.calls == ["begin", "send_offsets"]
        assert loop.producer is fresh and fresh.calls == ["init"]
        assert rewinds == [1]
        assert len(loop.hung_producers) == 1
        loop._transact([], set())
        assert fresh.calls == ["init", "begin", "send_offsets", "commit"]
    finally:
        hung.released.set()
    gone = weakref.ref(hung)
    del hung
    _released(gone, loop)


class _OutageProducer(_TxnProducer):
    """A producer double that hands ``pending`` errors to the error callback it was built with
    when polled, as librdkafka serves its error events."""

    def __init__(self, conf: dict[str, object]) -> None:
        super().__init__()
        self.error_cb: Callable[[KafkaError], None] = conf["error_cb"]  # type: ignore[assignment]
        self.pending: list[KafkaError] = []

    def poll(self, timeout: float) -> int:
        for err in self.pending:
            self.error_cb(err)
        self.pending.clear()
        return 0


def test_a_producer_that_lost_every_broker_is_replaced_before_its_next_transaction(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a broker crash each stage's first send_offsets on a producer that lived through it hung
    for 20 s (librdkafka #5456): such a producer is replaced before its next transaction instead."""
    made: list[_OutageProducer] = []
    monkeypatch.setattr(txloop, "Producer", lambda conf: made.append(_OutageProducer(conf)) or made[-1])
    loop.producer = loop._new_producer()
    first = made[0]
    loop.stage = _OffsetsStage()
    loop._transact([], set())
    first.pending.append(KafkaError(KafkaError._TRANSPORT, "disconnected"))  # one connection: kept
    loop._transact([], set())
    assert loop.producer is first and first.calls == ["begin", "send_offsets", "commit"] * 2

    first.pending.append(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    loop._transact([], set())
    second = made[1]
    assert loop.producer is second
    assert first.calls == ["begin", "send_offsets", "commit"] * 2  # nothing more on the old one
    assert second.calls == ["init", "begin", "send_offsets", "commit"]
    assert loop._producer_conf["error_cb"].last.code() == KafkaError._TRANSPORT  # told, as before

    first.pending.append(KafkaError(KafkaError._ALL_BROKERS_DOWN, "late, from the old one"))
    first.poll(0)
    loop._transact([], set())
    assert loop.producer is second and len(made) == 2


def _released(gone: weakref.ref[_TxnProducer], loop: TransactionalLoop) -> None:
    """Once its call returns, the hung producer is counted out and nothing holds it any more
    (kept for good, each one held its librdkafka instance)."""
    deadline = time.monotonic() + 5.0
    while (len(loop.hung_producers) or gone() is not None) and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    assert len(loop.hung_producers) == 0
    assert gone() is None


def test_a_hung_init_transactions_is_tried_again_on_a_new_producer(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(txloop, "COMMIT_TIMEOUT_S", 0.0)
    monkeypatch.setattr(txloop, "HANG_GRACE_S", 0.2)
    hung, fresh = _TxnProducer(hang_on="init"), _TxnProducer()
    monkeypatch.setattr(txloop, "Producer", lambda conf: fresh)
    loop.producer = hung  # type: ignore[assignment]
    try:
        loop._init_producer()
        assert loop.producer is fresh and fresh.calls == ["init"]
        assert len(loop.hung_producers) == 1
    finally:
        hung.released.set()
    gone = weakref.ref(hung)
    del hung
    _released(gone, loop)


# --- a stop request ends every wait promptly (issue #15, item 8) --------------------------------
# Each state below used to hold a stopped worker for a call's whole timeout (30 s) or forever.

STOP_AFTER_S = 0.3
PROMPT_S = txloop.STOP_GRACE_S + 1.0  # the grace a call in flight gets, and some scheduling slack


@pytest.fixture
def stop_soon(loop: TransactionalLoop) -> Iterator[Callable[[], float]]:
    """Calls ``loop.stop()`` from another thread after STOP_AFTER_S; yields "seconds since"."""
    timer = threading.Timer(STOP_AFTER_S, loop.stop)
    started = time.monotonic()
    timer.start()
    yield lambda: time.monotonic() - started - STOP_AFTER_S
    timer.cancel()


def test_a_stop_ends_a_transactional_call_that_does_not_return(
    loop: TransactionalLoop, stop_soon: Callable[[], float]
) -> None:
    """An abort or commit waiting on an absent coordinator (30 s timeout, or a librdkafka hang)."""
    hung = _TxnProducer(hang_on="commit")
    loop.producer = hung  # type: ignore[assignment]
    try:
        with pytest.raises(txloop._StoppedWhileWaiting, match="commit had not returned"):
            loop._retrying("commit", lambda: hung.commit_transaction(30), call_timeout_s=30)
        assert stop_soon() < PROMPT_S
    finally:
        hung.released.set()


def test_a_stop_lets_a_call_in_flight_finish_within_the_grace(loop: TransactionalLoop) -> None:
    """A healthy broker answers at once: a clean stop still commits its last batch."""
    done: list[str] = []

    def commit() -> None:
        time.sleep(0.2)
        done.append("commit")

    loop.stop()
    loop._retrying("commit", commit, call_timeout_s=30)
    assert done == ["commit"]


def test_a_stop_ends_the_pause_between_attempts(
    loop: TransactionalLoop, stop_soon: Callable[[], float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewind or restore retried while the brokers are down (pauses of up to 2 s each)."""
    monkeypatch.setattr(txloop, "_retry_pause", lambda _attempt: 60.0)
    call, calls = _failing(1000, _kafka(KafkaError._TRANSPORT))
    with pytest.raises(txloop._StoppedWhileWaiting):
        loop._waiting_out_outages("rewind", call)
    assert stop_soon() < PROMPT_S and calls[0] == 1


class _FullQueueProducer(_TxnProducer):
    def produce(self, *args: object, **kwargs: object) -> None:
        raise BufferError("Local: Queue full")

    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0


def test_a_stop_ends_the_wait_for_room_in_the_producer_queue(
    loop: TransactionalLoop, stop_soon: Callable[[], float]
) -> None:
    """Nothing is delivered while the brokers are down, so the queue never drains."""
    loop.producer = _FullQueueProducer()  # type: ignore[assignment]
    with pytest.raises(txloop._StoppedWhileWaiting, match="queue is full"):
        loop._produce(txloop.Output("t", b"v"))
    assert stop_soon() < PROMPT_S


class _ClosedConsumer:
    def __init__(self) -> None:
        self.closed = False

    def subscribe(self, *args: object, **kwargs: object) -> None: ...

    def close(self) -> None:
        self.closed = True


def test_a_stopped_run_leaves_without_flushing_a_producer_still_in_a_call(
    loop: TransactionalLoop, stop_soon: Callable[[], float]
) -> None:
    """init_transactions waiting for a coordinator: run() returns, says why, and closes the consumer;
    it does not flush the producer (that could wait as long again)."""
    hung = _TxnProducer(hang_on="init")
    flushes: list[float] = []
    hung.flush = lambda timeout: flushes.append(timeout) or 0  # type: ignore[method-assign]
    consumer = _ClosedConsumer()
    loop.producer, loop.consumer = hung, consumer  # type: ignore[assignment]
    try:
        loop.run()
        assert stop_soon() < PROMPT_S
        assert (
            loop.stopped_while_waiting
            == "stopped while waiting for Kafka (init transactions had not returned)"
        )
        assert consumer.closed and flushes == []
    finally:
        hung.released.set()


class _Record:
    """A consumed record as the loop reads it: len() is the value's size; at ("t", partition, offset)."""

    def __init__(self, size: int, partition: int = 0, offset: int = 0) -> None:
        self.size = size
        self._partition = partition
        self._offset = offset

    def __len__(self) -> int:
        return self.size

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


def test_a_poll_larger_than_the_byte_budget_is_committed_in_several_transactions(
    loop: TransactionalLoop,
) -> None:
    """A poll sized from small records can bring large ones (a stage catching up): each
    transaction still takes at most max_batch_bytes of input, and the poll's EOF events go with
    its last one."""
    loop.max_batch_bytes = 100
    records = [_Record(n) for n in (60, 30, 20, 150, 10, 90, 5)]
    chunks = [([r.size for r in chunk], last) for chunk, last in loop._chunks(records)]  # type: ignore[arg-type]
    assert chunks == [([60, 30], False), ([20], False), ([150], False), ([10, 90], False), ([5], True)]
    assert [c for c, _ in chunks if sum(c) > 100] == [[150]]  # one record alone may be larger
    assert list(loop._chunks([])) == [([], True)]
    loop.max_batch_bytes = None
    assert [len(c) for c, _ in loop._chunks(records)] == [7]  # type: ignore[arg-type]


class _Consumed:
    """A consumed record as the loop reads it (no error)."""

    def error(self) -> None:
        return None

    def __len__(self) -> int:
        return 100


class _StubConsumer:
    def subscribe(self, topics: object, **callbacks: object) -> None: ...
    def close(self) -> None: ...


def _offline(loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, consumer: object) -> None:
    """``loop`` ready to run() with ``consumer`` and no producer work (init, flush, status lines)."""
    monkeypatch.setattr(loop, "_init_producer", lambda: None)
    monkeypatch.setattr(loop, "consumer", consumer)
    monkeypatch.setattr(loop, "producer", type("P", (), {"flush": lambda self, t: 0})())
    monkeypatch.setattr(loop._status, "due", float("inf"))


def _polls(loop: TransactionalLoop, batches: list[list[object]]) -> Callable[[], list[object]]:
    """A stand-in for ``loop._poll`` that returns ``batches`` in turn, then stops the loop."""

    def poll() -> list[object]:
        if not batches:
            loop._running = False
            return []
        return batches.pop(0)

    return poll


def test_an_idle_loop_still_hands_back_what_its_last_burst_freed(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Since ticks come on demand an idle worker reads nothing; the release of freed heap memory
    must not wait for the next record (a correlator kept 1.35 GB after a 1M-alert burst instead
    of settling at its state's size)."""
    poll = _polls(loop, [[_Consumed()], [], [], [], [], []])
    trims: list[int] = []
    transactions: list[int] = []

    def transact(records: list[object], eof: object) -> bool:
        transactions.append(len(records))
        return True

    now = [0.0]
    monkeypatch.setattr(txloop.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(txloop, "release_free_memory", lambda: trims.append(int(now[0])))
    _offline(loop, monkeypatch, _StubConsumer())
    monkeypatch.setattr(loop, "_transact", transact)
    monkeypatch.setattr(loop, "_trim_due", 5.0)  # a release happened just before the burst

    def tick_poll() -> list[object]:
        now[0] += 2.0  # every poll takes 2 s of (fake) time
        return poll()

    monkeypatch.setattr(loop, "_poll", tick_poll)
    loop.run()
    assert transactions == [1]
    assert trims == [6]  # once, when due, although no record came after the burst


class _PartsStage(_IdleStage):
    handle_bytes = 100

    def __init__(self, producer: _TxnProducer) -> None:
        self.producer = producer
        self.parts: list[tuple[list[tuple[int, int]], object]] = []

    def handle(self, messages: object, eof: object) -> BatchResult:
        records = [(m.partition(), m.offset()) for m in messages]  # type: ignore[attr-defined]
        self.parts.append((records, eof))
        self.producer.calls.append(f"handle {len(records)}")
        return BatchResult([txloop.Output("out", b"x")] * len(records))


def test_a_stage_with_handle_bytes_gets_the_transaction_in_parts(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each part's outputs are produced before the next part is handled (so they are not all held
    at once), eof comes with the last part only, and one commit carries every part's offsets."""
    producer = _TxnProducer()
    stage = _PartsStage(producer)
    loop.stage, loop.producer = stage, producer  # type: ignore[assignment]
    sent: list[list[TopicPartition]] = []
    monkeypatch.setattr(producer, "send_offsets_to_transaction", lambda offsets, *_: sent.append(offsets))
    records = [_Record(60, 0, 10), _Record(60, 1, 20), _Record(30, 0, 11), _Record(150, 1, 21)]
    eof = {("t", 0)}
    assert loop._transact(records, eof)  # type: ignore[arg-type]
    assert [part for part, _ in stage.parts] == [[(0, 10)], [(1, 20), (0, 11)], [(1, 21)]]
    assert [e for _, e in stage.parts] == [set(), set(), eof]
    assert producer.calls == [
        "begin", "handle 1", "produce", "handle 2", "produce", "produce", "handle 1", "produce", "commit"
    ]  # fmt: skip
    assert sorted((tp.partition, tp.offset) for tp in sent[0]) == [(0, 12), (1, 22)]


class _CoordinatorLostConsumer:
    """A consumer whose group coordinator is gone for good (librdkafka #5511): every offset read
    times out. Closing it serves the rebalance callback for what it still held, as librdkafka does."""

    def __init__(self) -> None:
        self.reads = 0
        self.unassigned: list[object] = []
        self.closed = threading.Event()
        self.on_lost: Callable[[object, list[TopicPartition]], None] | None = None

    def committed(self, partitions: object, timeout: float) -> list[object]:
        self.reads += 1
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))

    def incremental_unassign(self, partitions: list[object]) -> None:
        self.unassigned.extend(partitions)

    def close(self) -> None:
        assert self.on_lost is not None
        self.on_lost(self, [TopicPartition("t", 0)])
        self.closed.set()


class _NewClient:
    """A consumer the loop makes: an offsets probe (read, then closed) or a replacement (subscribed)."""

    def __init__(self, answers: bool, conf: dict[str, object] | None = None) -> None:
        self.answers = answers
        self.stable = (conf or {}).get("isolation.level") == "read_committed"
        self.reads = 0
        self.subscribed: list[str] = []
        self.closed = threading.Event()

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.reads += 1
        if not self.answers:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]

    def subscribe(self, topics: list[str], **callbacks: object) -> None:
        self.subscribed = topics

    def close(self) -> None:
        self.closed.set()


class _RevokeStage(_IdleStage):
    def __init__(self) -> None:
        self.revoked: list[list[TopicPartition]] = []

    def on_revoke(self, partitions: object) -> None:
        self.revoked.append(list(partitions))  # type: ignore[call-overload]


def _wedged_rewind(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, *, others_read: bool
) -> tuple[_CoordinatorLostConsumer, _RevokeStage, list[_NewClient]]:
    """Rewinds ``loop`` holding two partitions with a consumer whose offset reads always time out;
    the consumers the loop makes meanwhile read the offsets if ``others_read``."""
    made: list[_NewClient] = []

    def new_consumer(conf: dict[str, object]) -> _NewClient:
        made.append(_NewClient(others_read, conf))
        return made[-1]

    monkeypatch.setattr(txloop, "Consumer", new_consumer)
    stuck = _CoordinatorLostConsumer()
    stuck.on_lost = loop._revoke  # type: ignore[assignment]
    stage = _RevokeStage()
    loop.stage = stage
    loop.consumer = stuck  # type: ignore[assignment]
    loop._assigned = [TopicPartition("t", 0), TopicPartition("t", 1)]
    loop._rewind()
    return stuck, stage, made


def _assert_replaced(loop: TransactionalLoop, stuck: _CoordinatorLostConsumer, stage: _RevokeStage) -> None:
    assert isinstance(loop.consumer, _NewClient) and loop.consumer.subscribed == ["t"]
    assert loop._assigned == []
    assert [[(tp.topic, tp.partition) for tp in r] for r in stage.revoked] == [[("t", 0), ("t", 1)]]
    assert stuck.closed.wait(5)
    # Closing the old consumer served its lost partitions: unassigned there, the stage not told again.
    assert [(tp.topic, tp.partition) for tp in stuck.unassigned] == [("t", 0)]  # type: ignore[attr-defined]
    assert len(stage.revoked) == 1
    assert not loop._retired(stuck)  # type: ignore[arg-type]


def test_a_rewind_that_cannot_reach_the_group_coordinator_gets_a_new_consumer(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hour run 13: after the broker was fenced for a moment, a correlator's consumer never found
    its coordinator again and the rewind retried its offset reads for ten minutes. Past
    CONSUMER_STUCK_AFTER_S the loop gives the partitions up, subscribes a new consumer (a new
    member, assigned again by the group) and closes the old one aside."""
    monkeypatch.setattr(txloop, "CONSUMER_STUCK_AFTER_S", 0.05)
    stuck, stage, made = _wedged_rewind(loop, monkeypatch, others_read=False)
    assert stuck.reads >= 2, "an ordinary outage is waited out on the same consumer first"
    assert len(made) == 1 and loop.consumer is made[0]  # no probe within CONSUMER_PROBE_EVERY_S
    _assert_replaced(loop, stuck, stage)


def test_a_consumer_that_alone_cannot_read_its_offsets_is_replaced_at_the_first_probe(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker-crash run at 52e192a: both correlators' reads failed for 122 s while the broker
    was back. A new client that reads the same offsets shows the brokers answer: replaced then."""
    monkeypatch.setattr(txloop, "CONSUMER_STUCK_AFTER_S", 60.0)
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.05)
    started = time.monotonic()
    stuck, stage, made = _wedged_rewind(loop, monkeypatch, others_read=True)
    assert time.monotonic() - started < 10
    probe, replacement = made
    assert probe.reads == 1 and probe.closed.wait(5) and not probe.subscribed
    assert loop.consumer is replacement
    _assert_replaced(loop, stuck, stage)


def test_while_no_client_reads_the_offsets_the_consumer_is_kept_until_the_bound(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real outage: the probes cannot read either, so the rewind waits on the same consumer."""
    monkeypatch.setattr(txloop, "CONSUMER_STUCK_AFTER_S", 0.5)
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.1)
    stuck, stage, made = _wedged_rewind(loop, monkeypatch, others_read=False)
    *probes, replacement = made
    assert 1 <= len(probes) <= 5 and all(p.reads == 1 and p.closed.wait(5) for p in probes)
    assert loop.consumer is replacement
    _assert_replaced(loop, stuck, stage)


def test_a_rewind_through_a_short_outage_keeps_its_consumer(loop: TransactionalLoop) -> None:
    consumer = _CoordinatorLostConsumer()
    reads = [0]

    def committed(partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        reads[0] += 1
        if reads[0] < 3:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return [TopicPartition(tp.topic, tp.partition, 7) for tp in partitions]

    consumer.committed = committed  # type: ignore[method-assign,assignment]
    seeks: list[int] = []
    consumer.seek = lambda tp: seeks.append(tp.offset)  # type: ignore[attr-defined]
    loop.consumer = consumer  # type: ignore[assignment]
    loop._assigned = [TopicPartition("t", 0)]
    loop._rewind()
    assert loop.consumer is consumer and reads[0] == 3 and seeks == [7]


def _unstable_for_everyone(conf: dict[str, object]) -> _NewClient:
    """A new client that reads the offsets only without require_stable (read_uncommitted)."""
    client = _NewClient(False, conf)
    client.answers = not client.stable
    return client


def test_offsets_unstable_for_every_client_are_explained_as_a_kafka_fault(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hour run 14: after a broker restart the group coordinator kept an ended transaction's offsets
    pending, and no read_committed client read the group's offsets for half an hour. A new consumer
    would not help; the loop waits on and says what holds it and which broker to restart."""
    monkeypatch.setattr(txloop, "CONSUMER_STUCK_AFTER_S", 0.6)
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.05)
    monkeypatch.setattr(txloop, "UNSTABLE_STUCK_AFTER_S", 0.2)
    made: list[_NewClient] = []
    monkeypatch.setattr(
        txloop, "Consumer", lambda conf: made.append(_unstable_for_everyone(conf)) or made[-1]
    )
    monkeypatch.setattr(loop, "_coordinator", lambda: "broker 1 (127.0.0.1:9092)")
    loop.consumer = _CoordinatorLostConsumer()  # type: ignore[assignment]
    loop._assigned = [TopicPartition("t", 0)]
    with caplog.at_level(logging.ERROR, logger="stormwatch.txloop"):
        loop._rewind()
    explained = [r.getMessage() for r in caplog.records if "unstable" in r.getMessage()]
    assert 1 <= len(explained) <= 3, "at most once per UNSTABLE_STUCK_AFTER_S"
    assert (
        "t[0]" in explained[0]
        and "restart broker 1 (127.0.0.1:9092), the coordinator of group g" in explained[0]
    )
    assert any(not c.stable for c in made) and any(c.stable for c in made)


def _assign_after_failed_reads(
    loop: TransactionalLoop, failures: int, caplog: pytest.LogCaptureFixture
) -> tuple[list[str], list[str]]:
    """Assigns t[0] with a consumer whose first ``failures`` offset reads time out; the calls the
    stage and consumer saw, and the errors logged."""
    calls: list[str] = []
    consumer = _OrderConsumer(calls)
    reads = [0]

    def committed(partitions: list[object], timeout: float) -> list[object]:
        reads[0] += 1
        if reads[0] <= failures:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))
        return partitions

    consumer.committed = committed  # type: ignore[method-assign]
    loop.stage = _RecordingStage(calls)
    with caplog.at_level(logging.ERROR, logger="stormwatch.txloop"):
        loop._assign(consumer, [TopicPartition("t", 0)])  # type: ignore[arg-type]
    return calls, [r.getMessage() for r in caplog.records]


def test_an_assignment_waiting_on_unstable_offsets_says_why(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.0)
    monkeypatch.setattr(txloop, "UNSTABLE_STUCK_AFTER_S", 0.0)
    monkeypatch.setattr(txloop, "Consumer", _unstable_for_everyone)
    monkeypatch.setattr(loop, "_coordinator", lambda: "broker 1 (127.0.0.1:9092)")
    calls, messages = _assign_after_failed_reads(loop, 2, caplog)
    assert calls == ["restore", "assign"]
    assert any("unstable for" in m for m in messages)


def test_offsets_no_client_reads_at_all_are_an_outage_not_explained(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(txloop, "CONSUMER_STUCK_AFTER_S", 0.3)
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.05)
    monkeypatch.setattr(txloop, "UNSTABLE_STUCK_AFTER_S", 0.1)
    with caplog.at_level(logging.ERROR, logger="stormwatch.txloop"):
        _wedged_rewind(loop, monkeypatch, others_read=False)
    assert not any("unstable" in r.getMessage() for r in caplog.records)


class _CutOffConsumer:
    """A consumer that lost its group coordinator: its offset reads time out. Its poll() serves an
    assignment as confluent-kafka does: when the callback raises, it assigns the partitions itself
    and poll() raises the callback's exception."""

    def __init__(self) -> None:
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.assigned: list[TopicPartition] = []
        self.closed = threading.Event()

    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "Failed to get committed offsets"))

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned.extend(partitions)

    def incremental_unassign(self, partitions: list[TopicPartition]) -> None: ...

    def poll(self, timeout: float) -> None:
        partitions = [TopicPartition("t", 0)]
        try:
            self.callbacks["on_assign"](self, partitions)
        finally:
            if not self.assigned:
                self.incremental_assign(partitions)

    def close(self) -> None:
        self.closed.set()


def test_an_assignment_whose_consumer_alone_cannot_read_the_offsets_gets_a_new_consumer(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Hour run 14, after the second broker crash: a restarted correlator's assignment waited on
    offsets a new client read at once (librdkafka #5511 in the assignment). The assignment gives
    up without restoring, the exception leaves the rebalance callback through poll(), and the run
    loop replaces the consumer, as a rewind does."""
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.0)

    class _Replacement(_NewClient):
        def poll(self, timeout: float) -> None:
            loop._running = False

    made: list[_NewClient] = []

    def new_consumer(conf: dict[str, object]) -> _NewClient:
        made.append(_Replacement(True, conf))
        return made[-1]

    monkeypatch.setattr(txloop, "Consumer", new_consumer)
    calls: list[str] = []
    loop.stage = _RecordingStage(calls)
    stuck = _CutOffConsumer()
    _offline(loop, monkeypatch, stuck)
    with caplog.at_level(logging.WARNING, logger="stormwatch.txloop"):
        loop.run()
    assert calls == [], "nothing restored on the consumer that could not read the offsets"
    probe, replacement = made
    assert probe.reads == 1 and probe.subscribed == [] and probe.closed.wait(5)
    assert replacement.subscribed == ["t"] and replacement.closed.is_set()
    assert stuck.closed.wait(5) and [(tp.topic, tp.partition) for tp in stuck.assigned] == [("t", 0)]
    assert loop._assigned == []
    assert any(
        "while a new client read them; replacing the consumer" in r.getMessage() for r in caplog.records
    )


def test_an_assignment_no_client_can_read_for_keeps_waiting(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """During an outage (no new client reads the offsets either) the assignment waits on the same
    consumer: there is nothing a new one would do better."""
    monkeypatch.setattr(txloop, "CONSUMER_PROBE_EVERY_S", 0.0)
    made: list[_NewClient] = []
    monkeypatch.setattr(txloop, "Consumer", lambda conf: made.append(_NewClient(False, conf)) or made[-1])
    calls, _ = _assign_after_failed_reads(loop, 3, caplog)
    assert calls == ["restore", "assign"]
    assert len(made) == 3 and all(client.subscribed == [] for client in made)


class _SlowPartsStage(_PartsStage):
    def handle(self, messages: object, eof: object) -> BatchResult:
        time.sleep(0.06)
        return super().handle(messages, eof)


def test_a_transaction_out_of_time_commits_the_parts_it_handled(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hour run 14: catch-up transactions outlived transaction.timeout.ms and were rolled back by
    the coordinator, again and again. Past TRANSACTION_BUDGET_S no further part is handled: the
    transaction commits the parts it has, with their offsets only, and says how many it took."""
    monkeypatch.setattr(txloop, "TRANSACTION_BUDGET_S", 0.05)
    producer = _TxnProducer()
    stage = _SlowPartsStage(producer)
    loop.stage, loop.producer = stage, producer  # type: ignore[assignment]
    sent: list[list[TopicPartition]] = []
    monkeypatch.setattr(producer, "send_offsets_to_transaction", lambda offsets, *_: sent.append(offsets))
    records = [_Record(60, 0, 10), _Record(60, 1, 20), _Record(30, 0, 11), _Record(150, 1, 21)]
    assert loop._transact(records, {("t", 0)}) == 1  # type: ignore[arg-type]
    assert producer.calls == ["begin", "handle 1", "produce", "commit"]
    assert [(tp.partition, tp.offset) for tp in sent[0]] == [(0, 11)]


def test_a_part_that_alone_outlasts_the_budget_is_warned_of(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The budget cannot cut a part short: a part slow enough would be rolled back by Kafka each
    time. Such a part is named (once per LOG_EVERY_S), a fast one is not."""
    monkeypatch.setattr(txloop, "TRANSACTION_BUDGET_S", 0.05)
    producer = _TxnProducer()
    loop.stage, loop.producer = _SlowPartsStage(producer), producer  # type: ignore[assignment]
    monkeypatch.setattr(producer, "send_offsets_to_transaction", lambda *_: None)
    with caplog.at_level(logging.WARNING, logger="stormwatch.txloop"):
        loop._transact([_Record(60, 0, 10)], set())  # type: ignore[list-item]
        loop._transact([_Record(60, 0, 11)], set())  # type: ignore[list-item]
    warnings = [
        r.getMessage() for r in caplog.records if "more than a transaction's budget" in r.getMessage()
    ]
    assert len(warnings) == 1 and warnings[0].startswith("a part of the input (1 records) took 0.")
    caplog.clear()
    monkeypatch.setattr(txloop, "TRANSACTION_BUDGET_S", 5.0)
    loop._slow_parts = txloop._SlowParts()
    loop._transact([_Record(60, 0, 12)], set())  # type: ignore[list-item]
    assert not caplog.records


class _SeekingConsumer(_StubConsumer):
    def __init__(self) -> None:
        self.seeks: list[tuple[int, int]] = []

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))


def test_what_a_transaction_did_not_take_is_read_again_with_the_rest_of_the_poll(
    loop: TransactionalLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rest of the poll, the later transactions' records included, goes back to the consumer:
    each partition is sought to its first record not taken, and nothing after it is handled."""
    records = [_Record(60, 0, 10), _Record(60, 1, 20), _Record(60, 0, 11), _Record(60, 2, 30)]
    taken: list[int] = []

    def transact(chunk: list[object], eof: object) -> int:
        taken.append(len(chunk))
        return 1  # of the first chunk, only its first record

    consumer = _SeekingConsumer()
    loop.max_batch_bytes = 130  # chunks: 2 records, then 2 records
    _offline(loop, monkeypatch, consumer)
    monkeypatch.setattr(loop, "_transact", transact)
    monkeypatch.setattr(loop, "_poll", _polls(loop, [list(records)]))
    loop.run()
    assert taken == [2], "the second chunk waits for the next poll"
    assert consumer.seeks == [(1, 20), (0, 11), (2, 30)]


def test_a_stage_producer_keeps_one_request_in_flight_so_nothing_is_acknowledged_implicitly(
    loop: TransactionalLoop,
) -> None:
    """With a second request in flight, librdkafka may report records of a failed first one as
    delivered without their being written, and the transaction would commit without them."""
    assert loop._producer_conf["max.in.flight.requests.per.connection"] == 1
    assert loop._producer_conf["enable.idempotence"] is True
