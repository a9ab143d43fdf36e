"""Kafka instances for tests, and waits on the state of a cluster.

Two sources of brokers: ``deploy/kafka/local-kafka.sh`` (``ScriptKafka``: the session broker and
cluster of tests/conftest.py, and the brokers the fault suite owns and breaks), and Docker's
official image (``docker_broker``), used for the session broker when a Docker engine answers.
An instance a test stops or kills has its own ports and data directory, never a shared one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from tests.kit.paths import KAFKA_SCRIPT, ROOT
from tests.kit.waits import wait_for


@dataclass(frozen=True)
class ScriptKafka:
    """One instance of deploy/kafka/local-kafka.sh: node count, first broker port, data directory,
    and whether it takes only SASL/SCRAM (``sasl``) or mutual-TLS (``tls``) clients."""

    nodes: int
    port: int
    data_dir: Path
    sasl: bool = False
    tls: bool = False

    def _run(
        self, *command: str, timeout_s: float = 180, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = ["bash", str(KAFKA_SCRIPT), *command, "--nodes", str(self.nodes), "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir)]
        if self.sasl and command[0] == "start":
            args.append("--sasl")
        if self.tls and command[0] == "start":
            args.append("--tls")
        return subprocess.run(
            args,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def _check(
        self, *command: str, timeout_s: float = 180, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = self._run(*command, timeout_s=timeout_s, env=env)
        if result.returncode != 0:
            raise RuntimeError(
                f"{KAFKA_SCRIPT.relative_to(ROOT)} {' '.join(command)} --nodes {self.nodes} failed "
                f"(exit {result.returncode}):\n{result.stderr[-4000:]}"
            )
        return result

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.node_port(i)}" for i in range(1, self.nodes + 1))

    def node_port(self, node: int) -> int:
        return self.port + node - 1

    def running(self) -> bool:
        """Every node runs (``local-kafka.sh status`` exits 0)."""
        return self._run("status", timeout_s=30).returncode == 0

    def start(self, timeout_s: float = 180) -> str:
        """Start the nodes that do not run and wait until all answer; the bootstrap servers the
        script prints. The first start on a new machine also installs Java and fetches the jars:
        callers that may be first pass a generous ``timeout_s``."""
        result = self._check("start", timeout_s=timeout_s)
        for line in result.stdout.splitlines():
            if line.startswith("KAFKA_BOOTSTRAP_SERVERS="):
                return line.split("=", 1)[1]
        return self.bootstrap

    def fresh_start(self) -> str:
        """Stop whatever an interrupted earlier run left, empty the data directory, start."""
        self._run("stop", timeout_s=120)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        return self.start(timeout_s=900)

    def stop(self) -> None:
        self._check("stop", timeout_s=120)

    def destroy(self) -> None:
        """Stop every node and delete the data (the fault fixtures' teardown)."""
        self._run("stop", timeout_s=120)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop_node(self, node: int) -> None:
        """SIGTERM: a controlled shutdown (leadership moves away first)."""
        self._check("stop-node", str(node), timeout_s=90)

    def kill_node(self, node: int) -> None:
        """SIGKILL: a crash."""
        self._check("kill-node", str(node), timeout_s=30)

    def start_node(self, node: int) -> None:
        """Start one node again. A node that crashed recovers its logs first, and a 2-core machine
        busy with the pipeline and the other test worker has taken more than a minute for that."""
        self._check("start-node", str(node), timeout_s=200, env={"STORMWATCH_KAFKA_START_TIMEOUT": "180"})

    def sasl_password(self) -> str:
        return (self.data_dir / "sasl" / "stormwatch.password").read_text().strip()

    def tls_settings(self) -> dict[str, str]:
        """``kafka.*`` options for a client with the instance's CA and client certificate (--tls)."""
        tls = self.data_dir / "tls"
        return {
            "security_protocol": "SASL_SSL" if self.sasl else "SSL",
            "ssl_ca_location": str(tls / "ca.pem"),
            "ssl_certificate_location": str(tls / "client.pem"),
            "ssl_key_location": str(tls / "client.key"),
        }

    def status_env(self) -> dict[str, str]:
        """The ``NAME=value`` lines ``local-kafka.sh status`` prints for clients (bootstrap, TLS files)."""
        result = self._run("status", timeout_s=30)
        if result.returncode != 0:
            raise RuntimeError(f"local-kafka.sh status failed (exit {result.returncode}):\n{result.stdout}")
        pairs = (line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
        return {name: value for name, value in pairs if name.isupper()}


# --- Docker -------------------------------------------------------------------------------------


def docker_answers() -> bool:
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


def docker_broker(image: str, port: int, request: pytest.FixtureRequest) -> str:
    """A single-node KRaft broker from ``image``, removed at the end of ``request``'s scope. Its
    listener is published on the same host port it advertises, so clients outside the container
    can follow the metadata."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    container = DockerContainer(image).with_bind_ports(port, port)
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
    wait_for_brokers(bootstrap, 1, 60)
    return bootstrap


# --- cluster state ------------------------------------------------------------------------------


def wait_for_brokers(bootstrap: str, brokers: int, timeout_s: float) -> None:
    """Wait until the metadata of ``bootstrap`` lists at least ``brokers`` brokers."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def listed() -> bool:
        with contextlib.suppress(Exception):
            return len(admin.list_topics(timeout=2).brokers) >= brokers
        return False

    wait_for(f"Kafka at {bootstrap} to answer with {brokers} broker(s)", listed, timeout_s)


def group_coordinator(bootstrap: str, group: str) -> int:
    """Node id of the broker coordinating ``group`` (also its transactions' offsets)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def ask() -> int | None:
        try:
            found = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        except KafkaException:  # the coordinator is loading or moving: ask again
            return None
        return int(found.coordinator.id)

    return wait_for(f"the coordinator of group {group}", ask, 60, interval_s=1.0)


def wait_fully_replicated(bootstrap: str, timeout_s: float = 120) -> None:
    """Wait until every partition (internal topics included) has all its replicas in sync.

    What a rolling restart waits for before it touches the next node: a node that has just been
    started may still be catching up, and stopping another one then leaves some partitions with
    fewer in-sync replicas than min.insync.replicas, so writes to them stall until it catches up.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def in_sync() -> bool:
        try:
            metadata = admin.list_topics(timeout=10)
        except KafkaException:
            return False
        return all(
            len(partition.isrs) >= len(partition.replicas)
            for topic in metadata.topics.values()
            for partition in topic.partitions.values()
        )

    wait_for("every partition in sync on all its replicas", in_sync, timeout_s, interval_s=1.0)
