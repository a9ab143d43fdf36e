"""`stormwatch gateway`: flags, configuration errors, TLS and the listener (no broker needed)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from stormwatch.commands import gateway as gateway_command
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.gateway import GatewayServer, make_ssl_context
from stormwatch.logs import LIFECYCLE_LOGGER
from tests.kit.ports import free_port


def settings(**gateway: Any) -> Settings:
    return Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
            "topics": {"raw": "gw.cli.raw"},
            "gateway": {"delivery_timeout_ms": 1000, **gateway},
        }
    )


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stormwatch")
    sub = parser.add_subparsers(dest="command")
    gateway_command.register(sub)
    return parser.parse_args(["gateway", *argv])


def test_flags_override_settings(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    args = parse("--host", "127.0.0.2", "--port", "0", "--bearer-token-file", str(token_file))
    assert args.handler is gateway_command.run_gateway
    merged = gateway_command.gateway_settings(args, settings(max_body_bytes=123))
    assert merged.gateway.host == "127.0.0.2"
    assert merged.gateway.port == 0
    assert merged.gateway.bearer_token == "tok-123"
    assert merged.gateway.max_body_bytes == 123  # untouched settings stay


def test_defaults() -> None:
    config = Settings.model_validate({}).gateway
    assert (config.host, config.port, config.bearer_token, config.tls_cert_file) == (
        "127.0.0.1",
        9095,
        None,
        None,
    )
    assert config.delivery_timeout_ms == 5000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--tls-cert", "/x.pem"), "tls_cert_file and gateway.tls_key_file must be set together"),
        (("--port", "70000"), "port"),
        (("--bearer-token-file", "/nonexistent/token"), "cannot read the bearer token file"),
    ],
)
def test_bad_flags_are_user_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UserError, match=message):
        gateway_command.gateway_settings(parse(*argv), settings())


def test_empty_token_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("\n")
    with pytest.raises(UserError, match="is empty"):
        gateway_command.gateway_settings(parse("--bearer-token-file", str(tmp_path / "t")), settings())


def test_port_in_use_is_a_user_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = GatewayServer(settings(port=port))

        async def go() -> None:
            await server.start()

        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(go())


def test_unreadable_tls_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    with pytest.raises(UserError, match="cannot load the gateway TLS certificate"):
        make_ssl_context(str(tmp_path / "cert.pem"), str(tmp_path / "missing.pem"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_serves_https(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    server = GatewayServer(settings(port=0, tls_cert_file=str(cert), tls_key_file=str(key)))
    client_tls = ssl.create_default_context(cafile=str(cert))

    async def go() -> tuple[int, str]:
        await server.start()
        try:
            assert server.url.startswith("https://127.0.0.1:")
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.url + "/-/healthy", ssl=client_tls) as resp,
            ):
                return resp.status, await resp.text()
        finally:
            await server.stop()

    assert asyncio.run(go()) == (200, "OK\n")


def test_command_runs_and_stops(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(gateway_command, "READY_WARNING_S", 0.5)
    caplog.set_level(logging.INFO, logger=LIFECYCLE_LOGGER)
    args = parse("--port", "0", "--max-seconds", "1.5")
    started = time.monotonic()
    assert args.handler(args, settings()) == 0
    assert time.monotonic() - started < 4
    said = [r.getMessage() for r in caplog.records if r.name == LIFECYCLE_LOGGER]
    assert said[0] == "started" and said[-1] == "stopped"  # the lifecycle lines (stormwatch.lifecycle)
    assert said[1].startswith("listening on http://127.0.0.1:") and "/api/v2/alerts" in said[1]
    assert "warning: Kafka is not ready" in said[2] and "answering 503" in said[2]


def test_through_the_stormwatch_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from stormwatch import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ["stormwatch.commands.gateway"])
    monkeypatch.setenv("STORMWATCH_GATEWAY__DELIVERY_TIMEOUT_MS", "1000")
    argv = [
        "--bootstrap-servers",
        f"127.0.0.1:{free_port()}",
        "gateway",
        "--port",
        "0",
        "--max-seconds",
        "0.1",
    ]
    assert cli.main(argv) == 0
    assert "listening on http://127.0.0.1:" in capsys.readouterr().err
    assert cli.main(["gateway", "--tls-key", "/k.pem"]) == 2
    assert "must be set together" in capsys.readouterr().err


def test_a_running_gateway_hands_free_memory_back_and_stops_doing_so_when_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The periodic malloc_trim (docs/reliability.md, run 2) runs while the gateway serves and
    ends with it."""
    import stormwatch.gateway as gateway_module

    calls: list[float] = []
    monkeypatch.setattr(gateway_module, "TRIM_INTERVAL_S", 0.05)
    monkeypatch.setattr(gateway_module, "release_free_memory", lambda: calls.append(time.monotonic()))
    server = GatewayServer(settings(port=0), read_api=False)

    async def go() -> int:
        await server.start()
        try:
            await asyncio.sleep(0.4)
        finally:
            await server.stop()
        during = len(calls)
        await asyncio.sleep(0.2)
        assert len(calls) == during, "trimming went on after stop"
        return during

    assert asyncio.run(go()) >= 3
