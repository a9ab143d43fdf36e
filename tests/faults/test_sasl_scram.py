"""Kafka with SASL/SCRAM authentication: every stormwatch client logs in, a wrong password fails clearly.

The broker is the module's own, started with ``deploy/kafka/local-kafka.sh --sasl``: its only
client listener is SASL_PLAINTEXT on loopback with SCRAM-SHA-256 and SCRAM-SHA-512, and the user
``stormwatch`` (password generated into ``var/kafka/faults-sasl/sasl/stormwatch.password``) is
created when the storage is formatted. Unauthenticated clients cannot even fetch metadata, so a
client that ignored ``kafka.*`` would fail here.

- ``stormwatch topics create``, a producer and a read_committed reader work with SCRAM-SHA-256
  and SCRAM-SHA-512, the password coming from the environment (never from the command line);
- the whole pipeline (ingest, correlator with its state restore, the gateway) runs over SCRAM and
  none of its output contains the password;
- a wrong password fails within a bound, with an error that says authentication failed (not
  "cannot reach Kafka") and does not contain the password.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from stormwatch.config import Settings, load_settings
from stormwatch.kafka.client import make_producer, produce_sync, read_topic
from tests.kit.gateway import gateway_readiness, post_through_gateway
from tests.kit.kafka import ScriptKafka
from tests.kit.pipeline import PipelineRun
from tests.kit.records import produce_timestamped, storm_records
from tests.kit.topics import topic_names
from tests.kit.workers import run_cli, worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

WRONG_PASSWORD_BOUND_S = 20.0


def _kafka(
    broker: ScriptKafka, mechanism: str = "SCRAM-SHA-256", password: str | None = None
) -> dict[str, Any]:
    return {
        "bootstrap_servers": broker.bootstrap,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_username": "stormwatch",
        "sasl_password": password if password is not None else broker.sasl_password(),
    }


def _cli(config: Path, password: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the stormwatch CLI with the password in the environment, as docs/security.md advises."""
    env = worker_env(STORMWATCH_KAFKA__SASL_PASSWORD=password)
    return run_cli("--config", str(config), *args, env=env, timeout_s=timeout_s)


def _config_file(tmp_path: Path, broker: ScriptKafka, mechanism: str) -> tuple[Path, Settings]:
    """A config without the password (it comes from STORMWATCH_KAFKA__SASL_PASSWORD)."""
    suffix = uuid.uuid4().hex[:8]
    kafka = _kafka(broker, mechanism)
    kafka.pop("sasl_password")
    topics = topic_names(f"sasl.{suffix}")
    path = tmp_path / f"sasl-{suffix}.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka, "topics": {**topics, "partitions": 2}}))
    settings = load_settings(path, kafka=_kafka(broker, mechanism))
    return path, settings


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_topics_create_produce_and_read_with_scram(
    sasl_broker: ScriptKafka, tmp_path: Path, mechanism: str
) -> None:
    config, settings = _config_file(tmp_path, sasl_broker, mechanism)
    password = sasl_broker.sasl_password()
    created = _cli(config, password, "topics", "create")
    assert created.returncode == 0, created.stderr
    assert settings.topics.raw in created.stdout
    checked = _cli(config, password, "topics", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr

    producer = make_producer(settings)
    value = orjson.dumps([{"labels": {"alertname": "ScramProbe", "mechanism": mechanism}}])
    produce_sync(producer, settings.topics.raw, None, value)
    producer.flush(5)
    assert [m.value() for m in read_topic(settings, settings.topics.raw, timeout_s=20)] == [value]
    for result in (created, checked):
        assert password not in result.stdout + result.stderr


def test_pipeline_and_gateway_run_over_scram(sasl_broker: ScriptKafka, tmp_path: Path) -> None:
    password = sasl_broker.sasl_password()
    run = PipelineRun(
        sasl_broker.bootstrap,
        tmp_path,
        partitions=2,
        config_overrides={"kafka": _kafka(sasl_broker, "SCRAM-SHA-512")},
    )
    settings = run.settings
    records = storm_records(
        seed=41,
        t0_ms=int(time.time() * 1000) - 300_000,
        groups=2,
        alerts_per_group=50,
        rounds=2,
        per_record=50,
        span_s=10,
    )
    produce_timestamped(settings, records)

    assert post_through_gateway(settings, "ScramGateway") == 200
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        events = run.wait_until(lambda evs: sum(e.type.value == "opened" for e in evs) >= 3, timeout_s=90)
    finally:
        run.stop_all()
    assert sum(e.type.value == "opened" for e in events) == 3  # two storm groups and the gateway's alert
    for log in tmp_path.glob("*.log"):
        assert password not in log.read_text(errors="replace"), f"{log.name} contains the SASL password"


@pytest.mark.parametrize(
    "command",
    [("topics", "create"), ("topics", "check"), ("incidents",), ("ingest", "--max-seconds", "20")],
    ids=lambda c: " ".join(c[:2]).strip(),
)
def test_wrong_password_fails_with_a_clear_error(
    sasl_broker: ScriptKafka, tmp_path: Path, command: tuple[str, ...]
) -> None:
    config, _ = _config_file(tmp_path, sasl_broker, "SCRAM-SHA-256")
    wrong = "not-the-" + sasl_broker.sasl_password()
    started = time.monotonic()
    result = _cli(config, wrong, *command, timeout_s=WRONG_PASSWORD_BOUND_S + 20)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert elapsed < WRONG_PASSWORD_BOUND_S, f"took {elapsed:.0f}s to give up"
    assert wrong not in output and sasl_broker.sasl_password() not in output
    last = [line for line in result.stderr.splitlines() if line.startswith("stormwatch")][-1:]
    assert last and "authentication" in last[0].lower(), (
        f"unclear error for a wrong password: {last or output[-500:]}"
    )


def test_gateway_with_a_wrong_password_says_why_it_is_not_ready(sasl_broker: ScriptKafka) -> None:
    """The gateway keeps running and answers 503 (right), and /-/ready should say why."""
    settings = load_settings(
        kafka=_kafka(sasl_broker, "SCRAM-SHA-256", password="not-the-" + sasl_broker.sasl_password()),
        topics={"raw": f"t.raw.sasl.{uuid.uuid4().hex[:8]}"},
        gateway={"port": 0},
    )

    ready, reason = gateway_readiness(settings)
    assert not ready
    assert sasl_broker.sasl_password() not in reason
    assert "authentication" in reason.lower(), f"unclear reason: {reason}"
