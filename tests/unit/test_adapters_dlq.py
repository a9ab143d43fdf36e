"""Dead letters: one test per reason, precise details, and partial batches."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.schemas.adapters import FORMAT_HEADER, ParseLimits, ParseResult, parse_record
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.dlq import DeadLetterReason as R

FIXTURES = Path(__file__).parent / "fixtures"
TS_MS = 1714557600000
RECEIVED = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def parse(value: bytes | Any, headers: dict[str, bytes] | None = None, **kw: Any) -> ParseResult:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    return parse_record(
        raw,
        topic="alerts.raw",
        partition=3,
        offset=99,
        timestamp_ms=TS_MS,
        headers=headers,
        limits=ParseLimits(**kw),
    )


def fixture_doc(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def whole_record(result: ParseResult, raw: bytes) -> DeadLetter:
    """The single dead letter that holds the entire record."""
    assert result.alerts == []
    [dead] = result.dead_letters
    assert dead.alert_index is None
    assert base64.b64decode(dead.original) == raw
    assert dead.original_size == len(raw)
    assert (dead.source_topic, dead.source_partition, dead.source_offset) == ("alerts.raw", 3, 99)
    assert dead.at == RECEIVED  # the record timestamp
    assert DeadLetter.from_bytes(dead.to_bytes()) == dead
    return dead


def one_bad(result: ParseResult) -> DeadLetter:
    [dead] = result.dead_letters
    assert DeadLetter.from_bytes(dead.to_bytes()) == dead
    return dead


def prom(*alerts: Any) -> bytes:
    return orjson.dumps(list(alerts))


GOOD = {"labels": {"alertname": "Good"}}


# ---------------------------------------------------------------- whole-record reasons


def test_too_large_record() -> None:
    raw = prom(GOOD, {"labels": {"alertname": "x" * 2000}})
    dead = whole_record(parse(raw, max_record_bytes=1000), raw)
    assert dead.reason is R.TOO_LARGE
    assert dead.detail == f"record is {len(raw)} bytes, limit 1000 (ingest.max_record_bytes)"


def test_too_many_alerts_in_one_record() -> None:
    raw = prom(*[GOOD] * 6)
    dead = whole_record(parse(raw, max_alerts_per_record=5), raw)
    assert dead.reason is R.TOO_LARGE
    assert dead.detail == "6 alerts in one record, limit 5 (ingest.max_alerts_per_record)"


def test_too_many_alerts_across_cloudevents_is_counted_in_total() -> None:
    event = {"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": [GOOD, GOOD, GOOD]}
    raw = orjson.dumps([event, event])
    dead = whole_record(parse(raw, max_alerts_per_record=5), raw)
    assert dead.reason is R.TOO_LARGE
    assert "more than 5 alerts" in dead.detail


def test_invalid_utf8() -> None:
    raw = b'[{"labels":{"alertname":"caf\xe9"}}]'
    dead = whole_record(parse(raw), raw)
    assert dead.reason is R.INVALID_UTF8
    assert dead.detail == "invalid UTF-8 at byte 28: invalid continuation byte (JSON must be UTF-8)"


def test_lone_surrogate_escape_is_invalid_utf8() -> None:
    raw = b'[{"labels":{"alertname":"\\ud800"}}]'
    assert whole_record(parse(raw), raw).reason is R.INVALID_UTF8


@pytest.mark.parametrize("raw", [b'{"labels":', b"NaN", b"[1,]", b'{"a":1}x', b"\x00", b"'single'"])
def test_not_json(raw: bytes) -> None:
    dead = whole_record(parse(raw), raw)
    assert dead.reason is R.NOT_JSON
    assert dead.detail.startswith("not JSON: ")


def test_too_deep_for_the_configured_limit() -> None:
    nested: Any = "leaf"
    for _ in range(40):
        nested = {"n": nested}
    raw = prom({"labels": {"alertname": "X"}, "extra": nested})
    dead = whole_record(parse(raw), raw)
    assert dead.reason is R.TOO_DEEP
    assert dead.detail == "nesting deeper than 32 (ingest.max_json_depth)"


def test_depth_exactly_at_the_limit_is_fine() -> None:
    nested: Any = []
    for _ in range(29):  # record array 1 + alert object 2 + "extra" 3 ... = 32 levels
        nested = [nested]
    raw = prom({"labels": {"alertname": "X"}, "extra": nested})
    assert len(parse(raw).alerts) == 1
    assert parse(prom({"labels": {"alertname": "X"}, "extra": [nested]})).dead_letters[0].reason is R.TOO_DEEP


def test_too_deep_for_the_json_parser() -> None:
    raw = b"[" * 5000 + b"]" * 5000
    dead = whole_record(parse(raw, max_json_depth=10_000), raw)
    assert dead.reason is R.TOO_DEEP


def test_unknown_format() -> None:
    raw = b'{"metric":"cpu","value":0.97}'
    dead = whole_record(parse(raw), raw)
    assert dead.reason is R.UNKNOWN_FORMAT
    assert dead.format is None
    assert '"metric", "value"' in dead.detail and FORMAT_HEADER in dead.detail


def test_unknown_format_header() -> None:
    raw = prom(GOOD)
    dead = whole_record(parse(raw, headers={FORMAT_HEADER: b"graphite"}), raw)
    assert dead.reason is R.UNKNOWN_FORMAT
    assert dead.detail == (
        'header stormwatch-format="graphite" names no input format '
        "(expected one of prometheus, alertmanager, pagerduty, cloudevents, native)"
    )


@pytest.mark.parametrize(
    "raw", [b"", b"   \n", b"[]", b"null", b'{"stormwatch":1,"alerts":[]}', b'{"version":"4","alerts":[]}']
)
def test_empty(raw: bytes) -> None:
    assert whole_record(parse(raw), raw).reason is R.EMPTY


def test_unsupported_version() -> None:
    hook = fixture_doc("alertmanager_webhook_firing.json")
    hook["version"] = "5"
    raw = orjson.dumps(hook)
    dead = whole_record(parse(raw), raw)
    assert dead.reason is R.UNSUPPORTED_VERSION
    assert dead.detail == 'version: webhook payload version "5" is not supported (expected "4")'
    native_v2 = b'{"stormwatch":2,"labels":{"a":"b"}}'
    assert whole_record(parse(native_v2), native_v2).reason is R.UNSUPPORTED_VERSION


# ---------------------------------------------------------------- per-alert reasons


def test_invalid_alert_in_webhook_keeps_the_good_ones() -> None:
    hook = fixture_doc("alertmanager_webhook_firing.json")
    good = hook["alerts"][0]
    bad = {**good, "labels": {**good["labels"], "severity": 3}}
    hook["alerts"] = [good, good, good, bad, good]
    result = parse(hook)
    assert len(result.alerts) == 4
    assert [a.origin.index for a in result.alerts if a.origin] == [0, 1, 2, 4]
    dead = one_bad(result)
    assert dead.reason is R.INVALID_ALERT
    assert dead.detail == "alerts[3].labels.severity: expected string, got int"
    assert dead.alert_index == 3
    assert orjson.loads(base64.b64decode(dead.original)) == bad  # that alert, re-encoded
    assert dead.original_size == len(base64.b64decode(dead.original))
    assert dead.format == "alertmanager"
    assert dead.at == RECEIVED


def test_missing_labels() -> None:
    result = parse(
        prom(GOOD, {"annotations": {"summary": "no labels"}}, {"labels": {}}, {"labels": {"a": ""}})
    )
    assert len(result.alerts) == 1
    assert [(d.reason, d.alert_index, d.detail) for d in result.dead_letters] == [
        (R.MISSING_LABELS, 1, "[1].labels: missing (every alert needs at least one label)"),
        (R.MISSING_LABELS, 2, "[2].labels: empty (every alert needs at least one label)"),
        (R.MISSING_LABELS, 3, "[3].labels: every label value is empty (an empty value means no label)"),
    ]


def test_too_many_labels() -> None:
    labels = {f"l{i}": "v" for i in range(5)}
    dead = one_bad(parse(prom({"labels": labels}), max_labels=4))
    assert dead.reason is R.TOO_MANY_LABELS
    assert dead.detail == "[0].labels: 5 labels, limit 4 (ingest.max_labels)"


@pytest.mark.parametrize(
    ("alert", "detail"),
    [
        ({"startsAt": "yesterday"}, '[0].startsAt: "yesterday" is not an RFC 3339 timestamp with offset'),
        (
            {"startsAt": "2024-05-01T10:00:00"},
            '[0].startsAt: "2024-05-01T10:00:00" is not an RFC 3339 timestamp',
        ),
        ({"startsAt": "2024-02-30T10:00:00Z"}, "[0].startsAt: "),
        (
            {"endsAt": "1999-12-31T23:59:59Z"},
            '[0].endsAt: "1999-12-31T23:59:59Z" is outside the accepted years 2000..2200',
        ),
        ({"endsAt": "2201-01-01T00:00:00Z"}, "[0].endsAt: "),
        ({"startsAt": 1714557600}, "[0].startsAt: expected RFC 3339 timestamp string, got int"),
    ],
)
def test_bad_timestamp(alert: dict[str, Any], detail: str) -> None:
    dead = one_bad(parse(prom({"labels": {"alertname": "X"}, **alert})))
    assert dead.reason is R.BAD_TIMESTAMP
    assert dead.detail.startswith(detail)


def test_bad_epoch_timestamp_and_configurable_range() -> None:
    doc = {
        "stormwatch": 1,
        "alerts": [{"labels": {"a": "b"}, "starts_at": 5}, {"labels": {"a": "c"}, "starts_at": True}],
    }
    result = parse(doc)
    assert [d.detail for d in result.dead_letters] == [
        "alerts[0].starts_at: epoch 5 is outside the accepted years 2000..2200",
        "alerts[1].starts_at: expected RFC 3339 timestamp string or epoch number, got bool",
    ]
    old = prom({"labels": {"a": "b"}, "startsAt": "1990-01-01T00:00:00Z"})
    assert len(parse(old, min_year=1980).alerts) == 1


def test_label_type_and_name_errors_are_precise() -> None:
    result = parse(
        prom(
            {"labels": {"alertname": "X", "up": True}},
            {"labels": {"alertname": "X", "odd key": 1.5}},
            {"labels": {"alertname": "X", "bad-name": "v"}},
            {"labels": ["alertname", "X"]},
            {"labels": {"alertname": "X"}, "annotations": {"n": None}},
            {"labels": {"alertname": "X"}, "generatorURL": 7},
            "not an object",
        )
    )
    assert [d.detail for d in result.dead_letters] == [
        "[0].labels.up: expected string, got bool",
        '[1].labels["odd key"]: expected string, got float',
        '[2].labels: invalid label name "bad-name" (must match [a-zA-Z_][a-zA-Z0-9_]*)',
        "[3].labels: expected object, got array",
        "[4].annotations.n: expected string, got null",
        "[5].generatorURL: expected string, got int",
        "[6]: expected alert object, got string",
    ]
    assert {d.reason for d in result.dead_letters} == {R.INVALID_ALERT}


def test_label_too_large() -> None:
    dead = one_bad(parse(prom({"labels": {"alertname": "é" * 600}}), max_label_bytes=1024))
    assert dead.reason is R.INVALID_ALERT
    assert dead.detail == "[0].labels.alertname: label is 1209 bytes, limit 1024 (ingest.max_label_bytes)"


def test_alertmanager_bad_status() -> None:
    hook = fixture_doc("alertmanager_webhook_firing.json")
    hook["alerts"][1]["status"] = "pending"
    dead = one_bad(parse(hook))
    assert dead.detail == 'alerts[1].status: expected "firing" or "resolved", got "pending"'


@pytest.mark.parametrize(
    ("event", "detail"),
    [
        (
            {"event_action": "explode", "dedup_key": "k"},
            'event_action: expected trigger, acknowledge or resolve, got "explode"',
        ),
        ({"routing_key": "r", "dedup_key": "k"}, "event_action: missing"),
        ({"event_action": "acknowledge"}, "dedup_key: missing (required for acknowledge events)"),
        ({"event_action": "resolve", "dedup_key": ""}, "dedup_key: empty"),
        ({"event_action": "resolve", "dedup_key": "k" * 256}, "dedup_key: 256 characters, limit 255"),
        ({"event_action": "trigger"}, "payload: missing (required for trigger events)"),
        (
            {"event_action": "trigger", "payload": {"source": "h", "severity": "info"}},
            "payload.summary: missing (required for trigger events)",
        ),
        (
            {"event_action": "trigger", "payload": {"summary": "s", "source": "h", "severity": 2}},
            "payload.severity: expected string, got int",
        ),
        (
            {
                "event_action": "trigger",
                "payload": {"summary": "s", "source": "h", "severity": "info", "group": 1},
            },
            "payload.group: expected string, got int",
        ),
    ],
)
def test_pagerduty_invalid_events(event: dict[str, Any], detail: str) -> None:
    dead = one_bad(parse({"routing_key": "r", **event}))
    assert dead.reason is R.INVALID_ALERT
    assert dead.detail == detail
    assert dead.alert_index == 0


def test_pagerduty_batch_bad_event_path() -> None:
    batch = fixture_doc("pagerduty_batch.json")
    batch[1]["payload"]["timestamp"] = "soon"
    result = parse(batch)
    assert len(result.alerts) == 1
    dead = one_bad(result)
    assert (dead.reason, dead.detail) == (
        R.BAD_TIMESTAMP,
        '[1].payload.timestamp: "soon" is not an RFC 3339 timestamp with offset',
    )


def test_native_unknown_field_and_sanitize_collision() -> None:
    doc = {
        "stormwatch": 1,
        "alerts": [
            {"labels": {"a": "b"}, "start_at": "2024-05-01T09:00:00Z"},
            {"labels": {"a.b": "1", "a-b": "2"}},
            {"labels": {"a": "b"}, "status": "open"},
            {"labels": {"a": "b"}, "severity": ["x"]},
        ],
    }
    details = [d.detail for d in parse(doc).dead_letters]
    assert details[0].startswith('alerts[0]: unknown field "start_at" (known: annotations, ends_at, ')
    assert details[1] == 'alerts[1].labels: label names "a.b" and "a-b" both become "a_b" after sanitizing'
    assert details[2] == 'alerts[2].status: expected "firing" or "resolved", got "open"'
    assert details[3] == "alerts[3].severity: expected string, got array"


def test_native_document_errors_dead_letter_the_record() -> None:
    raw = b'{"stormwatch":1,"alerts":[{"labels":{"a":"b"}}],"extra":1}'
    dead = whole_record(parse(raw), raw)
    assert dead.reason is R.INVALID_ALERT
    assert dead.detail.startswith('unknown field "extra"')


def test_cloudevents_bad_envelope_only_costs_that_event() -> None:
    good = fixture_doc("cloudevents_native.json")
    events = [
        good,
        {**good, "specversion": "0.3"},
        {k: v for k, v in good.items() if k != "id"},
        {**good, "datacontenttype": "text/xml"},
        {**good, "data_base64": "AAAA"},
        {**{k: v for k, v in good.items() if k != "data"}, "data_base64": "!!!"},
        {
            **{k: v for k, v in good.items() if k != "data"},
            "data_base64": base64.b64encode(b"<xml/>").decode(),
        },
        {**good, "time": "noon"},
        {**good, "data": "text"},
        {**good, "data": []},
        {**good, "data": {"stormwatch": 3, "labels": {"a": "b"}}},
        {**good, "data": {"labels": {"a": "b"}, "startsAt": 1}},
        good,
    ]
    result = parse(events)
    assert len(result.alerts) == 2
    got = [(d.reason, d.alert_index, d.detail) for d in result.dead_letters]
    assert got[0] == (R.UNSUPPORTED_VERSION, 1, '[1].specversion: "0.3" is not supported (expected "1.0")')
    assert got[1] == (R.INVALID_ALERT, 2, "[2].id: missing (required CloudEvents attribute)")
    assert got[2] == (
        R.INVALID_ALERT,
        3,
        '[3].datacontenttype: "text/xml" is not JSON; alerts travel as JSON data',
    )
    assert got[3] == (R.INVALID_ALERT, 4, "[4].data_base64: data and data_base64 are mutually exclusive")
    assert got[4][0] is R.INVALID_ALERT and got[4][2].startswith("[5].data_base64: not valid base64")
    assert got[5][0] is R.NOT_JSON and got[5][2].startswith("[6].data_base64: decoded bytes are not JSON")
    assert got[6] == (R.BAD_TIMESTAMP, 7, '[7].time: "noon" is not an RFC 3339 timestamp with offset')
    assert got[7] == (R.INVALID_ALERT, 8, "[8].data: expected alert object or array of alerts, got string")
    assert got[8] == (R.EMPTY, 9, "[9].data: empty array: the event carries no alerts")
    assert got[9] == (
        R.UNSUPPORTED_VERSION,
        10,
        "[10].data.stormwatch: format version 3 is not supported (this release reads 1)",
    )
    assert got[10] == (R.BAD_TIMESTAMP, 11, "[11].data.startsAt: expected RFC 3339 timestamp string, got int")
    assert [a.origin.index for a in result.alerts if a.origin] == [0, 12]
    # an envelope problem keeps the whole event as the original
    assert orjson.loads(base64.b64decode(result.dead_letters[0].original))["specversion"] == "0.3"


def test_cloudevents_deep_base64_data() -> None:
    nested: Any = "x"
    for _ in range(40):
        nested = [nested]
    event = {
        "specversion": "1.0",
        "id": "1",
        "source": "/s",
        "type": "t",
        "data_base64": base64.b64encode(orjson.dumps({"labels": {"a": "b"}, "x": nested})).decode(),
    }
    dead = one_bad(parse(event))
    assert (dead.reason, dead.detail) == (
        R.TOO_DEEP,
        "data_base64: nesting deeper than 32 (ingest.max_json_depth)",
    )


# reasons written by later stages (correlator, command handling), never by the adapters
NOT_FROM_ADAPTERS = {"LATE_ALERT", "UNKNOWN_INCIDENT", "INVALID_COMMAND"}


def test_every_reason_is_covered() -> None:
    """Each adapter DeadLetterReason has a test above; a new reason needs one too."""
    source = Path(__file__).read_text(encoding="utf-8")
    for reason in DeadLetterReason:
        if reason.name not in NOT_FROM_ADAPTERS:
            assert f"R.{reason.name}" in source, f"no test produces {reason.name}"
