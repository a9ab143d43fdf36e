"""Property tests of the engine: arrival order within the allowed lateness never matters."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormwatch.streams.core.codec import restore_groups
from stormwatch.streams.core.groups import GroupState
from stormwatch.streams.core.state import PartitionState
from tests.kit.engine import Driver, at, config, note

RULES = """
defaults: {group_wait: 10s, group_interval: 30s, resolve_timeout: 60s, reopen_window: 60s, close_after: 60s}
allowed_lateness: 3s
state_time_resolution: 1s
flap: {max_flips: 3, window: 60s, settle: 30s}
"""

alert_spec = st.tuples(
    st.integers(0, 3),  # alertname
    st.integers(0, 4),  # instance
    st.integers(0, 120_000),  # event time offset, ms
    st.booleans(),  # firing
    st.sampled_from(["critical", "warning", "info"]),
)


def _labels(name: int, inst: int) -> dict[str, str]:
    return {"alertname": f"A{name}", "job": "api", "instance": f"i{inst}"}


def _run(
    arrivals: list[list[tuple[int, int, int, bool, str]]],
    lateness_ms: int = 3000,
    pack_after: int | None = None,
) -> list[bytes]:
    """arrivals[k] = alerts written just before the tick with watermark k seconds; ``pack_after``:
    the reorder buffer's (0: every record waits packed, as in a catch-up)."""
    d = Driver(config(RULES))
    if pack_after is not None:
        d.engine.buffer.pack_after = pack_after
    for k, batch in enumerate(arrivals):
        if batch:
            d.alerts([note(_labels(n, i), at(0) + t, firing=f, severity=s) for n, i, t, f, s in batch])
        d.tick(at(k))
        if k % 17 == 0:
            d.commit()
    d.tick(at(len(arrivals) + 400))
    d.commit()
    return [e.to_bytes() for e in d.events]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(alert_spec, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_any_reordering_within_allowed_lateness_gives_the_same_events(
    alerts: list[tuple[int, int, int, bool, str]], rnd: object
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    horizon = 130
    in_order: list[list[tuple[int, int, int, bool, str]]] = [[] for _ in range(horizon)]
    shuffled: list[list[tuple[int, int, int, bool, str]]] = [[] for _ in range(horizon)]
    for spec in alerts:
        event_s = spec[2] / 1000
        # Latest safe slot: before the first tick whose watermark - lateness reaches the event time.
        latest = min(int(event_s + 3), horizon - 1)
        while latest > 0 and latest - 3 >= event_s:
            latest -= 1
        in_order[0].append(spec)
        shuffled[rnd.randint(0, latest)].append(spec)
    for batch in shuffled:
        rnd.shuffle(batch)
    reference = _run(in_order)
    assert _run(shuffled) == reference
    assert _run(shuffled, pack_after=0) == reference


def _held_state(groups: dict[str, GroupState]) -> dict[str, Any]:
    """What a partition's groups hold: each group's record, and its alerts as values (a pending
    change already reported is gone whether the record was re-written or the group's says so)."""
    return {
        gkhash: (group.encode_meta(), group.has_pending, dict(group.alerts))
        for gkhash, group in groups.items()
    }


def _restored(changelog: dict[str, bytes]) -> dict[str, Any]:
    state = PartitionState(config(RULES), 0, "test.input")
    restore_groups(changelog, state)
    return _held_state(state.groups)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(alert_spec, max_size=6), min_size=1, max_size=60), st.integers(1, 5))
def test_after_every_commit_the_changelog_holds_exactly_the_state(
    arrivals: list[list[tuple[int, int, int, bool, str]]], commit_every: int
) -> None:
    """A change that skips its record (a group or alert not marked dirty) would restore a
    different state after a crash: the changelog, folded and restored, must equal the state after
    each commit. Records are only written when they change (a join does not re-write its group's
    record, an event that reports an alert's changes does not re-write the alert's)."""
    d = Driver(config(RULES))
    for k, batch in enumerate(arrivals):
        if batch:  # event times within the second of the tick, so none is late
            d.alerts([note(_labels(n, i), at(k) + t % 1000, firing=f, severity=s) for n, i, t, f, s in batch])
        d.tick(at(k + 4))
        if k % commit_every == 0:
            d.commit()
            changelog = {key: value for key, value in d.state.items() if key != "p"}
            assert _restored(changelog) == _held_state(d.engine.groups)
    d.tick(at(len(arrivals) + 400))
    d.commit()
    assert _restored({key: value for key, value in d.state.items() if key != "p"}) == _held_state(
        d.engine.groups
    )


def test_a_reported_change_is_not_reported_again_after_a_restart() -> None:
    """An alert joins an open incident (its record holds the JOINED change); the next update
    reports it without re-writing the alert's record. A restart after that commit must not report
    the JOINED again: the group's record says the alert's changes went out."""
    d = Driver(config(RULES))
    d.alerts([note(_labels(0, 0), at(0))])
    d.tick(at(15))  # group_wait over: the incident opens with the first alert
    d.commit()
    d.alerts([note(_labels(0, 1), at(20))])
    d.tick(at(25))
    d.commit()
    joined_record = next(v for k, v in d.state.items() if k.startswith("a/") and k.endswith(_fp(d, "i1")))
    d.tick(at(60))  # group_interval over: an update reports the JOINED
    out = d.commit()
    assert [c.change.value for c in d.of_type("updated")[-1].alerts] == ["joined"]
    assert not any(k.startswith("a/") for k in out.state)  # reported: the alert's record is as it was
    assert d.state[next(k for k in d.state if k.endswith(_fp(d, "i1")))] == joined_record
    assert _restored({k: v for k, v in d.state.items() if k != "p"}) == _held_state(d.engine.groups)
    before = len(d.events)
    d.restart()
    d.alerts([note(_labels(0, 2), at(62))])
    d.tick(at(66))
    d.commit()  # i2 joined (the next update is at 70): its record, written after one report, holds it
    d.restart()  # a crash before the next report: that JOINED is still to report
    d.tick(at(110))
    d.commit()
    later = [c for e in d.events[before:] for c in e.alerts]
    assert [c.fingerprint for c in later if c.change.value == "joined"] == [_fp(d, "i2")]


def _fp(d: Driver, instance: str) -> str:
    return next(
        a.fingerprint
        for g in d.engine.groups.values()
        for a in g.alerts.values()
        if a.labels["instance"] == instance
    )
