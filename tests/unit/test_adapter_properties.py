"""Hypothesis: whatever bytes arrive, parse_record returns alerts and/or dead letters and never raises."""

from __future__ import annotations

import base64
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormwatch.schemas.adapters import FORMAT_HEADER, ParseLimits, ParseResult, parse_record
from stormwatch.schemas.alert import Alert, InputFormat
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason

TS_MS = 1714557600000
SMALL = ParseLimits(max_record_bytes=64 * 1024, max_alerts_per_record=50, max_labels=8, max_label_bytes=256)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(raw: bytes, headers: dict[str, bytes] | None = None, limits: ParseLimits = SMALL) -> ParseResult:
    result = parse_record(
        raw, topic="raw", partition=0, offset=7, timestamp_ms=TS_MS, headers=headers, limits=limits
    )
    check_invariants(result, raw)
    return result


def check_invariants(result: ParseResult, raw: bytes) -> None:
    assert isinstance(result, ParseResult)
    assert len(result.alerts) + len(result.dead_letters) >= 1
    indices = []
    for alert in result.alerts:
        assert isinstance(alert, Alert)
        Alert.from_bytes(alert.to_bytes())  # every alert is a valid wire record
        assert alert.origin is not None
        indices.append(alert.origin.index)
        assert len(alert.fingerprint) == 16
        assert alert.labels
    for dead in result.dead_letters:
        assert isinstance(dead, DeadLetter)
        DeadLetter.from_bytes(dead.to_bytes())
        assert "internal adapter error" not in dead.detail, dead.detail
        original = base64.b64decode(dead.original, validate=True)
        assert dead.original_size == len(original)
        if dead.alert_index is None:
            assert original == raw  # whole-record dead letters keep the exact bytes
            assert result.alerts == [] and len(result.dead_letters) == 1
        else:
            indices.append(dead.alert_index)
    assert len(indices) == len(set(indices)), "an alert index was used twice"


# ---------------------------------------------------------------- random bytes


@PROPS
@given(st.binary(max_size=4096))
def test_random_bytes(raw: bytes) -> None:
    run(raw)


@PROPS
@given(
    st.binary(max_size=512),
    st.one_of(st.none(), st.binary(max_size=20), st.sampled_from([f.value.encode() for f in InputFormat])),
)
def test_random_bytes_with_random_format_header(raw: bytes, header: bytes | None) -> None:
    run(raw, headers=None if header is None else {FORMAT_HEADER: header})


# ---------------------------------------------------------------- random JSON, incl. weird numbers


class Raw:
    """A literal JSON token emitted as is (numbers orjson would not write)."""

    def __init__(self, text: str) -> None:
        self.text = text


def to_json(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if type(value) is int:
        return str(value)  # any size: JSON has no integer range
    if isinstance(value, dict):
        return "{" + ",".join(f"{orjson.dumps(k).decode()}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return orjson.dumps(value).decode()


# numbers orjson reads (huge ints become floats) and ones it refuses (out of double range)
readable_numbers = st.sampled_from(
    [
        "1e-400",
        "-0",
        "0.0000000000000000000001",
        "123456789012345678901234567890",
        "-9223372036854775809",
        "18446744073709551616",
        "1E+2",
        "3.141592653589793238462643383279",
        "1714557600",
        "1714557600000",
        "17145576000000000",
    ]
).map(Raw)
unreadable_numbers = st.sampled_from(["1e400", "-1e400"]).map(Raw)
texts = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "firing",
            "resolved",
            "trigger",
            "resolve",
            "acknowledge",
            "1.0",
            "4",
            "critical",
            "p2",
            "0001-01-01T00:00:00Z",
            "2024-05-01T09:00:00Z",
            "2024-05-01T09:00:00.123456789+02:00",
            "9999-12-31T23:59:59-23:59",
        ]
    ),
    st.text(min_size=300, max_size=3000),  # huge strings
)
sane_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    texts,
    readable_numbers,
)
keys = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "alerts",
            "version",
            "groupKey",
            "status",
            "fingerprint",
            "event_action",
            "dedup_key",
            "payload",
            "summary",
            "source",
            "severity",
            "specversion",
            "id",
            "type",
            "time",
            "data",
            "data_base64",
            "datacontenttype",
            "stormwatch",
            "starts_at",
            "ends_at",
            "key",
            "alertname",
            "timestamp",
            "class",
            "custom_details",
        ]
    ),
)


def json_of(scalar: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalar,
        lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=6),
        max_leaves=40,
    )


json_values = json_of(st.one_of(sane_scalars, unreadable_numbers))
sane_values = json_of(sane_scalars)


@PROPS
@given(json_values)
def test_random_json(doc: Any) -> None:
    run(to_json(doc).encode())


@PROPS
@given(json_values, st.sampled_from(list(InputFormat)))
def test_random_json_forced_into_each_format(doc: Any, fmt: InputFormat) -> None:
    run(to_json(doc).encode(), headers={FORMAT_HEADER: fmt.value.encode()})


# ---------------------------------------------------------------- format-shaped documents with random fields


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly (9 in 10) the well-formed value, sometimes anything at all."""
    return st.integers(0, 9).flatmap(lambda i: sane_values if i == 0 else strategy)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


names = st.one_of(
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,8}", fullmatch=True), st.sampled_from(["alertname", "severity"])
)
good_labels = st.dictionaries(names, st.text(min_size=1, max_size=10), min_size=1, max_size=6)
label_sets = st.one_of(
    good_labels,
    good_labels,
    st.dictionaries(st.text(max_size=8), st.one_of(st.text(max_size=10), sane_scalars), max_size=10),
)
string_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=4)
good_times = st.sampled_from(
    ["2024-05-01T09:00:00Z", "2024-05-01T11:00:00.5+02:00", "2024-05-01T10:30:00Z", "0001-01-01T00:00:00Z"]
)
timestamps = st.one_of(
    good_times, good_times, st.none(), texts, st.integers(), st.floats(allow_nan=False), readable_numbers
)

prom_alert = st.fixed_dictionaries(
    {"labels": maybe(label_sets)},
    optional={
        "annotations": maybe(string_maps),
        "startsAt": timestamps,
        "endsAt": timestamps,
        "generatorURL": maybe(st.text(max_size=20)),
    },
)
am_alert = st.fixed_dictionaries(
    {"labels": maybe(label_sets), "status": maybe(st.sampled_from(["firing", "resolved"]))},
    optional={
        "annotations": maybe(string_maps),
        "startsAt": timestamps,
        "endsAt": timestamps,
        "fingerprint": maybe(st.text(max_size=16)),
    },
)
am_webhook = st.fixed_dictionaries(
    {
        "version": maybe(st.just("4")),
        "groupKey": st.text(max_size=10),
        "alerts": maybe(st.lists(maybe(am_alert), min_size=1, max_size=8)),
    },
    optional={"truncatedAlerts": st.integers(-5, 5), "status": texts, "receiver": texts},
)
pd_payload = st.fixed_dictionaries(
    {
        "summary": maybe(st.text(min_size=1, max_size=30)),
        "source": maybe(st.text(min_size=1, max_size=10)),
        "severity": maybe(texts),
    },
    optional={
        "timestamp": timestamps,
        "component": maybe(texts),
        "group": maybe(texts),
        "class": maybe(texts),
        "custom_details": sane_values,
    },
)
pd_event = st.fixed_dictionaries(
    {
        "routing_key": st.text(max_size=32),
        "event_action": maybe(st.sampled_from(["trigger", "acknowledge", "resolve"])),
        "dedup_key": maybe(st.text(min_size=1, max_size=40)),
        "payload": maybe(pd_payload),
    },
    optional={
        "links": sane_values,
        "images": sane_values,
        "client": maybe(texts),
        "client_url": maybe(texts),
    },
)
native_alert = st.fixed_dictionaries(
    {"labels": maybe(label_sets)},
    optional={
        "annotations": maybe(string_maps),
        "status": maybe(st.sampled_from(["firing", "resolved"])),
        "severity": maybe(texts),
        "starts_at": timestamps,
        "ends_at": timestamps,
        "source": maybe(texts),
        "key": maybe(st.text(min_size=1, max_size=20)),
    },
)
native_doc = st.one_of(
    st.fixed_dictionaries(
        {
            "stormwatch": maybe(st.just(1)),
            "alerts": maybe(st.lists(maybe(native_alert), min_size=1, max_size=8)),
        },
        optional={"source": maybe(texts)},
    ),
    native_alert.map(lambda a: {"stormwatch": 1, **a}),
)
ce_data = st.one_of(
    native_alert,
    prom_alert,
    st.lists(st.one_of(native_alert, prom_alert), max_size=5),
    native_doc,
    am_webhook,
    pd_event,
)
ce_event = st.fixed_dictionaries(
    {
        "specversion": maybe(st.just("1.0")),
        "id": maybe(st.text(min_size=1, max_size=8)),
        "source": maybe(st.text(min_size=1, max_size=8)),
        "type": maybe(st.just("alert")),
        "data": maybe(ce_data),
    },
    optional={
        "time": timestamps,
        "datacontenttype": maybe(
            st.sampled_from(["application/json", "text/plain", "application/cloudevents+json"])
        ),
    },
)
shaped = st.one_of(
    st.lists(maybe(prom_alert), min_size=1, max_size=60),
    am_webhook,
    pd_event,
    st.lists(maybe(pd_event), min_size=1, max_size=6),
    ce_event,
    st.lists(maybe(ce_event), min_size=1, max_size=5),
    native_doc,
)


@PROPS
@given(shaped)
def test_format_shaped_documents(doc: Any) -> None:
    raw = to_json(doc).encode()
    first = run(raw)
    again = run(raw)
    assert [a.to_bytes() for a in first.alerts] == [a.to_bytes() for a in again.alerts]  # deterministic
    assert [d.to_bytes() for d in first.dead_letters] == [d.to_bytes() for d in again.dead_letters]


@PROPS
@given(st.lists(maybe(prom_alert), min_size=1, max_size=40))
def test_prometheus_batch_accounts_for_every_alert(batch: list[Any]) -> None:
    """Nothing lost: each element is an alert or its own dead letter, unless the record as a whole is."""
    result = run(to_json(batch).encode(), headers={FORMAT_HEADER: b"prometheus"})
    if any(d.alert_index is None for d in result.dead_letters):
        return
    indices = [a.origin.index for a in result.alerts if a.origin] + [
        d.alert_index for d in result.dead_letters
    ]
    assert sorted(i for i in indices if i is not None) == list(range(len(batch)))


# ---------------------------------------------------------------- nesting and size extremes


@PROPS
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["[", "{"]), st.booleans())
def test_deep_nesting(depth: int, opener: str, inside_alert: bool) -> None:
    nested = "[" * depth + "]" * depth if opener == "[" else '{"k":' * depth + "1" + "}" * depth
    raw = (f'[{{"labels":{{"a":"b"}},"x":{nested}}}]' if inside_alert else nested).encode()
    result = run(raw)
    total_depth = depth + (2 if inside_alert else 0)
    if total_depth > SMALL.max_json_depth:
        assert [d.reason for d in result.dead_letters] == [DeadLetterReason.TOO_DEEP]


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=200_000))
def test_huge_label_values_and_records(size: int) -> None:
    raw = orjson.dumps([{"labels": {"alertname": "x" * size}}])
    result = run(raw)
    if len(raw) > SMALL.max_record_bytes:
        assert [d.reason for d in result.dead_letters] == [DeadLetterReason.TOO_LARGE]
    elif size + len("alertname") > SMALL.max_label_bytes:
        assert [d.reason for d in result.dead_letters] == [DeadLetterReason.INVALID_ALERT]
    else:
        assert len(result.alerts) == 1
