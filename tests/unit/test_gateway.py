"""The HTTP gateway without a broker: auth, limits, content types, validation answers, probes.

The Kafka sink here points at a loopback port where nothing listens, so every request that passes
validation gets the gateway's real "Kafka unavailable" answer (503); the writes themselves are
tested against a real broker in tests/integration/test_gateway_kafka.py.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import KafkaError, Message
from prometheus_client import REGISTRY

from stormwatch.config import Settings
from stormwatch.connguard import RETRY_AFTER_S
from stormwatch.gateway import (
    MAX_ERRORS_SHOWN,
    Gateway,
    binary_cloudevent,
    dedup_key_for,
    record_key,
)
from stormwatch.kafka.client import UNCONFIRMED_DELIVERY, delivery_failure
from stormwatch.kafkasink import KafkaSink, KafkaUnavailable
from stormwatch.schemas.adapters import FORMAT_HEADER
from stormwatch.schemas.adapters.base import DEFAULT_LIMITS
from stormwatch.schemas.adapters.record import parse_record, parse_record_checked
from tests.kit.ports import free_port

TOKEN = "s3cr3t-T0ken-for-tests"
PROM_ALERT: dict[str, Any] = {"labels": {"alertname": "Down", "job": "node", "instance": "a:9100"}}
PD_TRIGGER: dict[str, Any] = {
    "routing_key": "R" * 32,
    "event_action": "trigger",
    "payload": {"summary": "disk full", "source": "db-1", "severity": "critical"},
}


def make_settings(**gateway: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
            "topics": {"raw": "gw.unit.raw"},
            "gateway": {"delivery_timeout_ms": 1000, **gateway},
        }
    )


@pytest.fixture(scope="module")
def sink() -> Iterator[KafkaSink]:
    """A sink whose broker is unreachable (never started: it stays "not ready")."""
    s = KafkaSink(make_settings())
    yield s
    s.close(0)


class Reply:
    def __init__(self, resp: ClientResponse, body: bytes) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


class Harness:
    """A gateway app behind aiohttp's test server, on one event loop kept across requests."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.runner = asyncio.Runner()

        async def start() -> TestClient[Any, Any]:
            client: TestClient[Any, Any] = TestClient(TestServer(gw.app))
            await client.start_server()
            return client

        self.client = self.runner.run(start())

    def request(self, method: str, path: str, **kwargs: Any) -> Reply:
        async def go() -> Reply:
            resp = await self.client.request(method, path, **kwargs)
            return Reply(resp, await resp.read())

        return self.runner.run(go())

    def post_json(self, path: str, doc: Any, headers: dict[str, str] | None = None) -> Reply:
        headers = {"Content-Type": "application/json", **(headers or {})}
        return self.request("POST", path, data=orjson.dumps(doc), headers=headers)

    def close(self) -> None:
        self.runner.run(self.client.close())
        self.runner.close()


@pytest.fixture
def gateway(sink: KafkaSink) -> Iterator[Callable[..., Harness]]:
    """``gateway(**gateway_settings)`` -> a Harness; ``settings=`` passes whole Settings instead."""
    made: list[Harness] = []

    def make(settings: Settings | None = None, **config: Any) -> Harness:
        harness = Harness(Gateway(settings or make_settings(**config), sink))
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.close()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- auth


def test_missing_token_is_401_with_challenge(gateway: Callable[..., Harness]) -> None:
    reply = gateway(bearer_token=TOKEN).post_json("/api/v2/alerts", [PROM_ALERT])
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"] == 'Bearer realm="stormwatch"'
    assert reply.json()["status"] == "unauthorized"


@pytest.mark.parametrize(
    "header", [f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer", TOKEN]
)
def test_wrong_token_is_401_invalid_token(gateway: Callable[..., Harness], header: str) -> None:
    reply = gateway(bearer_token=TOKEN).post_json("/v2/enqueue", PD_TRIGGER, {"Authorization": header})
    assert reply.status == 401
    assert 'error="invalid_token"' in reply.headers["WWW-Authenticate"]


def test_right_token_passes_to_validation(gateway: Callable[..., Harness]) -> None:
    gw = gateway(bearer_token=TOKEN)
    reply = gw.post_json("/api/v2/alerts", [{"labels": {}}], {"Authorization": f"bearer {TOKEN}"})
    assert reply.status == 400  # authenticated (scheme is case-insensitive), then validated


def test_probes_and_metrics_need_no_token(gateway: Callable[..., Harness]) -> None:
    gw = gateway(bearer_token=TOKEN)
    assert gw.request("GET", "/-/healthy").status == 200
    assert gw.request("GET", "/-/ready").status == 503
    assert gw.request("GET", "/metrics").status == 200


def test_token_never_logged(gateway: Callable[..., Harness], caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings(bearer_token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)
    gw = gateway(settings)
    with caplog.at_level(logging.DEBUG):
        gw.post_json("/api/v2/alerts", [PROM_ALERT], {"Authorization": f"Bearer {TOKEN}"})
        gw.post_json("/api/v2/alerts", [PROM_ALERT], {"Authorization": f"Bearer {TOKEN}-wrong"})
        gw.post_json("/api/v2/alerts", [{"labels": {}}], {"Authorization": f"Bearer {TOKEN}"})
    assert caplog.records, "the gateway should have logged the refusals"
    assert TOKEN not in caplog.text


def test_empty_token_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="bearer_token is empty"):
        make_settings(bearer_token="  ")


# ---------------------------------------------------------------------------- size limit


def test_declared_length_over_limit_is_413(gateway: Callable[..., Harness]) -> None:
    gw = gateway(max_body_bytes=1000)
    reply = gw.post_json("/api/v2/alerts", [PROM_ALERT] * 50)
    assert reply.status == 413
    assert "1000 bytes" in reply.json()["message"]
    assert reply.json()["limit_bytes"] == 1000


def test_chunked_body_over_limit_is_413(gateway: Callable[..., Harness]) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"["
        for _ in range(100):
            yield orjson.dumps(PROM_ALERT) + b","
        yield b"{}]"

    reply = gateway(max_body_bytes=2048).request("POST", "/api/v2/alerts", data=chunks())
    assert reply.status == 413
    assert "2048 bytes" in reply.json()["message"]


def test_body_at_the_limit_is_read(gateway: Callable[..., Harness]) -> None:
    body = orjson.dumps([{"labels": {}}])
    reply = gateway(max_body_bytes=len(body)).request("POST", "/api/v2/alerts", data=body)
    assert reply.status == 400  # read whole and validated


def test_record_over_ingest_limit_is_413(gateway: Callable[..., Harness]) -> None:
    settings = make_settings(max_body_bytes=10_000)
    settings.ingest.max_record_bytes = 100
    gw = gateway(settings)
    reply = gw.post_json("/api/v2/alerts", [PROM_ALERT] * 5)
    assert reply.status == 413
    assert reply.json()["reason"] == "too_large"


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("path", "doc", "reason", "detail"),
    [
        ("/api/v2/alerts", [{"labels": {}}], "missing_labels", "[0].labels: empty"),
        ("/api/v2/alerts", {"alerts": []}, "missing_labels", "labels: missing"),
        (
            "/api/v1/webhook/alertmanager",
            {"version": "4", "status": "firing", "alerts": "nope"},
            "invalid_alert",
            "alerts",
        ),
        ("/v2/enqueue", {"event_action": "trigger"}, "invalid_alert", "payload: missing"),
        ("/v2/enqueue", {"event_action": "resolve"}, "invalid_alert", "dedup_key: missing"),
        ("/api/v1/cloudevents", {"specversion": "1.0", "id": "1"}, "invalid_alert", "source: missing"),
        ("/api/v1/alerts", {"stormwatch": 1, "alerts": [{"labelz": {}}]}, "invalid_alert", "unknown field"),
        ("/api/v1/alerts", [PROM_ALERT], "invalid_alert", "expected a native document object"),
    ],
)
def test_invalid_documents_are_400_with_reason(
    gateway: Callable[..., Harness], path: str, doc: Any, reason: str, detail: str
) -> None:
    reply = gateway().post_json(path, doc)
    assert reply.status == 400, reply.body
    body = reply.json()
    assert body["reason"] == reason
    assert detail in body["detail"]
    assert body["rejected"] >= 1
    assert body["errors"][0] == f"{reason}: {body['detail']}"


def test_400_matches_the_pipelines_dead_letter(gateway: Callable[..., Harness]) -> None:
    """The answer says exactly what ingest would have written to the DLQ."""
    doc = [{"labels": {"a": "b"}, "startsAt": "yesterday"}]
    reply = gateway().post_json("/api/v2/alerts", doc)
    dead = parse_record(
        orjson.dumps(doc),
        topic="t",
        partition=0,
        offset=0,
        timestamp_ms=0,
        headers={FORMAT_HEADER: "prometheus"},
        limits=DEFAULT_LIMITS,
    ).dead_letters[0]
    assert (reply.json()["reason"], reply.json()["detail"]) == (dead.reason.value, dead.detail)


def test_not_json_is_400(gateway: Callable[..., Harness]) -> None:
    reply = gateway().request("POST", "/api/v2/alerts", data=b"{nope")
    assert reply.status == 400
    assert reply.json()["reason"] == "not_json"


def test_empty_body_is_400(gateway: Callable[..., Harness]) -> None:
    reply = gateway().request("POST", "/api/v1/webhook/alertmanager", data=b"")
    assert reply.status == 400
    assert reply.json()["reason"] == "empty"


def test_pagerduty_errors_use_pagerdutys_shape(gateway: Callable[..., Harness]) -> None:
    reply = gateway().post_json("/v2/enqueue", {"event_action": "explode", "payload": {}})
    assert reply.status == 400
    body = reply.json()
    assert body["status"] == "invalid event"
    assert body["message"] == "Event object is invalid"
    assert isinstance(body["errors"], list) and all(isinstance(e, str) for e in body["errors"])


def test_pagerduty_takes_one_event_per_request(gateway: Callable[..., Harness]) -> None:
    reply = gateway().post_json("/v2/enqueue", [PD_TRIGGER, PD_TRIGGER])
    assert reply.status == 400
    assert "one event" in reply.json()["detail"]


def test_error_list_is_capped_but_count_is_complete(gateway: Callable[..., Harness]) -> None:
    reply = gateway().post_json("/api/v2/alerts", [{"labels": {}}] * (MAX_ERRORS_SHOWN + 5))
    body = reply.json()
    assert body["rejected"] == MAX_ERRORS_SHOWN + 5
    assert len(body["errors"]) == MAX_ERRORS_SHOWN


def test_rejections_are_counted(gateway: Callable[..., Harness]) -> None:
    before = metric("stormwatch_gateway_alerts_rejected_total", format="prometheus", reason="missing_labels")
    requests_before = metric("stormwatch_gateway_requests_total", endpoint="prometheus", status="400")
    gateway().post_json("/api/v2/alerts", [{"labels": {}}, {"labels": {}}])
    after = metric("stormwatch_gateway_alerts_rejected_total", format="prometheus", reason="missing_labels")
    assert after - before == 2
    assert (
        metric("stormwatch_gateway_requests_total", endpoint="prometheus", status="400")
        == requests_before + 1
    )


# ---------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/api/v1/alerts", "text/xml"),
        ("/api/v1/alerts", "application/x-www-form-urlencoded"),
        ("/api/v1/cloudevents", "text/plain"),
        ("/api/v2/alerts", "application/json; charset=latin-1"),
        ("/v2/enqueue", "application/json; charset=utf-16"),
    ],
)
def test_unsupported_content_type_is_415(
    gateway: Callable[..., Harness], path: str, content_type: str
) -> None:
    reply = gateway().request(
        "POST", path, data=orjson.dumps({"x": 1}), headers={"Content-Type": content_type}
    )
    assert reply.status == 415, reply.body
    assert reply.json()["status"] == "unsupported media type"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_alertmanager_compatible_endpoints_take_any_declared_type(
    gateway: Callable[..., Harness], content_type: str | None
) -> None:
    """`curl -d` sends form-urlencoded; Alertmanager reads the body as JSON anyway, and so do we."""
    headers = {"Content-Type": content_type} if content_type else {}
    reply = gateway().request("POST", "/api/v2/alerts", data=orjson.dumps([{"labels": {}}]), headers=headers)
    assert reply.status == 400  # got as far as validation


def test_binary_cloudevent_with_non_json_data_is_415(gateway: Callable[..., Harness]) -> None:
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "/s",
        "ce-type": "t",
        "Content-Type": "text/plain",
    }
    reply = gateway().request("POST", "/api/v1/cloudevents", data=b"hello", headers=headers)
    assert reply.status == 415


# ---------------------------------------------------------------------------- Kafka unavailable


def test_valid_alerts_get_503_with_retry_after_while_kafka_is_unreachable() -> None:
    settings = make_settings()
    sink = KafkaSink(settings, retry_interval_s=0.2)
    sink.start()
    try:
        assert sink.wait_checked(10) is False
        assert "cannot reach Kafka" in sink.reason
        gw = Harness(Gateway(settings, sink))
        for path, doc in [
            ("/api/v2/alerts", [PROM_ALERT]),
            ("/v2/enqueue", PD_TRIGGER),
            ("/api/v1/alerts", {"stormwatch": 1, "labels": {"a": "b"}}),
        ]:
            reply = gw.post_json(path, doc)
            assert reply.status == 503
            assert reply.headers["Retry-After"] == str(RETRY_AFTER_S)
            assert "retry later" in reply.json()["message"]
        ready = gw.request("GET", "/-/ready")
        assert ready.status == 503
        assert b"cannot reach Kafka" in ready.body
        assert metric("stormwatch_gateway_kafka_ready") == 0
        gw.close()
    finally:
        sink.close(0)


def test_partially_valid_batch_goes_to_kafka(gateway: Callable[..., Harness]) -> None:
    """One valid alert is enough to forward the record (here: 503, since Kafka is unreachable)."""
    reply = gateway().post_json("/api/v2/alerts", [{"labels": {}}, PROM_ALERT])
    assert reply.status == 503


# ---------------------------------------------------------------------------- probes and metrics


def test_healthy_and_metrics(gateway: Callable[..., Harness]) -> None:
    gw = gateway()
    assert gw.request("GET", "/-/healthy").body == b"OK\n"
    gw.post_json("/api/v2/alerts", [{"labels": {}}])
    reply = gw.request("GET", "/metrics")
    assert reply.headers["Content-Type"].startswith("text/plain")
    text = reply.body.decode()
    for name in (
        "stormwatch_gateway_requests_total",
        "stormwatch_gateway_request_duration_seconds_bucket",
        "stormwatch_gateway_alerts_rejected_total",
    ):
        assert name in text


def test_unknown_path_and_method(gateway: Callable[..., Harness]) -> None:
    gw = gateway()
    assert gw.request("POST", "/api/v3/alerts").status == 404
    assert gw.request("PUT", "/api/v2/alerts").status == 405  # GET is the read API (503: no read model)
    assert gw.request("GET", "/api/v1/alerts").status == 405
    assert metric("stormwatch_gateway_requests_total", endpoint="unmatched", status="404") >= 1


# ---------------------------------------------------------------------------- pure helpers


def test_dedup_key_is_deterministic_and_names_the_problem() -> None:
    key = dedup_key_for(PD_TRIGGER)
    assert key == dedup_key_for({**PD_TRIGGER, "routing_key": "other"})
    changed_details = {**PD_TRIGGER, "payload": {**PD_TRIGGER["payload"], "custom_details": {"x": 1}}}
    changed_severity = {**PD_TRIGGER, "payload": {**PD_TRIGGER["payload"], "severity": "info"}}
    assert dedup_key_for(changed_details) == key
    assert dedup_key_for(changed_severity) == key
    assert dedup_key_for({**PD_TRIGGER, "payload": {**PD_TRIGGER["payload"], "source": "db-2"}}) != key
    assert len(key) == 16 and int(key, 16) >= 0


def test_binary_cloudevent_becomes_structured() -> None:
    headers = {
        "Ce-Specversion": "1.0",
        "ce-id": "42",
        "ce-source": "/monitor%20one",
        "ce-type": "alert",
        "ce-time": "2025-01-01T00:00:00Z",
        "ce-myext": "v%C3%A9",
        "Content-Type": "application/json",
    }
    event = orjson.loads(binary_cloudevent(headers, "application/json", b'{"labels": {"a": "b"}}'))
    assert event == {
        "specversion": "1.0",
        "id": "42",
        "source": "/monitor one",
        "type": "alert",
        "time": "2025-01-01T00:00:00Z",
        "myext": "vé",
        "datacontenttype": "application/json",
        "data": {"labels": {"a": "b"}},
    }


def test_binary_cloudevent_keeps_bad_data_for_the_adapter() -> None:
    event = orjson.loads(binary_cloudevent({"ce-specversion": "1.0"}, None, b"{bad"))
    assert base64.b64decode(event["data_base64"]) == b"{bad"
    assert "datacontenttype" not in event


def test_record_key_is_the_fingerprint_of_a_single_alert() -> None:
    def parse(doc: Any) -> Any:
        return parse_record_checked(
            orjson.dumps(doc),
            topic="t",
            partition=0,
            offset=0,
            timestamp_ms=0,
            headers={FORMAT_HEADER: "prometheus"},
        )

    one = parse([PROM_ALERT, PROM_ALERT])
    assert record_key(one) == one.alerts[0]["fingerprint"].encode()
    assert record_key(parse([PROM_ALERT, {"labels": {"other": "x"}}])) is None


# ---------------------------------------------------------------------------- delivery reports


def test_a_delivery_report_proves_a_write_only_with_an_offset() -> None:
    assert delivery_failure(None, Message(topic="t", partition=1, offset=42)) is None
    # librdkafka's implicit acknowledgement: no error, no offset (-1001 reads as None).
    assert delivery_failure(None, Message(topic="t", partition=1, offset=-1001)) == UNCONFIRMED_DELIVERY
    assert delivery_failure(None, Message(topic="t", partition=1)) == UNCONFIRMED_DELIVERY
    err = KafkaError(KafkaError._MSG_TIMED_OUT, "Local: Message timed out")
    assert delivery_failure(err, Message(topic="t", partition=1, offset=42)) == "Local: Message timed out"


class _ReportingProducer:
    """Stands in for librdkafka: reports each record at once with the given offset, no error."""

    def __init__(self, offset: int | None) -> None:
        self.offset = offset

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.offset is None:
            kwargs["on_delivery"](None, Message(topic=topic, partition=0))
        else:
            kwargs["on_delivery"](None, Message(topic=topic, partition=0, offset=self.offset))


@pytest.mark.parametrize("offset", [-1001, None])
def test_the_gateway_answers_503_for_a_record_kafka_reported_without_an_offset(offset: int | None) -> None:
    """A 2xx promises the alert is in the raw topic; an implicit acknowledgement promises nothing
    (CI once saw such an alert missing), so its sender gets 503 and sends it again."""
    sink = KafkaSink(make_settings())
    try:
        sink._set_ready(True, "")
        real, sink._producer = sink._producer, _ReportingProducer(offset)  # type: ignore[assignment]
        with pytest.raises(KafkaUnavailable, match="without an offset"):
            asyncio.run(sink.send(b"{}", key=None, headers=[], timestamp_ms=0))
        assert sink.ready  # one unconfirmed record says nothing about Kafka's health
        sink._producer = _ReportingProducer(7)  # type: ignore[assignment]
        assert asyncio.run(sink.send(b"{}", key=None, headers=[], timestamp_ms=0)) is None
    finally:
        sink._producer = real
        sink.close(0)
