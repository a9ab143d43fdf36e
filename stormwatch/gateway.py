"""The HTTP gateway: monitoring systems POST alerts in the formats they already speak.

Each request is validated with the same adapters ingest uses (``schemas.adapters.parse_record_checked``:
the same checks and dead letters as ``parse_record`` without building pydantic models, which cost
the gateway about 10 µs of CPU per alert; the format forced by the endpoint) and written to the raw
topic as one record: the parsed alerts' notes (header ``stormwatch-encoding: notes-v1``,
streams.core.canonical), which ingest reads without parsing again; or, when some alert of the
request is invalid, the body as it came with the ``stormwatch-format`` header, so ingest
dead-letters those alerts with their original JSON. With ``ingest.notes_key_file`` the notes record
is signed (header ``stormwatch-signature``, over the record timestamp the gateway sets), so ingest
trusts it without checking each alert again. The answer is 2xx only after Kafka acknowledged the
write (idempotent producer, acks=all); while Kafka is unreachable the gateway answers 503 with
``Retry-After``, so a sender keeps its alerts and retries. docs/gateway.md describes the endpoints
and status codes.

The same application serves the read and silence half of Alertmanager's API v2
(stormwatch.amapi) and the operator console (stormwatch.console.web) on the same auth and TLS;
the write to Kafka is stormwatch.kafkasink, the connection limits stormwatch.connguard.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
import xxhash
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest

from stormwatch.allocator import release_free_memory, tune_malloc
from stormwatch.amapi import AlertmanagerApi, Handler, rule_timeouts
from stormwatch.config import GatewaySettings, Settings
from stormwatch.connguard import RETRY_AFTER_S, ConnectionGuard, GuardedSite, check_exposure, is_loopback
from stormwatch.console.web import Console
from stormwatch.errors import UserError
from stormwatch.kafka.txloop import TRIM_INTERVAL_S
from stormwatch.kafkasink import DeliveryError, KafkaSink, RecordTooLarge, kafka_ready_gauge
from stormwatch.metrics import process_wide
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.readmodel.model import ReadModel
from stormwatch.schemas.adapters import (
    ENCODING_HEADER,
    FORMAT_HEADER,
    NOTES_V1,
    CheckedResult,
    ParseLimits,
    parse_record_checked,
)
from stormwatch.schemas.adapters.base import show
from stormwatch.schemas.adapters.detect import SIGNATURE_HEADER
from stormwatch.schemas.alert import InputFormat
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.fingerprint import canonical_labels
from stormwatch.streams.core.canonical import encode_notes, notes_key
from stormwatch.streams.core.pushnotes import prometheus_push_notes
from stormwatch.streams.core.wire import BoundedMemo

log = logging.getLogger("stormwatch.gateway")

MAX_ERRORS_SHOWN = 20
"""A response lists at most this many rejected alerts; the count is always complete."""

PAGERDUTY_SEVERITIES = ("critical", "error", "warning", "info")
"""The severities PagerDuty's Events API v2 accepts; any other is refused with 400, as PagerDuty does."""

_READ_CHUNK = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_REALM = 'Bearer realm="stormwatch"'

_JSON_MEDIA = ("application/json", "text/json")
_UTF8_CHARSETS = ("utf-8", "utf8", "us-ascii", "ascii")


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
        self.kafka_ready = kafka_ready_gauge()  # set by the KafkaSink
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
    """What one request will write, and what it will answer."""

    body: bytes  # the request body the alerts were read from
    value: bytes  # notes-v1 when every alert is valid, else the body for ingest's adapters
    notes: bool
    key: bytes | None
    accepted: int
    rejected: list[DeadLetter]
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


def _json_media(request: web.Request, refuse: Callable[[str], Exception] | None) -> str | None:
    """The request's media type, after the checks for JSON: 415 (HttpError) for a charset other
    than UTF-8, and ``refuse(media)`` raised for a media type that is not JSON, when given."""
    media, charset = _media_type(request)
    _check_charset(charset)
    if refuse is not None and media is not None and not _is_json_media(media):
        raise refuse(media)
    return media


def _not_json(media: str) -> HttpError:
    return HttpError(
        415, f"Content-Type {media} is not JSON; send application/json", label="unsupported media type"
    )


def _loads(body: bytes) -> Any:
    """``body`` as JSON; a leading byte order mark is skipped, as the adapters skip it on a record."""
    return orjson.loads(body[len(_BOM) :] if body.startswith(_BOM) else body)


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
        event["data"] = _loads(body)
    except orjson.JSONDecodeError:
        event["data_base64"] = base64.b64encode(body).decode("ascii")
    return orjson.dumps(event)


def record_key(result: CheckedResult) -> bytes | None:
    """The record key of the adapters' alerts (``canonical.notes_key``)."""
    return notes_key({alert["fingerprint"] for alert in result.alerts})


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
        self.limits = ParseLimits.from_settings(settings.ingest)
        self.notes_keys = settings.ingest.notes_keys()  # signs the notes records (None: unsigned)
        self._to_ms = BoundedMemo(ms_from_dt)
        token = self.config.bearer_token
        self._token = token.encode() if token is not None else None
        self.connections = ConnectionGuard(
            self.config.max_connections, self.config.request_read_timeout_ms / 1000, self.metrics
        )
        # Routes with a request body: the read deadline runs until the body is read.
        self._ingest_routes: set[str] = {e.name for e in ENDPOINTS} | AlertmanagerApi.BODY_ROUTES
        self.app = web.Application(middlewares=[self._observe], client_max_size=self.config.max_body_bytes)
        for endpoint in ENDPOINTS:
            self.app.router.add_post(
                endpoint.path, functools.partial(self._ingest, endpoint), name=endpoint.name
            )
        # Alertmanager API v2, read side and silences (docs/alertmanager-api.md), with the same auth
        self.am_api = AlertmanagerApi(settings, readmodel, guard=self._authorized, read_json=self._read_json)
        self.am_api.register(self.app)
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
            media = _json_media(request, _not_json if endpoint.strict_json else None)
            body = await self._read_body(request)
            received_ms = int(time.time() * 1000)
            prepared = self._prepare(endpoint, request, media, body, received_ms)
            return await self._forward(endpoint, prepared, received_ms)
        except HttpError as exc:
            if exc.status >= 500:
                log.debug("%s: %d %s", endpoint.path, exc.status, exc.message)
            else:
                log.info("%s: refused with %d: %s", endpoint.path, exc.status, exc.message)
            return _refused(exc)

    # -- what the Alertmanager API gets from the gateway

    def _authorized(self, handler: Handler) -> Handler:
        """``handler`` behind the bearer token, as the alert endpoints; a request refused before
        it reaches the handler's own checks (HttpError) is answered with its JSON body."""

        async def call(request: web.Request) -> web.Response:
            try:
                self._authorize(request)
                return await handler(request)
            except HttpError as exc:
                return _refused(exc)

        return call

    async def _read_json(self, request: web.Request, refuse: Callable[[str], Exception]) -> Any:
        """The request's JSON document (a leading byte order mark skipped), read under the body
        limits; ``refuse(media)`` is raised for a Content-Type that is not JSON."""
        _json_media(request, refuse)
        return _loads(await self._read_body(request))

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
        if endpoint is PROMETHEUS:  # the common case, decoded straight into its notes (or declined)
            fast = prometheus_push_notes(body, received_ms, self.limits, self._to_ms)
            if fast is not None:
                return Prepared(body, fast.value, True, fast.key, fast.count, [])
        result = self._parse(body, endpoint.format, received_ms)
        if result.alerts:
            if endpoint is PAGERDUTY and dedup_key is None:
                # Never answer "dedup_key": null: the key the alert was stored under resolves it.
                dedup_key = result.alerts[0].get("source_key")
            key, accepted, rejected = record_key(result), len(result.alerts), result.dead_letters
            if rejected:  # ingest dead-letters the invalid alerts with their original JSON
                return Prepared(body, body, False, key, accepted, rejected, dedup_key)
            # parsed once: ingest reads the notes without the adapters (streams.core.canonical)
            notes = encode_notes(result.alerts, received_ms, self._to_ms)
            return Prepared(body, notes, True, key, accepted, [], dedup_key)
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
            event = _loads(body)
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
        fmt = endpoint.format.value
        value = prepared.value
        headers: list[tuple[str, str | bytes | None]] = [(FORMAT_HEADER, fmt.encode())]
        if prepared.notes:
            headers.append((ENCODING_HEADER, NOTES_V1))
            if self.notes_keys is not None:  # over received_ms, the record timestamp sent below
                headers.append((SIGNATURE_HEADER, self.notes_keys.sign(value, received_ms)))
        try:
            await self.sink.send(value, key=prepared.key, headers=headers, timestamp_ms=received_ms)
        except RecordTooLarge as exc:
            raise HttpError(413, f"Kafka refused the record for its size: {exc}", label="too large") from None
        except DeliveryError as exc:
            raise HttpError(
                503,
                f"alerts not accepted, retry later: {exc}",
                label="unavailable",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            ) from None
        self.metrics.alerts_accepted.labels(format=fmt).inc(prepared.accepted)
        rejected = prepared.rejected
        if rejected:
            self._count_rejected(endpoint.format, rejected)
            log.info(
                "%s: accepted %d alerts, %d invalid ones go to the DLQ (first: %s)",
                endpoint.path,
                prepared.accepted,
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
                "accepted": prepared.accepted,
                "rejected": len(rejected),
                "errors": [_describe(d) for d in rejected[:MAX_ERRORS_SHOWN]],
            }
        return web.json_response(body, status=endpoint.accepted_status, dumps=_dumps)

    def _count_rejected(self, fmt: InputFormat, dead_letters: list[DeadLetter]) -> None:
        for dead in dead_letters:
            self.metrics.alerts_rejected.labels(format=fmt.value, reason=dead.reason.value).inc()


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _refused(exc: HttpError) -> web.Response:
    return web.json_response(exc.body, status=exc.status, headers=exc.headers, dumps=_dumps)


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
            keep = self.config.console_max_closed_incidents
            self.readmodel = ReadModelFollower(
                settings,
                lambda: ReadModel(
                    resolve_timeouts_ms=timeouts,
                    default_resolve_timeout_ms=default_timeout,
                    max_closed_incidents=keep,
                ),
            )
        self.gateway = Gateway(settings, self.sink, readmodel=self.readmodel)
        self._runner: web.AppRunner | None = None
        self._trimmer: asyncio.Task[None] | None = None
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
        site = GuardedSite(
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
        tune_malloc()  # before the producer's and the read model's threads allocate, as the workers do
        self.sink.start()
        if self.readmodel is not None:
            self.readmodel.start()
        self._runner = runner
        self._trimmer = asyncio.create_task(self._release_free_memory())
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
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None
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

    async def _release_free_memory(self) -> None:
        """Hand the C heap's free pages back to the OS every ``TRIM_INTERVAL_S``: a Kafka outage or
        a burst of requests leaves the producer's freed buffers resident otherwise (in the
        hour-long chaos run the gateway grew from 137 to 303 MB, 134 MB of it free in glibc's
        arenas; docs/reliability.md, run 2)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TRIM_INTERVAL_S)
            await loop.run_in_executor(None, release_free_memory)  # ctypes lets go of the GIL
