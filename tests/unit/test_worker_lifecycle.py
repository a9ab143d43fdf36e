"""Workers say when they start and stop, and SIGTERM ends them within a bound in every state
(issue #15, items 5 and 8), without a broker.

A worker is a real ``TransactionalLoop`` in a subprocess, pointed at a port where no broker
listens: its producer waits for a transaction coordinator that never answers, as it does while
its only broker is down. Kubernetes sends SIGKILL 30 s after SIGTERM; an ingest worker in that
state used to need 50-100 s and logged nothing."""

from __future__ import annotations

import faulthandler
import json
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from stormwatch.config import Settings
from stormwatch.kafka import txloop
from stormwatch.lifecycle import worker_lifecycle
from stormwatch.logs import LIFECYCLE_LOGGER
from tests.kit.paths import ROOT
from tests.kit.ports import free_port
from tests.kit.workers import worker_env

BOUND_MS = 3000

WORKER = """
import logging, sys, threading
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from stormwatch.config import Settings
from stormwatch.kafka import txloop
from stormwatch.kafka.txloop import BatchResult, TransactionalLoop
from stormwatch.logs import configure_logging

bootstrap, bound_ms, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]

class IdleStage:
    def on_assign(self, consumer, partitions): ...
    def on_revoke(self, partitions): ...
    def handle(self, messages, eof): return BatchResult()
    def idle_work_due(self): return mode == "rewind"  # a clock tick: run a transaction

class AbortingProducer:
    # every commit fails with an abortable error, so the loop aborts and rewinds
    def init_transactions(self, timeout): pass
    def begin_transaction(self): pass
    def abort_transaction(self, timeout): pass
    def flush(self, timeout): return 0
    def poll(self, timeout): return 0
    def commit_transaction(self, timeout):
        raise KafkaException(KafkaError(KafkaError.INVALID_TXN_STATE, "test", txn_requires_abort=True))

class CloseHangs:
    # a consumer whose close() never returns, as librdkafka's can while the brokers are away
    def __init__(self, consumer): self.consumer = consumer
    def __getattr__(self, name): return getattr(self.consumer, name)
    def close(self): threading.Event().wait()

configure_logging(logging.WARNING, "json")
settings = Settings.model_validate(
    {"kafka": {"bootstrap_servers": bootstrap}, "shutdown_timeout_ms": bound_ms}
)
loop = TransactionalLoop(
    settings, stage=IdleStage(), group_id="g", topics=["t"], transactional_id="tx", max_batch=10,
    lag_interval_s=0,
)
if mode == "close-hangs":
    loop.consumer = CloseHangs(loop.consumer)
if mode == "rewind":  # the rewind reads the committed offsets from a broker that is not there
    txloop.REWIND_READ_TIMEOUT_S = bound_ms / 2000  # as the default (5 s) is to the default bound (10 s)
    loop.producer = AbortingProducer()
    loop._assigned = [TopicPartition("t", 0)]
loop.serve("ingest", instance="test")
"""


def _lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not a JSON log line: {line!r}\n{text}") from exc
    return out


def _sigterm_after_start(mode: str, bound_ms: int = BOUND_MS) -> tuple[int, float, list[dict[str, Any]]]:
    """Start the worker in ``mode``, SIGTERM it once it waits for Kafka; (exit status, seconds
    from SIGTERM to exit, its log lines)."""
    argv = [sys.executable, "-c", WORKER, f"127.0.0.1:{free_port()}", str(bound_ms), mode]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # "started": the loop is about to wait for Kafka
    time.sleep(1.0)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    limit_s = bound_ms / 1000 + 10
    try:
        _, rest = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, rest = proc.communicate()
        raise AssertionError(f"still running {limit_s:.0f}s after SIGTERM:\n{first}{rest}") from None
    return proc.returncode, time.monotonic() - signalled, _lines(first + rest)


def test_sigterm_while_waiting_for_kafka_stops_at_once_and_says_why() -> None:
    """init_transactions waits for a coordinator (30 s per attempt, retried forever)."""
    code, took, lines = _sigterm_after_start("init-waits")
    assert code == 0, lines
    assert took < 2.5, f"{took:.1f}s"  # STOP_GRACE_S (1 s) and the close, not a call's 30 s timeout
    life = [r for r in lines if r["logger"] == LIFECYCLE_LOGGER]
    assert [r["msg"] for r in life] == [
        "started",
        "stopping on SIGTERM (the process ends within 3s)",
        "stopped on SIGTERM",
    ]
    started, _, stopped = life
    assert started["stage"] == "ingest" and started["group"] == "g" and started["instance"] == "test"
    assert started["transactional_id"] == "tx" and started["topics"] == ["t"] and started["pid"] > 0
    assert stopped["reason"] == "signal" and stopped["signal"] == "SIGTERM"
    assert "stopped while waiting for Kafka (init transactions had not returned)" in stopped["detail"]


def test_sigterm_during_a_rewind_without_brokers_ends_cleanly_within_the_bound() -> None:
    """The reported state: rewinding to the committed offsets while the only broker is down. The
    offset read does not notice the signal, so its timeout is kept well under the bound."""
    default_bound_s = Settings().shutdown_timeout_ms / 1000
    assert default_bound_s / 2 >= txloop.REWIND_READ_TIMEOUT_S
    code, took, lines = _sigterm_after_start("rewind")
    assert code == 0, lines
    assert took < BOUND_MS / 2000 + 1.0, f"{took:.1f}s"  # the read's timeout, then a clean stop
    assert any(r["msg"].startswith("aborting transaction after") for r in lines), lines
    stopped = lines[-1]
    assert stopped["msg"] == "stopped on SIGTERM" and stopped["reason"] == "signal"
    assert stopped["detail"].startswith("stopped while waiting for Kafka (rewind: KafkaError{code=_TIMED_OUT")


def test_a_worker_that_cannot_close_is_ended_at_the_bound() -> None:
    code, took, lines = _sigterm_after_start("close-hangs")
    assert code == 128 + signal.SIGTERM, lines
    assert BOUND_MS / 1000 - 0.5 < took < BOUND_MS / 1000 + 1.5, f"{took:.1f}s"
    last = lines[-1]
    assert last["level"] == "ERROR" and last["reason"] == "signal" and last["forced"] is True
    assert "shutdown took longer than 3s; exiting without closing the Kafka clients" in last["msg"]


# --- the start and stop lines in this process (no signal handling: pytest owns the signals) ---


@pytest.fixture
def life_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger=LIFECYCLE_LOGGER)
    yield caplog
    faulthandler.cancel_dump_traceback_later()  # armed by a stop signal, for the process's exit


def test_a_clean_end(life_log: pytest.LogCaptureFixture) -> None:
    with worker_lifecycle("correlator", handle_signals=False, group="g"):
        pass
    started, stopped = life_log.records
    assert started.getMessage() == "started" and started.__dict__["group"] == "g"
    assert stopped.__dict__["reason"] == "clean" and stopped.levelno == logging.INFO


def test_an_error_is_logged_and_raised(life_log: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError), worker_lifecycle("agent", handle_signals=False):
        raise RuntimeError("fatal: fenced\nby another producer")
    stopped = life_log.records[-1]
    assert stopped.levelno == logging.ERROR and stopped.__dict__["reason"] == "error"
    assert stopped.__dict__["error"] == "RuntimeError: fatal: fenced by another producer"


def test_a_signal_stops_the_worker_once(life_log: pytest.LogCaptureFixture) -> None:
    stops: list[int] = []
    with worker_lifecycle(
        "gateway", stop=lambda: stops.append(1), handle_signals=False, shutdown_timeout_s=30
    ) as life:
        life.received(signal.SIGTERM)
        life.received(signal.SIGINT)  # a second signal changes nothing
    assert stops == [1]
    records = life_log.records
    assert [r.getMessage() for r in records] == [
        "started",
        "stopping on SIGTERM (the process ends within 30s)",
        "stopped on SIGTERM",
    ]
    assert records[-1].__dict__["reason"] == "signal"


def test_the_gateway_logs_json_start_and_stop_lines() -> None:
    argv = [sys.executable, "-m", "stormwatch.cli", "--bootstrap-servers", f"127.0.0.1:{free_port()}"]
    proc = subprocess.Popen(
        [*argv, "gateway", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=worker_env(STORMWATCH_GATEWAY__DELIVERY_TIMEOUT_MS="1000"),
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=30)
    lines = _lines(first + rest)
    life = [r for r in lines if r["logger"] == LIFECYCLE_LOGGER]
    assert life[0]["msg"] == "started" and life[0]["url"].startswith("http://127.0.0.1:")
    assert life[-1]["msg"] == "stopped on SIGTERM" and life[-1]["reason"] == "signal"
    assert proc.returncode == 0, lines
