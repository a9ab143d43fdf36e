"""SIGKILL of the `stormwatch gateway` process mid-stream, then a restart.

Senders keep POSTing alerts (one per request, each with a unique ``seq`` label). The gateway
process is killed at a random moment, twice, and started again on the same port. Afterwards:

- every alert that got a 2xx is in the raw topic (none lost): the gateway answers only after
  Kafka acknowledged the record, so a crash after the answer cannot lose it;
- alerts whose request got no answer (connection reset by the kill, or refused while the gateway
  was down) may or may not be in the raw topic: the record may have been acknowledged just before
  the kill. Senders must retry them (Prometheus and Alertmanager do), and the copies are folded by
  fingerprint deduplication. The test counts both cases and checks nothing else about them;
- nothing that was never sent is there, and the restarted gateway accepts alerts again.
"""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
import yaml

from stormwatch.config import Settings, load_settings
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.topics import create_topics, delete_topics
from tests.kit.paths import ROOT
from tests.kit.ports import free_port
from tests.kit.records import reparse
from tests.kit.workers import worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

SENDERS = 4
KILLS = 2


@dataclass(frozen=True)
class Answer:
    seq: int
    status: int  # 0: no answer (connection refused or reset)


class GatewayProcess:
    """`stormwatch gateway` as a subprocess on a fixed port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "stormwatch.cli", "--config", str(self.config)]

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*self.command(), "gateway", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=worker_env(),
                cwd=ROOT,
            )

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


async def _wait_ready(session: aiohttp.ClientSession, base: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/-/ready") as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"the gateway at {base} was not ready within {timeout_s:g}s")


async def _sender(
    session: aiohttp.ClientSession, url: str, first: int, stop: asyncio.Event, out: list[Answer]
) -> None:
    seq = first
    while not stop.is_set():
        body = {"stormwatch": 1, "alerts": [{"labels": {"alertname": "KillProbe", "seq": str(seq)}}]}
        try:
            async with session.post(
                url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                out.append(Answer(seq, r.status))
        except aiohttp.ClientError:
            out.append(Answer(seq, 0))
            await asyncio.sleep(0.05)  # nothing listens: do not spin
        seq += SENDERS
        await asyncio.sleep(0.01)


async def _scenario(gateway: GatewayProcess) -> list[Answer]:
    rnd = random.Random(5)
    base = f"http://127.0.0.1:{gateway.port}"
    answers: list[Answer] = []
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)
    ) as session:
        gateway.start()
        await _wait_ready(session, base, 60)
        senders = [
            asyncio.create_task(_sender(session, f"{base}/api/v1/alerts", i, stop, answers))
            for i in range(SENDERS)
        ]
        try:
            for _ in range(KILLS):
                await asyncio.sleep(rnd.uniform(1.5, 3.0))
                accepted = sum(1 for a in answers if a.status == 200)
                gateway.kill()
                assert accepted > 0
                await asyncio.sleep(0.5)  # senders meet a closed port meanwhile
                gateway.start()
                await _wait_ready(session, base, 60)
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await asyncio.gather(*senders)
    return answers


@pytest.fixture
def gateway_settings(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Settings, Path]]:
    suffix = uuid.uuid4().hex[:8]
    config = {
        "kafka": {"bootstrap_servers": kafka_bootstrap},
        "topics": {"raw": f"t.raw.gwkill.{suffix}", "dlq": f"t.dlq.gwkill.{suffix}", "partitions": 3},
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    settings = load_settings(path, kafka={"bootstrap_servers": kafka_bootstrap})
    create_topics(settings, timeout_s=30)
    yield settings, path
    delete_topics(settings, [settings.topics.raw, settings.topics.dlq], timeout_s=15)


def test_sigkilled_gateway_loses_no_acknowledged_alert(
    gateway_settings: tuple[Settings, Path], tmp_path: Path
) -> None:
    settings, config = gateway_settings
    gateway = GatewayProcess(config, free_port(), tmp_path / "gateway.log")
    try:
        answers = asyncio.run(_scenario(gateway))
    finally:
        rc = gateway.stop()
    assert rc == 0, gateway.log.read_text()[-3000:]

    written: list[int] = []
    for msg in read_topic(settings, settings.topics.raw, timeout_s=30):
        written += [int(note.labels["seq"]) for note in reparse(msg).alerts]
    present = set(written)
    acknowledged = {a.seq for a in answers if a.status == 200}
    unanswered = {a.seq for a in answers if a.status == 0}
    assert {a.status for a in answers} <= {0, 200, 503}
    assert acknowledged - present == set(), "alerts answered 200 are missing from the raw topic"
    assert present <= {a.seq for a in answers}, "the raw topic holds alerts nobody sent"
    assert len(written) == len(present), "the gateway wrote an alert twice"
    assert unanswered, "no request met the kill: the test did not exercise it"
    landed = len(unanswered & present)
    print(
        f"gateway SIGKILL: {len(answers)} requests, {len(acknowledged)} answered 200 (all in the topic), "
        f"{len(unanswered)} unanswered of which {landed} landed anyway"
    )
