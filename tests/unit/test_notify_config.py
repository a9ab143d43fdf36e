"""The notifier file: defaults, inheritance, secrets, templates, and every mistake in one pass."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stormwatch.agents.core.notify_config import (
    DEFAULT_NOTIFY_ON,
    AfterAck,
    NotifierConfigError,
    NotifyOn,
    Retry,
    SecretRef,
    notification_context,
    parse_notifier_config,
    render_header,
    render_html,
    render_text,
)
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentSnapshot, IncidentState

MINIMAL = """
route:
  receiver: team
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:9000/hook
"""


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_notifier_config(textwrap.dedent(text), source="notify.yaml")


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(NotifierConfigError) as info:
        parse(text)
    return [(line, path, message) for path, message, line in info.value.problems]


def test_a_minimal_file_gets_every_default() -> None:
    config = parse(MINIMAL)
    root = config.route
    assert (root.path, root.receiver, root.matchers, root.routes) == ("route", "team", (), ())
    assert (root.group_interval_ms, root.repeat_interval_ms) == (5 * 60_000, 4 * 3_600_000)
    assert root.notify_on == frozenset(DEFAULT_NOTIFY_ON)
    assert set(DEFAULT_NOTIFY_ON) == {
        NotifyOn.OPENED,
        NotifyOn.SEVERITY_RAISED,
        NotifyOn.REOPENED,
        NotifyOn.RESOLVED,
    }
    assert root.after_ack is AfterAck.RESOLVE_ONLY
    team = config.receivers["team"]
    assert team.integrations == 1 and team.rate_limit is None
    assert (team.retry.initial_ms, team.retry.max_ms, team.retry.budget_ms) == (1_000, 300_000, 3_600_000)
    hook = team.webhook[0]
    assert (hook.max_alerts, hook.send_resolved) == (0, True)


def test_children_inherit_what_they_do_not_set_but_not_time_intervals() -> None:
    config = parse(
        """
        notify_on: [opened, resolved]
        after_ack: all
        route:
          receiver: team
          group_interval: 2m
          repeat_interval: 1h
          routes:
            - matchers: ['team="db"']
              receiver: db
              group_interval: 10m
              notify_on: [opened, updated, resolved]
              mute_time_intervals: [nights]
              routes:
                - matchers: ['service="mysql"']
                  after_ack: resolve_only
        receivers:
          - name: team
          - name: db
        time_intervals:
          - name: nights
            time_intervals: [{times: [{start_time: "20:00", end_time: "08:00"}]}]
        """
    )
    db = config.route.routes[0]
    mysql = db.routes[0]
    assert (db.receiver, db.group_interval_ms, db.repeat_interval_ms) == ("db", 600_000, 3_600_000)
    assert config.route.notify_on == {NotifyOn.OPENED, NotifyOn.RESOLVED}
    assert config.route.after_ack is AfterAck.ALL
    assert (mysql.path, mysql.receiver, mysql.group_interval_ms) == (
        "route.routes[0].routes[0]",
        "db",
        600_000,
    )
    assert mysql.notify_on == {NotifyOn.OPENED, NotifyOn.UPDATED, NotifyOn.RESOLVED}
    assert mysql.after_ack is AfterAck.RESOLVE_ONLY
    assert db.mute_time_intervals == ("nights",) and mysql.mute_time_intervals == ()  # as in Alertmanager
    assert config.receivers["team"].integrations == 0  # a receiver without integrations drops
    assert config.time_intervals["nights"].intervals[0].times is not None


def test_every_problem_of_the_file_is_reported_at_once_with_its_line() -> None:
    found = problems(
        """
        route:
          matchers: ['a="b"']
          group_interval: 5x
          group_by: [alertname]
          routes:
            - matchers: ['severity=="critical"']
              receiver: nobody
              mute_time_intervals: [nights]
            - match: {team: db}
              receiver: pager
              notify_on: [opened, exploded]
        receivers:
          - name: pager
            pagerduty_configs:
              - routing_key: abc123
          - name: pager
            email_configs:
              - to: [not-an-address]
                from: x@example.com
                smarthost: smtp:99999
                auth_password_file: /run/secrets/smtp
                subject: "{{ workflow.name }}"
                html: "{{ labels.x "
            webhook_configs:
              - url: https://user:secret@hooks.example.com/x
              - url: http://a/b
                url_env: HOOK_URL
            apprise_configs:
              - urls: ["not a url"]
            retry: {initial: 10s, max: 1s}
            rate_limit: {per_second: 0}
        time_intervals:
          - name: offhours
            time_intervals:
              - times: [{start_time: "25:00", end_time: "08:00"}]
                weekdays: [friday:monday]
                location: Mars/Base
        """
    )
    where = [(line, path) for line, path, _ in found]
    assert where == [
        (3, "route"),  # a mapping reports its first line
        (3, "route.matchers"),
        (4, "route.group_interval"),
        (5, "route.group_by"),
        (7, "route.routes[0].matchers[0]"),
        (8, "route.routes[0].receiver"),
        (9, "route.routes[0].mute_time_intervals[0]"),
        (10, "route.routes[1].match"),
        (12, "route.routes[1].notify_on[1]"),
        (16, "receivers[0].pagerduty_configs[0].routing_key"),
        (17, "receivers[1].name"),
        (19, "receivers[1].email_configs[0].to[0]"),
        (19, "receivers[1].email_configs[0]"),
        (21, "receivers[1].email_configs[0].smarthost"),
        (23, "receivers[1].email_configs[0].subject"),
        (24, "receivers[1].email_configs[0].html"),
        (26, "receivers[1].webhook_configs[0].url"),
        (28, "receivers[1].webhook_configs[1].url_env"),
        (30, "receivers[1].apprise_configs[0].urls[0]"),
        (31, "receivers[1].retry.max"),
        (32, "receivers[1].rate_limit.per_second"),
        (36, "time_intervals[0].time_intervals[0].times[0].start_time"),
        (37, "time_intervals[0].time_intervals[0].weekdays[0]"),
        (38, "time_intervals[0].time_intervals[0].location"),
    ]
    messages = {path: message for _, path, message in found}
    assert "the root route needs a receiver" in messages["route"]
    assert "invalid duration '5x'" in messages["route.group_interval"]
    assert "grouped by the correlator" in messages["route.group_by"]
    assert messages["route.routes[0].receiver"] == "unknown receiver 'nobody'; defined: pager"
    assert (
        "unknown time interval 'nights'; defined: offhours"
        in messages["route.routes[0].mute_time_intervals[0]"]
    )
    assert "write matchers:" in messages["route.routes[1].match"]
    assert "got the string 'exploded'" in messages["route.routes[1].notify_on[1]"]
    assert "routing_key_file" in messages["receivers[0].pagerduty_configs[0].routing_key"]
    assert "already defined at receivers[0]" in messages["receivers[1].name"]
    assert "needs auth_username" in messages["receivers[1].email_configs[0]"]
    assert "a notification has no 'workflow'" in messages["receivers[1].email_configs[0].subject"]
    assert "inline secret" in messages["receivers[1].webhook_configs[0].url"]
    assert messages["receivers[1].webhook_configs[1].url_env"] == "give only one of url, url_env"
    assert messages["receivers[1].retry.max"] == "is shorter than initial (10s)"
    assert "secret" not in str(found).replace("secrets", "").replace("inline secret", "")


def test_the_secret_itself_never_appears_in_an_error_or_a_repr() -> None:
    with pytest.raises(NotifierConfigError) as info:
        parse(
            """
            route: {receiver: pd}
            receivers:
              - name: pd
                pagerduty_configs: [{routing_key: s3cr3t-r0uting-key}]
            """
        )
    assert "s3cr3t" not in str(info.value)
    config = parse(
        """
        route: {receiver: hooks}
        receivers:
          - name: hooks
            webhook_configs: [{url: "https://hooks.example.com/services/T0/B0/t0ken"}]
            apprise_configs: [{urls: ["tgram://123:bot-t0ken/456"]}]
        """
    )
    hooks = config.receivers["hooks"]
    assert "t0ken" not in repr(hooks)
    assert hooks.webhook[0].url_ref == SecretRef("inline", "https://hooks.example.com/services/T0/B0/t0ken")
    assert repr(hooks.webhook[0].url_ref) == "SecretRef(inline: https://hooks.example.com/***)"
    assert "t0ken" not in repr(hooks.apprise[0].url_refs)


def test_secrets_are_named_by_file_or_environment_variable() -> None:
    config = parse(
        """
        route: {receiver: r}
        receivers:
          - name: r
            pagerduty_configs:
              - routing_key_file: /run/secrets/pd
                severity: {warning: info}
            email_configs:
              - to: "a@example.com, b@example.com"
                from: stormwatch <alerts@example.com>
                smarthost: "[::1]:2525"
                auth_username: alerts
                auth_password_env: SMTP_PASSWORD
            apprise_configs:
              - urls_env: APPRISE_URLS
        """
    )
    r = config.receivers["r"]
    assert r.pagerduty[0].routing_key_ref == SecretRef("file", "/run/secrets/pd")
    assert r.pagerduty[0].pagerduty_severity(Severity.WARNING) == "info"
    assert r.pagerduty[0].pagerduty_severity(Severity.CRITICAL) == "critical"
    assert r.email[0].to == ["a@example.com", "b@example.com"]
    assert r.email[0].password_ref == SecretRef("env", "SMTP_PASSWORD")
    assert r.apprise[0].url_refs == (SecretRef("env", "APPRISE_URLS"),)


def test_hint_keys_are_not_offered_as_allowed_keys() -> None:
    ((_line, _path, message),) = problems(
        """
        route: {receiver: r, group_intervall: 1m}
        receivers: [{name: r}]
        """
    )
    assert message.startswith("unknown key 'group_intervall'; allowed keys: active_time_intervals, after_ack")
    assert "group_by" not in message and "match_re" not in message


def test_the_root_route_follows_alertmanager_s_rules() -> None:
    found = problems(
        """
        route:
          receiver: r
          continue: true
          mute_time_intervals: [t]
        receivers: [{name: r}]
        time_intervals: [{name: t, time_intervals: [{}]}]
        """
    )
    assert [path for _, path, _ in found] == ["route.continue", "route.mute_time_intervals"]


def _event() -> IncidentEvent:
    at = datetime(2025, 1, 6, 9, 30, tzinfo=UTC)
    return IncidentEvent(
        event_id="e1",
        incident_id="inc-0123456789abcdef-1736155800000",
        seq=1,
        type=IncidentEventType.OPENED,
        from_state=None,
        to_state=IncidentState.OPEN,
        at=at,
        actor="correlator",
        cause="3 alert(s) matched rule by-service within group_wait",
        snapshot=IncidentSnapshot(
            state=IncidentState.OPEN,
            severity=Severity.CRITICAL,
            title="HighLatency on api\r\nBcc: victim@example.com",
            group_key='{service="api"}',
            group_labels={"service": "<script>alert(1)</script>", "evil": "{{ incident.id }}"},
            rule="by-service",
            alert_count=3,
            firing_count=2,
            opened_at=at,
        ),
    )


def test_templates_render_incident_event_and_labels_as_plain_text() -> None:
    context = notification_context(_event())
    text = render_text(
        "{{ labels.evil }} / {{ labels['service'] }} / {{ incident.firing_count }} of "
        "{{ incident.alert_count }} / {{ event.type }} at {{ event.at }}",
        context,
    )
    # A label value that looks like a template stays that text: nothing is parsed twice.
    assert (
        text == "{{ incident.id }} / <script>alert(1)</script> / 2 of 3 / opened at 2025-01-06T09:30:00.000Z"
    )


def test_headers_cannot_be_injected_and_html_is_escaped() -> None:
    context = notification_context(_event())
    subject = render_header("[{{ incident.severity | upper }}] {{ incident.title }}", context)
    assert subject == "[CRITICAL] HighLatency on api Bcc: victim@example.com"
    body = render_html('<p title="{{ labels.service }}">{{ labels.service | default("-") }}</p>', context)
    assert body == (
        '<p title="&lt;script&gt;alert(1)&lt;/script&gt;">&lt;script&gt;alert(1)&lt;/script&gt;</p>'
    )


def test_the_default_templates_render_for_an_incident_without_an_assignee() -> None:
    config = parse(
        """
        route: {receiver: mail}
        receivers:
          - name: mail
            email_configs: [{to: a@example.com, from: s@example.com, smarthost: "localhost:25"}]
            apprise_configs: [{urls: ["ntfy://localhost/alerts"]}]
        """
    )
    context = notification_context(_event())
    mail = config.receivers["mail"].email[0]
    assert render_header(mail.subject, context).startswith("[CRITICAL] HighLatency on api")
    assert "Assignee:  nobody" in render_text(mail.text, context)
    assert "2 of 3 alerts firing" in render_text(config.receivers["mail"].apprise[0].body, context)


def test_retry_backoff_doubles_up_to_max_with_jitter_in_the_upper_half() -> None:
    retry = Retry.model_validate({"initial": "1s", "max": "10s", "budget": "1m"})
    assert [retry.delay_ms(n, 0.0) for n in (1, 2, 3, 4, 5, 6)] == [500, 1_000, 2_000, 4_000, 5_000, 5_000]
    assert [retry.delay_ms(n, 0.999999) for n in (1, 5)] == [999, 9_999]
    assert retry.delay_ms(10_000, 0.5) == 7_500  # no overflow however many retries
    assert not retry.exhausted(0, 59_999) and retry.exhausted(0, 60_000)


def test_a_document_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(
        NotifierConfigError, match="expected a mapping with keys: after_ack, link_wait, notify_on"
    ):
        parse("- route\n")


def test_the_example_in_docs_notifications_md_loads() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text(encoding="utf-8")
    example = doc.split("## An example\n\n```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_notifier_config(example, "docs/notifications.md")
    assert [n.receiver for n in config.route.routes] == [
        "oncall-pagerduty",
        "dba-email",
        "checkout-chat",
        "team-webhook",
    ]
    assert config.receivers["oncall-pagerduty"].rate_limit is not None


def test_link_wait_is_a_duration_left_to_the_stage_when_unset() -> None:
    assert parse(MINIMAL).link_wait_ms is None  # the stage derives it from the topology
    assert parse("link_wait: 20s\n" + textwrap.dedent(MINIMAL)).link_wait_ms == 20_000
    assert parse("link_wait: 0s\n" + textwrap.dedent(MINIMAL)).link_wait_ms == 0
    ((line, path, message),) = problems("link_wait: soon\n" + textwrap.dedent(MINIMAL))
    assert (line, path) == (1, "link_wait") and "invalid duration 'soon'" in message
