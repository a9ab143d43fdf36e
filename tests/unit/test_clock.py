"""Ticks on demand (issue #16): which partitions an ingest worker ticks, what a correlator
partition asks for, and forwarded commands held until an idle partition's clock catches up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.incident import IncidentEventType, IncidentState
from stormwatch.streams.core import wire
from stormwatch.streams.core.clock import TickPolicy, raw_watermark
from stormwatch.streams.core.wire import ClockDemand
from tests.kit.engine import Driver, at, config, iso, note

RULES = """
defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 200ms
"""


def policy(**kw: int) -> TickPolicy:
    return TickPolicy(4, hot_ms=kw.get("hot_ms", 100), heartbeat_ms=kw.get("heartbeat_ms", 0))


def test_an_idle_pipeline_ticks_nothing() -> None:
    p = policy()
    assert p.due(1_000) == [] and p.next_in(1_000) is None


def test_a_partition_is_ticked_once_its_demand_has_come() -> None:
    p = policy()
    p.demand(ClockDemand(2, 5_000, linked=False))
    assert p.due(4_999) == [] and p.next_in(4_000) == 1_000
    assert p.due(5_000) == [2] and p.next_in(5_000) == 0
    p.demand(ClockDemand(2, None, linked=False))  # it caught up: nothing more to wait for
    assert p.due(6_000) == []


def test_routed_alerts_make_a_partition_hot_for_the_lateness() -> None:
    p = policy(hot_ms=100)
    p.routed(1, event_ms=1_000, now_ms=1_000)
    assert p.due(1_050) == [1] and p.due(1_099) == [1]
    assert p.due(1_100) == []


def test_a_linking_demand_ticks_every_partition() -> None:
    p = policy()
    p.demand(ClockDemand(0, 9_000, linked=True))
    p.demand(ClockDemand(3, None, linked=True))
    assert p.due(8_000) == []
    assert p.due(9_000) == [0, 1, 2, 3]  # the linker needs every partition's promise


def test_heartbeat_and_the_old_behaviour() -> None:
    p = policy(heartbeat_ms=60_000)
    assert p.due(0) == [0, 1, 2, 3]
    p.ticked([0, 1, 2, 3], 0)
    assert p.due(30_000) == [] and p.next_in(30_000) == 30_000
    assert p.due(60_000) == [0, 1, 2, 3]
    every_tick = TickPolicy(4, hot_ms=100, heartbeat_ms=0, on_demand=False)
    assert every_tick.due(5) == [0, 1, 2, 3] and every_tick.next_in(5) == 0


def test_demand_records_round_trip() -> None:
    demand = ClockDemand(5, 123, linked=True)
    assert wire.decode_demand(wire.encode_demand(demand)) == demand
    assert wire.decode_demand(wire.encode_demand(ClockDemand(0, None, False))).wanted is None


def test_the_engine_asks_for_its_next_timer_and_nothing_when_idle() -> None:
    d = Driver(config(RULES))
    assert d.engine.wanted_watermark() is None
    d.alerts([note({"alertname": "A", "job": "x"}, at(0))])
    assert d.engine.wanted_watermark() == at(0) + 200  # the waiting alert: released past the lateness
    d.tick(at(1))
    d.commit()
    assert d.engine.wanted_watermark() == at(30) + 200  # group_wait
    d.tick(at(31))
    d.commit()
    assert d.events[-1].type is IncidentEventType.OPENED
    # open: the next thing is the alert's resolve timeout (its last notification + 5 min)
    assert d.engine.wanted_watermark() == at(300) + 200


def test_a_forwarded_command_waits_for_a_stale_clock_and_carries_its_time() -> None:
    d = Driver(config(RULES))
    d.alerts([note({"alertname": "A", "job": "x"}, at(0))])
    d.tick(at(31))
    d.commit()
    [opened] = d.events
    # Long idle: no ticks; an operator acknowledges 2 minutes later.
    ack = OperatorCommand(
        command_id="c1",
        action=OperatorAction.ACKNOWLEDGE,
        incident_id=opened.incident_id,
        by="alice",
        at=iso(at(120)),
    )
    d.write(wire.encode_command(ack.to_bytes(), forwarded_ms=at(120)))
    d.commit()
    assert d.events == [opened]  # held: the clock is still at 31 s
    assert d.engine.wanted_watermark() == at(120)  # its demand makes the workers tick it
    d.restart()  # held commands survive a restart (they are state)
    d.tick(at(120))
    d.commit()
    acked = d.events[-1]
    assert acked.type is IncidentEventType.ACKNOWLEDGED and acked.to_state is IncidentState.ACKNOWLEDGED
    assert acked.at == iso(at(120) - 200)  # when it was asked (less the lateness), not the stale 31 s
    # with a current clock a forwarded command applies at once
    d.write(
        wire.encode_command(
            ack.model_copy(update={"command_id": "c2", "action": OperatorAction.RESOLVE}).to_bytes(), at(120)
        )
    )
    d.commit()
    assert d.events[-1].type is IncidentEventType.RESOLVED


# --- a raw partition's watermark (issue #17: a producer whose clock runs ahead) -----------------

NOW = 1_800_000_000_000


def test_a_raw_watermark_is_the_newest_timestamp_read_or_the_wall_clock_once_caught_up() -> None:
    assert raw_watermark(NOW - 5_000, NOW, caught_up=False, max_future_ms=0) == NOW - 5_000
    assert raw_watermark(NOW - 5_000, NOW, caught_up=True, max_future_ms=0) == NOW
    assert raw_watermark(-1, NOW, caught_up=False, max_future_ms=0) is None  # nothing read yet
    assert raw_watermark(-1, NOW, caught_up=True, max_future_ms=0) == NOW


def test_records_stamped_ahead_move_the_watermark_no_further_than_max_future_ms() -> None:
    ten_minutes_ahead = NOW + 600_000
    for caught_up in (False, True):
        assert raw_watermark(ten_minutes_ahead, NOW, caught_up=caught_up, max_future_ms=0) == NOW
        assert (
            raw_watermark(ten_minutes_ahead, NOW, caught_up=caught_up, max_future_ms=90_000) == NOW + 90_000
        )
        assert raw_watermark(NOW + 30_000, NOW, caught_up=caught_up, max_future_ms=90_000) == NOW + 30_000


@given(
    newest=st.integers(-1, 2 * NOW),
    now=st.integers(0, 2 * NOW),
    caught_up=st.booleans(),
    max_future=st.integers(0, 3_600_000),
)
def test_a_raw_watermark_never_runs_ahead_of_the_wall_clock_by_more_than_allowed(
    newest: int, now: int, caught_up: bool, max_future: int
) -> None:
    mark = raw_watermark(newest, now, caught_up=caught_up, max_future_ms=max_future)
    if mark is None:
        assert newest < 0 and not caught_up
        return
    assert mark <= now + max_future
    assert mark <= max(newest, now) and (not caught_up or mark >= now)
    # as the wall clock moves on, the watermark never goes back
    later = raw_watermark(newest, now + 1_000, caught_up=caught_up, max_future_ms=max_future)
    assert later is not None and later >= mark
