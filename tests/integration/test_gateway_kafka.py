"""The gateway against a real broker: every endpoint's records read back from the raw topic.

Each accepted request must be in the raw topic, with the ``stormwatch-format`` header, before the
2xx arrives; the consumed record must parse (with the ingest stage's own call) into the alerts the
gateway validated. While Kafka cannot take the write, the answer is 503 with Retry-After, never 2xx.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest
from confluent_kafka import Message
from prometheus_client import REGISTRY

from stormwatch.config import Settings, load_settings
from stormwatch.connguard import RETRY_AFTER_S
from stormwatch.gateway import GatewayServer
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.topics import create_topics, delete_topics
from stormwatch.kafkasink import KafkaSink
from stormwatch.schemas.adapters import ENCODING_HEADER, FORMAT_HEADER, NOTES_V1
from stormwatch.schemas.fingerprint import key_fingerprint
from stormwatch.streams.core.batching import RawRecord
from tests.kit.ports import free_port
from tests.kit.records import read_raw, record_headers, reparse
from tests.kit.topics import all_topics, topic_names

pytestmark = pytest.mark.kafka

TOKEN = "integration-token-0123"


def topic_settings(bootstrap: str, **gateway: Any) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap},
        topics=topic_names(uuid.uuid4().hex[:10], prefix="test.gateway", partitions=3),
        gateway={"port": 0, "delivery_timeout_ms": 3000, **gateway},
    )


@contextlib.contextmanager
def created(settings: Settings) -> Iterator[Settings]:
    create_topics(settings, timeout_s=30)
    try:
        yield settings
    finally:
        with contextlib.suppress(Exception):
            delete_topics(settings, all_topics(settings), timeout_s=15)


@pytest.fixture(scope="module")
def module_settings(kafka_bootstrap: str) -> Iterator[Settings]:
    with created(topic_settings(kafka_bootstrap)) as settings:
        yield settings


Session = Callable[[aiohttp.ClientSession, str], Awaitable[Any]]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, sink: KafkaSink | None = None, *, wait_ready: bool = True
) -> AsyncIterator[tuple[GatewayServer, aiohttp.ClientSession]]:
    server = GatewayServer(settings, sink)
    await server.start()
    try:
        if wait_ready:
            ready = await asyncio.get_running_loop().run_in_executor(None, server.sink.wait_ready, 15.0)
            assert ready, server.sink.reason
        async with aiohttp.ClientSession(base_url=server.url) as session:
            yield server, session
    finally:
        await server.stop()


async def post(
    session: aiohttp.ClientSession, path: str, doc: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    body = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    async with session.post(
        path, data=body, headers={"Content-Type": "application/json", **(headers or {})}
    ) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def records_with(settings: Settings, marker: str) -> list[Message]:
    return [m for m in read_topic(settings, settings.topics.raw) if marker.encode() in (m.value() or b"")]


def rows(record: RawRecord) -> list[list[Any]]:
    return [[*note.to_wire(), note.format] for note in record.alerts]


def format_of(msg: Message) -> str:
    return record_headers(msg)[FORMAT_HEADER].decode()


def iso(delta_s: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_s)).isoformat().replace("+00:00", "Z")


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- the endpoints


def test_every_endpoint_writes_its_format(module_settings: Settings) -> None:
    run = uuid.uuid4().hex
    labels = {"alertname": "DiskFull", "run": run}
    requests: list[tuple[str, Any, dict[str, str], int, str]] = [
        (
            "/api/v2/alerts",
            [
                {"labels": {**labels, "instance": "a"}, "startsAt": iso(-60), "endsAt": iso(180)},
                {"labels": {**labels, "instance": "b"}, "startsAt": iso(-60), "endsAt": iso(-1)},
            ],
            {},
            200,
            "prometheus",
        ),
        (
            "/api/v1/webhook/alertmanager",
            {
                "version": "4",
                "groupKey": '{}:{alertname="DiskFull"}',
                "status": "firing",
                "receiver": "stormwatch",
                "groupLabels": {"alertname": "DiskFull"},
                "commonLabels": labels,
                "commonAnnotations": {},
                "externalURL": "http://am:9093",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {**labels, "instance": "c"},
                        "annotations": {"summary": "disk full"},
                        "startsAt": iso(-30),
                        "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "http://prom/graph",
                        "fingerprint": "0123456789abcdef",
                    }
                ],
            },
            {},
            200,
            "alertmanager",
        ),
        (
            "/v2/enqueue",
            {
                "routing_key": "R" * 32,
                "event_action": "trigger",
                "dedup_key": f"disk-{run}",
                "payload": {"summary": f"disk full {run}", "source": "db-1", "severity": "critical"},
            },
            {},
            202,
            "pagerduty",
        ),
        (
            "/api/v1/cloudevents",
            {
                "specversion": "1.0",
                "id": run,
                "source": "/monitors/disk",
                "type": "io.stormwatch.alert",
                "datacontenttype": "application/json",
                "data": {"labels": {**labels, "instance": "d"}, "severity": "error"},
            },
            {"Content-Type": "application/cloudevents+json"},
            200,
            "cloudevents",
        ),
        (
            "/api/v1/alerts",
            {"stormwatch": 1, "source": "cron", "alerts": [{"labels": {**labels, "instance": "e"}}]},
            {},
            200,
            "native",
        ),
    ]

    async def scenario() -> list[tuple[int, bytes]]:
        async with running(module_settings) as (_, session):
            out = []
            for path, doc, headers, _, _ in requests:
                status, _, body = await post(session, path, doc, headers)
                out.append((status, body))
            return out

    answers = asyncio.run(scenario())
    for (path, _, _, expected, _), (status, body) in zip(requests, answers, strict=True):
        assert status == expected, (path, body)
    assert answers[0][1] == b""  # Alertmanager's empty 200
    assert orjson.loads(answers[2][1]) == {
        "status": "success",
        "message": "Event processed",
        "dedup_key": f"disk-{run}",
    }
    assert orjson.loads(answers[4][1]) == {"status": "success", "accepted": 1, "rejected": 0, "errors": []}

    records = records_with(module_settings, run)
    by_format = {format_of(m): m for m in records}
    assert len(records) == 5 and sorted(by_format) == sorted(r[4] for r in requests)
    for path, doc, _, _, fmt in requests:
        msg = by_format[fmt]
        assert record_headers(msg)[ENCODING_HEADER] == NOTES_V1, path  # parsed once, by the gateway
        result = reparse(msg)
        assert result.dead_letters == [] and result.alerts, path
        assert {note.format.value for note in result.alerts if note.format is not None} == {fmt}
        # the notes ingest reads are those the adapters give the request body
        as_sent = read_raw(orjson.dumps(doc), {FORMAT_HEADER: fmt.encode()}, msg.timestamp()[1])
        assert rows(result) == rows(as_sent), path
    prom = reparse(by_format["prometheus"])
    assert [a.firing for a in prom.alerts] == [True, False]
    assert by_format["prometheus"].key() is None  # two alert identities: no key
    pd = reparse(by_format["pagerduty"]).alerts[0]
    assert by_format["pagerduty"].key() == pd.fingerprint.encode()
    assert pd.fingerprint == key_fingerprint("pagerduty", f"disk-{run}")


def test_partially_valid_batch_is_forwarded_whole(module_settings: Settings) -> None:
    run = uuid.uuid4().hex
    doc = {
        "stormwatch": 1,
        "alerts": [
            {"labels": {"alertname": "Ok", "run": run}},
            {"labels": {"alertname": "Bad"}, "colour": "red"},
        ],
    }
    accepted = metric("stormwatch_gateway_alerts_accepted_total", format="native")
    rejected = metric("stormwatch_gateway_alerts_rejected_total", format="native", reason="invalid_alert")

    async def scenario() -> tuple[int, bytes]:
        async with running(module_settings) as (_, session):
            status, _, body = await post(session, "/api/v1/alerts", doc)
            return status, body

    status, body = asyncio.run(scenario())
    assert status == 200
    answer = orjson.loads(body)
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    assert answer["errors"][0].startswith("invalid_alert: alerts[1]")
    [msg] = records_with(module_settings, run)
    assert msg.value() == orjson.dumps(doc) and ENCODING_HEADER not in record_headers(msg)  # as it came
    result = reparse(msg)
    assert len(result.alerts) == 1
    assert [d.alert_index for d in result.dead_letters] == [1]  # ingest dead-letters the bad one
    assert metric("stormwatch_gateway_alerts_accepted_total", format="native") == accepted + 1
    assert (
        metric("stormwatch_gateway_alerts_rejected_total", format="native", reason="invalid_alert")
        == rejected + 1
    )


def test_invalid_request_writes_nothing(module_settings: Settings) -> None:
    run = uuid.uuid4().hex

    async def scenario() -> int:
        async with running(module_settings) as (_, session):
            status, _, _ = await post(
                session, "/api/v2/alerts", [{"labels": {}, "annotations": {"run": run}}]
            )
            return status

    assert asyncio.run(scenario()) == 400
    assert records_with(module_settings, run) == []


def test_pagerduty_trigger_without_key_gets_one_that_resolves_it(module_settings: Settings) -> None:
    run = uuid.uuid4().hex
    trigger = {
        "routing_key": "R" * 32,
        "event_action": "trigger",
        "payload": {"summary": f"queue stuck {run}", "source": "mq-1", "severity": "error"},
    }

    async def scenario() -> list[dict[str, Any]]:
        async with running(module_settings) as (_, session):
            answers = []
            for _ in range(2):  # a retry of the same trigger gets the same key
                status, _, body = await post(session, "/v2/enqueue", trigger)
                assert status == 202
                answers.append(orjson.loads(body))
            resolve = {
                "routing_key": "R" * 32,
                "event_action": "resolve",
                "dedup_key": answers[0]["dedup_key"],
            }
            status, _, body = await post(session, "/v2/enqueue", {**resolve, "payload": {"summary": run}})
            assert status == 202
            answers.append(orjson.loads(body))
            return answers

    answers = asyncio.run(scenario())
    key = answers[0]["dedup_key"]
    assert key and all(
        a == {"status": "success", "message": "Event processed", "dedup_key": key} for a in answers
    )
    alerts = [a for m in records_with(module_settings, run) for a in reparse(m).alerts]
    assert [a.firing for a in alerts] == [True, True, False]
    assert {a.fingerprint for a in alerts} == {key_fingerprint("pagerduty", key)}
    assert all(a.keyed for a in alerts)


def test_cloudevents_binary_mode_and_batch(module_settings: Settings) -> None:
    run = uuid.uuid4().hex
    binary_headers = {
        "ce-specversion": "1.0",
        "ce-id": f"b-{run}",
        "ce-source": "/monitors/binary%20mode",
        "ce-type": "io.stormwatch.alert",
        "ce-time": iso(-5),
        "Content-Type": "application/json",
    }
    data = {"labels": {"alertname": "Binary", "run": run}}
    batch = [
        {
            "specversion": "1.0",
            "id": f"{run}-{i}",
            "source": "/batch",
            "type": "t",
            "data": {"labels": {"i": str(i), "run": run}},
        }
        for i in range(3)
    ]

    async def scenario() -> list[int]:
        async with running(module_settings) as (_, session):
            first, _, _ = await post(session, "/api/v1/cloudevents", data, binary_headers)
            second, _, _ = await post(
                session, "/api/v1/cloudevents", batch, {"Content-Type": "application/cloudevents-batch+json"}
            )
            return [first, second]

    assert asyncio.run(scenario()) == [200, 200]
    records = records_with(module_settings, run)
    assert {format_of(m) for m in records} == {"cloudevents"}
    binary = next(m for m in records if b'"Binary"' in (m.value() or b""))
    [alert] = reparse(binary).alerts
    assert alert.source == "/monitors/binary mode" and alert.labels == data["labels"]
    assert sum(len(reparse(m).alerts) for m in records) == 4


def test_bearer_token(module_settings: Settings) -> None:
    settings = module_settings.model_copy(
        update={"gateway": module_settings.gateway.model_copy(update={"bearer_token": TOKEN})}
    )
    run = uuid.uuid4().hex
    doc = [{"labels": {"alertname": "Auth", "run": run}}]

    async def scenario() -> list[int]:
        async with running(settings) as (_, session):
            denied, headers, _ = await post(session, "/api/v2/alerts", doc, {"Authorization": "Bearer nope"})
            assert headers["WWW-Authenticate"].startswith("Bearer")
            allowed, _, _ = await post(session, "/api/v2/alerts", doc, {"Authorization": f"Bearer {TOKEN}"})
            return [denied, allowed]

    assert asyncio.run(scenario()) == [401, 200]
    assert len(records_with(module_settings, run)) == 1


# ---------------------------------------------------------------------------- Kafka not there


def test_unreachable_kafka_answers_503_and_never_2xx() -> None:
    """Nothing listens at the bootstrap address: every alert request is refused with 503."""
    settings = topic_settings(f"127.0.0.1:{free_port()}", delivery_timeout_ms=1000)
    docs = {
        "/api/v2/alerts": [{"labels": {"alertname": "X"}}],
        "/api/v1/webhook/alertmanager": {
            "version": "4",
            "status": "firing",
            "alerts": [{"labels": {"a": "b"}}],
        },
        "/v2/enqueue": {
            "event_action": "trigger",
            "payload": {"summary": "s", "source": "h", "severity": "info"},
        },
        "/api/v1/cloudevents": {
            "specversion": "1.0",
            "id": "1",
            "source": "/s",
            "type": "t",
            "data": {"labels": {"a": "b"}},
        },
        "/api/v1/alerts": {"stormwatch": 1, "labels": {"a": "b"}},
    }

    async def scenario() -> tuple[list[tuple[int, str | None]], int, int, float]:
        async with running(settings, wait_ready=False) as (_, session):
            statuses: list[tuple[int, str | None]] = []
            slowest = 0.0
            deadline = time.monotonic() + 4.0
            while time.monotonic() < deadline:  # before, during and after the first health check
                for path, doc in docs.items():
                    started = time.monotonic()
                    status, headers, _ = await post(session, path, doc)
                    slowest = max(slowest, time.monotonic() - started)
                    statuses.append((status, headers.get("Retry-After")))
                await asyncio.sleep(0.1)
            async with session.get("/-/ready") as ready, session.get("/-/healthy") as healthy:
                return statuses, ready.status, healthy.status, slowest

    statuses, ready, healthy, slowest = asyncio.run(scenario())
    assert statuses and all(s == (503, str(RETRY_AFTER_S)) for s in statuses), set(statuses)
    assert (ready, healthy) == (503, 200)
    assert slowest < 1.0, f"a request waited {slowest:.2f}s although Kafka was known to be down"


def test_missing_raw_topic_gives_503_then_recovers(kafka_bootstrap: str) -> None:
    """The raw topic deleted under a running gateway: writes fail (503) until it is back."""
    settings = topic_settings(kafka_bootstrap, delivery_timeout_ms=2000)
    run = uuid.uuid4().hex
    doc = [{"labels": {"alertname": "Recover", "run": run}}]
    raw_only = [settings.topics.raw]

    async def until(session: aiohttp.ClientSession, want: int, timeout_s: float) -> list[int]:
        seen: list[int] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, headers, _ = await post(session, "/api/v2/alerts", doc)
            seen.append(status)
            if status == 503:
                assert headers["Retry-After"] == str(RETRY_AFTER_S)
            if status == want:
                return seen
            await asyncio.sleep(0.2)
        raise AssertionError(f"no {want} within {timeout_s}s; got {seen}")

    async def scenario() -> tuple[list[int], list[int], list[int]]:
        sink = KafkaSink(settings, check_interval_s=1.0, retry_interval_s=0.5)
        async with running(settings, sink) as (_, session):
            before = await until(session, 200, 10)
            await asyncio.to_thread(delete_topics, settings, raw_only, timeout_s=15)
            down = await until(session, 503, 20)
            async with session.get("/-/ready") as ready:
                assert ready.status == 503
            await asyncio.to_thread(recreate, settings)
            after = await until(session, 200, 30)
            return before, down, after

    try:
        create_topics(settings, timeout_s=30)
        before, down, after = asyncio.run(scenario())
        assert before == [200]
        assert down[-1] == 503  # a write just after the delete request may still land, and go with it
        assert set(after[:-1]) <= {503} and after[-1] == 200
        # The 2xx answers before the deletion went with the topic; the one after it must be there.
        assert len(records_with(settings, run)) == 1
    finally:
        with contextlib.suppress(Exception):
            delete_topics(settings, all_topics(settings), timeout_s=15)


def recreate(settings: Settings) -> None:
    """create_topics until the deleted raw topic can be created again (deletion is asynchronous)."""
    deadline = time.monotonic() + 20
    while True:
        report = create_topics(settings, timeout_s=15)
        if settings.topics.raw in report.created:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"raw topic not re-created: {report}")
        time.sleep(0.5)
