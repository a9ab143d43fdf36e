"""The gateway's parsed notes (streams.core.canonical): ingest reads them to exactly the notes the
adapters give the original body, and a forged or damaged notes record gets no further than the
same alerts in an input format would."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from stormwatch.schemas.adapters import (
    ENCODING_HEADER,
    FORMAT_HEADER,
    NOTES_V1,
    ParseLimits,
    parse_record_checked,
)
from stormwatch.schemas.dlq import DeadLetterReason
from stormwatch.schemas.fingerprint import key_fingerprint
from stormwatch.streams.core.batching import AlertBatcher, RawRecord
from stormwatch.streams.core.canonical import encode_notes
from stormwatch.streams.core.rules import RulesConfig
from tests.kit.corpus import FORMATS, good_doc

TS = 1_780_000_000_123
NOTES = {ENCODING_HEADER: NOTES_V1}


def read(value: bytes, headers: dict[str, bytes] | None, limits: ParseLimits | None = None) -> RawRecord:
    return AlertBatcher(RulesConfig()).add_raw(
        value,
        topic="raw",
        partition=0,
        offset=7,
        timestamp_ms=TS,
        headers=headers,
        limits=limits or ParseLimits(),
    )


def gateway_record(body: bytes, fmt: str) -> bytes:
    """What the gateway writes for a request whose alerts all passed."""
    checked = parse_record_checked(
        body, topic="raw", partition=-1, offset=-1, timestamp_ms=TS, headers={FORMAT_HEADER: fmt.encode()}
    )
    assert checked.alerts and not checked.dead_letters
    return encode_notes(checked.alerts, TS)


def wire_rows(record: RawRecord) -> list[list[Any]]:
    return [[*n.to_wire(), n.format] for n in record.alerts]


@pytest.mark.parametrize("fmt", FORMATS)
def test_notes_read_to_the_notes_the_adapters_give_the_body(fmt: str) -> None:
    body = orjson.dumps(good_doc(fmt, "u1", annotation="disk at 91%"))
    direct = read(body, {FORMAT_HEADER: fmt.encode()})
    via_gateway = read(gateway_record(body, fmt), NOTES)
    assert direct.alerts and not direct.dead_letters
    assert wire_rows(via_gateway) == wire_rows(direct)
    assert via_gateway.dead_letters == [] and via_gateway.broadcasts == direct.broadcasts


def test_a_prometheus_batch_with_resolves_and_times_round_trips() -> None:
    alerts = [
        {"labels": {"alertname": "A", "instance": f"i{i}"}, "startsAt": "2026-01-01T00:00:00Z"}
        for i in range(3)
    ]
    alerts[1]["endsAt"] = "2026-01-01T00:05:00.250Z"
    body = orjson.dumps(alerts)
    direct = read(body, {FORMAT_HEADER: b"prometheus"})
    assert wire_rows(read(gateway_record(body, "prometheus"), NOTES)) == wire_rows(direct)


def test_the_adapters_refuse_a_notes_record_with_a_reason() -> None:
    body = gateway_record(orjson.dumps(good_doc("prometheus", "u2")), "prometheus")
    result = parse_record_checked(body, topic="raw", partition=0, offset=1, timestamp_ms=TS, headers=NOTES)
    [dead] = result.dead_letters
    assert dead.reason is DeadLetterReason.UNKNOWN_FORMAT and "notes-v1" in dead.detail


def forged(mutate: Any) -> RawRecord:
    body = gateway_record(orjson.dumps(good_doc("prometheus", "u3")), "prometheus")
    doc = orjson.loads(body)
    mutate(doc["al"][0])
    return read(orjson.dumps(doc), NOTES)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda row: row.__setitem__(0, "0" * 16), DeadLetterReason.INVALID_ALERT),  # fingerprint
        (lambda row: row[3].__setitem__("instance", "elsewhere"), DeadLetterReason.INVALID_ALERT),
        (lambda row: row.__setitem__(1, True), DeadLetterReason.INVALID_ALERT),
        (lambda row: row.__setitem__(2, "catastrophic"), DeadLetterReason.INVALID_ALERT),
        (lambda row: row[3].__setitem__("bad-name", "x"), DeadLetterReason.INVALID_ALERT),
        (lambda row: row.__setitem__(4, {"summary": 3}), DeadLetterReason.INVALID_ALERT),
        (lambda row: row.__setitem__(5, "2026-01-01"), DeadLetterReason.BAD_TIMESTAMP),
        (lambda row: row.__setitem__(6, -1), DeadLetterReason.BAD_TIMESTAMP),
        (lambda row: row.__setitem__(7, ""), DeadLetterReason.INVALID_ALERT),
        (lambda row: row.__setitem__(9, "smoke-signals"), DeadLetterReason.UNKNOWN_FORMAT),
        (lambda row: row.append(1), DeadLetterReason.INVALID_ALERT),
    ],
)
def test_a_forged_row_is_one_dead_letter_holding_the_row(mutate: Any, reason: DeadLetterReason) -> None:
    result = forged(mutate)
    assert result.alerts == []
    [dead] = result.dead_letters
    assert dead.reason is reason and dead.alert_index == 0 and dead.source_offset == 7, dead.detail
    assert dead.detail.startswith("al[0]")


def test_a_key_must_give_the_fingerprint() -> None:
    def keyed(row: list[Any]) -> None:
        row[8] = "disk-1"
        row[9] = "pagerduty"

    assert forged(keyed).dead_letters  # the label fingerprint is not the key's
    result = forged(lambda row: (keyed(row), row.__setitem__(0, key_fingerprint("pagerduty", "disk-1"))))
    assert not result.dead_letters
    [note] = result.alerts
    assert note.keyed and note.event_ms == TS


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", DeadLetterReason.NOT_JSON),
        (b'{"v": 2, "al": []}', DeadLetterReason.INVALID_ALERT),
        (b'{"v": 1, "al": []}', DeadLetterReason.INVALID_ALERT),
        (b"[1, 2]", DeadLetterReason.INVALID_ALERT),
    ],
)
def test_a_bad_notes_record_is_one_dead_letter_holding_the_record(
    value: bytes, reason: DeadLetterReason
) -> None:
    result = read(value, NOTES)
    [dead] = result.dead_letters
    assert dead.reason is reason and dead.alert_index is None and result.alerts == []


def test_the_limits_apply_to_notes_too() -> None:
    body = gateway_record(orjson.dumps([good_doc("prometheus", f"u{i}")[0] for i in range(3)]), "prometheus")
    [dead] = read(body, NOTES, ParseLimits(max_alerts_per_record=2)).dead_letters
    assert dead.reason is DeadLetterReason.TOO_LARGE
    [dead] = read(body, NOTES, ParseLimits(max_record_bytes=len(body) - 1)).dead_letters
    assert dead.reason is DeadLetterReason.TOO_LARGE
    labels = read(body, NOTES, ParseLimits(max_labels=1)).dead_letters
    assert len(labels) == 3 and {d.reason for d in labels} == {DeadLetterReason.TOO_MANY_LABELS}
