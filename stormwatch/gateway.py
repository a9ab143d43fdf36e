"""The HTTP gateway: monitoring systems POST alerts in the formats they already speak.

Each request is validated with the same adapters ingest uses (``schemas.adapters.parse_record_checked``:
the same checks and dead letters as ``parse_record`` without building pydantic models, which cost
the gateway about 10 µs of CPU per alert; the format forced by the endpoint) and written to the raw topic as one record with the
``stormwatch-format`` header. The answer is 2xx only after Kafka acknowledged the write (idempotent
producer, acks=all); while Kafka is unreachable the gateway answers 503 with ``Retry-After``, so a
sender keeps its alerts and retries. docs/gateway.md describes the endpoints and status codes.

It also answers the read and silence half of Alertmanager's API v2 (GET /api/v2/alerts,
/alerts/groups, /silences, /status; POST /silences, DELETE /silence/{id}) from a read model that
follows the audit log, the correlator's state changelog and the silences topic
(stormwatch.readmodel); silences are created and expired with the CLI's own commands
(stormwatch.commands.silences). docs/alertmanager-api.md describes it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hmac
import ipaddress
import logging
import ssl
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import unquote

import orjson
import xxhash
from aiohttp import web
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from stormwatch import __version__
from stormwatch.commands.silences import new_silence, publish_silence_add, publish_silence_expire
from stormwatch.config import GatewaySettings, Settings
from stormwatch.console.web import Console
from stormwatch.errors import UserError
from stormwatch.kafka.client import make_producer, unreachable_error
from stormwatch.loaders import load_rules
from stormwatch.metrics import process_wide
from stormwatch.readmodel import alertmanager as am
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.readmodel.model import DEFAULT_RESOLVE_TIMEOUT_MS, ReadModel, SilenceView
from stormwatch.schemas.adapters import FORMAT_HEADER, CheckedResult, ParseLimits, parse_record_checked
from stormwatch.schemas.adapters.base import show
from stormwatch.schemas.alert import InputFormat
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.fingerprint import canonical_labels
from stormwatch.schemas.silence import Silence

log = logging.getLogger("stormwatch.gateway")

T = TypeVar("T")

RETRY_AFTER_S = 5
"""Seconds a sender is asked to wait after a 503 (Kafka unreachable or too slow)."""

MAX_ERRORS_SHOWN = 20
"""A response lists at most this many rejected alerts; the count is always complete."""

PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
"""The severities PagerDuty's Events API v2 accepts; any other is refused with 400, as PagerDuty does."""

_READ_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_REALM = 'Bearer realm="stormwatch"'

SILENCE_APPLY_WAIT_S = 10.0
"""POST /api/v2/silences and DELETE /api/v2/silence/{id} answer once the read model shows the
change (the correlator applied the command), or after this long (the command is in Kafka anyway)."""

API_ACTOR = "alertmanager-api"
"""The operator name of a silence expired through DELETE /api/v2/silence/{id} (it carries none)."""
_BUSY_TEXT = b"too many connections (gateway.max_connections)\n"
# The answer to a connection over gateway.max_connections: written before the request is read.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (RETRY_AFTER_S, len(_BUSY_TEXT), _BUSY_TEXT)
)
_JSON_MEDIA = ("application/json", "text/json")
_UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")
# Delivery errors that mean "Kafka is not there right now" rather than "this record is bad".
_OUTAGE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
    }
)
_TOO_LARGE_CODES = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


# ---------------------------------------------------------------------------- metrics


class GatewayMetrics:
    """The gateway's Prometheus metrics (one process-wide set: metric names are global)."""

    def __init__(self) -> None:
        self.requests = Counter(
            "stormwatch_gateway_requests_total", "HTTP requests answered", ["endpoint", "status"]
        )
        self.request_seconds = Histogram(
            "stormwatch_gateway_request_duration_seconds",
            "Time from request to response, including the wait for Kafka's acknowledgement",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.alerts_accepted = Counter(
            "stormwatch_gateway_alerts_accepted_total",
            "Valid alerts written to the raw topic (acknowledged by Kafka)",
            ["format"],
        )
        self.alerts_rejected = Counter(
            "stormwatch_gateway_alerts_rejected_total",
            "Invalid alerts: refused with 400, or forwarded beside valid ones for the DLQ",
            ["format", "reason"],
        )
        self.kafka_ready = Gauge(
            "stormwatch_gateway_kafka_ready", "1 when the broker answers and the raw topic exists"
        )
        self.connections_open = Gauge(
            "stormwatch_gateway_connections_open",
            "Client connections open now (at most gateway.max_connections)",
        )
        self.connections_dropped = Counter(
            "stormwatch_gateway_connections_dropped_total",
            "Connections the gateway closed: read_timeout (a request not received within "
            "gateway.request_read_timeout_ms) or too_many_connections (refused with 503)",
            ["reason"],
        )


gateway_metrics = process_wide(GatewayMetrics)
"""The gateway's metrics, one set per process."""


# ---------------------------------------------------------------------------- Kafka side


class DeliveryError(Exception):
    """The record was not written; ``status`` is the HTTP status to answer."""

    status = 503


class KafkaUnavailable(DeliveryError):
    """Kafka is unreachable, too slow, or the raw topic is missing: the sender should retry."""


class RecordTooLarge(DeliveryError):
    """Kafka refused the record for its size (the topic's max.message.bytes)."""

    status = 413


class KafkaSink:
    """An idempotent producer (acks=all) whose acknowledgements resolve asyncio futures.

    A background thread polls the producer (serving delivery callbacks, which it hands to the
    event loop with ``call_soon_threadsafe``); another checks, with a metadata request for the raw
    topic, that a broker answers and the topic exists. While that check fails, ``send`` refuses at
    once instead of queueing records Kafka cannot take; it passes again by itself when Kafka returns.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        check_interval_s: float = 5.0,
        retry_interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.topic = settings.topics.raw
        self.delivery_timeout_s = settings.gateway.delivery_timeout_ms / 1000
        self.check_interval_s = check_interval_s
        self.retry_interval_s = retry_interval_s
        self._producer_lock = threading.Lock()
        self._fatal: KafkaError | None = None
        self._ready = False
        self._reason = f"no answer yet from Kafka at {settings.kafka.bootstrap_servers}"
        self._client_error: KafkaError | None = None
        self._checked = threading.Event()
        self._ready_event = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        timeout_ms = self.settings.gateway.delivery_timeout_ms
        overrides: dict[str, Any] = {
            # librdkafka fails a record it could not write in time: the request then gets a 503.
            "message.timeout.ms": timeout_ms,
            "linger.ms": 2,
            # A metadata request must never create the raw topic with broker defaults.
            "allow.auto.create.topics": False,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
        }
        return make_producer(self.settings, **overrides)

    # -- lifecycle

    def start(self) -> None:
        for name, target in (("gateway-poll", self._poll_loop), ("gateway-health", self._health_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout_s: float = 10.0) -> None:
        """Wait up to ``timeout_s`` for records in flight, then stop the threads."""
        with self._producer_lock:
            producer = self._producer
        left = producer.flush(timeout_s)
        if left:
            log.warning("%d records were still unacknowledged at shutdown (their senders got 503)", left)
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(5)
        self._threads.clear()

    def wait_checked(self, timeout_s: float) -> bool:
        """Block until the first health check finished; True when Kafka is ready."""
        self._checked.wait(timeout_s)
        return self._ready

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until Kafka is ready (a topic just created takes a moment to appear) or timeout."""
        return self._ready_event.wait(timeout_s)

    @property
    def ready(self) -> bool:
        return self._ready

    @property
    def reason(self) -> str:
        """Why the sink is not ready ("" when it is)."""
        return "" if self._ready else self._reason

    # -- background threads

    def _on_error(self, err: KafkaError) -> None:
        if err.code() != KafkaError._ALL_BROKERS_DOWN or self._client_error is None:
            self._client_error = err  # the explanation (auth failed, refused), not the summary
        if err.fatal():
            self._fatal = err
        elif err.code() == KafkaError._ALL_BROKERS_DOWN and self._ready:
            # Often a blip librdkafka recovers from at once; the health check decides, right now.
            self._wake.set()
        log.debug("kafka client error: %s", err)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            with self._producer_lock:
                producer = self._producer
            producer.poll(0.1)
            if self._fatal is not None:
                self._replace_producer()

    def _replace_producer(self) -> None:
        """After a fatal idempotence error the producer is unusable; records in it fail (503)."""
        err, self._fatal = self._fatal, None
        log.error("Kafka producer failed fatally (%s); starting a new one", err)
        with self._producer_lock:
            old, self._producer = self._producer, self._new_producer()
        old.purge()
        old.flush(0)

    def _health_loop(self) -> None:
        while not self._stop.is_set():
            ok, reason = self._check()
            if self._stop.is_set():
                break
            if ok and not self._ready:
                log.info("Kafka is ready: raw topic %s reachable", self.topic)
            elif not ok and self._ready:
                log.warning("Kafka not ready, answering 503: %s", reason)
            elif not ok and (reason != self._reason or not self._checked.is_set()):
                # At start-up a just-created topic takes a moment to appear: not yet worth a warning
                # (`stormwatch gateway` warns when Kafka is still not ready after a few seconds).
                log.info("Kafka not ready yet, answering 503: %s", reason)
            self._set_ready(ok, reason)
            self._checked.set()
            self._wake.wait(self.check_interval_s if ok else self.retry_interval_s)
            self._wake.clear()

    def _check(self) -> tuple[bool, str]:
        with self._producer_lock:
            producer = self._producer
        timeout = min(max(self.delivery_timeout_s, 1.0), 5.0)
        try:
            metadata = producer.list_topics(self.topic, timeout=timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            text = err.str() if isinstance(err, KafkaError) else str(err)
            if self._client_error is not None:
                text = self._client_error.str()
            return False, str(unreachable_error(self.settings, text))
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            detail = topic.error.str() if topic is not None and topic.error is not None else "no partitions"
            return False, (
                f"raw topic {self.topic} is not available ({detail}); "
                "create it with `stormwatch topics create`"
            )
        self._client_error = None  # connected: older client errors explain nothing any more
        return True, ""

    def _mark_unready(self, reason: str) -> None:
        """A failed write or a lost connection: refuse at once, and re-check now (then every
        retry_interval_s, as the health loop does while not ready)."""
        if self._ready:
            log.warning("Kafka not ready, answering 503: %s", reason)
            self._set_ready(False, reason)
            self._wake.set()

    def _set_ready(self, ok: bool, reason: str) -> None:
        self._ready, self._reason = ok, reason
        if ok:
            self._ready_event.set()
        else:
            self._ready_event.clear()
        gateway_metrics().kafka_ready.set(1 if ok else 0)

    # -- the write

    async def send(
        self,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        timestamp_ms: int,
    ) -> None:
        """Write one record to the raw topic; return once Kafka acknowledged it, else raise."""
        if not self._ready:
            raise KafkaUnavailable(self._reason)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KafkaError | None] = loop.create_future()
        on_delivery = functools.partial(_delivered, loop, future)
        with self._producer_lock:
            producer = self._producer
        try:
            producer.produce(
                self.topic,
                value=value,
                key=key,
                headers=headers,
                timestamp=timestamp_ms,
                on_delivery=on_delivery,
            )
        except BufferError:
            raise KafkaUnavailable("the producer queue is full (Kafka is slower than the senders)") from None
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in _TOO_LARGE_CODES:
                raise RecordTooLarge(err.str()) from None
            raise KafkaUnavailable(err.str() if isinstance(err, KafkaError) else str(exc)) from None
        try:
            # librdkafka gives up after message.timeout.ms; the extra second covers callback latency.
            err = await asyncio.wait_for(future, self.delivery_timeout_s + 1.0)
        except TimeoutError:
            self._mark_unready("no acknowledgement from Kafka in time")
            raise KafkaUnavailable(
                f"no acknowledgement from Kafka within {self.delivery_timeout_s:g}s"
            ) from None
        if err is None:
            return
        if err.code() in _TOO_LARGE_CODES:
            raise RecordTooLarge(err.str())
        if err.code() in _OUTAGE_CODES:
            self._mark_unready(f"delivery failed: {err.str()}")
        raise KafkaUnavailable(f"Kafka did not accept the record: {err.str()}")


def _delivered(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[KafkaError | None],
    err: KafkaError | None,
    msg: Message,
) -> None:
    """Runs on the poll thread: hand the outcome to the event loop."""
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this answer any more
        loop.call_soon_threadsafe(_settle, future, err)


def _settle(future: asyncio.Future[KafkaError | None], err: KafkaError | None) -> None:
    if not future.done():  # the request may have timed out meanwhile
        future.set_result(err)


# ---------------------------------------------------------------------------- requests


class HttpError(Exception):
    """A request refused before it reaches Kafka; ``body`` is the JSON answer."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        label: str,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.body: dict[str, Any] = {"status": label, "message": message, **(extra or {})}


@dataclass(frozen=True)
class Prepared:
    """What one request will write: the record value, and what the adapters made of it."""

    value: bytes
    result: CheckedResult
    dedup_key: str | None = None


@dataclass(frozen=True)
class Endpoint:
    """One alert-receiving route: its format, its content-type policy and its answers."""

    name: str
    path: str
    format: InputFormat
    strict_json: bool = False  # 415 unless the body is declared as JSON (or not declared)
    accepted_status: int = 200
    invalid_label: str = "invalid"
    invalid_message: str = "no valid alert in the request"


PROMETHEUS = Endpoint("prometheus", "/api/v2/alerts", InputFormat.PROMETHEUS)
ALERTMANAGER = Endpoint("alertmanager", "/api/v1/webhook/alertmanager", InputFormat.ALERTMANAGER)
PAGERDUTY = Endpoint(
    "pagerduty",
    "/v2/enqueue",
    InputFormat.PAGERDUTY,
    accepted_status=202,
    invalid_label="invalid event",
    invalid_message="Event object is invalid",
)
CLOUDEVENTS = Endpoint("cloudevents", "/api/v1/cloudevents", InputFormat.CLOUDEVENTS)
NATIVE = Endpoint("native", "/api/v1/alerts", InputFormat.NATIVE, strict_json=True)
ENDPOINTS = (PROMETHEUS, ALERTMANAGER, PAGERDUTY, CLOUDEVENTS, NATIVE)


def _media_type(request: web.Request) -> tuple[str | None, str | None]:
    """(media type, charset) of the request, lower-case; (None, None) when no Content-Type."""
    if "Content-Type" not in request.headers:
        return None, None
    return request.content_type.lower(), (request.charset or "").lower() or None


def _is_json_media(media: str) -> bool:
    return media in _JSON_MEDIA or media.endswith("+json")


def _check_charset(charset: str | None) -> None:
    if charset is not None and charset not in _UTF8_CHARSETS:
        raise HttpError(
            415,
            f"charset {charset} is not supported; send JSON as UTF-8",
            label="unsupported media type",
        )


def dedup_key_for(event: Mapping[str, Any]) -> str:
    """The dedup_key the gateway gives a PagerDuty trigger that has none.

    XXH3-64 (hex) of the canonical JSON of the payload fields that name the problem: ``summary``,
    ``source``, ``component``, ``group`` and ``class`` (those that are non-empty strings). The same
    event sent twice gets the same key, so a retry after a timeout updates the same alert, and the
    sender can resolve it with the key from the answer.
    """
    payload = event.get("payload")
    fields: dict[str, str] = {}
    if isinstance(payload, Mapping):
        for name in ("summary", "source", "component", "group", "class"):
            value = payload.get(name)
            if isinstance(value, str) and value:
                fields[name] = value
    return xxhash.xxh3_64_hexdigest(canonical_labels(fields))


def binary_cloudevent(headers: Mapping[str, str], media: str | None, body: bytes) -> bytes:
    """A CloudEvent in HTTP binary mode (attributes in ce-* headers) as a structured JSON event.

    The raw topic holds self-contained records, so the attributes move into the JSON; data that is
    not valid JSON travels as ``data_base64`` and the adapter reports exactly what is wrong with it.
    """
    event: dict[str, Any] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower.startswith("ce-") and len(lower) > 3:
            event[lower[3:]] = unquote(value)
    if media is not None:
        event["datacontenttype"] = media
    try:
        # A leading byte order mark is skipped, as the adapters skip it on a whole record.
        event["data"] = orjson.loads(body[len(_BOM) :] if body.startswith(_BOM) else body)
    except orjson.JSONDecodeError:
        event["data_base64"] = base64.b64encode(body).decode("ascii")
    return orjson.dumps(event)


def record_key(result: CheckedResult) -> bytes | None:
    """The record key: the alert's fingerprint when the record holds one alert identity.

    A batch of different alerts has no better key than none (spread over the partitions); the
    pipeline orders by event time, not by partition.
    """
    fingerprints = {alert["fingerprint"] for alert in result.alerts}
    return fingerprints.pop().encode() if len(fingerprints) == 1 else None


def _describe(dead: DeadLetter) -> str:
    return f"{dead.reason.value}: {dead.detail}"


class Gateway:
    """The aiohttp application: routes, auth, limits, validation and the write to Kafka."""

    def __init__(
        self,
        settings: Settings,
        sink: KafkaSink,
        metrics: GatewayMetrics | None = None,
        readmodel: ReadModelFollower | None = None,
    ) -> None:
        self.settings = settings
        self.config: GatewaySettings = settings.gateway
        self.sink = sink
        self.metrics = metrics or gateway_metrics()
        self.readmodel = readmodel
        self.started_ms = int(time.time() * 1000)
        self.limits = ParseLimits.from_settings(settings.ingest)
        token = self.config.bearer_token
        self._token = token.encode() if token is not None else None
        self.connections = ConnectionGuard(
            self.config.max_connections, self.config.request_read_timeout_ms / 1000, self.metrics
        )
        # Routes with a request body: the read deadline runs until the body is read.
        self._ingest_routes: set[str] = {e.name for e in ENDPOINTS} | {"am_silences_post"}
        self.app = web.Application(middlewares=[self._observe], client_max_size=self.config.max_body_bytes)
        for endpoint in ENDPOINTS:
            self.app.router.add_post(
                endpoint.path, functools.partial(self._ingest, endpoint), name=endpoint.name
            )
        # Alertmanager API v2, read side and silences (docs/alertmanager-api.md)
        am_routes: list[tuple[str, str, str, Callable[[web.Request], Awaitable[web.Response]]]] = [
            ("GET", "/api/v2/alerts", "am_alerts", self._am_alerts),
            ("GET", "/api/v2/alerts/groups", "am_alert_groups", self._am_alert_groups),
            ("GET", "/api/v2/silences", "am_silences", self._am_silences),
            ("POST", "/api/v2/silences", "am_silences_post", self._am_post_silence),
            ("GET", "/api/v2/silence/{silence_id}", "am_silence", self._am_silence),
            ("DELETE", "/api/v2/silence/{silence_id}", "am_silence_delete", self._am_delete_silence),
            ("GET", "/api/v2/status", "am_status", self._am_status),
            ("GET", "/api/v2/receivers", "am_receivers", self._am_receivers),
        ]
        for method, path, name, handler in am_routes:
            self.app.router.add_route(method, path, functools.partial(self._am_call, handler), name=name)
        # The operator console (docs/console.md): pages on the same read model, auth and TLS
        self.console: Console | None = None
        if readmodel is not None:
            self.console = Console(settings, readmodel, body_read=self.connections.request_read)
            self.console.register(self.app)
            self._ingest_routes |= Console.BODY_ROUTES
        self.app.router.add_get("/-/healthy", self._healthy, name="healthy")
        self.app.router.add_get("/-/ready", self._ready, name="ready")
        self.app.router.add_get("/metrics", self._metrics, name="metrics")

    # -- middleware: metrics for every request

    @web.middleware
    async def _observe(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        endpoint = request.match_info.route.name or "unmatched"
        if endpoint not in self._ingest_routes:
            self.connections.request_read(request)  # no body to wait for
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            self.connections.request_read(request)  # a refused body is not read further
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.request_seconds.labels(endpoint=endpoint).observe(time.perf_counter() - started)

    # -- probes and metrics

    async def _healthy(self, request: web.Request) -> web.Response:
        return web.Response(text="OK\n")

    async def _ready(self, request: web.Request) -> web.Response:
        if self.sink.ready:
            return web.Response(text="OK\n")
        return web.Response(
            status=503, text=f"not ready: {self.sink.reason}\n", headers={"Retry-After": str(RETRY_AFTER_S)}
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    # -- alert endpoints

    async def _ingest(self, endpoint: Endpoint, request: web.Request) -> web.Response:
        try:
            self._authorize(request)
            media, charset = _media_type(request)
            _check_charset(charset)
            if endpoint.strict_json and media is not None and not _is_json_media(media):
                raise HttpError(
                    415,
                    f"Content-Type {media} is not JSON; send application/json",
                    label="unsupported media type",
                )
            body = await self._read_body(request)
            received_ms = int(time.time() * 1000)
            prepared = self._prepare(endpoint, request, media, body, received_ms)
            return await self._forward(endpoint, prepared, received_ms)
        except HttpError as exc:
            if exc.status >= 500:
                log.debug("%s: %d %s", endpoint.path, exc.status, exc.message)
            else:
                log.info("%s: refused with %d: %s", endpoint.path, exc.status, exc.message)
            return web.json_response(exc.body, status=exc.status, headers=exc.headers, dumps=_dumps)

    # -- Alertmanager API v2 on the read model (docs/alertmanager-api.md)

    async def _am_call(
        self, handler: Callable[[web.Request], Awaitable[web.Response]], request: web.Request
    ) -> web.Response:
        """Auth as for the alert endpoints; errors as Alertmanager answers them: a JSON string."""
        try:
            self._authorize(request)
            return await handler(request)
        except HttpError as exc:
            return web.json_response(exc.body, status=exc.status, headers=exc.headers, dumps=_dumps)
        except am.ApiError as exc:
            if exc.status >= 500:
                log.info("%s %s: %d %s", request.method, request.path, exc.status, exc.message)
            headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
            return web.json_response(exc.message, status=exc.status, headers=headers, dumps=_dumps)

    def _follower(self) -> ReadModelFollower:
        """The read model, once it has caught up with Kafka; else 503 saying why."""
        follower = self.readmodel
        if follower is None:
            raise am.ApiError(
                503,
                "the read API is off on this gateway (started with --no-read-api); restart it without "
                "that flag to list alerts and silences",
            )
        if not follower.ready:
            raise am.ApiError(503, f"the read model is not ready, retry in a few seconds: {follower.reason}")
        return follower

    async def _query(self, query: Callable[[ReadModel], T]) -> T:
        """Run a query on the read model off the event loop (100k alerts take a while to filter)."""
        follower = self._follower()
        return await asyncio.get_running_loop().run_in_executor(None, follower.read, query)

    async def _answer(self, query: Callable[[ReadModel], T], shape: Callable[[T], Any]) -> web.Response:
        """Query the read model (under its lock), then shape and encode the answer (outside the
        lock), both off the event loop: 100k alerts take a while to filter and to encode."""
        follower = self._follower()

        def run() -> bytes:
            return orjson.dumps(shape(follower.read(query)))

        body = await asyncio.get_running_loop().run_in_executor(None, run)
        return web.Response(body=body, content_type="application/json")

    async def _am_alerts(self, request: web.Request) -> web.Response:
        query = am.alert_query(_params(request))
        now_ms = _now_ms()
        return await self._answer(
            lambda m: m.alerts(query, now_ms), lambda page: [am.gettable_alert(a) for a in page.items]
        )

    async def _am_alert_groups(self, request: web.Request) -> web.Response:
        params = _params(request)
        query = am.alert_query(params)
        muted = am.parse_bool(params, "muted")
        now_ms = _now_ms()
        return await self._answer(
            lambda m: m.alert_groups(query, now_ms, muted=muted),
            lambda groups: [am.alert_group_json(g) for g in groups],
        )

    async def _am_receivers(self, request: web.Request) -> web.Response:
        names = await self._query(lambda m: m.receivers())
        return _json([{"name": name} for name in names])

    async def _am_silences(self, request: web.Request) -> web.Response:
        matchers, states = am.silence_filter(_params(request))
        now_ms = _now_ms()
        views = await self._query(lambda m: m.silences(now_ms, matchers=matchers, states=states))
        return _json([am.gettable_silence(v) for v in views])

    async def _silence_view(self, silence_id: str) -> SilenceView | None:
        now_ms = _now_ms()
        return await self._query(lambda m: m.silence(silence_id, now_ms))

    async def _am_silence(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["silence_id"]
        view = await self._silence_view(silence_id)
        if view is None:
            raise am.ApiError(404, _not_found(silence_id))
        return _json(am.gettable_silence(view))

    async def _am_post_silence(self, request: web.Request) -> web.Response:
        self._follower()  # before reading the body: refuse at once while not ready
        media, charset = _media_type(request)
        _check_charset(charset)
        if media is not None and not _is_json_media(media):
            raise am.ApiError(415, f"Content-Type {media} is not JSON; send the silence as application/json")
        body = await self._read_body(request)
        try:
            doc = orjson.loads(body[len(_BOM) :] if body.startswith(_BOM) else body)
        except orjson.JSONDecodeError as exc:
            raise am.ApiError(
                400, f"the body is not valid JSON ({exc}); send a postableSilence object"
            ) from None
        posted = am.posted_silence(doc)
        now = datetime.now(UTC)
        silence_id = str(uuid.uuid4())
        starts = max(posted.starts_at, now)  # a start in the past means now, as in Alertmanager
        if posted.silence_id is not None:
            existing = await self._silence_view(posted.silence_id)
            if existing is None:
                raise am.ApiError(
                    404, f"{_not_found(posted.silence_id)}; leave id out to create a new silence"
                )
            if existing.state != "expired":  # an expired one is not revived: a new one is made
                silence_id = posted.silence_id
                starts = posted.starts_at
        try:
            silence = new_silence(
                silence_id=silence_id,
                matchers=posted.matchers,
                starts=starts,
                ends=posted.ends_at,
                created_by=posted.created_by,
                comment=posted.comment,
                now=now,
            )
        except UserError as exc:
            raise am.ApiError(400, str(exc)) from None
        await self._publish(publish_silence_add, self.settings, silence, now=now)
        await self._await_silence(silence_id, lambda s: s is not None and am.same_silence(silence, s))
        log.info("silence %s set by %s through the API", silence_id, silence.created_by)
        return _json({"silenceID": silence_id})

    async def _am_delete_silence(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["silence_id"]
        view = await self._silence_view(silence_id)
        if view is None:
            raise am.ApiError(404, _not_found(silence_id))
        if view.state != "expired":
            now = datetime.now(UTC)
            await self._publish(publish_silence_expire, self.settings, silence_id, by=API_ACTOR, now=now)
            await self._await_silence(silence_id, lambda s: s is not None and s.expired_at is not None)
            log.info("silence %s expired through the API", silence_id)
        return web.Response(status=200)

    async def _publish(self, publish: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """The CLI's own publish (blocking: a producer of its own), off the event loop."""
        call = functools.partial(publish, *args, **kwargs)
        try:
            await asyncio.get_running_loop().run_in_executor(None, call)
        except UserError as exc:  # Kafka unreachable, the commands topic missing
            raise am.ApiError(503, f"the command could not be written to Kafka, retry later: {exc}") from None

    async def _await_silence(self, silence_id: str, done: Callable[[Silence | None], bool]) -> bool:
        """Wait until the read model shows the correlator applied the command (bounded)."""
        deadline = time.monotonic() + SILENCE_APPLY_WAIT_S
        while True:
            view = await self._silence_view(silence_id)
            if done(view.silence if view is not None else None):
                return True
            if time.monotonic() >= deadline:
                log.warning(
                    "silence %s: the command is in Kafka but the correlator did not apply it within %gs "
                    "(is `stormwatch correlate` running?)",
                    silence_id,
                    SILENCE_APPLY_WAIT_S,
                )
                return False
            await asyncio.sleep(0.05)

    async def _am_status(self, request: web.Request) -> web.Response:
        follower = self.readmodel
        read_model: dict[str, Any] = {"enabled": follower is not None}
        if follower is not None:
            read_model["ready"] = follower.ready
            read_model["reason"] = follower.reason
            read_model["catchUpSeconds"] = follower.catch_up_seconds
            if follower.ready:
                read_model.update(await self._query(lambda m: m.counts()))
        status = "ready" if follower is not None and follower.ready else "settling"
        body = {
            "cluster": {"name": "stormwatch", "status": status, "peers": []},
            "versionInfo": {
                "version": __version__,
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
            },
            "config": {
                "original": _CONFIG_NOTE.format(rules=self.settings.correlator.rules_file or "built-in")
            },
            "uptime": am.am_time(self.started_ms),
            "stormwatch": {"readModel": read_model},
        }
        return _json(body)

    def _authorize(self, request: web.Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("Authorization")
        if header is None:
            raise HttpError(
                401,
                "authentication required: send 'Authorization: Bearer <token>'",
                label="unauthorized",
                headers={"WWW-Authenticate": _REALM},
            )
        scheme, _, credentials = header.partition(" ")
        presented = credentials.strip().encode("utf-8", "surrogateescape")
        # compare_digest takes time independent of where the tokens differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented, self._token):
            raise HttpError(
                401,
                "invalid bearer token",
                label="unauthorized",
                headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.config.max_body_bytes
        too_large = HttpError(
            413,
            f"request body is larger than the limit of {limit} bytes (gateway.max_body_bytes)",
            label="too large",
            extra={"limit_bytes": limit},
        )
        declared = request.content_length
        if declared is not None and declared > limit:
            raise too_large
        body = bytearray()
        try:
            async for chunk in request.content.iter_chunked(_READ_CHUNK):
                body += chunk
                if len(body) > limit:
                    raise too_large
        except ConnectionError:
            # The client went away, or the read deadline closed the connection: nobody reads this
            # answer, but it keeps the request out of aiohttp's "Error handling request" log.
            raise HttpError(
                408,
                "the connection closed before the whole request body arrived "
                "(a request must arrive within gateway.request_read_timeout_ms)",
                label="request timeout",
            ) from None
        self.connections.request_read(request)
        return bytes(body)

    def _parse(self, value: bytes, fmt: InputFormat, received_ms: int) -> CheckedResult:
        return parse_record_checked(
            value,
            topic=self.settings.topics.raw,
            partition=-1,
            offset=-1,
            timestamp_ms=received_ms,
            headers={FORMAT_HEADER: fmt.value},
            limits=self.limits,
        )

    def _prepare(
        self, endpoint: Endpoint, request: web.Request, media: str | None, body: bytes, received_ms: int
    ) -> Prepared:
        if endpoint is CLOUDEVENTS:
            body = self._cloudevents_body(request, media, body)
        dedup_key: str | None = None
        if endpoint is PAGERDUTY:
            body, dedup_key = self._pagerduty_body(body)
        result = self._parse(body, endpoint.format, received_ms)
        if result.alerts:
            if endpoint is PAGERDUTY and dedup_key is None:
                # Never answer "dedup_key": null: the key the alert was stored under resolves it.
                dedup_key = result.alerts[0].get("source_key")
            return Prepared(body, result, dedup_key)
        self._count_rejected(endpoint.format, result.dead_letters)
        first = result.dead_letters[0]
        errors = [_describe(d) for d in result.dead_letters[:MAX_ERRORS_SHOWN]]
        status = 413 if all(d.reason is DeadLetterReason.TOO_LARGE for d in result.dead_letters) else 400
        raise HttpError(
            status,
            endpoint.invalid_message,
            label=endpoint.invalid_label,
            extra={
                "reason": first.reason.value,
                "detail": first.detail,
                "rejected": len(result.dead_letters),
                "errors": errors,
            },
        )

    def _cloudevents_body(self, request: web.Request, media: str | None, body: bytes) -> bytes:
        """Structured (single or batch) events pass as they are; binary mode is converted."""
        if "ce-specversion" in request.headers:
            if media is not None and not _is_json_media(media):
                raise HttpError(
                    415,
                    f"binary-mode CloudEvent with Content-Type {media}: alerts travel as JSON data",
                    label="unsupported media type",
                )
            return binary_cloudevent(request.headers, media, body)
        if media is not None and not _is_json_media(media):
            raise HttpError(
                415,
                f"Content-Type {media} is neither application/cloudevents+json, "
                "application/cloudevents-batch+json nor a binary-mode event (ce-specversion header)",
                label="unsupported media type",
            )
        return body

    def _pagerduty_body(self, body: bytes) -> tuple[bytes, str | None]:
        """PagerDuty takes one event per request; a trigger without dedup_key gets one (see
        ``dedup_key_for``), written into the record so a later resolve finds the same alert.

        A leading UTF-8 byte order mark (Windows senders) is skipped as the adapters skip it:
        otherwise the event would be accepted without the key the sender needs to resolve it.
        """
        try:
            event = orjson.loads(body[len(_BOM) :] if body.startswith(_BOM) else body)
        except orjson.JSONDecodeError:
            return body, None  # the adapter says what is wrong
        if type(event) is list:
            raise self._invalid_pagerduty_event(
                "expected one event object; PagerDuty Events v2 takes one event per request",
                "expected one event object, got an array",
            )
        if type(event) is not dict:
            return body, None
        self._check_pagerduty_severity(event)
        key = event.get("dedup_key")
        if key is None and event.get("event_action") == "trigger":
            key = dedup_key_for(event)
            return orjson.dumps({**event, "dedup_key": key}), key
        return body, key if isinstance(key, str) else None

    def _check_pagerduty_severity(self, event: Mapping[str, Any]) -> None:
        """A trigger's ``payload.severity`` must be one of PagerDuty's four (case ignored), as
        PagerDuty requires; ingest maps any word to a level, but a sender that expects PagerDuty's
        answers must learn that its severity means nothing. A missing or non-string severity is
        left to the adapter, which refuses it too."""
        payload = event.get("payload")
        if event.get("event_action") != "trigger" or type(payload) is not dict:
            return
        severity = payload.get("severity")
        if type(severity) is not str or not severity or severity.strip().lower() in PAGERDUTY_SEVERITIES:
            return
        allowed = ", ".join(f"'{s}'" for s in PAGERDUTY_SEVERITIES[:-1]) + f" or '{PAGERDUTY_SEVERITIES[-1]}'"
        detail = f"payload.severity: {show(severity)} is invalid (must be one of the following: {allowed})"
        raise self._invalid_pagerduty_event(detail, detail)

    def _invalid_pagerduty_event(self, detail: str, error: str) -> HttpError:
        """PagerDuty's 400 for an event it would not take (counted as a rejected alert)."""
        reason = DeadLetterReason.INVALID_ALERT.value
        self.metrics.alerts_rejected.labels(format=PAGERDUTY.format.value, reason=reason).inc()
        return HttpError(
            400,
            PAGERDUTY.invalid_message,
            label=PAGERDUTY.invalid_label,
            extra={"reason": reason, "detail": detail, "rejected": 1, "errors": [f"{reason}: {error}"]},
        )

    async def _forward(self, endpoint: Endpoint, prepared: Prepared, received_ms: int) -> web.Response:
        result = prepared.result
        fmt = endpoint.format.value
        try:
            await self.sink.send(
                prepared.value,
                key=record_key(result),
                headers=[(FORMAT_HEADER, fmt.encode())],
                timestamp_ms=received_ms,
            )
        except RecordTooLarge as exc:
            raise HttpError(413, f"Kafka refused the record for its size: {exc}", label="too large") from None
        except DeliveryError as exc:
            raise HttpError(
                503,
                f"alerts not accepted, retry later: {exc}",
                label="unavailable",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        self.metrics.alerts_accepted.labels(format=fmt).inc(len(result.alerts))
        rejected = result.dead_letters
        if rejected:
            self._count_rejected(endpoint.format, rejected)
            log.info(
                "%s: accepted %d alerts, %d invalid ones go to the DLQ (first: %s)",
                endpoint.path,
                len(result.alerts),
                len(rejected),
                _describe(rejected[0]),
            )
        if endpoint is PROMETHEUS:
            return web.Response(status=200)  # Alertmanager answers an empty 200
        if endpoint is PAGERDUTY:
            body: dict[str, Any] = {
                "status": "success",
                "message": "Event processed",
                "dedup_key": prepared.dedup_key,
            }
        else:
            body = {
                "status": "success",
                "accepted": len(result.alerts),
                "rejected": len(rejected),
                "errors": [_describe(d) for d in rejected[:MAX_ERRORS_SHOWN]],
            }
        return web.json_response(body, status=endpoint.accepted_status, dumps=_dumps)

    def _count_rejected(self, fmt: InputFormat, dead_letters: list[DeadLetter]) -> None:
        for dead in dead_letters:
            self.metrics.alerts_rejected.labels(format=fmt.value, reason=dead.reason.value).inc()


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _params(request: web.Request) -> dict[str, list[str]]:
    """Query parameters, each with all its values (``filter`` repeats)."""
    params: dict[str, list[str]] = {}
    for name, value in request.query.items():
        params.setdefault(name, []).append(value)
    return params


def _now_ms() -> int:
    return int(time.time() * 1000)


def _not_found(silence_id: str) -> str:
    return f"silence {silence_id} not found; list the silences with GET /api/v2/silences or `stormwatch silence list --all`"


_CONFIG_NOTE = (
    "# stormwatch answers the Alertmanager API v2 from its read model (docs/alertmanager-api.md).\n"
    "# It has no Alertmanager configuration: alerts are grouped by correlation rules ({rules}),\n"
    "# and each rule is shown as a receiver.\n"
)


def rule_timeouts(settings: Settings) -> tuple[dict[str, int], int]:
    """resolve_timeout per correlation rule (for the endsAt of an alert without one), and the
    default; the built-in ones when the rules file cannot be read (the correlator says why)."""
    try:
        rules = load_rules(settings.correlator.rules_file)
    except (UserError, OSError, ValueError) as exc:
        log.warning(
            "cannot read the correlation rules for the read API (%s); assuming 5m resolve_timeout", exc
        )
        return {}, DEFAULT_RESOLVE_TIMEOUT_MS
    return {r.name: r.resolve_timeout_ms for r in rules.rules}, rules.defaults.resolve_timeout_ms


# ---------------------------------------------------------------------------- connections


class ConnectionGuard:
    """Bounds what a client can hold: at most ``max_connections`` open connections, and a deadline
    of ``read_timeout_s`` for each request to arrive whole.

    aiohttp has no request read timeout: a client that sends half a header, or half a body, holds
    its connection (and a slot of the server's file descriptors) for as long as it likes. Each
    connection's protocol is wrapped (``wrap``): the deadline starts when the connection opens, or
    at the first byte of the next request on a kept-alive one, and ends when the application calls
    ``request_read``; a connection still reading at the deadline is closed. Connections over the
    limit get a canned 503 before anything is read.
    """

    def __init__(self, max_connections: int, read_timeout_s: float, metrics: GatewayMetrics) -> None:
        self.max_connections = max_connections
        self.read_timeout_s = read_timeout_s
        self.metrics = metrics
        self._open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}

    def wrap(self, protocol: asyncio.Protocol) -> asyncio.Protocol:
        return _GuardedProtocol(self, protocol)

    def request_read(self, request: web.BaseRequest) -> None:
        """The request arrived whole (or will not be read further): stop its deadline."""
        transport = request.transport
        guarded = self._open.get(transport) if transport is not None else None
        if guarded is not None:
            guarded.disarm()

    def _admit(self, guarded: _GuardedProtocol, transport: asyncio.BaseTransport) -> bool:
        if len(self._open) >= self.max_connections:
            self.metrics.connections_dropped.labels(reason="too_many_connections").inc()
            return False
        self._open[transport] = guarded
        self.metrics.connections_open.set(len(self._open))
        return True

    def _release(self, transport: asyncio.BaseTransport) -> None:
        if self._open.pop(transport, None) is not None:
            self.metrics.connections_open.set(len(self._open))


class _GuardedProtocol(asyncio.Protocol):
    """Passes every event to aiohttp's protocol; adds the connection limit and the read deadline."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        if not self._guard._admit(self, transport):
            _refuse(transport)
            return
        self._admitted = True
        self._arm()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self._admitted:
            return  # refused: the 503 is on its way, the request is not read
        if self._timer is None:
            self._arm()  # the first byte of the next request on a kept-alive connection
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self.disarm()
        assert self._transport is not None
        self._guard._release(self._transport)
        self._inner.connection_lost(exc)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._guard.read_timeout_s, self._expire)

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        self._guard.metrics.connections_dropped.labels(reason="read_timeout").inc()
        log.info(
            "closing a connection from %s: no complete request within %gs (gateway.request_read_timeout_ms)",
            _peer(transport),
            self._guard.read_timeout_s,
        )
        transport.abort()


def _refuse(transport: asyncio.Transport) -> None:
    """Answer 503 and close; half-close first where possible, so the client reads the answer
    rather than a reset, with a hard close a second later whatever the client does."""
    log.info("refusing a connection from %s: gateway.max_connections reached", _peer(transport))
    transport.write(_BUSY)
    if transport.can_write_eof():
        transport.write_eof()
    else:
        transport.close()
    asyncio.get_running_loop().call_later(1.0, transport.abort)


def _peer(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class _GuardedSite(web.BaseSite):
    """aiohttp's TCPSite with every connection's protocol wrapped by a ConnectionGuard."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        guard: ConnectionGuard,
        *,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        guard = self._guard
        self._server = await asyncio.get_running_loop().create_server(
            lambda: guard.wrap(server()),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            # A TLS handshake happens before the request: bound it by the same deadline.
            ssl_handshake_timeout=guard.read_timeout_s if self._ssl_context else None,
        )


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only: 127.0.0.0/8, ::1 or localhost.

    Anything else, the wildcards 0.0.0.0, :: and "" included, may be reachable from elsewhere.
    """
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(config: GatewaySettings) -> None:
    """Refuse to serve other machines without a token, unless told to (``insecure_no_auth``).

    An open gateway lets anyone who reaches it create incidents and page people; this must never
    be the silent result of binding 0.0.0.0 in a container.
    """
    if config.bearer_token is None and not config.insecure_no_auth and not is_loopback(config.host):
        raise UserError(
            f"refusing to listen on {config.host or '*'} without authentication: set gateway.bearer_token "
            "(STORMWATCH_GATEWAY__BEARER_TOKEN or --bearer-token-file), listen on 127.0.0.1, "
            "or pass --insecure-no-auth (gateway.insecure_no_auth) to accept alerts from anyone"
        )


# ---------------------------------------------------------------------------- server


def make_ssl_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2+) from PEM files; UserError when they cannot be loaded."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UserError(
            f"cannot load the gateway TLS certificate {cert_file} / key {key_file}: {exc}; "
            "check gateway.tls_cert_file and gateway.tls_key_file"
        ) from None
    return context


class GatewayServer:
    """Runs the gateway: the HTTP(S) listener, then the Kafka sink (requests get 503 until it is
    ready); on stop, requests in progress finish (their Kafka writes included) before the sink closes."""

    def __init__(self, settings: Settings, sink: KafkaSink | None = None, *, read_api: bool = True) -> None:
        check_exposure(settings.gateway)  # before anything connects to Kafka
        self.settings = settings
        self.config = settings.gateway
        self.sink = sink or KafkaSink(settings)
        self.readmodel: ReadModelFollower | None = None
        if read_api:
            timeouts, default_timeout = rule_timeouts(settings)
            self.readmodel = ReadModelFollower(
                settings,
                lambda: ReadModel(resolve_timeouts_ms=timeouts, default_resolve_timeout_ms=default_timeout),
            )
        self.gateway = Gateway(settings, self.sink, readmodel=self.readmodel)
        self._runner: web.AppRunner | None = None
        self.port: int = self.config.port

    @property
    def scheme(self) -> str:
        return "https" if self.config.tls_cert_file else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.config.host}:{self.port}"

    async def start(self) -> None:
        ssl_context = None
        if self.config.tls_cert_file and self.config.tls_key_file:
            ssl_context = make_ssl_context(self.config.tls_cert_file, self.config.tls_key_file)
        read_timeout_s = self.config.request_read_timeout_ms / 1000
        runner = web.AppRunner(
            self.gateway.app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=10,
            # An idle kept-alive connection is closed after the read timeout (as Go's http.Server
            # does when IdleTimeout is unset); the unread rest of a refused body is read for at
            # most that long before the connection closes.
            keepalive_timeout=read_timeout_s,
            lingering_time=min(10.0, read_timeout_s),
        )
        await runner.setup()
        site = _GuardedSite(
            runner, self.config.host, self.config.port, self.gateway.connections, ssl_context=ssl_context
        )
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            self.sink.close(0)
            raise UserError(
                f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror or exc}; "
                "choose another address with --host/--port (gateway.host, gateway.port)"
            ) from None
        self.sink.start()
        if self.readmodel is not None:
            self.readmodel.start()
        self._runner = runner
        for address in runner.addresses:  # the bound socket tells the real port when port 0 was asked
            self.port = int(address[1])
            break
        if self.config.bearer_token is None and not is_loopback(self.config.host):
            log.warning(
                "listening on %s without authentication (gateway.insecure_no_auth): anyone who can "
                "reach it can post alerts; set gateway.bearer_token",
                self.url,
            )

    async def stop(self) -> None:
        """Finish the requests in progress (their Kafka writes included), then close."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        loop = asyncio.get_running_loop()
        if self.readmodel is not None:
            await loop.run_in_executor(None, self.readmodel.stop, 0.5)
        await loop.run_in_executor(None, self.sink.close, 10.0)

    async def serve(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set, then stop."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
