"""Group timers: each group's next due time, the partition's schedule and the alert heaps."""

from __future__ import annotations

import heapq

from hypothesis import given
from hypothesis import strategies as st

from stormwatch.schemas.incident import IncidentState
from stormwatch.streams.core.groups import AlertState, GroupState, IncidentRuntime
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.core.timers import (
    EXPIRE,
    SETTLE,
    GroupSchedule,
    due_alert_timers,
    group_due,
    push_alert_timer,
    rebuild_alert_timers,
)

RULES = parse_rules(
    "defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, close_after: 15m, max_lifetime: 24h}"
)
RULE = RULES.rules[-1]
RESOLVE = RULE.resolve_timeout_ms
SETTLE_MS = 60_000


def group_with(*alerts: AlertState) -> GroupState:
    group = GroupState("0123456789abcdef", "{}", RULE.name, {})
    for alert in alerts:
        group.alerts[alert.fingerprint] = alert
    return group


def alert(fp: str, seen_ms: int, *, firing: bool = True, ends_ms: int | None = None) -> AlertState:
    return AlertState(fp, {"alertname": fp}, {}, "warning", firing, 0, seen_ms, ends_ms)


def test_a_group_with_nothing_to_do_is_never_due() -> None:
    assert group_due(group_with(), RULE, SETTLE_MS) is None


def test_a_waiting_group_is_due_when_group_wait_is_over() -> None:
    group = group_with()
    group.pending_since = 1_000
    assert group_due(group, RULE, SETTLE_MS) == 1_000 + RULE.group_wait_ms


def test_an_open_incident_is_due_at_the_earliest_of_flush_lifetime_and_alert_expiry() -> None:
    a = alert("a", 0, ends_ms=400_000)
    group = group_with(a)
    push_alert_timer(group, a.expiry_ms(RESOLVE), EXPIRE, "a", RESOLVE, SETTLE_MS)
    group.incident = IncidentRuntime("inc-0123456789abcdef-0", IncidentState.OPEN, 0, last_emit_ms=0)
    assert group_due(group, RULE, SETTLE_MS) == 400_000  # endsAt before the 24 h lifetime
    group.has_pending = True
    assert group_due(group, RULE, SETTLE_MS) == RULE.group_interval_ms  # a change to flush first


def test_a_resolved_incident_is_due_when_its_quiet_period_is_over() -> None:
    group = group_with()
    group.incident = IncidentRuntime("inc-0123456789abcdef-0", IncidentState.RESOLVED, 0, resolved_ms=9_000)
    assert group_due(group, RULE, SETTLE_MS) == 9_000 + RULE.close_delay_ms


def test_stale_alert_timers_are_dropped_when_the_due_time_is_computed() -> None:
    a = alert("a", 0)
    group = group_with(a)
    push_alert_timer(group, a.expiry_ms(RESOLVE), EXPIRE, "a", RESOLVE, SETTLE_MS)
    a.seen_ms = 10_000  # re-sent: the first expiry is stale
    push_alert_timer(group, a.expiry_ms(RESOLVE), EXPIRE, "a", RESOLVE, SETTLE_MS)
    assert group_due(group, RULE, SETTLE_MS) == 10_000 + RESOLVE
    assert group.heap == [(10_000 + RESOLVE, EXPIRE, "a")]


def test_only_live_alert_timers_come_due_in_time_order() -> None:
    a, b, c = alert("a", 0), alert("b", 5_000), alert("c", 20_000)
    group = group_with(a, b, c)
    for x in (c, b, a):
        push_alert_timer(group, x.expiry_ms(RESOLVE), EXPIRE, x.fingerprint, RESOLVE, SETTLE_MS)
    b.firing = False  # resolved: its expiry is stale
    due = list(due_alert_timers(group, 10_000 + RESOLVE, RESOLVE, SETTLE_MS))
    assert due == [(RESOLVE, EXPIRE, "a")]
    assert group.heap == [(20_000 + RESOLVE, EXPIRE, "c")]  # not due yet: left in place


def test_a_heap_of_stale_timers_is_compacted_and_then_left_to_double() -> None:
    a = alert("a", 0)
    group = group_with(a)
    for seen in range(0, 200_000, 1_000):  # every re-send moves the expiry: one live entry
        a.seen_ms = seen
        push_alert_timer(group, a.expiry_ms(RESOLVE), EXPIRE, "a", RESOLVE, SETTLE_MS)
        assert len(group.heap) <= 65
    assert (a.expiry_ms(RESOLVE), EXPIRE, "a") in group.heap


@given(st.lists(st.tuples(st.integers(0, 10**6), st.booleans(), st.booleans()), max_size=30))
def test_restore_builds_the_heap_incremental_pushes_would_hold(specs: list[tuple[int, bool, bool]]) -> None:
    alerts = [alert(f"f{i}", seen, firing=firing) for i, (seen, firing, _) in enumerate(specs)]
    for a, (_, _, flapping) in zip(alerts, specs, strict=True):
        a.flapping = flapping
    pushed, rebuilt = group_with(*alerts), group_with(*alerts)
    for a in alerts:
        if a.firing:
            push_alert_timer(pushed, a.expiry_ms(RESOLVE), EXPIRE, a.fingerprint, RESOLVE, SETTLE_MS)
        if a.flapping:
            push_alert_timer(pushed, a.settle_ms(SETTLE_MS), SETTLE, a.fingerprint, RESOLVE, SETTLE_MS)
    rebuild_alert_timers(rebuilt, RESOLVE, SETTLE_MS)
    assert sorted(rebuilt.heap) == sorted(pushed.heap)
    assert [heapq.heappop(rebuilt.heap) for _ in range(len(rebuilt.heap))] == sorted(pushed.heap)


def test_the_schedule_gives_each_group_at_its_latest_due_time_only() -> None:
    schedule = GroupSchedule()
    schedule.set("g1", 500)
    schedule.set("g2", 300)
    schedule.set("g1", 100)  # moved earlier: the entry at 500 is stale
    assert schedule.next_due(50) is None
    first = schedule.next_due(1_000)
    assert first == (100, "g1")
    schedule.take(first)
    second = schedule.next_due(1_000)
    assert second == (300, "g2")
    schedule.take(second)
    assert schedule.next_due(1_000) is None  # g1's stale 500 is skipped


def test_a_cancelled_group_never_comes_due() -> None:
    schedule = GroupSchedule()
    schedule.set("g1", 100)
    schedule.cancel("g1")
    assert schedule.next_due(1_000) is None
    schedule.set("g1", 100)  # scheduled again at the same time: due again
    assert schedule.next_due(1_000) == (100, "g1")
