"""The benchmark's workload generator: shape, determinism and parseability of its records."""

from __future__ import annotations

import orjson
import pytest

from stormwatch.bench.workloads import (
    WORKLOADS,
    Batch,
    SteadyLoad,
    SteadySpec,
    Storm,
    StormSpec,
    default_spec,
    format_ms,
)
from stormwatch.schemas.adapters import parse_record
from stormwatch.streams.core.routing import Router
from stormwatch.streams.core.rules import RulesConfig

T0 = 1_735_689_600_000


def small(**changes: object) -> StormSpec:
    fields: dict[str, object] = {"alerts": 6_000, "fingerprints": 600, "groups": 12, "per_record": 50}
    fields.update(changes)
    return StormSpec(**fields)  # type: ignore[arg-type]


def test_every_named_workload_but_steady_has_a_storm() -> None:
    for name in WORKLOADS:
        if name == "steady":
            with pytest.raises(ValueError):
                default_spec(name)
        else:
            assert default_spec(name).alerts == 1_000_000


def test_storm_batched_matches_the_issue() -> None:
    spec = default_spec("storm-batched")
    assert (spec.fingerprints, spec.groups, spec.per_record, spec.rounds) == (20_000, 200, 256, 50)
    assert default_spec("storm-single").per_record == 1
    high = default_spec("high-cardinality")
    assert high.fingerprints == high.alerts == 1_000_000


def test_counts_records_and_resend_ratio() -> None:
    storm = Storm(small(change_ratio=0.1))
    records = list(storm.records(T0))
    assert sum(r.alerts for r in records) == 6_000
    assert len(records) == 10 * 12  # 10 rounds of 600 alerts, 50 per record
    assert all(r.alerts <= 50 for r in records)
    assert storm.summary.notifications == 6_000
    assert storm.summary.resend_ratio == pytest.approx(0.9, abs=0.02)
    assert [r.timestamp_ms for r in records] == sorted(r.timestamp_ms for r in records)


def test_same_spec_same_bytes_other_seed_other_bytes() -> None:
    first = [r.value for r in Storm(small()).records(T0)]
    assert first == [r.value for r in Storm(small()).records(T0)]
    assert first != [r.value for r in Storm(small(seed=2)).records(T0)]


def test_records_parse_without_dead_letters_into_the_right_groups() -> None:
    storm = Storm(small(alerts=600))
    router = Router(RulesConfig())
    groups: set[str] = set()
    fingerprints: set[str] = set()
    for record in storm.records(T0):
        result = parse_record(
            record.value, topic="t", partition=0, offset=0, timestamp_ms=record.timestamp_ms
        )
        assert result.dead_letters == []
        assert len(result.alerts) == record.alerts
        for alert in result.alerts:
            assert alert.status.value == "firing"  # the first round: every alert starts firing
            fingerprints.add(alert.fingerprint)
            groups.add(router.route(alert.labels).group_key)
    assert len(fingerprints) == 600
    assert len(groups) == 12


def test_resolved_alerts_end_at_or_before_their_record() -> None:
    storm = Storm(small(change_ratio=0.5))
    resolved = 0
    for batch in storm.batches():
        value = storm.encode(batch, T0)
        for item, (_, firing, _, _) in zip(orjson.loads(value), batch.notes, strict=True):
            if not firing:
                resolved += 1
                assert item["endsAt"] <= format_ms(batch.t_rel + T0).decode()
    assert resolved > 0


def test_flip_probability_reaches_the_change_ratio() -> None:
    assert small(change_ratio=0.1).flip_probability == 0.0  # the 600 first notifications are 10% already
    assert small(change_ratio=0.5).flip_probability == pytest.approx((3_000 - 600) / 5_400)
    assert StormSpec(alerts=10, fingerprints=10, groups=1).flip_probability == 0.0


def test_scaled_keeps_the_shape() -> None:
    spec = default_spec("storm-batched").scaled(0.1)
    assert (spec.alerts, spec.fingerprints, spec.groups, spec.rounds) == (100_000, 2_000, 20, 50)
    with pytest.raises(ValueError):
        spec.scaled(0)


@pytest.mark.parametrize(
    "changes",
    [{"groups": 0}, {"groups": 601}, {"per_record": 0}, {"change_ratio": 1.5}, {"alerts": 0}],
)
def test_invalid_specs_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        small(**changes)


def test_encode_moves_every_time_by_the_shift() -> None:
    storm = Storm(small())
    batch = Batch(1_000, [(0, True, 0, 0), (1, False, 0, 500)])
    items = orjson.loads(storm.encode(batch, T0))
    assert items[0]["startsAt"] == format_ms(T0).decode()
    assert items[0]["endsAt"] == format_ms(T0 + 1_000 + storm.spec.ends_ahead).decode()
    assert items[1]["endsAt"] == format_ms(T0 + 500).decode()


def test_steady_load_reaches_its_rate_after_the_ramp() -> None:
    spec = SteadySpec(rate=5_000, seconds=30)
    load = SteadyLoad(spec)
    assert spec.live_groups == 200 and spec.ramp_ms == 20_000
    per_slot = [sum(len(r) for r in load.slot(s)) for s in range(spec.slots)]
    full = per_slot[spec.live_groups :]
    assert min(full) >= 480 and max(full) <= 520  # 5000 alerts/s in 100 ms slots
    assert per_slot[0] < per_slot[100] < per_slot[200]
    assert all(len(r) <= spec.per_record for s in range(50) for r in load.slot(s))
    # a group's alerts all start within its first second
    first_slot: dict[int, int] = {}
    for s in range(spec.slots):
        for record in load.slot(s):
            for index in record:
                first_slot.setdefault(index, s)
    for index, s in first_slot.items():
        assert s - load.group_of(index) < spec.slots_per_resend


def test_steady_encode_keeps_each_alerts_start() -> None:
    load = SteadyLoad(SteadySpec(seconds=5))
    seen: dict[int, int] = {}
    first = orjson.loads(load.encode([0, 5], T0, seen))
    later = orjson.loads(load.encode([0], T0 + 1_000, seen))
    assert first[0]["startsAt"] == later[0]["startsAt"] == format_ms(T0).decode()
    assert later[0]["endsAt"] == format_ms(T0 + 1_000 + 300_000).decode()
