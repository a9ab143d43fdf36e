"""Helpers of the fault suite: Kafka instances a test owns (and may break), bounded waits, metrics.

The fault tests stop, kill and restart brokers, so they never do that to a broker other tests
share: each instance here has its own ports and data directory under ``var/kafka/faults-*`` and is
started fresh (emptied first) and stopped by the fixture that owns it (tests/faults/conftest.py).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stormwatch.config import Settings
from stormwatch.gateway import GatewayServer
from stormwatch.kafka.client import make_producer

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / "deploy" / "kafka" / "local-kafka.sh"

T = TypeVar("T")


@dataclass(frozen=True)
class ScriptKafka:
    """One instance of deploy/kafka/local-kafka.sh that a test module owns."""

    nodes: int
    port: int
    data_dir: Path
    sasl: bool = False
    tls: bool = False

    def _run(self, *command: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
        args = ["bash", str(SCRIPT), *command, "--nodes", str(self.nodes), "--port", str(self.port)]
        args += ["--data-dir", str(self.data_dir)]
        if self.sasl and command[0] == "start":
            args.append("--sasl")
        if self.tls and command[0] == "start":
            args.append("--tls")
        return subprocess.run(
            args, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )

    def _check(self, *command: str, timeout_s: float = 180) -> None:
        result = self._run(*command, timeout_s=timeout_s)
        if result.returncode != 0:
            raise RuntimeError(
                f"local-kafka.sh {' '.join(command)} failed (exit {result.returncode}):\n{result.stderr[-4000:]}"
            )

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.node_port(i)}" for i in range(1, self.nodes + 1))

    def node_port(self, node: int) -> int:
        return self.port + node - 1

    def fresh_start(self) -> str:
        """Stop whatever an interrupted earlier run left, empty the data directory, start."""
        self._run("stop", timeout_s=120)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self._check("start", timeout_s=900)
        return self.bootstrap

    def start(self) -> None:
        self._check("start")

    def stop(self) -> None:
        self._check("stop", timeout_s=120)

    def destroy(self) -> None:
        """Stop every node and delete the data (the fixtures' teardown)."""
        self._run("stop", timeout_s=120)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def stop_node(self, node: int) -> None:
        """SIGTERM: a controlled shutdown (leadership moves away first)."""
        self._check("stop-node", str(node), timeout_s=90)

    def kill_node(self, node: int) -> None:
        """SIGKILL: a crash."""
        self._check("kill-node", str(node), timeout_s=30)

    def start_node(self, node: int) -> None:
        self._check("start-node", str(node), timeout_s=120)

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


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def free_port() -> int:
    """A free TCP port on loopback (for a worker's /metrics)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(port: int, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (with these labels) on a worker's /metrics; 0 when absent,
    -1 while the worker does not serve /metrics yet (it starts serving after its start-up checks)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def group_coordinator(bootstrap: str, group: str) -> int:
    """Node id of the broker coordinating ``group`` (also its transactions' offsets)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})

    def ask() -> int | None:
        try:
            found = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
        except KafkaException:  # the coordinator is loading or moving: ask again
            return None
        return int(found.coordinator.id)

    return wait_for(ask, 60, f"the coordinator of group {group}", interval_s=1.0)


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

    wait_for(in_sync, timeout_s, "every partition in sync on all its replicas", interval_s=1.0)


def load_average() -> str:
    """The 1/5/15-minute load average: fault timings mean little on a busy machine."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class PacedProducer(threading.Thread):
    """Produces (timestamp, value) records when the wall clock reaches ``timestamp - lead_s``.

    The storm is live (the pipeline sees it arrive), yet every record's timestamp is ahead of the
    wall clock when it is written, and the ingest stage's clock never runs ahead of the data it has
    read (at a partition's end it takes max(wall clock, newest timestamp)). So no record is ever
    late, and the incidents depend only on the raw log: a replay of the same topic must give the
    same audit log.
    """

    def __init__(self, bootstrap: str, topic: str, records: list[tuple[int, bytes]], lead_s: float) -> None:
        super().__init__(name="paced-producer", daemon=True)
        self.records = records
        self.topic = topic
        self.lead_ms = int(lead_s * 1000)
        self.errors: list[KafkaError] = []
        self.delivered = 0
        self.undelivered = -1
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(err)

    def run(self) -> None:
        for ts, value in self.records:
            while (wait_ms := ts - self.lead_ms - time.time() * 1000) > 0:
                self.producer.poll(min(wait_ms / 1000, 0.2))
            while True:
                try:
                    self.producer.produce(self.topic, value, timestamp=ts, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    self.producer.poll(0.1)
            self.producer.poll(0)
        self.undelivered = self.producer.flush(120)


def run_cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The ``stormwatch`` CLI as a user runs it: from the project root, no stdin, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stormwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def produce_timestamped(settings: Settings, records: list[tuple[int, bytes]]) -> Producer:
    """Write (timestamp, value) records to the raw topic with the settings' own client options
    (SASL, TLS); the producer is returned for more."""
    producer = make_producer(settings)
    for ts, value in records:
        producer.produce(settings.topics.raw, value, timestamp=ts)
    assert producer.flush(30) == 0, "raw records were not all delivered"
    return producer


def post_through_gateway(settings: Settings, alertname: str) -> int:
    """Start an in-process gateway (any free port), wait until it can write to Kafka, post one
    alert; the answer's HTTP status."""

    async def post() -> int:
        server = GatewayServer(
            settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"port": 0})})
        )
        await server.start()
        try:
            assert await asyncio.to_thread(server.sink.wait_ready, 30), server.sink.reason
            body = {"stormwatch": 1, "alerts": [{"labels": {"alertname": alertname}}]}
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{server.url}/api/v1/alerts", json=body) as response,
            ):
                return response.status
        finally:
            await server.stop()

    return asyncio.run(post())


def gateway_readiness(settings: Settings, timeout_s: float = 20) -> tuple[bool, str]:
    """Start an in-process gateway, wait for its first Kafka check; (ready, its reason)."""

    async def check() -> tuple[bool, str]:
        server = GatewayServer(settings)
        await server.start()
        try:
            ready = await asyncio.to_thread(server.sink.wait_checked, timeout_s)
            return ready, server.sink.reason
        finally:
            await server.stop()

    return asyncio.run(check())
