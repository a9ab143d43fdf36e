"""Contracts marked ``plain_json`` write the bytes pydantic-core writes, and ``unchecked`` builds
what validation builds (schemas.common, issue #16)."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Contract, Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    Incident,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
    RootCauseInfo,
)
from tests.kit.events import build_event

PROPS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=12)  # any code point: escapes, U+2028, astral characters
labels = st.dictionaries(text, text, max_size=6)
instants = st.integers(min_value=0, max_value=4_102_444_800_000).map(utc_from_ms)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
    | instants,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)


@st.composite
def alert_changes(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "fingerprint": draw(text),
        "change": draw(st.sampled_from(list(AlertChangeKind))),
        "status": draw(st.sampled_from(list(AlertStatus))),
        "severity": draw(st.sampled_from(list(Severity))),
        "at": draw(instants),
        "labels": draw(st.none() | labels),
        "annotations": draw(st.none() | labels),
        "rule": draw(st.none() | text),
    }


@st.composite
def events(draw: st.DrawFn) -> IncidentEvent:
    root = draw(
        st.none()
        | st.builds(
            RootCauseInfo, component=text, kind=text, name=text, first_firing_at=instants, decided_by=text
        )
    )
    snapshot = IncidentSnapshot(
        state=draw(st.sampled_from(list(IncidentState))),
        severity=draw(st.sampled_from(list(Severity))),
        title=draw(text),
        group_key=draw(text),
        group_labels=draw(labels),
        rule=draw(text),
        alert_count=draw(st.integers(min_value=0, max_value=10**6)),
        firing_count=draw(st.integers(min_value=0, max_value=10**6)),
        opened_at=draw(instants),
        resolved_at=draw(st.none() | instants),
        assignee=draw(st.none() | text),
        members=draw(st.lists(text, max_size=3)),
        root_cause=root,
        muted=draw(st.integers(min_value=0, max_value=10**6)),
    )
    return IncidentEvent(
        event_id=draw(text),
        incident_id=draw(text),
        seq=draw(st.integers(min_value=1, max_value=10**9)),
        type=draw(st.sampled_from(list(IncidentEventType))),
        from_state=draw(st.none() | st.sampled_from(list(IncidentState))),
        to_state=draw(st.sampled_from(list(IncidentState))),
        at=draw(instants),
        actor=draw(text),
        cause=draw(text),
        rule=draw(st.none() | text),
        alerts=[AlertChange(**c) for c in draw(st.lists(alert_changes(), max_size=4))],
        deduplicated=draw(st.integers(min_value=0, max_value=10**9)),
        details=draw(st.dictionaries(text, json_values, max_size=4)),
        snapshot=snapshot,
    )


@PROPS
@given(events())
def test_an_event_is_written_as_pydantic_core_writes_it(event: IncidentEvent) -> None:
    assert event.to_bytes() == event.model_dump_json().encode()


@pytest.mark.parametrize(
    "details",
    [
        {"ids": {"a", "b"}},  # a set: orjson refuses it, pydantic writes a list
        {"big": 2**70},  # beyond 64 bits
        {"price": Decimal("1.50")},
        {"wait": timedelta(seconds=90)},
        {"raw": b"bytes"},
    ],
)
def test_values_orjson_does_not_take_fall_back_to_pydantic_core(details: dict[Any, Any]) -> None:
    event = IncidentEvent.model_construct(
        **{**_event().__dict__, "details": details}  # as a caller could have set it after validation
    )
    assert event.to_bytes() == event.model_dump_json().encode()


def test_datetimes_keep_their_offset_and_utc_is_written_z() -> None:
    event = _event()
    event.at = datetime(2026, 12, 6, 10, 0, 0, 500, tzinfo=timezone(timedelta(hours=2)))
    event.snapshot.opened_at = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
    assert event.to_bytes() == event.model_dump_json().encode()
    assert b'"opened_at":"2026-12-06T08:00:00Z"' in event.to_bytes()


@PROPS
@given(alert_changes())
def test_unchecked_builds_what_validation_builds(fields: dict[str, Any]) -> None:
    checked, unchecked = AlertChange(**fields), AlertChange.unchecked(**fields)
    assert unchecked == checked
    assert list(unchecked.__dict__) == list(checked.__dict__)
    assert unchecked.model_fields_set == checked.model_fields_set
    assert unchecked.to_bytes() == checked.to_bytes() == checked.model_dump_json().encode()


def test_unchecked_takes_defaults_and_refuses_missing_or_unknown_fields() -> None:
    at = utc_from_ms(0)
    minimal = {"fingerprint": "f", "change": "joined", "status": "firing", "severity": "info", "at": at}
    assert AlertChange.unchecked(**{**minimal, "change": AlertChangeKind.JOINED}).labels is None
    with pytest.raises(TypeError, match=r"missing \['at'\]"):
        AlertChange.unchecked(**{k: v for k, v in minimal.items() if k != "at"})
    with pytest.raises(TypeError, match=r"unknown \['colour'\]"):
        AlertChange.unchecked(**minimal, colour="red")
    # a mutable default is never shared between instances: such a field must be given
    with pytest.raises(TypeError, match="alerts"):
        IncidentEvent.unchecked(**{k: v for k, v in _event().__dict__.items() if k != "alerts"})


def _plain_contracts() -> list[type[Contract]]:
    seen: list[type[Contract]] = []
    todo: list[type[Contract]] = [Contract]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.plain_json and sub not in seen:
                seen.append(sub)
    return seen


def test_plain_contracts_have_nothing_that_changes_how_pydantic_writes_them() -> None:
    """What orjson would not know about: aliases, serializers, computed or excluded fields."""
    plain = _plain_contracts()
    assert {AlertChange, RootCauseInfo, IncidentSnapshot, IncidentEvent, Incident} <= set(plain)
    for model in plain:
        decorators = model.__pydantic_decorators__
        assert not decorators.field_serializers and not decorators.model_serializers, model
        assert not decorators.computed_fields, model
        assert model.model_config.get("ser_json_timedelta", "iso8601") == "iso8601", model
        for name, field in model.model_fields.items():
            assert field.serialization_alias is None and field.alias is None, (model, name)
            assert not field.exclude, (model, name)
            nested = [t for t in _model_types(field.annotation) if issubclass(t, BaseModel)]
            assert all(issubclass(t, Contract) and t.plain_json for t in nested), (model, name)


def _model_types(annotation: Any) -> list[type]:
    args = getattr(annotation, "__args__", ())
    found = [annotation] if isinstance(annotation, type) else []
    for arg in args:
        found += _model_types(arg)
    return found


def _event() -> IncidentEvent:
    at = utc_from_ms(1_790_000_000_123)
    change = AlertChange(
        fingerprint="f1", change=AlertChangeKind.JOINED, status=AlertStatus.FIRING, severity="warning", at=at
    )
    return build_event("i", at=at, alerts=[change], group_labels={"a": "b"})


def test_the_bytes_written_hold_no_spare_buffer() -> None:
    """orjson's own result keeps its output buffer allocated, several times the JSON's size."""
    event = _event()
    event.alerts = event.alerts * 200
    size = len(event.to_bytes())
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [event.to_bytes() for _ in range(10)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(kept) == 10 and held < 10 * size * 1.1


@PROPS
@given(events())
def test_an_event_read_without_alerts_is_the_event_less_its_alerts(event: IncidentEvent) -> None:
    data = event.to_bytes()
    expected = IncidentEvent.from_bytes(data).model_copy(update={"alerts": []})
    read = IncidentEvent.from_bytes_without_alerts(data)
    assert read == expected
    assert read.to_bytes() == expected.to_bytes()


def test_reading_without_alerts_still_checks_the_rest_and_skips_the_alerts_unread() -> None:
    event = build_event("inc-1", at=datetime(2026, 12, 6, tzinfo=UTC))
    good = event.to_json_dict()
    good["alerts"] = [{"not": "an alert change"}]  # never looked at
    assert IncidentEvent.from_bytes_without_alerts(orjson.dumps(good)).alerts == []
    with pytest.raises(ValidationError):
        IncidentEvent.from_bytes(orjson.dumps(good))
    bad = {**event.to_json_dict(), "seq": 0}  # the constraints of the other fields hold
    with pytest.raises(ValidationError, match="seq"):
        IncidentEvent.from_bytes_without_alerts(orjson.dumps(bad))


def test_reading_without_alerts_makes_no_objects_for_them() -> None:
    changes = [
        AlertChange(
            fingerprint=f"{i:016x}",
            change=AlertChangeKind.JOINED,
            status=AlertStatus.FIRING,
            severity=Severity.CRITICAL,
            at=datetime(2026, 12, 6, tzinfo=UTC),
            labels={f"label{k}": f"value-{i}-{k}" for k in range(8)},
        )
        for i in range(500)
    ]
    data = build_event("inc-1", at=datetime(2026, 12, 6, tzinfo=UTC), alerts=changes).to_bytes()

    def peak(read: Any) -> int:
        tracemalloc.start()
        try:
            read(data)
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    assert peak(IncidentEvent.from_bytes_without_alerts) * 10 < peak(IncidentEvent.from_bytes)
