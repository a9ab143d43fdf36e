"""A real Prometheus pushes its alerts to the gateway; stormwatch opens and resolves the incident.

Everything runs on 127.0.0.1: a few tiny HTTP "targets" serving /metrics, Prometheus scraping them
every second with the rule ``up == 0`` (``for: 0s``) and ``alerting.alertmanagers`` pointing at the
gateway, the gateway, and the pipeline's ingest and correlator stages in threads. The targets fail,
the alert fires, Prometheus posts it to ``/api/v2/alerts``, an incident opens; the targets recover,
Prometheus posts the resolution, the incident resolves and its time to resolve is measured.

Prometheus is Debian's ``prometheus`` package: installed by the session fixture when it is missing
and we are root, else the test is skipped with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from stormwatch.commands.pipeline import build_correlator_loop, build_ingest_loop
from stormwatch.config import Settings, load_settings
from stormwatch.gateway import GatewayServer
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.topics import create_topics, delete_topics
from stormwatch.kafka.txloop import TransactionalLoop
from stormwatch.loaders import load_rules
from stormwatch.metrics import pipeline_metrics
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.streams.correlator import CorrelatorStage
from stormwatch.streams.ingest import IngestStage
from tests.kit.metrics import metric_value
from tests.kit.ports import free_port
from tests.kit.topics import all_topics, topic_names
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TARGETS = 3
BUDGET_S = 90.0  # the whole flow, from starting Prometheus to the MTTR sample
RULES = """
defaults:
  group_wait: 2s
  group_interval: 5s
  resolve_timeout: 30s
allowed_lateness: 200ms
state_time_resolution: 1s
flap: {enabled: false}
rules:
  - name: e2e
    match: ['job="e2e"']
    group_by: [alertname, job]
"""
ALERT_RULES = {
    "groups": [
        {
            "name": "e2e",
            "interval": "1s",
            "rules": [
                {
                    "alert": "TargetDown",
                    "expr": 'up{job="e2e"} == 0',
                    "for": "0s",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "{{ $labels.instance }} is down"},
                }
            ],
        }
    ]
}

# ---------------------------------------------------------------------------- Prometheus itself


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """Debian's prometheus: on PATH, or installed here when we are root; else skip."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("prometheus is not installed; run `apt-get install -y prometheus` as root (Debian)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = subprocess.run(["apt-cache", "policy", "prometheus"], capture_output=True, text=True, env=env)
    if "Candidate: (none)" in policy.stdout or "Candidate:" not in policy.stdout:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, timeout=300)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    found = shutil.which("prometheus")
    if result.returncode != 0 or not found:
        pytest.skip(f"could not install Debian's prometheus package: {result.stderr.strip()[-500:]}")
    return found


# ---------------------------------------------------------------------------- scrape targets


class Target:
    """A /metrics endpoint that can be made to fail (HTTP 503), so Prometheus records up == 0."""

    def __init__(self) -> None:
        self.healthy = True
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if target.healthy and self.path == "/metrics":
                    body, status = b"# TYPE e2e_target_alive gauge\ne2e_target_alive 1\n", 200
                else:
                    body, status = b"down\n", 503
                self.send_response(status)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, name=f"target-{self.address}", daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# ---------------------------------------------------------------------------- in-process services


class GatewayThread:
    """The gateway on its own event loop in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.server = GatewayServer(settings)
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="gateway", daemon=True)
        self.thread.start()
        if not self._started.wait(15) or self._error is not None:
            raise AssertionError(f"gateway did not start: {self._error}")

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            try:
                await self.server.start()
            except BaseException as exc:
                self._error = exc
                self._started.set()
                raise
            self._started.set()
            try:
                await self._stop.wait()
            finally:
                await self.server.stop()

        with contextlib.suppress(BaseException):
            asyncio.run(main())

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(30)


class StageThread:
    """One pipeline stage's transactional loop, run in a thread as `stormwatch ingest|correlate` would."""

    def __init__(self, name: str, loop: TransactionalLoop) -> None:
        self.loop = loop
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc

    def check(self) -> None:
        if self.error is not None:
            raise AssertionError(f"{self.thread.name} failed: {self.error!r}")

    def stop(self) -> None:
        self.loop.stop()
        self.thread.join(30)


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def mttr_samples(metrics_url: str, rule: str) -> float:
    """Observations of stormwatch_time_to_resolve_seconds for ``rule``."""
    return metric_value(metrics_url, "stormwatch_time_to_resolve_seconds_count", rule=rule)


@pytest.fixture
def e2e_settings(kafka_bootstrap: str) -> Iterator[Settings]:
    suffix = uuid.uuid4().hex[:10]
    settings = load_settings(
        kafka={"bootstrap_servers": kafka_bootstrap},
        topics=topic_names(suffix, prefix="test.e2e", partitions=2),
        gateway={"port": 0},
    )
    create_topics(settings, timeout_s=30)
    try:
        yield settings
    finally:
        with contextlib.suppress(Exception):
            delete_topics(settings, all_topics(settings), timeout_s=15)


@pytest.mark.timeout(420)  # the flow itself is bounded by BUDGET_S; this also covers installing Prometheus
def test_prometheus_alert_opens_and_resolves_an_incident(
    prometheus_binary: str, e2e_settings: Settings, tmp_path: Path
) -> None:
    settings = e2e_settings
    rules_file = tmp_path / "stormwatch-rules.yaml"
    rules_file.write_text(RULES)
    rules = load_rules(rules_file)
    metrics = pipeline_metrics()
    before = 0.0

    targets: list[Target] = []
    stages: list[StageThread] = []
    gateway: GatewayThread | None = None
    prometheus: subprocess.Popen[bytes] | None = None
    prometheus_log = tmp_path / "prometheus.log"
    try:
        targets = [Target() for _ in range(TARGETS)]
        gateway = GatewayThread(settings)
        gw = gateway.server
        assert gw.sink.wait_ready(15), gw.sink.reason
        before = mttr_samples(f"{gw.url}/metrics", "e2e")

        partitions = settings.topics.partitions
        ingest = IngestStage(settings, rules, partitions, metrics)
        correlator = CorrelatorStage(settings, rules, metrics)
        stages = [
            StageThread("ingest", build_ingest_loop(settings, ingest, f"e2e-{uuid.uuid4().hex[:6]}")),
            StageThread(
                "correlator", build_correlator_loop(settings, correlator, f"e2e-{uuid.uuid4().hex[:6]}")
            ),
        ]

        prom_port = free_port()
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(ALERT_RULES))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "800ms", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "alerts.yml")],
            "alerting": {
                "alertmanagers": [
                    {"api_version": "v2", "static_configs": [{"targets": [f"127.0.0.1:{gw.port}"]}]}
                ]
            },
            "scrape_configs": [
                {"job_name": "e2e", "static_configs": [{"targets": [t.address for t in targets]}]},
                {"job_name": "stormwatch", "static_configs": [{"targets": [f"127.0.0.1:{gw.port}"]}]},
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        with prometheus_log.open("wb") as log:
            prometheus = subprocess.Popen(
                [
                    prometheus_binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                    "--log.level=info",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        prom_api = f"http://127.0.0.1:{prom_port}/api/v1"
        deadline = time.monotonic() + BUDGET_S

        def left() -> float:
            """What is left of the flow's budget: every wait below shares it."""
            return max(0.0, deadline - time.monotonic())

        def stages_alive() -> None:
            for stage in stages:
                stage.check()

        def query(expr: str) -> list[dict[str, Any]]:
            try:
                body = orjson.loads(http_get(f"{prom_api}/query?query={urllib.parse.quote(expr)}"))
            except OSError:
                return []  # not listening yet
            result: list[dict[str, Any]] = body["data"]["result"]
            return result

        def prometheus_alive() -> None:
            if prometheus is not None and prometheus.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{prometheus_log.read_text()[-3000:]}")

        def all_up() -> bool | None:
            prometheus_alive()
            series = query('up{job="e2e"}')
            return True if len(series) == TARGETS and all(s["value"][1] == "1" for s in series) else None

        wait_for("Prometheus to scrape the healthy targets", all_up, left(), alive=stages_alive)

        # --- the targets fail: Prometheus fires TargetDown and pushes it to the gateway
        for target in targets:
            target.healthy = False

        def events() -> list[IncidentEvent]:
            return [
                IncidentEvent.from_bytes(m.value() or b"")
                for m in read_topic(settings, settings.topics.incidents)
            ]

        def opened() -> IncidentEvent | None:
            prometheus_alive()
            return next((e for e in events() if e.type is IncidentEventType.OPENED), None)

        opening = wait_for("the incident to open", opened, left(), alive=stages_alive)
        assert opening.rule == "e2e"
        joined = {c.labels["instance"] for c in opening.alerts if c.labels}
        # group_wait (2s) collects the targets' alerts; a straggler may join by an update instead.
        assert joined and joined <= {t.address for t in targets}

        # --- the targets recover: Prometheus sends the resolution, the incident resolves
        for target in targets:
            target.healthy = True

        def resolved() -> IncidentEvent | None:
            prometheus_alive()
            return next(
                (
                    e
                    for e in events()
                    if e.type is IncidentEventType.RESOLVED and e.incident_id == opening.incident_id
                ),
                None,
            )

        resolution = wait_for("the incident to resolve", resolved, left(), alive=stages_alive)
        assert resolution.at >= opening.at
        timeline = [e for e in events() if e.incident_id == opening.incident_id]
        every_joined = {c.labels["instance"] for e in timeline for c in e.alerts if c.labels}
        assert every_joined == {t.address for t in targets}
        assert len({c.fingerprint for c in resolution.alerts}) == TARGETS  # each alert resolved by Prometheus
        # Prometheus reached stormwatch through the gateway's Alertmanager-compatible endpoint only.
        pushes = metric_value(f"{gw.url}/metrics", "stormwatch_gateway_requests_total", endpoint="prometheus")
        assert pushes >= 2

        def mttr_recorded() -> float | None:
            value = mttr_samples(f"{gw.url}/metrics", "e2e")
            return value if value > before else None

        wait_for("a time-to-resolve sample", mttr_recorded, left(), alive=stages_alive)

        # Prometheus scraped the gateway's /metrics too (the deploy/prometheus example does this).
        def scraped() -> bool | None:
            return True if query("stormwatch_gateway_alerts_accepted_total") else None

        wait_for("Prometheus to scrape stormwatch's metrics", scraped, left(), alive=stages_alive)
        for stage in stages:
            stage.check()
    finally:
        if prometheus is not None:
            prometheus.send_signal(signal.SIGTERM)
            try:
                prometheus.wait(20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait(5)
        for stage in stages:
            stage.stop()
        if gateway is not None:
            gateway.stop()
        for target in targets:
            target.stop()
