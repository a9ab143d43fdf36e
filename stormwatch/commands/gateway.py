"""`stormwatch gateway`: the HTTP endpoint monitoring systems send their alerts to (docs/gateway.md)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stormwatch.config import GatewaySettings, Settings
from stormwatch.errors import UserError
from stormwatch.gateway import ENDPOINTS, GatewayServer
from stormwatch.gctune import tune_gc
from stormwatch.lifecycle import Lifecycle
from stormwatch.logs import lifecycle_log

READY_WARNING_S = 5.0
"""Warn on stderr when Kafka is still not ready this long after start-up."""

_DESCRIPTION = (
    "Serve the alert endpoints (Prometheus/Alertmanager API v2, Alertmanager webhook, PagerDuty "
    "Events v2, CloudEvents, native JSON) and write every accepted request to the raw topic. "
    "Answers 2xx only once Kafka acknowledged the write, 503 with Retry-After while it cannot. "
    "Also serves Alertmanager's read and silence API from a read model of the incident, state and "
    "silences topics, so amtool, karma and Grafana can list alerts and manage silences, and the "
    "operator console, a web UI under /console on the same read model, token and TLS (docs/console.md)."
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "gateway", help="Run the HTTP gateway that writes alerts to the raw topic.", description=_DESCRIPTION
    )
    p.add_argument("--host", help="Address to listen on (default: gateway.host, 127.0.0.1)")
    p.add_argument(
        "--port", type=int, help="Port to listen on (default: gateway.port, 9095; 0: any free port)"
    )
    p.add_argument("--tls-cert", metavar="PEM", help="Serve HTTPS with this certificate (chain) file")
    p.add_argument("--tls-key", metavar="PEM", help="Private key of --tls-cert")
    p.add_argument(
        "--bearer-token-file",
        metavar="FILE",
        help="Require 'Authorization: Bearer <token>' with the token in FILE "
        "(default: gateway.bearer_token, $STORMWATCH_GATEWAY__BEARER_TOKEN)",
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="Listen on a non-loopback address without a bearer token (gateway.insecure_no_auth): "
        "anyone who reaches it can post alerts. Without a token and without this flag, only "
        "127.0.0.1, ::1 or localhost are allowed",
    )
    p.add_argument(
        "--no-read-api",
        action="store_true",
        help="Serve only the alert endpoints: no Alertmanager read API (GET /api/v2/alerts, "
        "/api/v2/alerts/groups, /api/v2/silences, /api/v2/status; POST/DELETE silences), no "
        "operator console (/console), and no read model following the incident, state and "
        "silences topics (docs/alertmanager-api.md)",
    )
    p.add_argument("--max-seconds", type=float, help="Stop after this many seconds (demos, tests)")
    p.set_defaults(handler=run_gateway, long_running=True)


def gateway_settings(args: argparse.Namespace, settings: Settings) -> Settings:
    """``settings`` with the command-line flags applied to its gateway section (validated again)."""
    update: dict[str, Any] = {}
    if args.host is not None:
        update["host"] = args.host
    if args.port is not None:
        update["port"] = args.port
    if args.tls_cert is not None:
        update["tls_cert_file"] = args.tls_cert
    if args.tls_key is not None:
        update["tls_key_file"] = args.tls_key
    if args.insecure_no_auth:
        update["insecure_no_auth"] = True
    if args.bearer_token_file is not None:
        path = Path(args.bearer_token_file)
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read the bearer token file {path}: {exc}") from None
        if not token:
            raise UserError(f"the bearer token file {path} is empty")
        update["bearer_token"] = token
    try:
        gateway = GatewaySettings.model_validate({**settings.gateway.model_dump(), **update})
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'gateway'}: "
            + str(e["msg"]).removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise UserError(f"invalid gateway options: {reasons}") from None
    return settings.model_copy(update={"gateway": gateway})


def run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    settings = gateway_settings(args, settings)
    return asyncio.run(_serve(settings, args.max_seconds, read_api=not args.no_read_api))


async def _serve(settings: Settings, max_seconds: float | None, *, read_api: bool = True) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    life = Lifecycle("gateway", stop.set, settings.shutdown_timeout_ms / 1000)  # start/stop lines, bound
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.received, sig)
    if max_seconds is not None:
        loop.call_later(max_seconds, stop.set)

    server = GatewayServer(settings, read_api=read_api)
    await server.start()
    tune_gc()  # a request of 250 alerts allocates over a thousand short-lived containers
    life.started(
        url=server.url, topic=settings.topics.raw, bootstrap_servers=settings.kafka.bootstrap_servers
    )
    try:
        paths = ", ".join(e.path for e in ENDPOINTS)
        if read_api:
            paths += "; Alertmanager API v2 (alerts, alerts/groups, silences, status) from the read model"
            paths += f"; operator console at {server.url}/console/"
        if settings.gateway.bearer_token:
            auth = "bearer token required"
        elif settings.gateway.insecure_no_auth:
            auth = "no authentication: --insecure-no-auth"
        else:
            auth = "no authentication, loopback only"
        _say(
            f"listening on {server.url} ({auth}); writing to topic {settings.topics.raw} at "
            f"{settings.kafka.bootstrap_servers}; endpoints: {paths}"
        )
        deadline = loop.time() + READY_WARNING_S
        while not (server.sink.ready or stop.is_set()) and loop.time() < deadline:
            await asyncio.sleep(0.1)
        if not (server.sink.ready or stop.is_set()):
            _say(f"warning: Kafka is not ready ({server.sink.reason}); answering 503 until it is")
        await stop.wait()
    except BaseException as exc:
        await server.stop()
        life.stopped(exc)
        raise
    await server.stop()
    life.stopped()
    return 0


def _say(text: str) -> None:
    """Status lines shown at the default log level, in the log format (one JSON object per line)."""
    lifecycle_log.info("%s", text, extra={"stage": "gateway"})
