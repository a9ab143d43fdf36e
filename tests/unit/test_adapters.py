"""Every input format, with payloads shaped as their upstream documentation shows them."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.config import IngestSettings
from stormwatch.schemas.adapters import FORMAT_HEADER, ParseLimits, ParseResult, detect_format, parse_record
from stormwatch.schemas.adapters.native import NativeInput
from stormwatch.schemas.alert import Alert, AlertStatus, InputFormat
from stormwatch.schemas.common import Severity
from stormwatch.schemas.dlq import DeadLetterReason
from stormwatch.schemas.fingerprint import key_fingerprint, label_fingerprint

FIXTURES = Path(__file__).parent / "fixtures"
TS_MS = 1714557600000  # 2024-05-01T10:00:00Z, the Kafka record timestamp of every test record
RECEIVED = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(value: bytes | Any, headers: dict[str, bytes] | None = None, **kw: Any) -> ParseResult:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return parse_record(
        raw,
        topic="alerts.raw",
        partition=2,
        offset=41,
        timestamp_ms=TS_MS,
        headers=headers,
        limits=ParseLimits(**kw),
    )


def only_alerts(result: ParseResult) -> list[Alert]:
    assert result.dead_letters == [], [d.detail for d in result.dead_letters]
    return result.alerts


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# ---------------------------------------------------------------- common behaviour


def test_limits_defaults_match_ingest_settings() -> None:
    defaults = IngestSettings()
    assert ParseLimits.from_settings(defaults) == ParseLimits()
    custom = IngestSettings(max_labels=3, max_json_depth=5)
    limits = ParseLimits.from_settings(custom)
    assert (limits.max_labels, limits.max_json_depth) == (3, 5)


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_labels"):
        ParseLimits(max_labels=0)
    with pytest.raises(ValueError, match="year range"):
        ParseLimits(min_year=2300, max_year=2200)


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_parses_cleanly_and_deterministically(name: str) -> None:
    first = parse(fixture(name))
    second = parse(fixture(name))
    alerts = only_alerts(first)
    assert alerts
    assert [a.to_bytes() for a in alerts] == [a.to_bytes() for a in second.alerts]
    for index, alert in enumerate(alerts):
        assert alert.received_at == RECEIVED  # the record timestamp, never the wall clock
        assert alert.origin is not None
        assert (alert.origin.topic, alert.origin.partition, alert.origin.offset) == ("alerts.raw", 2, 41)
        assert alert.origin.index == index
        assert Alert.from_bytes(alert.to_bytes()) == alert  # canonical alerts round-trip the wire


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("prometheus_push.json", InputFormat.PROMETHEUS),
        ("alertmanager_webhook_firing.json", InputFormat.ALERTMANAGER),
        ("pagerduty_trigger.json", InputFormat.PAGERDUTY),
        ("pagerduty_batch.json", InputFormat.PAGERDUTY),
        ("cloudevents_native.json", InputFormat.CLOUDEVENTS),
        ("cloudevents_batch.json", InputFormat.CLOUDEVENTS),
        ("native_batch.json", InputFormat.NATIVE),
        ("native_single.json", InputFormat.NATIVE),
    ],
)
def test_detection(name: str, fmt: InputFormat) -> None:
    assert detect_format(orjson.loads(fixture(name))) is fmt
    result = parse(fixture(name))
    assert result.format is fmt
    assert all(a.format is fmt for a in result.alerts)


def test_detection_of_unknown_shapes() -> None:
    for doc in ({}, {"foo": 1}, [1, 2], ["x"], 3, "text", [{"foo": 1}]):
        assert detect_format(doc) is None


def test_header_overrides_detection() -> None:
    # a lone alert object is detected as Prometheus; the header says it is native
    doc = {"stormwatch": 1, "labels": {"alertname": "X"}}
    assert parse(doc).format is InputFormat.NATIVE
    forced = parse({"labels": {"alertname": "X"}}, headers={FORMAT_HEADER: b"prometheus"})
    assert forced.format is InputFormat.PROMETHEUS
    upper = parse(fixture("native_single.json"), headers={"Stormwatch-Format": b" NATIVE "})
    assert upper.format is InputFormat.NATIVE and len(upper.alerts) == 1


def test_header_naming_the_wrong_format_dead_letters_the_record() -> None:
    result = parse(fixture("prometheus_push.json"), headers={FORMAT_HEADER: b"alertmanager"})
    assert result.alerts == []
    [dead] = result.dead_letters
    assert dead.reason is DeadLetterReason.INVALID_ALERT
    assert dead.detail == "expected an Alertmanager webhook object, got array"
    assert dead.alert_index is None
    assert dead.format == "alertmanager"
    assert base64.b64decode(dead.original) == fixture("prometheus_push.json")


def test_utf8_bom_is_tolerated() -> None:
    assert len(only_alerts(parse(b"\xef\xbb\xbf" + fixture("native_single.json")))) == 1


def test_tombstone_is_empty() -> None:
    result = parse_record(None, topic="t", partition=0, offset=0, timestamp_ms=TS_MS)
    assert [d.reason for d in result.dead_letters] == [DeadLetterReason.EMPTY]


# ---------------------------------------------------------------- Prometheus


def test_prometheus_push() -> None:
    high_cpu, disk_full, watchdog = only_alerts(parse(fixture("prometheus_push.json")))

    assert high_cpu.source == "prometheus"
    assert high_cpu.status is AlertStatus.FIRING  # endsAt in the future: Prometheus re-sends while firing
    assert high_cpu.severity is Severity.CRITICAL
    assert high_cpu.labels == {
        "alertname": "HighCPU",
        "instance": "db-1:9100",
        "job": "node",
        "severity": "critical",
    }
    assert high_cpu.annotations["runbook_url"] == "https://runbooks.example.org/high-cpu"
    assert high_cpu.starts_at == datetime(2024, 5, 1, 9, 58, 30, 123456, tzinfo=UTC)  # nanoseconds truncated
    assert high_cpu.ends_at == datetime(2024, 5, 1, 10, 4, 30, 123000, tzinfo=UTC)
    assert high_cpu.generator_url is not None and high_cpu.generator_url.startswith(
        "http://prometheus.example.org"
    )
    assert high_cpu.fingerprint == label_fingerprint(high_cpu.labels) == "bbe010e6cf9743fb"
    assert high_cpu.source_key is None

    assert disk_full.status is AlertStatus.RESOLVED  # endsAt before the record time
    assert disk_full.starts_at == datetime(2024, 5, 1, 9, 30, tzinfo=UTC)  # +02:00 offset normalised to UTC
    assert disk_full.severity is Severity.WARNING

    assert watchdog.severity is Severity.INFO  # severity "none"
    assert watchdog.annotations == {}


def test_prometheus_status_boundary_and_missing_times() -> None:
    alerts = only_alerts(
        parse(
            [
                {"labels": {"a": "1"}, "endsAt": "2024-05-01T10:00:00Z"},  # endsAt == received_at -> resolved
                {"labels": {"a": "2"}, "endsAt": "2024-05-01T10:00:00.001Z"},
                {"labels": {"a": "3"}},
                {"labels": {"a": "4"}, "endsAt": "2024-05-01T09:00:00Z"},
            ]
        )
    )
    assert [a.status for a in alerts] == [
        AlertStatus.RESOLVED,
        AlertStatus.FIRING,
        AlertStatus.FIRING,
        AlertStatus.RESOLVED,
    ]
    assert alerts[2].starts_at == RECEIVED and alerts[2].ends_at is None  # startsAt missing -> received_at
    assert alerts[3].starts_at == datetime(2024, 5, 1, 9, 0, tzinfo=UTC)  # never after its own end


def test_prometheus_timestamp_forms() -> None:
    forms = [
        "2024-05-01T09:00:00Z",
        "2024-05-01t09:00:00z",
        "2024-05-01 09:00:00Z",
        "2024-05-01T11:00:00+02:00",
        "2024-05-01T04:30:00-04:30",
        "2024-05-01T09:00:00.000000000Z",
    ]
    alerts = only_alerts(parse([{"labels": {"n": str(i)}, "startsAt": t} for i, t in enumerate(forms)]))
    assert {a.starts_at for a in alerts} == {datetime(2024, 5, 1, 9, 0, tzinfo=UTC)}


def test_prometheus_empty_label_values_mean_no_label() -> None:
    [alert] = only_alerts(parse([{"labels": {"alertname": "X", "instance": ""}}]))
    assert alert.labels == {"alertname": "X"}
    assert alert.fingerprint == label_fingerprint({"alertname": "X"})


def test_prometheus_lone_object_is_a_batch_of_one() -> None:
    [alert] = only_alerts(parse({"labels": {"alertname": "X"}}))
    assert alert.origin is not None and alert.origin.index == 0


def test_prometheus_ignores_unknown_fields() -> None:
    [alert] = only_alerts(
        parse([{"labels": {"alertname": "X"}, "status": "whatever", "extra": {"deep": [1]}}])
    )
    assert alert.status is AlertStatus.FIRING


# ---------------------------------------------------------------- Alertmanager


def test_alertmanager_firing_webhook() -> None:
    result = parse(fixture("alertmanager_webhook_firing.json"))
    db1, db3 = only_alerts(result)
    assert result.truncated_alerts == 0
    assert db1.source == "alertmanager"
    assert db1.status is AlertStatus.FIRING
    assert db1.ends_at is None  # Go's zero time means "no end", not a bad timestamp
    assert db1.source_key == "3a1c0d5be8f7e2a4"  # Alertmanager's own fingerprint is kept ...
    assert db1.fingerprint == label_fingerprint(db1.labels)  # ... but identity is the label fingerprint
    assert db3.origin is not None and db3.origin.index == 1


def test_alertmanager_resolved_webhook_and_truncation() -> None:
    result = parse(fixture("alertmanager_webhook_resolved.json"))
    [alert] = only_alerts(result)
    assert alert.status is AlertStatus.RESOLVED
    assert alert.ends_at == datetime(2024, 5, 1, 9, 59, tzinfo=UTC)
    assert result.truncated_alerts == 3


def test_same_alert_via_prometheus_and_alertmanager_dedups_to_one_fingerprint() -> None:
    pushed = only_alerts(parse(fixture("prometheus_push.json")))
    notified = only_alerts(parse(fixture("alertmanager_webhook_firing.json")))
    assert pushed[0].fingerprint == notified[0].fingerprint
    resolved_push = pushed[1]
    [resolved_hook] = only_alerts(parse(fixture("alertmanager_webhook_resolved.json")))
    assert resolved_push.fingerprint == resolved_hook.fingerprint


def test_alertmanager_zero_time_with_offset_is_unset_too() -> None:
    hook = orjson.loads(fixture("alertmanager_webhook_firing.json"))
    hook["alerts"][0]["endsAt"] = "0001-01-01T00:00:00+01:00"
    hook["alerts"][1]["startsAt"] = "0001-01-01T00:00:00Z"
    db1, db3 = only_alerts(parse(hook))
    assert db1.ends_at is None
    assert db3.starts_at == RECEIVED


def test_alertmanager_without_per_alert_status_derives_it() -> None:
    hook = orjson.loads(fixture("alertmanager_webhook_resolved.json"))
    del hook["alerts"][0]["status"]
    [alert] = only_alerts(parse(hook))
    assert alert.status is AlertStatus.RESOLVED


def test_grafana_webhook_is_read_as_alertmanager() -> None:
    hook = orjson.loads(fixture("alertmanager_webhook_firing.json"))
    hook.update(version="1", orgId=1)
    hook["alerts"][0].update(silenceURL="https://grafana/silence", values={"B": 44.2})
    alerts = only_alerts(parse(hook))
    assert {a.source for a in alerts} == {"grafana"}


# ---------------------------------------------------------------- PagerDuty


def test_pagerduty_trigger() -> None:
    [alert] = only_alerts(parse(fixture("pagerduty_trigger.json")))
    assert alert.status is AlertStatus.FIRING
    assert alert.source == "Sample Monitoring Service"  # the client
    assert alert.severity is Severity.CRITICAL
    assert alert.fingerprint == key_fingerprint("pagerduty", "srv01/disk-full") == "e29e7cd11cef32ca"
    assert alert.source_key == "srv01/disk-full"
    assert alert.labels == {
        "alertname": "disk full",  # payload.class
        "source": "srv01.example.org",
        "component": "postgres",
        "group": "prod-datapipe",
        "class": "disk full",
        "severity": "critical",
        "dedup_key": "srv01/disk-full",
    }
    assert alert.annotations["summary"] == "Disk almost full on srv01.example.org: 97% of /data used"
    assert orjson.loads(alert.annotations["custom_details"]) == {
        "free_space": "3%",
        "mount": "/data",
        "ping_time": 1500,
    }
    assert orjson.loads(alert.annotations["links"])[0]["text"] == "Runbook"
    assert orjson.loads(alert.annotations["images"])[0]["alt"] == "Disk usage of srv01"
    assert alert.generator_url == "https://monitoring.example.org/alerts/srv01-disk"
    assert alert.starts_at == datetime(2024, 5, 1, 9, 57, 12, 345000, tzinfo=UTC)
    assert alert.ends_at is None
    assert "routing_key" not in alert.to_bytes().decode()
    assert "R015ABCDEFGHIJKLMNOPQRSTUVWXYZ01" not in alert.to_bytes().decode()  # a credential


def test_pagerduty_acknowledge_and_resolve_share_the_trigger_identity() -> None:
    [trigger] = only_alerts(parse(fixture("pagerduty_trigger.json")))
    [ack] = only_alerts(parse(fixture("pagerduty_acknowledge.json")))
    [resolve] = only_alerts(parse(fixture("pagerduty_resolve.json")))
    assert trigger.fingerprint == ack.fingerprint == resolve.fingerprint
    assert ack.status is AlertStatus.FIRING
    assert ack.annotations == {"pagerduty_action": "acknowledge"}
    assert ack.labels == {"dedup_key": "srv01/disk-full"}
    assert resolve.status is AlertStatus.RESOLVED
    assert resolve.ends_at == RECEIVED
    assert "pagerduty_action" not in resolve.annotations


def test_pagerduty_batch_with_epoch_timestamps() -> None:
    ping, recovered = only_alerts(parse(fixture("pagerduty_batch.json")))
    assert ping.starts_at == datetime(2024, 5, 1, 9, 50, tzinfo=UTC)  # epoch seconds
    assert ping.labels["alertname"] == "Ping failure for web-7"  # no class: the summary
    assert ping.source_key is None
    assert ping.fingerprint == label_fingerprint(ping.labels)  # trigger without dedup_key
    assert ping.severity is Severity.ERROR
    assert recovered.status is AlertStatus.RESOLVED
    assert recovered.ends_at == datetime(2024, 5, 1, 9, 58, 20, tzinfo=UTC)  # epoch milliseconds
    assert recovered.severity is Severity.INFO


def test_pagerduty_string_custom_details_kept_verbatim() -> None:
    event = orjson.loads(fixture("pagerduty_trigger.json"))
    event["payload"]["custom_details"] = "free text\nwith lines"
    [alert] = only_alerts(parse(event))
    assert alert.annotations["custom_details"] == "free text\nwith lines"


# ---------------------------------------------------------------- CloudEvents


def test_cloudevents_native_data() -> None:
    [alert] = only_alerts(parse(fixture("cloudevents_native.json")))
    assert alert.source == "//checks.example.org/synthetics"  # the ce source
    assert alert.format is InputFormat.CLOUDEVENTS
    assert alert.severity is Severity.CRITICAL  # labels.severity "p1"
    assert alert.starts_at == datetime(2024, 5, 1, 9, 55, tzinfo=UTC)  # ce time: the default starts_at


def test_cloudevents_batch() -> None:
    backup_failed, backup_slow, high_cpu = only_alerts(parse(fixture("cloudevents_batch.json")))
    assert backup_failed.source == backup_slow.source == "/cron/nightly-backup"
    assert backup_failed.labels["app_kubernetes_io_name"] == "backup"  # sanitized name
    assert backup_failed.starts_at == datetime(2024, 5, 1, 9, 40, tzinfo=UTC)
    assert backup_failed.severity is Severity.ERROR
    assert backup_slow.status is AlertStatus.RESOLVED
    assert high_cpu.source == "//prometheus.example.org/relay"
    # a Prometheus-style alert inside a CloudEvent is the same alert as the one pushed directly
    pushed = only_alerts(parse(fixture("prometheus_push.json")))[0]
    assert high_cpu.fingerprint == pushed.fingerprint
    assert [a.origin.index for a in (backup_failed, backup_slow, high_cpu) if a.origin] == [0, 1, 2]


def test_cloudevents_data_base64_and_content_type_parameters() -> None:
    event = orjson.loads(fixture("cloudevents_native.json"))
    data = event.pop("data")
    event["data_base64"] = base64.b64encode(orjson.dumps(data)).decode()
    event["datacontenttype"] = "application/json; charset=utf-8"
    [alert] = only_alerts(parse(event))
    assert alert.labels["alertname"] == "CheckoutProbeFailed"


def test_cloudevents_carrying_other_formats() -> None:
    webhook = orjson.loads(fixture("alertmanager_webhook_firing.json"))
    pd_event = orjson.loads(fixture("pagerduty_trigger.json"))
    native_doc = orjson.loads(fixture("native_batch.json"))
    envelope = {"specversion": "1.0", "id": "x", "source": "/relay", "type": "alert"}
    result = parse(
        [{**envelope, "data": webhook}, {**envelope, "data": pd_event}, {**envelope, "data": native_doc}]
    )
    alerts = only_alerts(result)
    assert len(alerts) == 2 + 1 + 2
    assert {a.source for a in alerts} == {"/relay"}
    assert alerts[2].fingerprint == key_fingerprint("pagerduty", "srv01/disk-full")


# ---------------------------------------------------------------- native


def test_native_batch() -> None:
    deploy, canary = only_alerts(parse(fixture("native_batch.json")))
    assert deploy.source == "deploy-bot"  # the document's source
    assert deploy.severity is Severity.ERROR  # "major"
    assert deploy.starts_at == datetime(2024, 5, 1, 9, 59, 59, 500000, tzinfo=UTC)
    assert deploy.generator_url == "https://ci.example.org/pipelines/4711"
    assert deploy.fingerprint == label_fingerprint(deploy.labels)
    assert canary.source == "canary-checker"  # the alert's own source wins
    assert canary.status is AlertStatus.RESOLVED
    assert canary.starts_at == datetime(2024, 5, 1, 9, 40, tzinfo=UTC)  # epoch milliseconds
    assert canary.ends_at == datetime(2024, 5, 1, 9, 55, tzinfo=UTC)
    assert canary.source_key == "canary/payments/prod"
    assert canary.fingerprint == key_fingerprint("native", "canary/payments/prod")


def test_native_single() -> None:
    [alert] = only_alerts(parse(fixture("native_single.json")))
    assert alert.source == "native"
    assert alert.starts_at == RECEIVED
    assert alert.severity is Severity.WARNING


def test_native_sanitizes_label_names() -> None:
    doc = {
        "stormwatch": 1,
        "labels": {"app.kubernetes.io/name": "web", "9lives": "cat", "ok_name": "x", "ünï": "u"},
    }
    [alert] = only_alerts(parse(doc))
    assert alert.labels == {"app_kubernetes_io_name": "web", "_9lives": "cat", "ok_name": "x", "_n_": "u"}


def test_native_schema_accepts_the_fixtures() -> None:
    for name in ("native_batch.json", "native_single.json"):
        NativeInput.model_validate_json(fixture(name))


def test_native_explicit_severity_wins_over_label() -> None:
    doc = {"stormwatch": 1, "labels": {"alertname": "X", "severity": "info"}, "severity": "sev1"}
    [alert] = only_alerts(parse(doc))
    assert alert.severity is Severity.CRITICAL
    assert alert.labels["severity"] == "info"
