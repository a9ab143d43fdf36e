"""The notification policy: which events notify, coalescing, acknowledgement, repeats, ids, state."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.agents.core.notify_config import NotifierConfig, NotifyOn, parse_notifier_config
from stormwatch.agents.core.notify_policy import (
    LINK_WAIT_MARGIN_MS,
    Delivery,
    IncidentNotifyState,
    NotifyPolicy,
    Outcome,
    classify,
    default_link_wait_ms,
    notification_id,
)
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import IncidentEvent, IncidentSnapshot
from stormwatch.schemas.incident import IncidentEventType as E
from stormwatch.schemas.incident import IncidentState as S
from stormwatch.streams.core.lifecycle import TRANSITIONS, Action

T0 = 1_736_150_400_000  # 2025-01-06 08:00 UTC, a Monday
MIN = 60_000
INC = "inc-0123456789abcdef-1736150400000"


CONFIG = """
route:
  receiver: team
  group_interval: 5m
  repeat_interval: 1h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
      notify_on: [opened, severity_raised, acknowledged, reopened, resolved]
receivers:
  - name: team
    webhook_configs: [{url: "http://127.0.0.1:9000/hook"}]
  - name: pager
    pagerduty_configs: [{routing_key_env: PD_KEY}]
"""


def config(text: str = CONFIG) -> NotifierConfig:
    return parse_notifier_config(textwrap.dedent(text), "notify.yaml")


_ACTIONS = {
    E.OPENED: Action.OPEN,
    E.ACKNOWLEDGED: Action.ACKNOWLEDGE,
    E.MITIGATING: Action.MITIGATE,
    E.RESOLVED: Action.RESOLVE,
    E.REOPENED: Action.REOPEN,
    E.CLOSED: Action.CLOSE,
    E.MERGED: Action.MERGE,
}


@dataclass
class Incident:
    """Writes an incident's events the way the correlator does: seq, states, snapshot."""

    incident_id: str = INC
    seq: int = 0
    state: S | None = None
    severity: Severity = Severity.WARNING
    acknowledged_ms: int | None = None
    reopen_count: int = 0
    labels: dict[str, str] = field(default_factory=lambda: {"service": "api"})

    def event(self, kind: E, at_ms: int, severity: Severity | None = None) -> IncidentEvent:
        before = self.state
        if kind in _ACTIONS:
            after = TRANSITIONS[(before, _ACTIONS[kind])]
        else:
            assert before is not None
            after = before
        if kind is E.ACKNOWLEDGED:
            self.acknowledged_ms = at_ms
        if kind is E.REOPENED:
            self.reopen_count += 1
        if severity is not None:
            self.severity = severity
        self.seq += 1
        self.state = after
        return IncidentEvent(
            event_id=f"{self.incident_id}:{self.seq}",
            incident_id=self.incident_id,
            seq=self.seq,
            type=kind,
            from_state=before,
            to_state=after,
            at=utc_from_ms(at_ms),
            actor="correlator",
            cause=kind.value,
            snapshot=IncidentSnapshot(
                state=after,
                severity=self.severity,
                title="HighLatency on api",
                group_key='{service="api"}',
                group_labels=dict(self.labels),
                rule="by-service",
                alert_count=1,
                firing_count=1,
                opened_at=utc_from_ms(T0),
                acknowledged_at=utc_from_ms(self.acknowledged_ms) if self.acknowledged_ms else None,
                reopen_count=self.reopen_count,
            ),
        )


def sent(outcome: Outcome) -> list[tuple[str, int, str | None, int]]:
    """(receiver, seq, trigger, repeat) of each delivery."""
    return [(d.receiver, d.seq, d.trigger.value if d.trigger else None, d.repeat) for d in outcome.deliveries]


def run(
    policy: NotifyPolicy, state: IncidentNotifyState, inc: Incident, kind: E, at_ms: int, **kw: Severity
) -> Outcome:
    return policy.on_event(state, inc.event(kind, at_ms, **kw))


def test_opened_notifies_at_once_with_a_derived_id() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    out = run(policy, state, inc, E.OPENED, T0)
    assert sent(out) == [("team", 1, "opened", 0)]
    (d,) = out.deliveries
    assert d == Delivery(notification_id(INC, 1, "team"), INC, "team", 1, NotifyOn.OPENED, 0, T0, "route")
    assert out.next_due_ms == T0 + 60 * MIN  # the repeat


def test_ids_are_xxh3_128_of_incident_seq_and_receiver() -> None:
    assert notification_id(INC, 3, "team") == xxhash.xxh3_128_hexdigest(f"{INC}\x1f3\x1fteam".encode())
    assert notification_id(INC, 3, "team") == notification_id(INC, 3, "team")
    ids = {
        notification_id(INC, 3, "team"),
        notification_id(INC, 3, "team", repeat=1),
        notification_id(INC, 3, "pager"),
        notification_id(INC, 4, "team"),
        notification_id("inc-other", 3, "team"),
        notification_id(INC, 31, "team"),
        notification_id(INC, 3, "1\x1fteam"[2:]),
    }
    assert len(ids) == 6  # the last one is the first again


def test_updates_are_coalesced_to_one_message_per_group_interval() -> None:
    policy = NotifyPolicy(
        config(
            CONFIG.replace(
                "  repeat_interval: 1h", "  repeat_interval: 1h\n  notify_on: [opened, updated, resolved]"
            )
        )
    )
    state, inc = IncidentNotifyState(INC), Incident()
    assert sent(run(policy, state, inc, E.OPENED, T0)) == [("team", 1, "opened", 0)]
    first = run(policy, state, inc, E.UPDATED, T0 + 1 * MIN)
    assert first.deliveries == () and first.next_due_ms == T0 + 5 * MIN
    assert [(h.receiver, h.seq, h.until_ms) for h in first.held] == [("team", 2, T0 + 5 * MIN)]
    second = run(policy, state, inc, E.UPDATED, T0 + 2 * MIN)
    assert second.deliveries == () and second.next_due_ms == T0 + 5 * MIN
    assert policy.on_due(state, T0 + 5 * MIN - 1).deliveries == ()
    due = policy.on_due(state, T0 + 5 * MIN)
    assert sent(due) == [("team", 3, "updated", 0)]  # one message, the latest event
    assert due.deliveries[0].at_ms == T0 + 5 * MIN
    # The next interval counts from that message; after it, an update goes out at once.
    assert run(policy, state, inc, E.UPDATED, T0 + 9 * MIN).deliveries == ()
    assert sent(policy.on_due(state, T0 + 10 * MIN)) == [("team", 4, "updated", 0)]
    assert sent(run(policy, state, inc, E.UPDATED, T0 + 16 * MIN)) == [("team", 5, "updated", 0)]


def test_a_resolve_within_the_interval_replaces_the_waiting_update() -> None:
    policy = NotifyPolicy(
        config(
            CONFIG.replace(
                "  repeat_interval: 1h", "  repeat_interval: 1h\n  notify_on: [opened, updated, resolved]"
            )
        )
    )
    state, inc = IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    run(policy, state, inc, E.UPDATED, T0 + MIN)
    run(policy, state, inc, E.RESOLVED, T0 + 2 * MIN)
    assert sent(policy.on_due(state, T0 + 5 * MIN)) == [("team", 3, "resolved", 0)]
    assert state.next_due_ms is None  # resolved: no repeats


def test_after_an_acknowledgement_only_resolve_notifies() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    ack = run(policy, state, inc, E.ACKNOWLEDGED, T0 + 10 * MIN)
    assert (
        ack.deliveries == () and ack.next_due_ms is None
    )  # acknowledged is not in team's notify_on; repeats stop
    raised = run(policy, state, inc, E.SEVERITY_CHANGED, T0 + 20 * MIN, severity=Severity.ERROR)
    assert raised.deliveries == ()
    assert [h.reason for h in raised.held] == ["acknowledged: after_ack is resolve_only"]
    assert sent(run(policy, state, inc, E.RESOLVED, T0 + 30 * MIN)) == [("team", 4, "resolved", 0)]


def test_after_ack_all_keeps_notifying_but_repeats_still_stop() -> None:
    policy = NotifyPolicy(
        config(CONFIG.replace("  repeat_interval: 1h", "  repeat_interval: 1h\n  after_ack: all"))
    )
    state, inc = IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    run(policy, state, inc, E.ACKNOWLEDGED, T0 + MIN)
    assert state.next_due_ms is None
    out = run(policy, state, inc, E.SEVERITY_CHANGED, T0 + 10 * MIN, severity=Severity.ERROR)
    assert sent(out) == [("team", 3, "severity_raised", 0)]
    assert out.next_due_ms is None


def test_an_acknowledgement_drops_a_waiting_update() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    assert (
        run(policy, state, inc, E.SEVERITY_CHANGED, T0 + MIN, severity=Severity.ERROR).next_due_ms
        == T0 + 5 * MIN
    )
    out = run(policy, state, inc, E.ACKNOWLEDGED, T0 + 2 * MIN)
    assert [(h.seq, h.reason, h.until_ms) for h in out.held] == [
        (2, "dropped: the incident was acknowledged", None)
    ]
    assert out.next_due_ms is None and policy.on_due(state, T0 + 5 * MIN).deliveries == ()


def test_repeat_interval_re_sends_while_open_and_unacknowledged() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    assert policy.on_due(state, T0 + 59 * MIN).deliveries == ()
    first = policy.on_due(state, T0 + 60 * MIN)
    assert sent(first) == [("team", 1, None, 1)]
    assert first.deliveries[0].notification_id == notification_id(INC, 1, "team", repeat=1)
    assert first.next_due_ms == T0 + 120 * MIN
    assert sent(policy.on_due(state, T0 + 120 * MIN)) == [("team", 1, None, 2)]
    run(policy, state, inc, E.ASSIGNED, T0 + 130 * MIN)  # not notifiable, but the latest event
    assert sent(policy.on_due(state, T0 + 180 * MIN)) == [("team", 2, None, 1)]
    run(policy, state, inc, E.ACKNOWLEDGED, T0 + 190 * MIN)
    assert state.next_due_ms is None and policy.on_due(state, T0 + 999 * MIN).deliveries == ()


def test_repeat_interval_zero_never_repeats() -> None:
    policy = NotifyPolicy(config(CONFIG.replace("repeat_interval: 1h", "repeat_interval: 0s")))
    state, inc = IncidentNotifyState(INC), Incident()
    assert run(policy, state, inc, E.OPENED, T0).next_due_ms is None


def test_reopened_notifies_and_clears_the_acknowledgement() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    run(policy, state, inc, E.ACKNOWLEDGED, T0 + MIN)
    assert sent(run(policy, state, inc, E.RESOLVED, T0 + 10 * MIN)) == [("team", 3, "resolved", 0)]
    out = run(policy, state, inc, E.REOPENED, T0 + 20 * MIN)
    assert sent(out) == [("team", 4, "reopened", 0)]
    assert not state.acked and out.next_due_ms == T0 + 80 * MIN  # repeats again
    # The snapshot still carries the old acknowledged_at; the events decide.
    assert run(policy, state, inc, E.MITIGATING, T0 + 30 * MIN).next_due_ms == T0 + 80 * MIN


def test_a_receiver_reached_by_a_raised_severity_hears_opened_then_resolved() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    assert sent(run(policy, state, inc, E.OPENED, T0)) == [("team", 1, "opened", 0)]
    raised = run(policy, state, inc, E.SEVERITY_CHANGED, T0 + 10 * MIN, severity=Severity.CRITICAL)
    # As in Alertmanager, the root is only where no child matched: the team hears nothing now.
    assert sent(raised) == [("pager", 2, "opened", 0)]
    # Lowered again: the pager route no longer matches, but the pager is still told it ended.
    run(policy, state, inc, E.SEVERITY_CHANGED, T0 + 20 * MIN, severity=Severity.WARNING)
    assert sent(run(policy, state, inc, E.RESOLVED, T0 + 30 * MIN)) == [
        ("team", 4, "resolved", 0),
        ("pager", 4, "resolved", 0),
    ]


def test_closing_or_merging_an_active_incident_is_its_resolution() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    out = run(policy, state, inc, E.CLOSED, T0 + 10 * MIN)  # maximum lifetime
    assert sent(out) == [("team", 2, "resolved", 0)]
    assert state.finished
    merged = Incident(incident_id="inc-x")
    state2 = IncidentNotifyState("inc-x")
    run(policy, state2, merged, E.OPENED, T0)
    assert sent(run(policy, state2, merged, E.MERGED, T0 + 10 * MIN)) == [("team", 2, "resolved", 0)]


def test_a_resolution_nobody_was_told_about_is_dropped() -> None:
    text = CONFIG.replace(
        "  repeat_interval: 1h\n",
        "  repeat_interval: 1h\n  routes:\n    - {matchers: ['service=\"api\"'], receiver: team, mute_time_intervals: [always]}\n",
        1,
    ).replace(
        "  routes:\n    - matchers: ['severity=\"critical\"']", "    - matchers: ['severity=\"critical\"']"
    )
    text += "time_intervals: [{name: always, time_intervals: [{}]}]\n"
    policy, state, inc = NotifyPolicy(config(text)), IncidentNotifyState(INC), Incident()
    opened = run(policy, state, inc, E.OPENED, T0)
    assert opened.deliveries == ()
    assert [(h.reason, h.until_ms) for h in opened.held] == [
        ("muted by time interval 'always'", T0 + 5 * MIN)
    ]
    resolved = run(policy, state, inc, E.RESOLVED, T0 + MIN)
    assert resolved.deliveries == () and resolved.next_due_ms is None
    assert [h.reason for h in resolved.held] == ["dropped: resolved before it was told"]


def test_a_muted_message_waits_for_the_end_of_the_mute() -> None:
    text = textwrap.dedent(
        """
        route:
          receiver: team
          group_interval: 5m
          routes:
            - matchers: ['service="api"']
              receiver: team
              active_time_intervals: [office]
        receivers: [{name: team, webhook_configs: [{url: "http://127.0.0.1:9/x"}]}]
        time_intervals:
          - name: office
            time_intervals: [{times: [{start_time: "09:00", end_time: "17:00"}]}]
        """
    )
    policy, state, inc = NotifyPolicy(config(text)), IncidentNotifyState(INC), Incident()
    out = run(policy, state, inc, E.OPENED, T0 + 50 * MIN)  # 08:50
    assert out.deliveries == () and out.next_due_ms == T0 + 55 * MIN
    still = policy.on_due(state, T0 + 55 * MIN)  # 08:55, still outside
    assert still.deliveries == () and still.next_due_ms == T0 + 60 * MIN
    assert sent(policy.on_due(state, T0 + 60 * MIN)) == [("team", 1, "opened", 0)]


def test_a_redelivered_event_never_notifies_again() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    opened = inc.event(E.OPENED, T0)
    assert len(policy.on_event(state, opened).deliveries) == 1
    assert policy.on_event(state, opened).deliveries == ()
    with pytest.raises(ValueError, match="given to the state of"):
        policy.on_event(IncidentNotifyState("inc-other"), opened)


def test_a_receiver_without_integrations_gets_nothing_and_no_state() -> None:
    policy = NotifyPolicy(
        config(
            CONFIG.replace(
                '  - name: team\n    webhook_configs: [{url: "http://127.0.0.1:9000/hook"}]', "  - name: team"
            )
        )
    )
    state, inc = IncidentNotifyState(INC), Incident()
    assert run(policy, state, inc, E.OPENED, T0).deliveries == ()
    assert state.receivers == {}


def test_a_notifier_that_starts_mid_incident_infers_the_acknowledgement() -> None:
    policy, inc = NotifyPolicy(config()), Incident()
    inc.event(E.OPENED, T0)
    inc.event(E.ACKNOWLEDGED, T0 + MIN)
    state = IncidentNotifyState(INC)
    out = run(policy, state, inc, E.MITIGATING, T0 + 2 * MIN)
    assert state.acked and out.deliveries == ()  # first contact would be "opened", but it is acknowledged


@pytest.mark.parametrize(
    ("kind", "before", "after", "previous", "expected"),
    [
        (E.SEVERITY_CHANGED, S.OPEN, Severity.CRITICAL, Severity.WARNING, NotifyOn.SEVERITY_RAISED),
        (E.SEVERITY_CHANGED, S.OPEN, Severity.INFO, Severity.WARNING, NotifyOn.SEVERITY_LOWERED),
        (E.SEVERITY_CHANGED, S.OPEN, Severity.INFO, None, NotifyOn.UPDATED),
        (E.CLOSED, S.RESOLVED, Severity.INFO, Severity.INFO, NotifyOn.CLOSED),
        (E.CLOSED, S.ACKNOWLEDGED, Severity.INFO, Severity.INFO, NotifyOn.RESOLVED),
        (E.MERGED, S.RESOLVED, Severity.INFO, Severity.INFO, NotifyOn.MERGED),
        (E.MITIGATION, S.OPEN, Severity.INFO, Severity.INFO, NotifyOn.MITIGATION),
    ],
)
def test_classify(kind: E, before: S, after: Severity, previous: Severity | None, expected: NotifyOn) -> None:
    inc = Incident(state=before, seq=3)
    assert classify(inc.event(kind, T0, severity=after), previous) is expected


def test_the_state_round_trips_and_stays_small() -> None:
    policy, state, inc = NotifyPolicy(config()), IncidentNotifyState(INC), Incident()
    run(policy, state, inc, E.OPENED, T0)
    run(policy, state, inc, E.SEVERITY_CHANGED, T0 + MIN, severity=Severity.CRITICAL)
    run(policy, state, inc, E.SEVERITY_CHANGED, T0 + 2 * MIN, severity=Severity.ERROR)
    data = state.to_bytes()
    assert len(data) < 600, data
    restored = IncidentNotifyState.from_bytes(data)
    assert restored == state and restored.to_bytes() == data
    assert sent(policy.on_due(restored, T0 + 10 * MIN)) == sent(policy.on_due(state, T0 + 10 * MIN))
    with pytest.raises(ValueError, match="version"):
        IncidentNotifyState.from_bytes(b'{"v": 99}')


# --------------------------------------------------------------------------------------------------
# Properties

_KINDS = [
    E.UPDATED,
    E.SEVERITY_CHANGED,
    E.ACKNOWLEDGED,
    E.MITIGATING,
    E.RESOLVED,
    E.REOPENED,
    E.ASSIGNED,
    E.CLOSED,
]
_NOTIFY_ALL = CONFIG.replace(
    "  repeat_interval: 1h",
    "  repeat_interval: 20m\n  notify_on: [opened, updated, severity_raised, severity_lowered, acknowledged, resolved, reopened, closed]",
)


def _allowed(inc: Incident, kind: E) -> bool:
    if inc.state is None or inc.state is S.CLOSED:
        return False
    if kind in _ACTIONS:
        return (inc.state, _ACTIONS[kind]) in TRANSITIONS
    return inc.state is not S.RESOLVED or kind is E.ASSIGNED


_STEP = st.tuples(
    st.sampled_from(_KINDS),
    st.integers(min_value=0, max_value=12 * MIN),  # time to the next event
    st.sampled_from(list(Severity)),
    st.sampled_from(["event", "event", "timer", "redeliver", "restore"]),
)


@settings(max_examples=250, deadline=None)
@given(steps=st.lists(_STEP, max_size=30), after_ack=st.sampled_from(["resolve_only", "all"]))
def test_the_policy_never_sends_one_notification_id_twice(
    steps: list[tuple[E, int, Severity, str]], after_ack: str
) -> None:
    policy = NotifyPolicy(
        config(_NOTIFY_ALL.replace("  group_interval: 5m", f"  group_interval: 5m\n  after_ack: {after_ack}"))
    )
    state, inc = IncidentNotifyState(INC), Incident()
    now = T0
    events = [inc.event(E.OPENED, now)]
    outcomes = [policy.on_event(state, events[0])]
    schedule: list[tuple[str, object]] = [("event", events[0])]
    for kind, gap, severity, how in steps:
        now += gap
        if how == "timer":
            schedule.append(("timer", now))
            outcomes.append(policy.on_due(state, now))
        elif how == "redeliver":
            schedule.append(("event", events[-1]))
            outcomes.append(policy.on_event(state, events[-1]))
        elif how == "restore":
            state = IncidentNotifyState.from_bytes(state.to_bytes())
        if _allowed(inc, kind):
            events.append(inc.event(kind, now, severity=severity))
            schedule.append(("event", events[-1]))
            outcomes.append(policy.on_event(state, events[-1]))
        due = state.next_due_ms
        if due is not None and due <= now:
            schedule.append(("timer", now))
            outcomes.append(policy.on_due(state, now))
    ids = [d.notification_id for o in outcomes for d in o.deliveries]
    assert len(ids) == len(set(ids))
    # Deterministic: the same events and timer calls on a fresh state decide the same.
    again, replayed = IncidentNotifyState(INC), []
    for what, item in schedule:
        if what == "event":
            assert isinstance(item, IncidentEvent)
            replayed.append(policy.on_event(again, item))
        else:
            assert isinstance(item, int)
            replayed.append(policy.on_due(again, item))
    assert [d for o in replayed for d in o.deliveries] == [d for o in outcomes for d in o.deliveries]
    assert again == state


def _linked(inc: Incident, kind: E, at_ms: int, into: str | None) -> IncidentEvent:
    event = inc.event(kind, at_ms)
    return event.model_copy(update={"snapshot": event.snapshot.model_copy(update={"linked_into": into})})


def _one_webhook(route: str, extra: str = "") -> NotifierConfig:
    return config(
        f"""
        route: {route}
        receivers: [{{name: team, webhook_configs: [{{url: "http://127.0.0.1:9000/hook"}}]}}]
        {extra}
        """
    )


def test_a_member_linked_before_its_first_message_is_due_notifies_nobody() -> None:
    # a muted route: the opened message waits; linking drops it, and nothing comes after
    policy = NotifyPolicy(
        _one_webhook(
            "{receiver: team, routes: [{receiver: team, mute_time_intervals: [always]}]}",
            "time_intervals: [{name: always, time_intervals: [{}]}]",
        )
    )
    state, inc = IncidentNotifyState(INC), Incident()
    held = policy.on_event(state, _linked(inc, E.OPENED, T0, None))
    assert held.deliveries == () and state.receivers["team"].pending_seq == 1
    linked = policy.on_event(state, _linked(inc, E.LINKED, T0 + MIN, "inc-primary"))
    assert linked.deliveries == () and state.receivers["team"].pending_seq is None
    assert any("linked into inc-primary" in h.reason for h in linked.held)
    assert policy.on_due(state, T0 + 60 * MIN).deliveries == ()
    assert policy.on_event(state, _linked(inc, E.RESOLVED, T0 + 61 * MIN, "inc-primary")).deliveries == ()


def test_a_member_already_told_it_opened_hears_only_its_end() -> None:
    policy = NotifyPolicy(_one_webhook("{receiver: team, group_interval: 0s, repeat_interval: 1h}"))
    state, inc = IncidentNotifyState(INC), Incident()
    assert sent(policy.on_event(state, _linked(inc, E.OPENED, T0, None))) == [("team", 1, "opened", 0)]
    assert sent(policy.on_event(state, _linked(inc, E.LINKED, T0 + MIN, "inc-primary"))) == []
    assert state.receivers["team"].repeat_due_ms is None  # no reminders about a member
    assert sent(policy.on_event(state, _linked(inc, E.RESOLVED, T0 + 2 * MIN, "inc-primary"))) == [
        ("team", 3, "resolved", 0)
    ]


def test_a_primary_hears_of_a_member_joining_as_an_update() -> None:
    policy = NotifyPolicy(
        _one_webhook("{receiver: team, group_interval: 0s, notify_on: [opened, updated, resolved]}")
    )
    state, inc = IncidentNotifyState(INC), Incident()
    policy.on_event(state, inc.event(E.OPENED, T0))
    assert sent(policy.on_event(state, inc.event(E.MEMBER_ADDED, T0 + MIN))) == [("team", 2, "updated", 0)]


def test_a_linked_member_told_it_opened_hears_its_resolve_that_waited_out_the_group_interval() -> None:
    # The demo's sequence: opened 08:33:03 (notified at once), linked :13, resolved :27 within the
    # 1m group_interval: the resolve waits until 08:34:03; the member's close (08:35:27) is read
    # before the timer runs (the stage reads its input first). The waiting end must survive it.
    sec = 1_000
    t = T0 + 33 * MIN + 3 * sec
    policy = NotifyPolicy(_one_webhook("{receiver: team, group_interval: 1m}"))
    state, inc = IncidentNotifyState(INC), Incident()
    assert sent(policy.on_event(state, _linked(inc, E.OPENED, t, None))) == [("team", 1, "opened", 0)]
    assert sent(policy.on_event(state, _linked(inc, E.NOTIFIED, t + 2 * sec, None))) == []  # its echo
    assert sent(policy.on_event(state, _linked(inc, E.LINKED, t + 10 * sec, "inc-primary"))) == []
    waiting = policy.on_event(state, _linked(inc, E.RESOLVED, t + 24 * sec, "inc-primary"))
    assert waiting.deliveries == () and waiting.next_due_ms == t + MIN
    closed = policy.on_event(state, _linked(inc, E.CLOSED, t + 2 * MIN + 24 * sec, "inc-primary"))
    assert closed.deliveries == () and closed.held == () and closed.next_due_ms == t + MIN
    assert not state.finished  # the record stays until its end is sent
    assert sent(policy.on_due(state, t + 2 * MIN + 25 * sec)) == [("team", 4, "resolved", 0)]
    assert state.finished


def test_a_linked_members_waiting_resolve_survives_later_events_but_not_a_reopen() -> None:
    policy = NotifyPolicy(_one_webhook("{receiver: team, group_interval: 5m, notify_on: [opened, resolved]}"))
    state, inc = IncidentNotifyState(INC), Incident()
    policy.on_event(state, _linked(inc, E.OPENED, T0, None))
    policy.on_event(state, _linked(inc, E.LINKED, T0 + MIN, "inc-primary"))
    policy.on_event(state, _linked(inc, E.RESOLVED, T0 + 2 * MIN, "inc-primary"))
    assert sent(policy.on_event(state, _linked(inc, E.MUTED, T0 + 3 * MIN, "inc-primary"))) == []
    assert state.receivers["team"].pending_trigger is NotifyOn.RESOLVED
    # reopened while still a member: the waiting "resolved" would be wrong now; the primary speaks
    reopened = policy.on_event(state, _linked(inc, E.REOPENED, T0 + 4 * MIN, "inc-primary"))
    assert reopened.deliveries == () and state.receivers["team"].pending_seq is None
    assert policy.on_due(state, T0 + 10 * MIN).deliveries == ()
    # it ends again: the receiver, told it opened, hears that
    assert sent(policy.on_event(state, _linked(inc, E.RESOLVED, T0 + 11 * MIN, "inc-primary"))) == [
        ("team", 6, "resolved", 0)
    ]


def _waiting_policy(link_wait: str = "15s", notify_on: str = "") -> NotifyPolicy:
    return NotifyPolicy(
        _one_webhook(f"{{receiver: team, group_interval: 1m{notify_on}}}", f"link_wait: {link_wait}")
    )


def test_link_wait_is_read_from_the_file_and_defaults_from_the_topology() -> None:
    assert _waiting_policy("15s").link_wait_ms == 15_000
    assert NotifyPolicy(_one_webhook("{receiver: team}")).link_wait_ms == 0
    assert NotifyPolicy(_one_webhook("{receiver: team}"), link_wait_ms=7_000).link_wait_ms == 7_000
    assert default_link_wait_ms(10_000) == 10_000 + LINK_WAIT_MARGIN_MS
    assert default_link_wait_ms(None) == 0


def test_with_link_wait_a_group_linked_at_opening_never_pages() -> None:
    policy = _waiting_policy()
    state, inc = IncidentNotifyState(INC), Incident()
    held = policy.on_event(state, _linked(inc, E.OPENED, T0, None))
    assert held.deliveries == () and held.next_due_ms == T0 + 15_000
    assert [h.reason for h in held.held] == ["waiting for the linker: link_wait"]
    linked = policy.on_event(state, _linked(inc, E.LINKED, T0 + 10_000, "inc-primary"))
    assert linked.deliveries == () and linked.next_due_ms is None
    assert policy.on_due(state, T0 + 15_000).deliveries == ()
    assert policy.on_event(state, _linked(inc, E.RESOLVED, T0 + MIN, "inc-primary")).deliveries == ()


def test_with_link_wait_a_primary_goes_as_soon_as_the_linker_speaks_of_it() -> None:
    for kind in (E.ROOT_CAUSE_CHANGED, E.MEMBER_ADDED):
        policy = _waiting_policy()  # notify_on without "updated": the link event still releases it
        state, inc = IncidentNotifyState(INC), Incident()
        assert policy.on_event(state, inc.event(E.OPENED, T0)).deliveries == ()
        out = policy.on_event(state, inc.event(kind, T0 + 10_000))
        assert sent(out) == [("team", 2, "opened", 0)] and out.deliveries[0].at_ms == T0 + 10_000
        assert state.receivers["team"].pending_seq is None


def test_with_link_wait_a_group_the_linker_says_nothing_of_goes_when_the_wait_ends() -> None:
    policy = _waiting_policy()
    state, inc = IncidentNotifyState(INC), Incident()
    policy.on_event(state, inc.event(E.OPENED, T0))
    assert policy.on_due(state, T0 + 14_999).deliveries == ()
    assert sent(policy.on_due(state, T0 + 15_000)) == [("team", 1, "opened", 0)]
    # later first messages (another receiver, a reopen) wait for nothing: the wait is since opening
    assert sent(policy.on_event(state, inc.event(E.RESOLVED, T0 + 2 * MIN))) == [("team", 2, "resolved", 0)]
    assert sent(policy.on_event(state, inc.event(E.REOPENED, T0 + 4 * MIN))) == [("team", 3, "reopened", 0)]


def test_with_link_wait_an_incident_that_opens_and_resolves_within_it_notifies_nobody() -> None:
    policy = _waiting_policy()
    state, inc = IncidentNotifyState(INC), Incident()
    policy.on_event(state, inc.event(E.OPENED, T0))
    resolved = policy.on_event(state, inc.event(E.RESOLVED, T0 + 5_000))
    assert resolved.deliveries == () and resolved.next_due_ms is None
    assert [h.reason for h in resolved.held] == ["dropped: resolved before it was told"]
    assert policy.on_event(state, inc.event(E.CLOSED, T0 + 6_000)).deliveries == ()
    assert state.finished


def test_with_link_wait_updates_during_the_wait_keep_it_the_first_message() -> None:
    policy = _waiting_policy(notify_on=", notify_on: [opened, updated, resolved]")
    state, inc = IncidentNotifyState(INC), Incident()
    policy.on_event(state, inc.event(E.OPENED, T0))
    updated = policy.on_event(state, inc.event(E.UPDATED, T0 + 5_000))
    assert updated.deliveries == () and updated.next_due_ms == T0 + 15_000
    assert sent(policy.on_due(state, T0 + 15_000)) == [("team", 2, "opened", 0)]
