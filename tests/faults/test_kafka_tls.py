"""Kafka over mutual TLS: every stormwatch client connects with its certificate, bad TLS fails clearly.

The broker is the module's own, started with ``deploy/kafka/local-kafka.sh --tls``: its only
client listener is SSL on 127.0.0.1 with ``ssl.client.auth=required``, and its throwaway CA, its
certificate (IP SAN 127.0.0.1) and a client certificate are generated into
``var/kafka/faults-tls/tls``. A client that ignored ``kafka.ssl_*`` (or spoke PLAINTEXT) cannot even
fetch metadata, so each check below fails if any client in the path does.

- ``stormwatch topics create``/``check`` with the settings ``local-kafka.sh status`` prints, a
  producer and a read_committed reader;
- the whole pipeline (ingest and correlator transactions, a correlator restarted after SIGKILL
  that restores its state from the changelog, the gateway) runs over TLS;
- a client without a client certificate, and a client that trusts another CA, fail within a
  bound with one line that names the certificate problem, and the gateway's readiness says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from stormwatch.config import load_settings
from stormwatch.kafka.client import make_producer, produce_sync, read_topic
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.gateway import gateway_readiness, post_through_gateway
from tests.kit.kafka import ScriptKafka
from tests.kit.metrics import metric
from tests.kit.paths import ROOT
from tests.kit.pipeline import TEST_RULES, PipelineRun, check_audit_integrity
from tests.kit.ports import free_port
from tests.kit.records import produce_timestamped, storm_records
from tests.kit.topics import topic_names
from tests.kit.waits import wait_for
from tests.kit.workers import run_cli

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

BAD_TLS_BOUND_S = 20.0


def _rules() -> str:
    """The kit's rules, but incidents stay open until their alerts resolve (no resolve timeout in
    the test's time), so a restarted correlator has open incidents to restore."""
    rules = yaml.safe_load(TEST_RULES)
    rules["defaults"]["resolve_timeout"] = "10m"
    return str(yaml.safe_dump(rules))


def _env(**settings: str) -> dict[str, str]:
    """This environment without any Kafka settings of the session's (KAFKA_BOOTSTRAP_SERVERS,
    STORMWATCH_KAFKA__*), plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "STORMWATCH_KAFKA"))}
    return {**env, **settings}


def _topics(suffix: str) -> dict[str, Any]:
    return {**topic_names(f"tls.{suffix}"), "partitions": 2}


def _other_ca(directory: Path) -> Path:
    """A CA that signed nothing the broker has: trusting only it must fail verification."""
    ca, key = directory / "other-ca.pem", directory / "other-ca.key"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=some other CA", "-keyout", str(key), "-out", str(ca)]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    return ca


def _bad_client(broker: ScriptKafka, tmp_path: Path, case: str) -> dict[str, str]:
    """``kafka.*`` options of a client the broker must refuse, or that must refuse the broker."""
    settings = broker.tls_settings()
    if case == "no client certificate":
        del settings["ssl_certificate_location"], settings["ssl_key_location"]
    else:
        settings["ssl_ca_location"] = str(_other_ca(tmp_path))
    return settings


def test_topics_create_check_produce_and_read_over_mutual_tls(
    tls_broker: ScriptKafka, tmp_path: Path
) -> None:
    """The CLI configured only by the lines ``local-kafka.sh status`` prints (plus topic names)."""
    env = _env(**tls_broker.status_env())
    assert env["STORMWATCH_KAFKA__SECURITY_PROTOCOL"] == "SSL"
    assert all(
        Path(env[f"STORMWATCH_KAFKA__SSL_{name}_LOCATION"]).is_file() for name in ("CA", "CERTIFICATE", "KEY")
    )
    topics = _topics(uuid.uuid4().hex[:8])
    config = tmp_path / "topics.yaml"
    config.write_text(yaml.safe_dump({"topics": topics}))

    created = run_cli("--config", str(config), "topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    assert topics["raw"] in created.stdout
    checked = run_cli("--config", str(config), "topics", "check", env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    settings = load_settings(
        config, kafka={"bootstrap_servers": tls_broker.bootstrap, **tls_broker.tls_settings()}
    )
    producer = make_producer(settings)
    value = orjson.dumps([{"labels": {"alertname": "TlsProbe"}}])
    produce_sync(producer, settings.topics.raw, None, value)
    producer.flush(5)
    assert [m.value() for m in read_topic(settings, settings.topics.raw, timeout_s=20)] == [value]


def test_pipeline_restore_and_gateway_run_over_mutual_tls(tls_broker: ScriptKafka, tmp_path: Path) -> None:
    run = PipelineRun(
        tls_broker.bootstrap,
        tmp_path,
        partitions=2,
        rules=_rules(),
        config_overrides={"kafka": tls_broker.tls_settings()},
    )
    settings = run.settings
    t0_ms = int(time.time() * 1000) - 60_000
    records = storm_records(
        seed=43, t0_ms=t0_ms, groups=2, alerts_per_group=50, rounds=1, per_record=25, span_s=10
    )
    firing = [(ts, value) for ts, value in records if ts < t0_ms + 10_000]
    resolving = records[len(firing) :]
    assert firing and resolving and all(b"endsAt" in value for _, value in resolving)
    producer = produce_timestamped(settings, firing)

    assert post_through_gateway(settings, "TlsGateway") == 200

    def opened(events: list[IncidentEvent]) -> int:
        return sum(e.type.value == "opened" for e in events)

    def resolved(events: list[IncidentEvent]) -> int:
        return sum(e.type.value == "resolved" for e in events)

    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        run.wait_until(lambda evs: opened(evs) >= 3, timeout_s=90)
        # A crash, then a restart that must rebuild the open incidents from the changelog over TLS:
        # without them, the storm's resolutions below would change nothing.
        run.kill("correlate", "c1")
        metrics_port = free_port()
        run.start("correlate", "c1", ["--metrics-port", str(metrics_port)])
        wait_for(
            "the restarted correlator to report the 3 open incidents restored from its changelog",
            lambda: metric(metrics_port, "stormwatch_open_incidents") == 3,
            60,
        )
        now_ms = int(time.time() * 1000)
        for _, value in resolving:
            producer.produce(settings.topics.raw, value, timestamp=now_ms)
        assert producer.flush(30) == 0
        events = run.wait_until(lambda evs: resolved(evs) >= 2, timeout_s=90)
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert opened(events) == 3  # two storm groups and the gateway's alert, none opened twice
    alertnames: dict[str, set[str]] = {}
    for e in events:
        names = alertnames.setdefault(e.incident_id, set())
        names.update(c.labels["alertname"] for c in e.alerts if c.labels)
    resolved_names = {frozenset(alertnames[e.incident_id]) for e in events if e.type.value == "resolved"}
    assert resolved_names == {frozenset({"Storm0"}), frozenset({"Storm1"})}, alertnames


@pytest.mark.parametrize("case", ["no client certificate", "another CA"])
def test_bad_tls_fails_fast_with_one_clear_line(tls_broker: ScriptKafka, tmp_path: Path, case: str) -> None:
    """Each command gives up within a bound, without a traceback, on one line that names the cause."""
    config = tmp_path / "bad-tls.yaml"
    kafka = {"bootstrap_servers": tls_broker.bootstrap, **_bad_client(tls_broker, tmp_path, case)}
    config.write_text(yaml.safe_dump({"kafka": kafka, "topics": _topics(uuid.uuid4().hex[:8])}))
    commands = [("topics", "check"), ("incidents",), ("ingest", "--max-seconds", "20")]
    env = _env()
    started = time.monotonic()
    # Side by side, so that one bound covers all three.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stormwatch.cli", "--config", str(config), *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )
        for command in commands
    ]
    results = []
    for command, proc in zip(commands, procs, strict=True):
        try:
            out, err = proc.communicate(timeout=BAD_TLS_BOUND_S + 20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        results.append((" ".join(command), proc.returncode, out, err, time.monotonic() - started))
    for name, returncode, out, err, elapsed in results:
        assert returncode not in (0, None), f"{name} succeeded with {case}: {out}{err}"
        assert elapsed < BAD_TLS_BOUND_S, f"{name} took {elapsed:.0f}s to give up ({case})"
        lines = err.strip().splitlines()
        assert "Traceback" not in err and len(lines) == 1, f"{name} ({case}): not one line:\n{err[-3000:]}"
        line = lines[0]
        assert line.startswith(f"stormwatch {name.split()[0]}: error:"), line
        assert "certificate" in line and "ssl_" in line, f"{name} ({case}): unclear error: {line}"


@pytest.mark.parametrize("case", ["no client certificate", "another CA"])
def test_gateway_with_bad_tls_says_why_it_is_not_ready(
    tls_broker: ScriptKafka, tmp_path: Path, case: str
) -> None:
    """The gateway does not become ready, and its reason (``/-/ready``, its start-up warning) names
    the certificate problem."""
    settings = load_settings(
        kafka={"bootstrap_servers": tls_broker.bootstrap, **_bad_client(tls_broker, tmp_path, case)},
        topics={"raw": f"t.raw.tls.{uuid.uuid4().hex[:8]}"},
        gateway={"port": 0},
    )

    ready, reason = gateway_readiness(settings)
    assert not ready
    assert "certificate" in reason, f"unclear reason ({case}): {reason}"
