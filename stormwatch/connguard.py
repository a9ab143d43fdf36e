"""Connection limits for the gateway's listener: at most gateway.max_connections open, and a
deadline (gateway.request_read_timeout_ms) for each request to arrive whole.

aiohttp has neither. This works on the transport, below HTTP (each connection's protocol is
wrapped: ``ConnectionGuard``, ``GuardedSite``), so it lives apart from the request handling;
``check_exposure`` decides whether the listener may serve other machines without a token.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from typing import Protocol

from aiohttp import web
from prometheus_client import Counter, Gauge

from stormwatch.config import GatewaySettings
from stormwatch.errors import UserError

log = logging.getLogger("stormwatch.gateway")  # the gateway's logger, as before the split

RETRY_AFTER_S = 5
"""Seconds a sender is asked to wait after a 503 (Kafka unreachable or too slow, the read model
not ready, too many connections): the one value for the gateway, its Alertmanager API and here."""

_BUSY_TEXT = b"too many connections (gateway.max_connections)\n"
# The answer to a connection over gateway.max_connections: written before the request is read.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Retry-After: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (RETRY_AFTER_S, len(_BUSY_TEXT), _BUSY_TEXT)
)


class GuardMetrics(Protocol):
    """The metrics a ConnectionGuard keeps (``stormwatch.gateway.GatewayMetrics`` has them)."""

    connections_open: Gauge
    connections_dropped: Counter


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

    def __init__(self, max_connections: int, read_timeout_s: float, metrics: GuardMetrics) -> None:
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


class GuardedSite(web.BaseSite):
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
