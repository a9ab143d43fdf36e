"""Fixtures of the fault suite (``pytest -m faults``, docs/reliability.md).

Tests that stop or kill brokers get a Kafka of their own here, never the session broker or the
shared ``cluster_bootstrap`` cluster: other tests (and other test sessions on the same machine)
may be using those. Each instance is emptied and started when its first test needs it and
stopped (its data deleted) after the last test of the module. Ports can be moved with the
environment variables below; all of them stay below the ephemeral port range (32768-60999).
Under pytest-xdist, worker gwN (N > 0) moves them by 10*N and its directories to ``...-gwN``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.kafka import ScriptKafka
from tests.kit.paths import ROOT
from tests.kit.pipeline import PipelineRun
from tests.kit.ports import worker_dir, worker_port

FAULT_CLUSTER_PORT = worker_port(int(os.environ.get("STORMWATCH_FAULT_CLUSTER_PORT", "27092")))
OUTAGE_BROKER_PORT = worker_port(int(os.environ.get("STORMWATCH_FAULT_OUTAGE_PORT", "18192")))
SASL_BROKER_PORT = worker_port(int(os.environ.get("STORMWATCH_FAULT_SASL_PORT", "18292")))
TLS_BROKER_PORT = worker_port(int(os.environ.get("STORMWATCH_FAULT_TLS_PORT", "18392")))


def _data_dir(name: str) -> Path:
    return worker_dir(ROOT / "var" / "kafka" / name)


def _owned(kafka: ScriptKafka) -> Iterator[ScriptKafka]:
    kafka.fresh_start()
    try:
        yield kafka
    finally:
        kafka.destroy()


@pytest.fixture(scope="module")
def fault_cluster() -> Iterator[ScriptKafka]:
    """A 3-node KRaft cluster (brokers on 27092-27094, controllers on 27192-27194) the tests may
    stop, kill and restart node by node."""
    yield from _owned(ScriptKafka(3, FAULT_CLUSTER_PORT, _data_dir("faults-cluster")))


@pytest.fixture(scope="module")
def outage_broker() -> Iterator[ScriptKafka]:
    """A single broker on 18192 (controller 18193) that a test stops and starts again."""
    yield from _owned(ScriptKafka(1, OUTAGE_BROKER_PORT, _data_dir("faults-outage")))


@pytest.fixture(scope="module")
def sasl_broker() -> Iterator[ScriptKafka]:
    """A single broker on 18292 that only takes SASL/SCRAM clients (user ``stormwatch``)."""
    yield from _owned(ScriptKafka(1, SASL_BROKER_PORT, _data_dir("faults-sasl"), sasl=True))


@pytest.fixture(scope="module")
def tls_broker() -> Iterator[ScriptKafka]:
    """A single broker on 18392 (controller 18393) that only takes TLS clients with a client
    certificate signed by its throwaway CA (mutual TLS)."""
    yield from _owned(ScriptKafka(1, TLS_BROKER_PORT, _data_dir("faults-tls"), tls=True))


@pytest.fixture
def runs_to_stop() -> Iterator[list[PipelineRun]]:
    """Runs whose workers are stopped when the test ends, however it ends (before the switch
    deletes the namespaces some of them run in)."""
    runs: list[PipelineRun] = []
    yield runs
    for run in runs:
        run.stop_all()
