"""Shared fixtures: a real Kafka for integration tests, started only when a test asks for one.

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
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stormwatch.config import Settings, TopicSettings, load_settings
from stormwatch.errors import UserError
from stormwatch.kafka.topics import check_topics, create_topics, delete_topics

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "kafka" / "local-kafka.sh"
KAFKA_IMAGE = "apache/kafka:4.1.1"  # the version pinned in deploy/kafka/pom.xml
TEST_PORT = int(os.environ.get("STORMWATCH_TEST_KAFKA_PORT", "18092"))
TEST_CLUSTER_PORT = int(os.environ.get("STORMWATCH_TEST_CLUSTER_PORT", "28092"))
TOPIC_FIELDS = [name for name, info in TopicSettings.model_fields.items() if info.annotation is str]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the broker they need, so ``-m`` can select or skip them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in names:
            item.add_marker(pytest.mark.kafka)
        if "cluster_bootstrap" in names:
            item.add_marker(pytest.mark.cluster)


# --- the local script ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalKafka:
    """One instance of deploy/kafka/local-kafka.sh: node count, port and data directory."""

    nodes: int
    port: int
    data_dir: Path

    def _run(self, command: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        args = ["bash", str(SCRIPT), command, "--nodes", str(self.nodes), "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir)]
        return subprocess.run(
            args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )

    def running(self) -> bool:
        return self._run("status", 30).returncode == 0

    def start(self) -> str:
        # Generous: the first start on a new machine also installs Java/Maven and fetches the jars.
        result = self._run("start", 900)
        for line in result.stdout.splitlines():
            if result.returncode == 0 and line.startswith("KAFKA_BOOTSTRAP_SERVERS="):
                return line.split("=", 1)[1]
        pytest.fail(
            f"{SCRIPT.relative_to(ROOT)} start --nodes {self.nodes} failed (exit {result.returncode}):\n"
            f"{result.stderr[-4000:]}",
            pytrace=False,
        )

    def stop(self) -> None:
        result = self._run("stop", 120)
        if result.returncode != 0:
            print(f"stopping Kafka in {self.data_dir} failed:\n{result.stderr}")


def _session_broker(local: LocalKafka, request: pytest.FixtureRequest) -> str:
    """Start ``local`` unless it already runs; stop it at session end only if we started it.

    A broker this session starts begins empty: topics left by an interrupted run cannot leak in.
    """
    if local.running():
        return local.start()  # idempotent: waits until it answers and returns its address
    shutil.rmtree(local.data_dir, ignore_errors=True)
    bootstrap = local.start()
    request.addfinalizer(local.stop)
    return bootstrap


# --- Docker -------------------------------------------------------------------------------------


def _docker_answers() -> bool:
    """True when a Docker engine answers a ping within 3 s (never hangs on a missing socket)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_metadata(bootstrap: str, brokers: int, timeout_s: float) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(Exception):
            if len(admin.list_topics(timeout=2).brokers) >= brokers:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"Kafka at {bootstrap} did not answer within {timeout_s:g}s", pytrace=False)
        time.sleep(0.5)


def _docker_broker(request: pytest.FixtureRequest) -> str:
    """A single-node KRaft broker from the official image; its listener is published on the same
    host port it advertises, so clients outside the container can follow the metadata."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = _free_port()
    container = DockerContainer(KAFKA_IMAGE).with_bind_ports(port, port)
    try:
        host = container.get_container_host_ip()
    except Exception:
        host = "127.0.0.1"
    env = {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "10",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "10",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }
    for key, value in env.items():
        container.with_env(key, value)
    container.start()
    request.addfinalizer(container.stop)
    wait_for_logs(container, "Kafka Server started", timeout=120)
    bootstrap = f"{host}:{port}"
    _wait_for_metadata(bootstrap, 1, 60)
    return bootstrap


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a running Kafka (see the module docstring for where it comes from)."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    mode = os.environ.get("STORMWATCH_TEST_KAFKA", "auto")
    if mode == "docker" or (mode == "auto" and _docker_answers()):
        return _docker_broker(request)
    return _session_broker(LocalKafka(1, TEST_PORT, ROOT / "var" / "kafka" / "test"), request)


@pytest.fixture(scope="session")
def cluster_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a 3-broker KRaft cluster on loopback, for tests marked ``cluster``."""
    env = os.environ.get("KAFKA_CLUSTER_BOOTSTRAP_SERVERS")
    if env:
        return env
    return _session_broker(LocalKafka(3, TEST_CLUSTER_PORT, ROOT / "var" / "kafka" / "test-cluster"), request)


def unique_topic_names(suffix: str) -> dict[str, str]:
    """Every topic name of TopicSettings with ``.suffix`` appended (default names keep their meaning)."""
    defaults = TopicSettings()
    return {name: f"{getattr(defaults, name)}.{suffix}" for name in TOPIC_FIELDS}


def make_settings(bootstrap: str, suffix: str | None = None, **topics: Any) -> Settings:
    """Settings for ``bootstrap`` whose topic names carry a unique suffix; ``topics`` overrides
    TopicSettings fields (partitions, replication_factor ...)."""
    names = unique_topic_names(suffix or uuid.uuid4().hex[:10])
    return load_settings(kafka={"bootstrap_servers": bootstrap}, topics={**names, **topics})


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def settings_factory() -> Iterator[SettingsFactory]:
    """``make(bootstrap, **topic_overrides) -> Settings`` with unique topic names (not created);
    the topics are deleted after the test unless STORMWATCH_TEST_KEEP_TOPICS=1."""
    made: list[Settings] = []

    def make(bootstrap: str, **topics: Any) -> Settings:
        made.append(make_settings(bootstrap, **topics))
        return made[-1]

    yield make
    if os.environ.get("STORMWATCH_TEST_KEEP_TOPICS") == "1":
        return
    for settings in made:
        names = [getattr(settings.topics, name) for name in TOPIC_FIELDS]
        try:
            delete_topics(settings, names, timeout_s=15)
        except UserError as exc:
            print(f"could not delete the test topics: {exc}")


@pytest.fixture
def fresh_settings(kafka_bootstrap: str, settings_factory: SettingsFactory) -> Settings:
    """Settings on the session broker with unique topic names; the topics do not exist yet."""
    return settings_factory(kafka_bootstrap)


@pytest.fixture
def settings(fresh_settings: Settings) -> Settings:
    """Settings on the session broker with unique topic names, every topic already created and
    visible with its full spec (metadata reaches every broker shortly after creation)."""
    create_topics(fresh_settings, timeout_s=30)
    deadline = time.monotonic() + 20
    while diffs := check_topics(fresh_settings, timeout_s=10):
        if time.monotonic() > deadline:
            pytest.fail(f"the test topics do not match their spec: {[str(d) for d in diffs]}", pytrace=False)
        time.sleep(0.2)
    return fresh_settings
