"""An in-process gateway for one request or one readiness check, against any broker."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp
import orjson

from stormwatch.config import Settings
from stormwatch.gateway import GatewayServer


def post_through_gateway(settings: Settings, alertname: str) -> int:
    """Start an in-process gateway (any free port), wait until it can write to Kafka, post one
    alert; the answer's HTTP status."""

    async def post() -> int:
        server = GatewayServer(
            settings.model_copy(update={"gateway": settings.gateway.model_copy(update={"port": 0})})
        )
        await server.start()
        try:
            assert await asyncio.to_thread(server.sink.wait_ready, 30), server.sink.reason
            body = {"stormwatch": 1, "alerts": [{"labels": {"alertname": alertname}}]}
            async with (
                aiohttp.ClientSession() as session,
                session.post(f"{server.url}/api/v1/alerts", json=body) as response,
            ):
                return response.status
        finally:
            await server.stop()

    return asyncio.run(post())


def gateway_readiness(settings: Settings, timeout_s: float = 20) -> tuple[bool, str]:
    """Start an in-process gateway, wait for its first Kafka check; (ready, its reason)."""

    async def check() -> tuple[bool, str]:
        server = GatewayServer(settings)
        await server.start()
        try:
            ready = await asyncio.to_thread(server.sink.wait_checked, timeout_s)
            return ready, server.sink.reason
        finally:
            await server.stop()

    return asyncio.run(check())


@dataclass(frozen=True)
class Answer:
    """One probe request's fate: its alert's ``seq``, when it was sent and answered (monotonic),
    the HTTP status (0: no HTTP answer, a connection error or client timeout) and Retry-After."""

    seq: int
    sent: float
    answered: float
    status: int
    retry_after: str | None


async def probe_sender(
    session: aiohttp.ClientSession,
    url: str,
    alertname: str,
    first: int,
    step: int,
    stop: asyncio.Event,
    out: list[Answer],
) -> None:
    """POST one native alert per request (label ``seq``: first, first + step, ...) every 50 ms
    until ``stop``, recording every answer: the gateway outage and partition tests' sender."""
    seq = first
    while not stop.is_set():
        body = {"stormwatch": 1, "alerts": [{"labels": {"alertname": alertname, "seq": str(seq)}}]}
        sent = time.monotonic()
        try:
            async with session.post(
                url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}
            ) as r:
                await r.read()
                out.append(Answer(seq, sent, time.monotonic(), r.status, r.headers.get("Retry-After")))
        except (aiohttp.ClientError, TimeoutError):
            out.append(Answer(seq, sent, time.monotonic(), 0, None))
        seq += step
        await asyncio.sleep(0.05)
