"""Gateway hardening (issue #15, items 11, 14, 15): no open listener by accident, slow clients
dropped, and PagerDuty's answers for a BOM-prefixed body and an unknown severity.

No broker: the Kafka sink points at a loopback port where nothing listens, or is replaced by a
recording stand-in where an accepted answer (202) matters.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from stormwatch import cli
from stormwatch.commands import gateway as gateway_command
from stormwatch.config import Settings
from stormwatch.connguard import is_loopback
from stormwatch.errors import UserError
from stormwatch.gateway import Gateway, GatewayServer, dedup_key_for
from stormwatch.kafkasink import KafkaSink
from stormwatch.schemas.fingerprint import key_fingerprint
from stormwatch.streams.core.wire import AlertNote
from tests.kit.ports import free_port
from tests.kit.records import read_raw

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hardening-test-token"


def make_settings(**gateway: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
            "topics": {"raw": "gw.hardening.raw"},
            "gateway": {"delivery_timeout_ms": 1000, "port": 0, **gateway},
        }
    )


# ---------------------------------------------------------------------------- 11: exposure


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "", "192.0.2.10", "gateway.example.com", "::ffff:127.0.0.1"]
)
def test_non_loopback_host_without_token_refuses_to_start(host: str) -> None:
    with pytest.raises(UserError) as caught:
        GatewayServer(make_settings(host=host))
    message = str(caught.value)
    assert "\n" not in message
    for hint in ("gateway.bearer_token", "STORMWATCH_GATEWAY__BEARER_TOKEN", "--insecure-no-auth"):
        assert hint in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "::1", "localhost", "LOCALHOST"])
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "10.0.0.1", "example.com", "127.0.0.1.nip.io"])
def test_other_hosts_are_not_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_token_or_insecure_flag_allows_any_host() -> None:
    for config in ({"bearer_token": TOKEN}, {"insecure_no_auth": True}):
        server = GatewayServer(make_settings(host="0.0.0.0", **config))
        server.sink.close(0)


def test_insecure_no_auth_listens_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        server = GatewayServer(make_settings(host="0.0.0.0", insecure_no_auth=True))
        await server.start()
        await server.stop()

    with caplog.at_level(logging.WARNING, logger="stormwatch.gateway"):
        asyncio.run(go())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without authentication" in w and "insecure_no_auth" in w for w in warnings), warnings


def test_cli_refuses_an_open_gateway_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["stormwatch.commands.gateway"])
    monkeypatch.delenv("STORMWATCH_GATEWAY__BEARER_TOKEN", raising=False)
    kafka = f"127.0.0.1:{free_port()}"
    argv = [
        "--bootstrap-servers",
        kafka,
        "gateway",
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--max-seconds",
        "0.1",
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("stormwatch gateway: error: ")
    assert "--insecure-no-auth" in err and "STORMWATCH_GATEWAY__BEARER_TOKEN" in err
    caplog.clear()
    assert cli.main([*argv, "--insecure-no-auth"]) == 0
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == "stormwatch.gateway" and r.levelno == logging.WARNING
    ]
    assert any("without authentication" in w for w in warned), warned


def test_insecure_no_auth_flag_sets_the_setting() -> None:
    parser = argparse.ArgumentParser(prog="stormwatch")
    gateway_command.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["gateway", "--insecure-no-auth"])
    assert gateway_command.gateway_settings(args, make_settings()).gateway.insecure_no_auth is True
    args = parser.parse_args(["gateway"])
    assert gateway_command.gateway_settings(args, make_settings()).gateway.insecure_no_auth is False


def _manifests(name: str) -> list[dict[str, Any]]:
    path = ROOT / "deploy" / "kubernetes" / name
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_kubernetes_gateway_requires_its_token_and_ships_a_network_policy() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _manifests("gateway.yaml")}
    deployment = objects["Deployment", "stormwatch-gateway"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["STORMWATCH_GATEWAY__HOST"]["value"] == "0.0.0.0"
    ref = env["STORMWATCH_GATEWAY__BEARER_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] == "stormwatch-gateway" and ref.get("optional", False) is False
    assert "--insecure-no-auth" not in container["args"]

    policy = objects["NetworkPolicy", "stormwatch-gateway"]["spec"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9095}]
    sources = rule["from"]
    assert sources, "an empty 'from' would admit every pod"
    sender = {"stormwatch.io/alert-sender": "true"}
    assert {"namespaceSelector": {}, "podSelector": {"matchLabels": sender}} in sources
    assert {"namespaceSelector": {"matchLabels": sender}} in sources
    assert any(
        s.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "prometheus"
        for s in sources
    )
    assert all("ipBlock" not in s for s in sources)


def test_docker_compose_gateway_is_published_on_loopback_only() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    argv = [str(a) for a in gateway["command"]]
    assert "--insecure-no-auth" in argv  # 0.0.0.0 inside the container ...
    assert all(str(p).startswith("127.0.0.1:") for p in gateway["ports"])  # ... reachable from this host only


# ---------------------------------------------------------------------------- 14: slow clients

READ_TIMEOUT_S = 1.0
SLACK_S = 1.0
PARTIALS = (
    b"",  # connects, sends nothing
    b"POST /api/v2/alerts HTTP/1.1\r\nHost: gw\r\nContent-Le",  # headers never finish
    b"POST /api/v2/alerts HTTP/1.1\r\nHost: gw\r\nContent-Length: 1000\r\n\r\n[{",  # body never finishes
    b"GET /-/healthy HTTP/1.1\r\n",  # request line only
)


async def _http(port: int, raw: bytes, timeout_s: float = 5.0) -> bytes:
    """Send ``raw`` on a fresh connection and read the answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout_s)
    finally:
        writer.close()


HEALTHY = b"GET /-/healthy HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"


async def _closed_at(reader: asyncio.StreamReader) -> float:
    """Read until the server closes the connection; the loop time it did."""
    try:
        while await reader.read(4096):
            pass
    except ConnectionError:
        pass
    return asyncio.get_running_loop().time()


def _serve(test: Callable[[GatewayServer], Awaitable[None]], **config: Any) -> None:
    async def go() -> None:
        server = GatewayServer(make_settings(**config))
        await server.start()
        try:
            await asyncio.wait_for(test(server), 20)
        finally:
            await server.stop()

    asyncio.run(go())


def test_slow_clients_are_dropped_while_others_are_served(caplog: pytest.LogCaptureFixture) -> None:
    """15 slow connections, then 35 more against a limit of 20: 30 are refused at once, the 20
    admitted slow ones are closed after the read timeout, and a normal request is served meanwhile."""

    async def test(server: GatewayServer) -> None:
        loop = asyncio.get_running_loop()
        opened: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []

        async def open_slow(partial: bytes) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            opened.append((loop.time(), reader, writer))
            if partial:
                writer.write(partial)
                await writer.drain()

        for i in range(15):
            await open_slow(PARTIALS[i % len(PARTIALS)])
        answer = await _http(server.port, HEALTHY)
        assert answer.startswith(b"HTTP/1.1 200"), answer

        started = loop.time()
        extra = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(35)]
        firsts = await asyncio.gather(
            *(asyncio.wait_for(reader.read(), 0.5) for reader, _ in extra), return_exceptions=True
        )
        refused = [answer for answer in firsts if isinstance(answer, bytes)]
        assert len(refused) == 30, firsts
        assert all(a.startswith(b"HTTP/1.1 503") and b"Retry-After: 5" in a for a in refused), refused[:1]
        admitted = [
            (started, r, w) for (r, w), a in zip(extra, firsts, strict=True) if not isinstance(a, bytes)
        ]

        slow = opened + admitted
        closed = await asyncio.gather(*(_closed_at(reader) for _, reader, _ in slow))
        for (started, _, writer), end in zip(slow, closed, strict=True):
            writer.close()
            assert READ_TIMEOUT_S - 0.2 <= end - started <= READ_TIMEOUT_S + SLACK_S, end - started
        for _, writer in extra:
            writer.close()

        answer = await _http(server.port, HEALTHY)  # the slots are free again
        assert answer.startswith(b"HTTP/1.1 200"), answer

    with caplog.at_level(logging.ERROR):
        _serve(test, request_read_timeout_ms=int(READ_TIMEOUT_S * 1000), max_connections=20)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_slow_request_within_the_timeout_is_served() -> None:
    async def test(server: GatewayServer) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        body = b'{"stormwatch": 1, "alerts": [{"labels": {}}]}'
        writer.write(b"POST /api/v1/alerts HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n")
        await asyncio.sleep(0.3)
        writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10]))
        await asyncio.sleep(0.3)
        writer.write(body[10:])
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n"), 2)
        assert answer.startswith(b"HTTP/1.1 400"), answer  # reached validation: an empty label set
        writer.close()

    _serve(test, request_read_timeout_ms=1000)


def test_keep_alive_connection_is_dropped_when_its_next_request_stalls() -> None:
    async def test(server: GatewayServer) -> None:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /-/healthy HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (await asyncio.wait_for(reader.readuntil(b"OK\n"), 2)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(0.5)
        started = loop.time()
        writer.write(b"POST /api/v2/alerts HTTP/1.1\r\nHost: gw\r\nContent-Length: 50\r\n\r\n[")
        end = await _closed_at(reader)
        writer.close()
        assert READ_TIMEOUT_S - 0.2 <= end - started <= READ_TIMEOUT_S + SLACK_S, end - started

    _serve(test, request_read_timeout_ms=int(READ_TIMEOUT_S * 1000))


def test_slow_client_limits_are_settings() -> None:
    config = Settings.model_validate({}).gateway
    assert (config.request_read_timeout_ms, config.max_connections, config.insecure_no_auth) == (
        10_000,
        1024,
        False,
    )
    for bad in ({"request_read_timeout_ms": 0}, {"max_connections": 0}):
        with pytest.raises(ValueError):
            Settings.model_validate({"gateway": bad})


# ---------------------------------------------------------------------------- 15: PagerDuty


class RecordingSink:
    """Stands in for KafkaSink: every write is acknowledged at once and kept."""

    ready = True
    reason = ""

    def __init__(self) -> None:
        self.values: list[bytes] = []
        self.headers: list[dict[str, bytes]] = []

    async def send(
        self, value: bytes, *, key: bytes | None, headers: list[tuple[str, Any]], timestamp_ms: int
    ) -> None:
        self.values.append(value)
        self.headers.append(dict(headers))

    def last_alert(self) -> AlertNote:
        """The one alert of the last record, as ingest reads it."""
        (alert,) = read_raw(self.values[-1], self.headers[-1], 1_700_000_000_000).alerts
        return alert


class PagerDuty:
    """A gateway app (recording sink) behind aiohttp's test server, one event loop for all posts."""

    def __init__(self) -> None:
        self.sink = RecordingSink()
        self.runner = asyncio.Runner()
        app = Gateway(make_settings(), cast(KafkaSink, self.sink)).app

        async def start() -> TestClient[Any, Any]:
            client: TestClient[Any, Any] = TestClient(TestServer(app))
            await client.start_server()
            return client

        self.client = self.runner.run(start())

    def enqueue(self, body: bytes) -> tuple[int, Any]:
        async def post() -> tuple[int, Any]:
            headers = {"Content-Type": "application/json"}
            response = await self.client.post("/v2/enqueue", data=body, headers=headers)
            return response.status, orjson.loads(await response.read())

        return self.runner.run(post())

    def close(self) -> None:
        self.runner.run(self.client.close())
        self.runner.close()


@pytest.fixture
def pagerduty() -> Iterator[PagerDuty]:
    harness = PagerDuty()
    yield harness
    harness.close()


TRIGGER: dict[str, Any] = {
    "routing_key": "R" * 32,
    "event_action": "trigger",
    "payload": {"summary": "disk full", "source": "db-1", "severity": "critical"},
}
BOM = b"\xef\xbb\xbf"


def test_bom_trigger_gets_a_dedup_key_that_resolves_it(pagerduty: PagerDuty) -> None:
    status, answer = pagerduty.enqueue(BOM + orjson.dumps(TRIGGER))
    assert status == 202, answer
    assert answer["dedup_key"] == dedup_key_for(TRIGGER)
    firing = pagerduty.sink.last_alert()
    assert firing.keyed and firing.fingerprint == key_fingerprint("pagerduty", answer["dedup_key"])

    resolve = {"routing_key": "R" * 32, "event_action": "resolve", "dedup_key": answer["dedup_key"]}
    status, answer = pagerduty.enqueue(BOM + orjson.dumps(resolve))
    assert (status, answer["dedup_key"]) == (202, resolve["dedup_key"])
    resolved = pagerduty.sink.last_alert()
    assert resolved.fingerprint == firing.fingerprint and not resolved.firing


@pytest.mark.parametrize("prefix", [b"", BOM, b" \n"])
def test_dedup_key_is_never_null(pagerduty: PagerDuty, prefix: bytes) -> None:
    for event in (TRIGGER, {**TRIGGER, "dedup_key": "mine"}):
        status, answer = pagerduty.enqueue(prefix + orjson.dumps(event))
        assert status == 202 and isinstance(answer["dedup_key"], str) and answer["dedup_key"], answer


@pytest.mark.parametrize("severity", ["apocalyptic", "", "page", "p1", 3])
def test_unknown_severity_is_400_as_pagerduty_answers(pagerduty: PagerDuty, severity: Any) -> None:
    event = {**TRIGGER, "payload": {**TRIGGER["payload"], "severity": severity}}
    status, answer = pagerduty.enqueue(orjson.dumps(event))
    assert status == 400, answer
    assert answer["status"] == "invalid event" and answer["message"] == "Event object is invalid"
    assert any("payload.severity" in e for e in answer["errors"]), answer
    assert pagerduty.sink.values == []


@pytest.mark.parametrize("severity", ["critical", "error", "warning", "info"])
def test_pagerdutys_four_severities_are_accepted(pagerduty: PagerDuty, severity: str) -> None:
    event = {**TRIGGER, "payload": {**TRIGGER["payload"], "severity": severity}}
    status, answer = pagerduty.enqueue(orjson.dumps(event))
    assert status == 202, answer
    assert pagerduty.sink.last_alert().severity == severity
