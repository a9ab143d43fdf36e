"""A stormwatch pipeline of its own for one benchmark run: unique topics, worker subprocesses.

Workers run as ``python -m stormwatch.cli ... ingest|correlate`` subprocesses (and the gateway as
``... gateway``), exactly as deployed, so each one's CPU time and memory can be read from /proc.
Progress is read from the outside: the consumer groups' committed offsets against the topics' end
offsets. As deployed, the gateway signs its notes records and ingest verifies them: each run has its
own key file (``ingest.notes_key_file``) unless ``sign_notes=False``.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stormwatch.bench.procstat import ProcSample, sample
from stormwatch.config import Settings, TopicSettings, load_settings
from stormwatch.kafka.topics import create_topics, delete_topics, topic_specs

__all__ = ["BenchPipeline", "Worker", "free_port"]

ROOT = Path(__file__).resolve().parent.parent
END_OFFSETS_MONITOR = "stormwatch-bench-monitor"
"""The group id of the cached client that reads high watermarks (it never joins the group)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Worker:
    """One pipeline worker process and its log file."""

    def __init__(
        self, stage: str, instance: str, popen: subprocess.Popen[bytes], log: Path, metrics_port: int
    ):
        self.stage = stage
        self.instance = instance
        self.popen = popen
        self.log = log
        self.metrics_port = metrics_port
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def sample(self) -> ProcSample:
        self.check()
        return sample(self.pid)

    def check(self) -> None:
        code = self.popen.poll()
        if code is not None:
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.stage} worker {self.instance} exited with {code}:\n{tail}")

    def log_lines(self, needle: str) -> list[str]:
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text(errors="replace").splitlines() if needle in line]

    def metrics(self) -> dict[str, float]:
        """The worker's /metrics, summed over label values per sample name."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        totals: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                totals[s.name] = totals.get(s.name, 0.0) + float(s.value)
        return totals

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


class BenchPipeline:
    """Topics, config and workers of one run; ``close()`` stops the workers and deletes the topics."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        *,
        partitions: int = 6,
        rules_yaml: str | None = None,
        ingest: dict[str, Any] | None = None,
        correlator: dict[str, Any] | None = None,
        topic_settings: dict[str, Any] | None = None,
        extra_config: dict[str, Any] | None = None,
        sign_notes: bool = True,
    ) -> None:
        self.bootstrap = bootstrap
        self.suffix = uuid.uuid4().hex[:8]
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        topics = TopicSettings.with_prefix(
            "bench", f".{self.suffix}", partitions=partitions, **(topic_settings or {})
        )
        config: dict[str, Any] = {**(extra_config or {}), "kafka": {"bootstrap_servers": bootstrap}}
        config["topics"] = topics
        self.notes_key_file: Path | None = None
        if sign_notes:
            self.notes_key_file = workdir / f"notes-{self.suffix}.key"
            self.notes_key_file.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
            self.notes_key_file.chmod(0o600)
            ingest = {"notes_key_file": str(self.notes_key_file), **(ingest or {})}
        if ingest:
            config["ingest"] = ingest
        if correlator:
            config["correlator"] = correlator
        self.config_path = workdir / f"config-{self.suffix}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.rules_path: Path | None = None
        if rules_yaml is not None:
            self.rules_path = workdir / f"rules-{self.suffix}.yaml"
            self.rules_path.write_text(rules_yaml)
        self.settings: Settings = load_settings(self.config_path, kafka={"bootstrap_servers": bootstrap})
        self.partitions = partitions
        self.workers: list[Worker] = []
        self._starts = 0
        create_topics(self.settings)
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._monitors: dict[str, Consumer] = {}

    # ---- names

    @property
    def topics(self) -> Any:
        return self.settings.topics

    @property
    def ingest_group(self) -> str:
        return f"stormwatch-ingest-{self.topics.correlator_input}"

    @property
    def correlator_group(self) -> str:
        return f"stormwatch-correlator-{self.topics.correlator_input}"

    # ---- workers

    def start(
        self,
        stage: str,
        instance: str,
        *,
        verbose: bool = False,
        port: int | None = None,
        prefix: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> Worker:
        """A worker of ``stage``; its /metrics on ``port`` (default: a free one), its command line
        after ``prefix`` (e.g. ``ip netns exec NS``: a host of deploy/faults/netswitch.py)."""
        port = free_port() if port is None else port
        args = [stage, "--metrics-port", str(port), *extra_args]
        if stage != "agent":  # one agent per pipeline: it takes no instance id
            args += ["--instance-id", instance]
        if self.rules_path is not None and stage in ("ingest", "correlate"):  # the others take no rules
            args += ["--rules", str(self.rules_path)]
        return self._spawn(stage, instance, args, port, verbose=verbose, prefix=prefix)

    def start_gateway(
        self, *, read_api: bool = True, port: int | None = None, prefix: Sequence[str] = ()
    ) -> Worker:
        """``stormwatch gateway`` on 127.0.0.1 and ``port`` (default: a free one), writing to the
        run's raw topic.

        Its alert endpoints and its /metrics share that port (``Worker.metrics_port``).
        """
        port = free_port() if port is None else port
        args = ["gateway", "--host", "127.0.0.1", "--port", str(port)]
        if not read_api:
            args.append("--no-read-api")
        return self._spawn("gateway", "g1", args, port, prefix=prefix)

    def _spawn(
        self,
        stage: str,
        instance: str,
        args: list[str],
        port: int,
        *,
        verbose: bool = False,
        prefix: Sequence[str] = (),
    ) -> Worker:
        self._starts += 1
        log = self.workdir / f"{stage}-{instance}-{self.suffix}-{self._starts}.log"  # one per start
        cmd = [*prefix, sys.executable, "-m", "stormwatch.cli", "--config", str(self.config_path)]
        if verbose:
            cmd.append("-v")
        cmd += args
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the config file names the broker
        with open(log, "ab") as out:
            popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        worker = Worker(stage, instance, popen, log, port)
        self.workers.append(worker)
        return worker

    def wait_assigned(
        self, group: str, workers: Iterable[Worker], timeout_s: float = 90.0, *, members: int = 1
    ) -> float:
        """Wait until ``group`` is stable with partitions assigned to ``members`` members (at
        least); returns the monotonic time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for w in workers:
                w.check()
            try:
                desc = self._admin.describe_consumer_groups([group], request_timeout=5)[group].result()
            except Exception:
                desc = None
            if desc is not None and desc.state == ConsumerGroupState.STABLE:
                assigned = [m for m in desc.members if m.assignment and m.assignment.topic_partitions]
                if len(assigned) >= members:
                    return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"consumer group {group} got no assignment within {timeout_s:.0f}s")

    # ---- offsets

    def _monitor(self, group: str) -> Consumer:
        consumer = self._monitors.get(group)
        if consumer is None:
            consumer = Consumer(
                {
                    "bootstrap.servers": self.bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                    "log_level": 3,
                }
            )
            self._monitors[group] = consumer
        return consumer

    def forget_monitor(self, group: str) -> None:
        """Drop the cached client of ``group``'s probes; the next probe makes a new one. A client
        that lost the group's coordinator in a broker restart can go on failing while a new one
        answers at once (hour run 10: six minutes of failed probes of two groups at their end)."""
        consumer = self._monitors.pop(group, None)
        if consumer is not None:
            consumer.close()

    def committed(self, group: str, topic: str) -> dict[int, int]:
        """The group's committed offset per partition of ``topic`` (-1: none yet)."""
        tps = [TopicPartition(topic, p) for p in range(self.partitions)]
        return {tp.partition: tp.offset for tp in self._monitor(group).committed(tps, timeout=10)}

    def end_offsets(self, topic: str) -> dict[int, int]:
        """High watermarks; a failed read drops the cached client like ``forget_monitor`` (hour run
        13: the client lost its only broker when the broker was fenced for a moment, and every lag
        probe after it failed while new clients answered)."""
        consumer = self._monitor(END_OFFSETS_MONITOR)
        try:
            return {
                p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                for p in range(self.partitions)
            }
        except Exception:
            self.forget_monitor(END_OFFSETS_MONITOR)
            raise

    def wait_committed(
        self,
        group: str,
        topic: str,
        targets: dict[int, int],
        workers: Iterable[Worker],
        *,
        timeout_s: float,
        on_poll: Callable[[], None] | None = None,
        interval_s: float = 0.05,
    ) -> float:
        """Wait until ``group`` committed at least ``targets`` on every partition; the monotonic time."""
        deadline = time.monotonic() + timeout_s
        workers = list(workers)
        while time.monotonic() < deadline:
            for w in workers:
                w.check()
            if on_poll is not None:
                on_poll()
            done = self.committed(group, topic)
            if all(done.get(p, -1) >= target for p, target in targets.items()):
                return time.monotonic()
            time.sleep(interval_s)
        raise TimeoutError(f"{group} did not reach {targets} on {topic} within {timeout_s:.0f}s")

    # ---- data

    def producer(self, **overrides: Any) -> Producer:
        conf = {
            "bootstrap.servers": self.bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "message.max.bytes": self.settings.ingest.max_record_bytes + 65_536,
            "queue.buffering.max.kbytes": 1_048_576,
            "log_level": 3,
            **overrides,
        }
        return Producer(conf)

    def topic_names(self) -> list[str]:
        return [spec.name for spec in topic_specs(self.settings)]

    def close(self, *, delete: bool = True) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()
        for consumer in self._monitors.values():
            consumer.close()
        self._monitors.clear()
        if delete:
            delete_topics(self.settings, self.topic_names())
