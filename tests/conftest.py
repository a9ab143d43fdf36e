"""Session fixtures shared by every level: a real Kafka, started only when a test asks for one.

Where ``kafka_bootstrap`` comes from, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS``: an existing broker, never started or stopped here;
2. a Docker engine that answers within a few seconds: a throwaway ``apache/kafka`` container
   (testcontainers), removed at the end of the session;
3. ``deploy/kafka/local-kafka.sh``: a broker of its own on 127.0.0.1:18092 with its data in
   ``var/kafka/test``, stopped at the end of the session if this session started it.

``STORMWATCH_TEST_KAFKA=local`` or ``=docker`` skips the choice between 2 and 3. The 3-node
cluster for ``cluster`` tests (``cluster_bootstrap``) comes from ``KAFKA_CLUSTER_BOOTSTRAP_SERVERS``
or the script (brokers on 127.0.0.1:28092-28094, data in ``var/kafka/test-cluster``).
Tests that use these fixtures get the ``kafka`` / ``cluster`` marker automatically, so
``pytest -m "not kafka"`` selects the tests that need no broker.

The helpers behind them are in tests/kit; each level's own fixtures are in its conftest.py.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.kit.kafka import ScriptKafka, docker_answers, docker_broker
from tests.kit.paths import ROOT
from tests.kit.ports import free_port

KAFKA_IMAGE = "apache/kafka:4.1.1"  # the version pinned in deploy/kafka/pom.xml
TEST_PORT = int(os.environ.get("STORMWATCH_TEST_KAFKA_PORT", "18092"))
TEST_CLUSTER_PORT = int(os.environ.get("STORMWATCH_TEST_CLUSTER_PORT", "28092"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the broker they need, so ``-m`` can select or skip them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in names:
            item.add_marker(pytest.mark.kafka)
        if "cluster_bootstrap" in names:
            item.add_marker(pytest.mark.cluster)


def _session_broker(kafka: ScriptKafka, request: pytest.FixtureRequest) -> str:
    """Start ``kafka`` unless it already runs; stop it at session end only if we started it.

    A broker this session starts begins empty: topics left by an interrupted run cannot leak in.
    Generous: the first start on a new machine also installs Java/Maven and fetches the jars.
    """
    try:
        if kafka.running():
            return kafka.start(timeout_s=900)  # idempotent: waits until it answers
        shutil.rmtree(kafka.data_dir, ignore_errors=True)
        bootstrap = kafka.start(timeout_s=900)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)

    def stop() -> None:
        try:
            kafka.stop()
        except RuntimeError as exc:
            print(f"stopping Kafka in {kafka.data_dir} failed:\n{exc}")

    request.addfinalizer(stop)
    return bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a running Kafka (see the module docstring for where it comes from)."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    mode = os.environ.get("STORMWATCH_TEST_KAFKA", "auto")
    if mode == "docker" or (mode == "auto" and docker_answers()):
        return docker_broker(KAFKA_IMAGE, free_port(), request)
    return _session_broker(ScriptKafka(1, TEST_PORT, ROOT / "var" / "kafka" / "test"), request)


@pytest.fixture(scope="session")
def cluster_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a 3-broker KRaft cluster on loopback, for tests marked ``cluster``."""
    env = os.environ.get("KAFKA_CLUSTER_BOOTSTRAP_SERVERS")
    if env:
        return env
    return _session_broker(
        ScriptKafka(3, TEST_CLUSTER_PORT, ROOT / "var" / "kafka" / "test-cluster"), request
    )
