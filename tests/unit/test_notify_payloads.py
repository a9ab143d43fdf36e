"""The pure half of the receivers: the incident's alerts folded from its events, PagerDuty's action.

The shapes on the wire are checked against real servers in test_receivers.py.
"""

from __future__ import annotations

import pytest

from stormwatch.agents.core.notify_config import PagerDutyConfig, notification_context
from stormwatch.agents.core.notify_payloads import (
    PAGERDUTY_SUMMARY_LIMIT,
    event_action,
    fold_alerts,
    pagerduty_event,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    RootCauseInfo,
)
from stormwatch.schemas.incident import IncidentState as S


def event(state: S, changes: list[AlertChange] = (), title: str = "Down") -> IncidentEvent:  # type: ignore[assignment]
    return IncidentEvent(
        event_id="i:1",
        incident_id="i",
        seq=1,
        type=IncidentEventType.UPDATED,
        from_state=S.OPEN,
        to_state=state,
        at=utc_from_ms(60_000),
        actor="correlator",
        cause="test",
        alerts=list(changes),
        snapshot=IncidentSnapshot(
            state=state,
            severity=Severity.WARNING,
            title=title,
            group_key="g",
            group_labels={"service": "api"},
            rule="r",
            alert_count=1,
            firing_count=1,
            opened_at=utc_from_ms(0),
        ),
    )


def change(kind: AlertChangeKind, at_ms: int, **extra: object) -> AlertChange:
    status = (
        AlertStatus.RESOLVED
        if kind in (AlertChangeKind.RESOLVED, AlertChangeKind.EXPIRED)
        else AlertStatus.FIRING
    )
    return AlertChange.model_validate(
        {
            "fingerprint": "f",
            "change": kind,
            "status": status,
            "severity": "warning",
            "at": utc_from_ms(at_ms),
            **extra,
        }
    )


def test_alerts_follow_their_changes() -> None:
    joined = change(
        AlertChangeKind.JOINED, 0, labels={"alertname": "Down", "service": "api"}, annotations={"a": "1"}
    )
    alerts = fold_alerts({}, event(S.OPEN, [joined]))
    assert alerts["f"].labels == {"alertname": "Down", "service": "api"} and alerts["f"].ends_at is None
    alerts = fold_alerts(
        alerts, event(S.OPEN, [change(AlertChangeKind.UPDATED, 1000, annotations={"a": "2"})])
    )
    assert alerts["f"].annotations == {"a": "2"} and alerts["f"].labels["alertname"] == "Down"
    alerts = fold_alerts(alerts, event(S.OPEN, [change(AlertChangeKind.EXPIRED, 2000)]))
    assert alerts["f"].status is AlertStatus.RESOLVED and alerts["f"].ends_at == utc_from_ms(2000)
    alerts = fold_alerts(alerts, event(S.OPEN, [change(AlertChangeKind.REFIRED, 3000)]))
    assert alerts["f"].status is AlertStatus.FIRING and alerts["f"].ends_at is None
    assert alerts["f"].starts_at == utc_from_ms(3000)


def test_an_alert_first_seen_mid_incident_gets_the_group_labels() -> None:
    alerts = fold_alerts({}, event(S.OPEN, [change(AlertChangeKind.UPDATED, 0)]))
    assert alerts["f"].labels == {"service": "api"}


@pytest.mark.parametrize(
    ("state", "action"),
    [(S.OPEN, "trigger"), (S.ACKNOWLEDGED, "acknowledge"), (S.MITIGATING, "acknowledge"),
     (S.RESOLVED, "resolve"), (S.CLOSED, "resolve")],
)  # fmt: skip
def test_the_pagerduty_action_follows_the_incident_state(state: S, action: str) -> None:
    assert event_action(event(state)) == action


def test_a_long_or_multi_line_title_stays_one_pagerduty_summary() -> None:
    config = PagerDutyConfig.model_validate({"routing_key_env": "K"})
    body = pagerduty_event(event(S.OPEN, title="a\nb" + "x" * 2000), config, routing_key="k")
    assert body["dedup_key"] == "i" and body["payload"]["summary"].startswith("a b")
    assert len(body["payload"]["summary"]) == PAGERDUTY_SUMMARY_LIMIT
    assert body["payload"]["severity"] == "warning"


def test_a_primarys_message_names_its_members_and_root_cause() -> None:
    config = PagerDutyConfig.model_validate({"routing_key_env": "K"})
    plain = event(S.OPEN)
    assert "members" not in pagerduty_event(plain, config, routing_key="k")["payload"]["custom_details"]
    root = RootCauseInfo(
        component='{cluster="a"}database/orders-db',
        kind="database",
        name="orders-db",
        first_firing_at=utc_from_ms(0),
        decided_by="first_firing",
    )
    snapshot = plain.snapshot.model_copy(update={"members": ["m-1", "m-2"], "root_cause": root})
    primary = plain.model_copy(update={"snapshot": snapshot})
    details = pagerduty_event(primary, config, routing_key="k")["payload"]["custom_details"]
    assert details["members"] == ["m-1", "m-2"]
    assert details["root_cause"] == {"component": root.component, "kind": "database", "name": "orders-db"}
    context = notification_context(primary)["incident"]
    assert context["members"] == "m-1, m-2" and context["member_count"] == "2"
    assert context["root_cause"] == root.component and context["linked_into"] is None
    assert notification_context(plain)["incident"]["members"] is None
