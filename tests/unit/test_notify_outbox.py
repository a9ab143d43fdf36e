"""The notifier's outbox (agents/core/notify_outbox.py): items per integration, lanes in order,
retries within the budget, and the record that survives a restart."""

from __future__ import annotations

import textwrap

import orjson

from stormwatch.agents.core.notify_config import NotifyOn, Retry, parse_notifier_config
from stormwatch.agents.core.notify_outbox import (
    IntegrationInfo,
    NotifyRecord,
    delivery_log_record,
)
from stormwatch.agents.core.notify_policy import NotifyPolicy, classify
from stormwatch.schemas.incident import IncidentEventType as E
from tests.kit.notify import IncidentWriter

T0 = 1_764_700_000_000
INFOS = {"hook": [IntegrationInfo("webhook", True), IntegrationInfo("email", False)]}
CONFIG = parse_notifier_config(
    textwrap.dedent(
        """
        route: {receiver: hook, group_interval: 0s, repeat_interval: 0s}
        receivers:
          - name: hook
            webhook_configs: [{url: "http://127.0.0.1:9/hook"}]
            email_configs: [{to: [a@example.com], from: s@example.com, smarthost: "127.0.0.1:25", send_resolved: false}]
        """
    ),
    "notify.yaml",
)
RETRY = Retry.model_validate({"initial": "1s", "max": "4s", "budget": "10s"})


def decide(record: NotifyRecord, inc: IncidentWriter, kind: E, at_ms: int) -> None:
    event = inc.event(kind, at_ms)
    record.observe(event, keep_alerts=100)
    outcome = NotifyPolicy(CONFIG).on_event(record.state, event)
    record.plan(outcome.deliveries, INFOS, at_ms)


def test_a_delivery_is_one_item_per_integration_and_resolved_skips_send_resolved_false() -> None:
    inc = IncidentWriter("inc-1")
    record = NotifyRecord.new("inc-1")
    decide(record, inc, E.OPENED, T0)
    assert [(i.kind, i.trigger, i.seq) for i in record.outbox] == [
        ("webhook", "opened", 1),
        ("email", "opened", 1),
    ]
    assert set(record.alerts) == {"inc-1-fp"}
    decide(record, inc, E.RESOLVED, T0 + 1000)
    assert [(i.kind, i.trigger, i.seq) for i in record.outbox[2:]] == [("webhook", "resolved", 2)]


def test_only_the_head_of_a_lane_is_tried_so_a_receiver_hears_events_in_order() -> None:
    inc = IncidentWriter("inc-1")
    record = NotifyRecord.new("inc-1")
    decide(record, inc, E.OPENED, T0)
    decide(record, inc, E.RESOLVED, T0 + 1000)
    heads = record.due(T0 + 1000)
    assert [(i.kind, i.seq) for i in heads] == [("webhook", 1), ("email", 1)]
    webhook = heads[0]
    # the receiver is down: the opened message is retried, the resolved one waits behind it
    assert (
        record.settle(webhook, ok=False, retryable=True, retry=RETRY, now_ms=T0 + 1000, jitter=0.0)
        == "failed"
    )
    assert webhook.attempts == 1 and webhook.next_ms == T0 + 1500
    assert [(i.kind, i.seq) for i in record.due(T0 + 1200)] == [("email", 1)]
    assert (
        record.settle(webhook, ok=True, retryable=False, retry=RETRY, now_ms=T0 + 1500, jitter=0.0) == "sent"
    )
    assert sorted((i.kind, i.seq) for i in record.due(T0 + 1500)) == [("email", 1), ("webhook", 2)]


def test_retries_back_off_and_give_up_when_the_budget_is_spent() -> None:
    inc = IncidentWriter("inc-1")
    record = NotifyRecord.new("inc-1")
    decide(record, inc, E.OPENED, T0)
    item = record.outbox[0]
    now, delays = T0, []
    while True:
        outcome = record.settle(item, ok=False, retryable=True, retry=RETRY, now_ms=now, jitter=0.99)
        if outcome == "given_up":
            break
        delays.append(item.next_ms - now)
        now = item.next_ms
    assert delays[:3] == [995, 1990, 3980]  # initial * 2^(n-1), capped at max, upper half jittered
    assert now == T0 + 10_000  # the last try is when the budget ends
    assert item not in record.outbox


def test_a_final_failure_gives_up_at_once() -> None:
    inc = IncidentWriter("inc-1")
    record = NotifyRecord.new("inc-1")
    decide(record, inc, E.OPENED, T0)
    item = record.outbox[0]
    assert record.settle(item, ok=False, retryable=False, retry=RETRY, now_ms=T0, jitter=0.5) == "given_up"
    entry = delivery_log_record(
        item,
        "given_up",
        incident_id="inc-1",
        status=400,
        detail="HTTP 400: no",
        latency_s=0.01,
        at_ms=T0 + 250,
    )
    assert entry["outcome"] == "given_up" and entry["attempt"] == 1 and entry["status"] == 400
    assert entry["delivery_latency_s"] == 0.25
    orjson.dumps(entry)


def test_the_record_round_trips_and_finishes_when_closed_and_empty() -> None:
    inc = IncidentWriter("inc-1")
    record = NotifyRecord.new("inc-1")
    decide(record, inc, E.OPENED, T0)
    decide(record, inc, E.RESOLVED, T0 + 1000)
    again = NotifyRecord.from_bytes(record.to_bytes())
    assert again.to_bytes() == record.to_bytes()
    assert [i.notification_id for i in again.outbox] == [i.notification_id for i in record.outbox]
    assert sorted(again.events) == [1, 2]  # the events its items show
    for item in list(record.outbox):
        record.settle(item, ok=True, retryable=False, retry=RETRY, now_ms=T0 + 2000, jitter=0.0)
    assert sorted(record.events) == [2] and not record.finished
    decide(record, inc, E.CLOSED, T0 + 3000)
    assert record.finished


def test_link_events_are_updates() -> None:
    inc = IncidentWriter("inc-1")
    inc.event(E.OPENED, T0)
    for kind in (E.LINKED, E.MEMBER_ADDED, E.UNLINKED, E.ROOT_CAUSE_CHANGED):
        assert classify(inc.event(kind, T0 + 1000), None) is NotifyOn.UPDATED


def test_the_record_keeps_at_most_the_cap_of_alerts_and_the_payload_counts_the_rest() -> None:
    from stormwatch.agents.core.notify_outbox import STATE_ALERTS_MAX
    from stormwatch.agents.core.notify_payloads import webhook_payload
    from stormwatch.bench.notify import IncidentScript

    big = IncidentScript("inc-big", alerts=5000)
    opened = big.event(E.OPENED, T0)
    capped, full = NotifyRecord.new("inc-big"), NotifyRecord.new("inc-big")
    capped.observe(opened, keep_alerts=STATE_ALERTS_MAX)
    full.observe(opened, keep_alerts=10_000)
    assert len(capped.alerts) == STATE_ALERTS_MAX and len(full.alerts) == 5000
    size, uncapped = len(capped.to_bytes()), len(full.to_bytes())
    assert size < 40_000 < 500_000 < uncapped, (size, uncapped)
    body = webhook_payload(opened, capped.alerts.values(), receiver="hook")
    assert len(body["alerts"]) == STATE_ALERTS_MAX and body["truncatedAlerts"] == 5000 - STATE_ALERTS_MAX
    kept = sorted(a["fingerprint"] for a in body["alerts"])
    assert (
        kept == sorted(f"inc-big-fp{n}" for n in range(5000))[:STATE_ALERTS_MAX]
    )  # payload order: start, fp
    # a webhook's max_alerts below the cap lists fewer, and counts the rest the same way
    body = webhook_payload(opened, capped.alerts.values(), receiver="hook", max_alerts=10)
    assert len(body["alerts"]) == 10 and body["truncatedAlerts"] == 4990
