"""An in-process gateway for one request or one readiness check, against any broker."""

from __future__ import annotations

import asyncio

import aiohttp

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
