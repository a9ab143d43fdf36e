"""The gateway's fast path for Prometheus pushes writes exactly what the adapters would, or declines.

Differential: every generated push (well-formed, or with any field replaced by anything) goes
through both ``prometheus_push_notes`` and the adapters (``parse_record_checked`` +
``encode_notes``). When the fast path answers, the adapters must have accepted every alert and the
notes bytes, the alert count and the record key must be the same; when it declines, the gateway
runs the adapters, so any answer is safe. Pure: no broker.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.gateway import record_key
from stormwatch.schemas.adapters import FORMAT_HEADER, ParseLimits
from stormwatch.schemas.adapters.record import CheckedResult, parse_record_checked
from stormwatch.streams.core.canonical import encode_notes
from stormwatch.streams.core.pushnotes import prometheus_push_notes
from tests.unit.test_adapter_properties import (
    PROPS,
    SMALL,
    TS_MS,
    good_labels,
    good_times,
    maybe,
    prom_alert,
    string_maps,
    to_json,
)


def adapters(raw: bytes, limits: ParseLimits = SMALL) -> CheckedResult:
    return parse_record_checked(
        raw,
        topic="raw",
        partition=-1,
        offset=-1,
        timestamp_ms=TS_MS,
        headers={FORMAT_HEADER: b"prometheus"},
        limits=limits,
    )


def same_or_declined(raw: bytes, limits: ParseLimits = SMALL) -> bool:
    """Asserts the fast path agrees with the adapters; True when it answered."""
    fast = prometheus_push_notes(raw, TS_MS, limits)
    if fast is None:
        return False
    slow = adapters(raw, limits)
    assert not slow.dead_letters, slow.dead_letters[0].detail
    assert fast.value == encode_notes(slow.alerts, TS_MS)
    assert fast.count == len(slow.alerts)
    assert fast.key == record_key(slow)
    return True


@PROPS
@given(st.lists(maybe(prom_alert), max_size=40))
def test_any_push_is_written_as_the_adapters_write_it_or_left_to_them(batch: list[Any]) -> None:
    same_or_declined(to_json(batch).encode())


valid_alert = st.fixed_dictionaries(
    {"labels": good_labels},
    optional={
        "annotations": string_maps,
        "startsAt": good_times,
        "endsAt": good_times,
        "generatorURL": st.text(max_size=20),
    },
)


@PROPS
@given(st.lists(valid_alert, min_size=1, max_size=40))
def test_a_push_of_valid_alerts_takes_the_fast_path(batch: list[Any]) -> None:
    raw = orjson.dumps(batch)
    if adapters(raw).dead_letters:  # a generated label name can still be refused (e.g. "__x")
        return
    assert same_or_declined(raw)


LABELS = '{"alertname":"Down","severity":"critical"}'


@pytest.mark.parametrize(
    "raw",
    [
        # where the two JSON parsers could differ: left to the adapters, or the same bytes
        '[{"labels":{"alertname":"a","alertname":"b"}}]',  # duplicate label: the last wins
        f'[{{"labels":{{"x":"1"}},"labels":{LABELS}}}]',  # duplicate field
        f'[{{"lab\\u0065ls":{LABELS}}}]',  # escaped field name
        f'[{{"labels":{LABELS},"x":1e400}}]',  # a number orjson refuses, in a field nobody reads
        f'[{{"labels":{LABELS},"x":' + "[" * 40 + "]" * 40 + "}]",  # deeper than max_json_depth
        f'\ufeff[{{"labels":{LABELS}}}]',  # byte order mark
        f'{{"labels":{LABELS}}}',  # a lone alert
        "[]",
        "[{}]",
        '[{"labels":{"a":"\\ud800"}}]',  # lone surrogate
        f'[{{"labels":{LABELS},"annotations":null,"startsAt":null,"endsAt":"0001-01-01T00:00:00Z"}}]',
        f'[{{"labels":{LABELS},"endsAt":"2024-05-01T10:00:00.0005Z"}}]',  # half a ms after receipt
        f'[{{"labels":{LABELS},"endsAt":"2024-05-01T10:00:00Z"}}]',  # exactly at receipt: resolved
        f'[{{"labels":{LABELS},"startsAt":1714557600}}]',
        '[{"labels":{"alertname":"a","empty":""}}]',  # empty values are dropped
        '[{"labels":{"bad-name":"x"}}]',
    ],
)
def test_edge_documents(raw: str) -> None:
    same_or_declined(raw.encode())


def test_what_it_declines_on_purpose() -> None:
    assert prometheus_push_notes(f'[{{"labels":{LABELS},"x":1}}]'.encode(), TS_MS, SMALL) is None
    deep = ParseLimits(max_json_depth=2)  # a push nests 3 levels: the adapters refuse it whole
    assert prometheus_push_notes(f'[{{"labels":{LABELS}}}]'.encode(), TS_MS, deep) is None
    assert adapters(f'[{{"labels":{LABELS}}}]'.encode(), deep).dead_letters
    many = orjson.dumps([{"labels": {"alertname": str(i)}} for i in range(SMALL.max_alerts_per_record + 1)])
    assert prometheus_push_notes(many, TS_MS, SMALL) is None
