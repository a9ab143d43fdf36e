"""The gateway's parsed notes (streams.core.canonical): ingest reads them to exactly the notes the
adapters give the original body, and a forged or damaged notes record gets no further than the
same alerts in an input format would. Signed notes (``ingest.notes_key_file``): a record whose
signature verifies is read without the per-row checks to the same notes; any other is checked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY

from stormwatch.config import ConfigError, IngestSettings, Settings
from stormwatch.gateway import Gateway
from stormwatch.kafkasink import KafkaSink
from stormwatch.metrics import pipeline_metrics
from stormwatch.schemas.adapters import (
    ENCODING_HEADER,
    FORMAT_HEADER,
    NOTES_V1,
    ParseLimits,
    parse_record_checked,
)
from stormwatch.schemas.adapters.detect import SIGNATURE_HEADER
from stormwatch.schemas.dlq import DeadLetterReason
from stormwatch.schemas.fingerprint import key_fingerprint
from stormwatch.streams.core import canonical
from stormwatch.streams.core.batching import AlertBatcher, RawRecord
from stormwatch.streams.core.canonical import NotesKeys, NotesSignature, encode_notes
from stormwatch.streams.core.replay import Replay
from stormwatch.streams.core.rules import RulesConfig
from tests.kit.corpus import FORMATS, good_doc

TS = 1_780_000_000_123
NOTES = {ENCODING_HEADER: NOTES_V1}


KEY = b"K" * 44  # what `head -c 32 /dev/urandom | base64` gives: 44 bytes
KEYS = NotesKeys([KEY])


def read(
    value: bytes,
    headers: dict[str, bytes] | None,
    limits: ParseLimits | None = None,
    *,
    keys: NotesKeys | None = None,
    ts: int = TS,
) -> RawRecord:
    return AlertBatcher(RulesConfig(), keys).add_raw(
        value,
        topic="raw",
        partition=0,
        offset=7,
        timestamp_ms=ts,
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


# ---------------------------------------------------------------------------- signed notes


def signed(value: bytes, keys: NotesKeys = KEYS, ts: int = TS) -> dict[str, bytes]:
    return {**NOTES, SIGNATURE_HEADER: keys.sign(value, ts)}


def no_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any per-row check from now on fails the test: proof that the trusted path ran."""

    def checked(*_: Any) -> Any:
        raise AssertionError("a signed row was checked again")

    monkeypatch.setattr(canonical, "_note", checked)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_signed_record_is_read_without_the_row_checks_to_the_same_notes(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = orjson.dumps(good_doc(fmt, "s1", annotation="disk at 91%"))
    value = gateway_record(body, fmt)
    checked = read(value, NOTES)
    no_checks(monkeypatch)
    trusted = read(value, signed(value), keys=KEYS)
    assert trusted.signature is NotesSignature.VALID and checked.signature is None
    assert trusted.alerts == checked.alerts and trusted.alerts  # the same AlertNotes, format included
    assert trusted.dead_letters == [] and trusted.broadcasts == checked.broadcasts


def test_a_signed_batch_with_resolves_keys_and_times_reads_as_the_checked_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    alerts = [good_doc("prometheus", f"b{i}")[0] for i in range(3)]
    alerts[1]["endsAt"] = "2026-01-01T00:05:00.250Z"
    rows = orjson.loads(gateway_record(orjson.dumps(alerts), "prometheus"))["al"]
    keyed = orjson.loads(gateway_record(orjson.dumps(good_doc("pagerduty", "b9")), "pagerduty"))["al"]
    value = orjson.dumps({"v": 1, "al": [*rows, *keyed]})
    checked = read(value, NOTES)
    no_checks(monkeypatch)
    trusted = read(value, signed(value), keys=KEYS)
    assert trusted.alerts == checked.alerts and len(trusted.alerts) == 4
    assert trusted.broadcasts == checked.broadcasts


def forged_value() -> bytes:
    """A notes record whose row names a fingerprint its labels do not give."""
    doc = orjson.loads(gateway_record(orjson.dumps(good_doc("prometheus", "s2")), "prometheus"))
    doc["al"][0][0] = "0" * 16
    return orjson.dumps(doc)


def _tampered_value() -> tuple[bytes, dict[str, bytes], int]:
    good = gateway_record(orjson.dumps(good_doc("prometheus", "s2")), "prometheus")
    return forged_value(), signed(good), TS


@pytest.mark.parametrize(
    ("attack", "result"),
    [
        (_tampered_value, NotesSignature.INVALID),
        (
            lambda: (forged_value(), signed(forged_value(), ts=TS - 1), TS),
            NotesSignature.INVALID,
        ),  # timestamp
        (
            lambda: (forged_value(), signed(forged_value(), NotesKeys([b"W" * 44])), TS),
            NotesSignature.INVALID,
        ),
        (
            lambda: (forged_value(), {**NOTES, SIGNATURE_HEADER: b"v2=" + b"0" * 64}, TS),
            NotesSignature.INVALID,
        ),
        (lambda: (forged_value(), NOTES, TS), NotesSignature.ABSENT),
    ],
    ids=["tampered-value", "tampered-timestamp", "wrong-key", "unknown-scheme", "absent"],
)
def test_a_record_not_signed_with_the_key_is_checked_and_a_forged_row_rejected(
    attack: Any, result: Any
) -> None:
    value, headers, ts = attack()
    record = read(value, headers, keys=KEYS, ts=ts)
    assert record.signature is result and record.alerts == []
    [dead] = record.dead_letters  # checked as before: the forged row is a dead letter, nothing more
    assert dead.reason is DeadLetterReason.INVALID_ALERT and dead.detail.startswith("al[0][0]")


def test_without_keys_a_signature_is_ignored_and_every_row_checked() -> None:
    value = forged_value()
    record = read(value, signed(value))
    assert record.signature is None and record.alerts == [] and len(record.dead_letters) == 1


def test_a_signed_record_this_version_cannot_read_is_checked() -> None:
    value = orjson.dumps({"v": 1, "al": [["too", "short"]]})
    record = read(value, signed(value), keys=KEYS)
    assert record.signature is NotesSignature.VALID and record.alerts == []
    [dead] = record.dead_letters
    assert dead.reason is DeadLetterReason.INVALID_ALERT and dead.detail.startswith("al[0]")


def test_the_record_limits_apply_to_signed_notes_too() -> None:
    value = gateway_record(orjson.dumps([good_doc("prometheus", f"l{i}")[0] for i in range(3)]), "prometheus")
    [dead] = read(value, signed(value), ParseLimits(max_alerts_per_record=2), keys=KEYS).dead_letters
    assert dead.reason is DeadLetterReason.TOO_LARGE


def test_the_first_key_signs_and_every_key_verifies() -> None:
    old, new = b"O" * 32, b"N" * 32
    value = gateway_record(orjson.dumps(good_doc("prometheus", "r1")), "prometheus")
    rotating = NotesKeys([new, old])
    assert rotating.check(NotesKeys([old]).sign(value, TS), value, TS) is NotesSignature.VALID
    assert rotating.sign(value, TS) == NotesKeys([new]).sign(value, TS)
    assert NotesKeys([old]).check(rotating.sign(value, TS), value, TS) is NotesSignature.INVALID
    assert "NNNN" not in repr(rotating) and "OOOO" not in repr(rotating)  # never shown


def test_the_signature_results_are_counted() -> None:
    metrics = pipeline_metrics()
    good = gateway_record(orjson.dumps(good_doc("prometheus", "c1")), "prometheus")

    def count(result: str) -> float:
        return REGISTRY.get_sample_value("stormwatch_notes_signature_total", {"result": result}) or 0.0

    before = {r.value: count(r.value) for r in NotesSignature}
    for record in (
        read(good, signed(good), keys=KEYS),
        read(good, signed(good), keys=KEYS),
        read(forged_value(), signed(good), keys=KEYS),
        read(good, NOTES, keys=KEYS),
        read(good, signed(good)),  # no keys: not counted
    ):
        metrics.record_ingest(record)
    assert {r: count(r) - n for r, n in before.items()} == {"valid": 2, "invalid": 1, "absent": 1}


def test_replay_reads_signed_notes_with_the_keys() -> None:
    value = gateway_record(orjson.dumps(good_doc("prometheus", "p1")), "prometheus")
    replay = Replay(RulesConfig(), notes_keys=KEYS)
    replay.record(value, TS, signed(value))
    assert replay.dead_letters == []
    unsigned = Replay(RulesConfig())
    unsigned.record(forged_value(), TS, signed(forged_value()))
    assert len(unsigned.dead_letters) == 1


# ---------------------------------------------------------------------------- the key file


def test_a_key_file_holds_one_key_per_line_the_first_signing(tmp_path: Path) -> None:
    path = tmp_path / "notes.key"
    path.write_bytes(b"N" * 44 + b"\n\n" + b"O" * 32 + b"\n")
    keys = IngestSettings(notes_key_file=str(path)).notes_keys()
    assert keys is not None
    assert keys.sign(b"x", TS) == NotesKeys([b"N" * 44]).sign(b"x", TS)
    assert keys.check(NotesKeys([b"O" * 32]).sign(b"x", TS), b"x", TS) is NotesSignature.VALID
    assert IngestSettings().notes_keys() is None


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        (b"", "holds no key"),
        (b"short-but-secret-key\n", "key 1 is 20 bytes, at least 32"),
        (b"A" * 44 + b"\nshort-but-secret-key\n", "key 2 is 20 bytes"),
    ],
)
def test_a_missing_empty_or_short_key_file_is_refused_with_how_to_make_one(
    tmp_path: Path, content: bytes | None, problem: str
) -> None:
    path = tmp_path / "notes.key"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        IngestSettings(notes_key_file=str(path)).notes_keys()
    message = str(caught.value)
    assert problem in message and "head -c 32 /dev/urandom | base64 >" in message
    assert "short-but-secret-key" not in message  # never the key


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        IngestSettings(notes_key_file=str(tmp_path)).notes_keys()  # a directory


# ---------------------------------------------------------------------------- the gateway signs


class RecordingSink:
    """The part of KafkaSink the gateway writes through: keeps each record instead."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict[str, Any], int]] = []

    async def send(
        self, value: bytes, *, key: bytes | None, headers: list[tuple[str, Any]], timestamp_ms: int
    ) -> None:
        self.sent.append((value, dict(headers), timestamp_ms))


def post_through_gateway(settings: Settings, body: Any) -> RecordingSink:
    sink = RecordingSink()
    gateway = Gateway(settings, cast(KafkaSink, sink))

    async def go() -> None:
        async with TestClient(TestServer(gateway.app)) as client:
            resp = await client.post("/api/v2/alerts", data=orjson.dumps(body))
            assert resp.status == 200, await resp.text()

    asyncio.run(go())
    return sink


def test_the_gateway_signs_its_notes_over_the_record_timestamp_when_a_key_is_set(tmp_path: Path) -> None:
    path = tmp_path / "notes.key"
    path.write_bytes(KEY + b"\n")
    settings = Settings.model_validate({"ingest": {"notes_key_file": str(path)}})
    [(value, headers, ts)] = post_through_gateway(settings, good_doc("prometheus", "g1")).sent
    assert headers[ENCODING_HEADER] == NOTES_V1
    assert KEYS.check(headers[SIGNATURE_HEADER], value, ts) is NotesSignature.VALID
    record = read(value, headers, keys=KEYS, ts=ts)
    assert record.signature is NotesSignature.VALID and len(record.alerts) == 1
    [(value, headers, ts)] = post_through_gateway(Settings(), good_doc("prometheus", "g2")).sent
    assert headers[ENCODING_HEADER] == NOTES_V1 and SIGNATURE_HEADER not in headers  # no key: unsigned


@pytest.mark.parametrize(
    ("index", "value"),
    [
        (3, {"alertname": 1}),
        (3, ["a"]),
        (4, {"summary": ["x"]}),
        (4, ["x"]),
        (0, 7),
        (2, "urgent"),
        (5, "soon"),
        (6, 1.5),
        (7, None),
    ],
    ids=[
        "label-value",
        "labels-list",
        "annotation-value",
        "annotations-list",
        "fingerprint",
        "severity",
        "starts",
        "ends",
        "source",
    ],
)
def test_a_signed_row_of_the_wrong_types_is_checked_and_dead_lettered_not_a_crash(
    index: int, value: object
) -> None:
    """The signature vouches for the writer, not for the types: a gateway of another version (or a
    leaked key) could sign a row the router cannot take. Read trusted, such a row raised in the
    routing, outside ingest's error handling: a record that would have stopped ingest for good."""
    doc = orjson.loads(gateway_record(orjson.dumps(good_doc("prometheus", "w1")), "prometheus"))
    doc["al"][0][index] = value
    record = orjson.dumps(doc)
    result = read(record, signed(record), keys=KEYS)
    assert result.signature is NotesSignature.VALID
    assert result.alerts == [] and len(result.dead_letters) == 1
