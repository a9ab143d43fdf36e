"""Execution guards over explicit times: rate limits, cooldowns, concurrency, blast radius."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.agents.core.guards import GuardState
from stormwatch.agents.core.workflow import Guards

HOUR = 3_600_000
T0 = 1_700_000_000_000


def guards(**spec: object) -> Guards:
    return Guards.model_validate(spec)


def run(
    state: GuardState, g: Guards, n: int, target: str = "checkout", at: int = T0, incident: str = "i1"
) -> bool:
    verdict = state.check(g, action="restart", target=target, incident_targets=[], now_ms=at)
    if verdict.allowed:
        state.record_dispatch(f"c{n}", action="restart", target=target, incident_id=incident, now_ms=at)
        state.record_finished(f"c{n}")
    return verdict.allowed


def test_rate_limit_refuses_the_fourth_restart_within_the_hour() -> None:
    g = guards(rate_limit={"max": 3, "per": "1h"})
    state = GuardState()
    assert [run(state, g, i, at=T0 + i * 60_000) for i in range(3)] == [True, True, True]
    verdict = state.check(
        g, action="restart", target="checkout", incident_targets=[], now_ms=T0 + 10 * 60_000
    )
    assert not verdict.allowed and verdict.guard == "rate_limit"
    assert verdict.reason is not None
    assert verdict.reason.startswith("rate limit: restart on 'checkout' already ran 3 time(s) in the last 1h")
    assert "(limit 3 per 1h)" in verdict.reason
    assert "possible again at 2023-11-14T23:13:20Z" in verdict.reason  # T0 + 1h
    # another target has its own budget; the first one frees up after an hour
    assert run(state, g, 10, target="cart", at=T0 + 10 * 60_000)
    assert not run(state, g, 11, at=T0 + HOUR - 1)
    assert run(state, g, 12, at=T0 + HOUR)


def test_cooldown() -> None:
    g = guards(cooldown="10m")
    state = GuardState()
    assert run(state, g, 1)
    verdict = state.check(g, action="restart", target="checkout", incident_targets=[], now_ms=T0 + 5 * 60_000)
    assert not verdict.allowed and verdict.guard == "cooldown"
    assert "last ran at 2023-11-14T22:13:20Z, 5m ago; cooldown 10m" in (verdict.reason or "")
    assert run(state, g, 2, at=T0 + 10 * 60_000)


def test_max_concurrent_counts_running_commands_of_the_action() -> None:
    g = guards(max_concurrent=2)
    state = GuardState()
    for n, target in enumerate(["a", "b"]):
        state.record_dispatch(f"c{n}", action="restart", target=target, incident_id="i", now_ms=T0)
    verdict = state.check(g, action="restart", target="c", incident_targets=[], now_ms=T0)
    assert (
        not verdict.allowed
        and verdict.reason == "max concurrent: 2 restart command(s) already running (limit 2)"
    )
    assert state.check(g, action="notify", target="c", incident_targets=[], now_ms=T0).allowed
    assert state.record_finished("c0") and not state.record_finished("c0")
    assert state.check(g, action="restart", target="c", incident_targets=[], now_ms=T0).allowed


def test_blast_radius_per_incident_allows_known_targets() -> None:
    g = guards(blast_radius={"per_incident": 2})
    state = GuardState()
    touched = ["a", "b"]
    refused = state.check(g, action="restart", target="c", incident_targets=touched, now_ms=T0)
    assert not refused.allowed and refused.guard == "blast_radius"
    assert "this incident already touched 2 distinct target(s) (a, b); limit 2 per incident" in (
        refused.reason or ""
    )
    assert state.check(g, action="restart", target="a", incident_targets=touched, now_ms=T0).allowed


def test_blast_radius_per_minute_across_incidents() -> None:
    g = guards(blast_radius={"per_minute": 2})
    state = GuardState()
    state.record_dispatch("c1", action="restart", target="a", incident_id="i1", now_ms=T0)
    state.record_dispatch("c2", action="scale", target="b", incident_id="i2", now_ms=T0 + 1000)
    refused = state.check(g, action="restart", target="c", incident_targets=[], now_ms=T0 + 2000)
    assert not refused.allowed and "2 distinct target(s) touched in the last minute" in (refused.reason or "")
    assert state.check(g, action="restart", target="b", incident_targets=[], now_ms=T0 + 2000).allowed
    assert state.check(g, action="restart", target="c", incident_targets=[], now_ms=T0 + 60_000).allowed


def test_state_round_trips_through_its_records() -> None:
    state = GuardState()
    state.record_dispatch("c1", action="restart", target="a", incident_id="i1", now_ms=T0)
    state.record_dispatch("c2", action="restart", target="a", incident_id="i1", now_ms=T0 + 5)
    state.record_dispatch("c3", action="notify", target=None, incident_id="i2", now_ms=T0 + 9)
    state.record_finished("c1")
    changes = state.take_changes()
    assert state.take_changes() == {}  # nothing changed since
    records = {k: orjson.loads(orjson.dumps(v)) for k, v in changes.items() if v is not None}
    restored = GuardState.restore(records)
    assert restored.history == state.history
    assert restored.in_flight == state.in_flight
    assert restored.recent_targets == state.recent_targets


def test_prune_forgets_old_history_and_deletes_empty_records() -> None:
    state = GuardState()
    state.record_dispatch("c1", action="restart", target="a", incident_id="i", now_ms=T0)
    state.take_changes()
    state.prune(T0 + HOUR + 1, HOUR)
    assert state.history == {} and state.recent_targets == []
    changes = state.take_changes()
    assert changes["guard/history/restart\x1fa"] is None
    assert changes["guard/recent_targets"] == []


@settings(max_examples=200)
@given(
    st.lists(st.integers(min_value=0, max_value=3 * HOUR), min_size=1, max_size=40),
    st.integers(min_value=1, max_value=5),
)
def test_rate_limit_never_lets_more_than_max_through_in_any_window(offsets: list[int], limit: int) -> None:
    g = guards(rate_limit={"max": limit, "per": "1h"})
    state = GuardState()
    allowed: list[int] = []
    for n, offset in enumerate(sorted(offsets)):
        if run(state, g, n, at=T0 + offset):
            allowed.append(T0 + offset)
    for start in allowed:
        assert sum(1 for t in allowed if start <= t < start + HOUR) <= limit
