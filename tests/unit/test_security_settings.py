"""Kafka SASL/TLS settings reach every client, and secrets stay out of reprs, messages and logs.

No broker is needed: every client is built with TLS on and a CA file that does not exist, which
librdkafka refuses while *creating* the client ("ssl.ca.location failed"). So a client that fails
that way provably got the connection settings from ``settings.kafka.client_config()``; one that
ignored them would be created without complaint. A source scan makes sure no module builds a
Kafka client this test does not know about. The real SASL/SCRAM round trip is in
tests/faults/test_sasl_scram.py; docs/security.md has the threat model.
"""

from __future__ import annotations

import ast
import asyncio
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from confluent_kafka import KafkaError, KafkaException

from stormwatch.agents.executors.base import ExecutorPolicy
from stormwatch.agents.executors.publish import KafkaExecutor
from stormwatch.config import ConfigError, Settings, load_settings
from stormwatch.configdoc import masked
from stormwatch.errors import KafkaUnavailable, UserError
from stormwatch.gateway import Gateway
from stormwatch.kafka.client import (
    ErrorTracker,
    check_reachable,
    make_consumer,
    make_producer,
    read_changelog,
    read_topic,
    refused_access,
    unreachable_error,
)
from stormwatch.kafka.topics import check_topics, create_topics
from stormwatch.kafka.txloop import TransactionalLoop
from stormwatch.kafkasink import KafkaSink
from tests.kit.paths import ROOT

PASSWORD = "Sc4am-pa55word-7f3e91"
TOKEN = "gw-token-5d0c2b7e8a41"
MISSING_CA = "/nonexistent/stormwatch-test-ca.pem"

# Files that construct confluent-kafka clients; each one is exercised below.
CLIENT_MODULES = {
    "stormwatch/kafka/client.py",
    "stormwatch/kafka/topics.py",
    "stormwatch/kafka/txloop.py",
    "agents/executors/publish.py",
}


def secure_settings(**kafka: Any) -> Settings:
    base = {
        "bootstrap_servers": "127.0.0.1:1",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "stormwatch",
        "sasl_password": PASSWORD,
        "ssl_ca_location": "/etc/stormwatch/ca.pem",
        "ssl_certificate_location": "/etc/stormwatch/client.pem",
        "ssl_key_location": "/etc/stormwatch/client.key",
    }
    return load_settings(kafka={**base, **kafka}, gateway={"bearer_token": TOKEN})


# ---------------------------------------------------------------------------- client config


def test_client_config_carries_every_sasl_and_tls_field() -> None:
    assert secure_settings().kafka.client_config() == {
        "bootstrap.servers": "127.0.0.1:1",
        "security.protocol": "SASL_SSL",
        "client.id": "stormwatch",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "stormwatch",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/stormwatch/ca.pem",
        "ssl.certificate.location": "/etc/stormwatch/client.pem",
        "ssl.key.location": "/etc/stormwatch/client.key",
    }


def test_plaintext_by_default_sends_no_credentials() -> None:
    conf = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}).kafka.client_config()
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not [k for k in conf if k.startswith(("sasl.", "ssl."))]


def test_sasl_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORMWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("STORMWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("STORMWATCH_KAFKA__SASL_USERNAME", "alice")
    monkeypatch.setenv("STORMWATCH_KAFKA__SASL_PASSWORD", PASSWORD)
    conf = load_settings().kafka.client_config()
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SCRAM-SHA-256",
        "alice",
        PASSWORD,
    )


def test_unknown_protocol_or_mechanism_is_refused() -> None:
    with pytest.raises(ConfigError, match="security_protocol"):
        load_settings(kafka={"security_protocol": "SASL_TLS"})
    with pytest.raises(ConfigError, match="sasl_mechanism"):
        load_settings(kafka={"sasl_mechanism": "GSSAPI"})


class _NoStage:
    """TransactionalLoop only keeps its stage until run(); building the clients needs none."""


def _txloop(settings: Settings) -> Any:
    return TransactionalLoop(
        settings,
        stage=_NoStage(),  # type: ignore[arg-type]
        group_id="g",
        topics=["t"],
        transactional_id="tx",
        max_batch=10,
    )


CLIENTS: dict[str, Any] = {
    "kafka_io.make_producer": lambda s: make_producer(s),
    "kafka_io.make_consumer": lambda s: make_consumer(s, "g"),
    "kafka_io.check_reachable": lambda s: check_reachable(s, timeout_s=1),
    "kafka_io.read_topic": lambda s: list(read_topic(s, "t", timeout_s=1)),
    "kafka_io.read_changelog (correlator state restore)": lambda s: read_changelog(s, "t", 0),
    "topics.create_topics": lambda s: create_topics(s, timeout_s=1),
    "topics.check_topics": lambda s: check_topics(s, timeout_s=1),
    "txloop.TransactionalLoop (ingest, correlator, agent)": _txloop,
    "kafkasink.KafkaSink": lambda s: KafkaSink(s),
    "agents kafka executor": lambda s: KafkaExecutor(ExecutorPolicy(kafka=s.kafka))._get_producer(),
}


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_every_client_uses_the_connection_settings(name: str) -> None:
    settings = secure_settings(security_protocol="SSL", ssl_ca_location=MISSING_CA)
    with pytest.raises((UserError, KafkaException, RuntimeError)) as err:
        CLIENTS[name](settings)
    assert "ssl.ca.location" in str(err.value), f"{name} was built without settings.kafka: {err.value}"


def test_no_module_builds_a_kafka_client_behind_the_settings_back() -> None:
    """A new Producer/Consumer/AdminClient call must take its config from client_config() and be
    added to CLIENTS above."""
    found: dict[str, int] = {}
    for package in ("stormwatch", "streams", "agents", "schemas"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                    if name in ("Producer", "Consumer", "AdminClient"):
                        rel = path.relative_to(ROOT).as_posix()
                        found[rel] = found.get(rel, 0) + 1
    unknown = sorted(set(found) - CLIENT_MODULES)
    assert not unknown, (
        f"Kafka clients built in {unknown}: use settings.kafka.client_config() and test them here"
    )
    for rel in found:
        source = (ROOT / rel).read_text()
        assert "client_config()" in source or "base_config(" in source, rel


# ---------------------------------------------------------------------------- secrets


def test_secrets_stay_out_of_repr_and_str() -> None:
    settings = secure_settings()
    for text in (repr(settings), str(settings), repr(settings.kafka), repr(settings.gateway)):
        assert PASSWORD not in text and TOKEN not in text


def test_config_show_masks_secrets() -> None:
    shown = masked(secure_settings())
    assert shown["kafka"]["sasl_password"] == "***"
    assert shown["gateway"]["bearer_token"] == "***"
    assert PASSWORD not in str(shown) and TOKEN not in str(shown)


def test_config_errors_do_not_echo_secrets() -> None:
    """An invalid section must not print the secrets next to the mistake: pydantic's own messages
    show the input (for a model validator, the whole section, bearer token included)."""
    with pytest.raises(ConfigError) as err:
        load_settings(gateway={"bearer_token": TOKEN, "tls_cert_file": "/etc/stormwatch/gw.pem"})
    assert "tls_key_file" in str(err.value)
    assert TOKEN[:6] not in str(err.value), str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(kafka={"sasl_password": PASSWORD, "security_protocol": "NOPE"})
    assert PASSWORD[:6] not in str(err.value)


def test_gateway_never_logs_or_echoes_tokens(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(
        kafka={"bootstrap_servers": "127.0.0.1:1"}, gateway={"bearer_token": TOKEN, "port": 0}
    )
    wrong = "gw-token-WRONG-3c9a77"
    answers: list[tuple[int, str]] = []

    async def scenario() -> None:
        sink = KafkaSink(settings)  # never started: Kafka is not needed to refuse a request
        gateway = Gateway(settings, sink)
        async with TestClient(TestServer(gateway.app)) as client:
            body = b'{"stormwatch": 1, "labels": {"alertname": "X"}}'
            for headers in (
                {},
                {"Authorization": f"Bearer {wrong}"},
                {"Authorization": f"Basic {wrong}"},
                {"Authorization": f"Bearer {TOKEN}"},
            ):
                headers = {**headers, "Content-Type": "application/json"}
                response = await client.post("/api/v1/alerts", data=body, headers=headers)
                answers.append((response.status, await response.text()))
        sink.close(0)

    with caplog.at_level(logging.DEBUG):
        asyncio.run(scenario())
    assert [status for status, _ in answers] == [401, 401, 401, 503]  # 503: Kafka is not there
    for _, text in answers:
        assert TOKEN not in text and wrong not in text
    assert TOKEN not in caplog.text and wrong not in caplog.text


_SERVERS = "kafka-1:9093"


@pytest.mark.parametrize(
    ("reason", "says", "fix"),
    [
        (
            "ssl://kafka-1:9093/bootstrap: Receive failed: error:0A000412:SSL routines::ssl/tls alert bad "
            "certificate: SSL alert number 42 (after 0ms in state APIVERSION_QUERY)",
            "refused this client's TLS certificate",
            "kafka.ssl_certificate_location",
        ),
        (
            "SSL handshake failed: error:0A000086:SSL routines::certificate verify failed",
            "sent a TLS certificate this client does not trust",
            "kafka.ssl_ca_location",
        ),
        (
            "SSL handshake failed: Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT "
            "broker listener?",
            "and this client could not agree on TLS",
            "kafka.security_protocol",
        ),
        (
            "SASL authentication error: Authentication failed during authentication due to invalid "
            "credentials with SASL mechanism SCRAM-SHA-256",
            "refused this client's credentials",
            "kafka.sasl_password",
        ),
    ],
    ids=["client-certificate", "broker-certificate", "tls-to-plaintext", "sasl-password"],
)
def test_refused_connections_name_the_settings_to_fix(reason: str, says: str, fix: str) -> None:
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": _SERVERS}})
    error = unreachable_error(settings, reason)
    assert type(error) is UserError  # not KafkaUnavailable: waiting does not fix it
    text = str(error)
    assert text.startswith(f"Kafka at {_SERVERS} {says} (")
    assert fix in text
    assert "/bootstrap:" not in text and "in state" not in text


def test_a_broker_that_is_not_there_is_unavailable_not_refused() -> None:
    """``ssl://`` in librdkafka's connection error is the protocol, not a TLS problem."""
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": _SERVERS}})
    reason = "ssl://kafka-1:9093/bootstrap: Connect to ipv4#10.0.0.1:9093 failed: Connection refused"
    error = unreachable_error(settings, reason)
    assert isinstance(error, KafkaUnavailable)
    assert str(error).startswith(f"cannot reach Kafka at {_SERVERS} (Connect to ipv4#10.0.0.1:9093 failed")
    tracker = ErrorTracker()
    tracker(KafkaError(KafkaError._TRANSPORT, reason))
    assert not refused_access(tracker)
    tracker(KafkaError(KafkaError._TRANSPORT, "Receive failed: SSL alert number 42"))
    assert refused_access(tracker)
