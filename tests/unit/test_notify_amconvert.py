"""Converting an Alertmanager configuration: same routing, no secrets copied, a warning per loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stormwatch.agents.core.notify_amconvert import AlertmanagerConversionError, from_alertmanager
from stormwatch.agents.core.notify_config import SecretRef, parse_notifier_config
from stormwatch.agents.core.notify_routing import route

SAMPLE = Path(__file__).parent / "fixtures" / "alertmanager_sample.yml"
SECRETS = ("hunter2-not-a-real-password", "0123456789abcdef0123456789abcdef", "XXXXXXXX")


@pytest.fixture(scope="module")
def converted():  # type: ignore[no-untyped-def]
    return from_alertmanager(SAMPLE.read_text(encoding="utf-8"))


def test_the_converted_file_loads(converted) -> None:  # type: ignore[no-untyped-def]
    config = parse_notifier_config(converted.to_yaml(), "converted.yaml")
    assert set(config.receivers) == {
        "team-default",
        "pagerduty-oncall",
        "dba-email",
        "web-slack",
        "blackhole",
    }
    assert config.receivers["blackhole"].integrations == 0  # Alertmanager's null receiver stays one
    assert set(config.time_intervals) == {"business-hours", "out-of-hours"}


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"severity": "warning"}, ["team-default"]),
        ({"severity": "critical", "team": "web", "service": "api"}, ["pagerduty-oncall", "web-slack"]),
        ({"severity": "warning", "team": "database", "service": "mysql"}, ["dba-email"]),
        ({"severity": "warning", "team": "database", "service": "redis"}, ["dba-email"]),
        ({"severity": "warning", "service": "web", "env": "staging"}, ["team-default"]),
        ({"severity": "warning", "alertname": "Watchdog"}, ["blackhole"]),
    ],
)
def test_routes_the_way_alertmanager_did(converted, labels: dict[str, str], receivers: list[str]) -> None:  # type: ignore[no-untyped-def]
    config = parse_notifier_config(converted.to_yaml(), "converted.yaml")
    assert [n.receiver for n in route(config, labels)] == receivers


def test_settings_carry_over(converted) -> None:  # type: ignore[no-untyped-def]
    config = parse_notifier_config(converted.to_yaml(), "converted.yaml")
    pager, dba, web, _hole = config.route.routes
    assert (config.route.group_interval_ms, config.route.repeat_interval_ms) == (300_000, 14_400_000)
    assert pager.continue_ and [str(m) for m in pager.matchers] == ['severity="critical"']  # page -> critical
    assert [str(m) for m in dba.routes[0].matchers] == ['service=~"^(mysql|postgres)$"']
    assert dba.routes[0].mute_time_intervals == ("out-of-hours",)
    assert web.active_time_intervals == ("business-hours",) and web.repeat_interval_ms == 12 * 3_600_000
    mail = config.receivers["dba-email"].email[0]
    assert mail.to == ["dba@example.com", "oncall-db@example.com"]
    assert (mail.from_, mail.smarthost, mail.auth_username) == (
        "alertmanager@example.com",
        "smtp.example.com:587",
        "alertmanager",
    )
    assert mail.password_ref == SecretRef("env", "STORMWATCH_DBA_EMAIL_EMAIL_0_AUTH_PASSWORD")
    assert mail.send_resolved is False  # Alertmanager's default for email, written out
    pd = config.receivers["pagerduty-oncall"].pagerduty[0]
    assert pd.routing_key_ref == SecretRef("env", "STORMWATCH_PAGERDUTY_ONCALL_PAGERDUTY_0_ROUTING_KEY")
    assert set(pd.severity.values()) == {"critical"}  # a fixed severity stays fixed
    slack, opsgenie = config.receivers["web-slack"].apprise
    assert (slack.urls_env, slack.body, slack.send_resolved) == (
        "STORMWATCH_WEB_SLACK_SLACK_0_URLS",
        "Web alerts",
        False,
    )
    assert opsgenie.urls_env == "STORMWATCH_WEB_SLACK_OPSGENIE_0_URLS"
    assert config.receivers["team-default"].webhook[0].max_alerts == 20
    off = config.time_intervals["out-of-hours"].intervals[1]
    assert off.location == "UTC"  # 'Local' is refused; the warning says so


def test_no_secret_is_copied(converted) -> None:  # type: ignore[no-untyped-def]
    text = converted.to_yaml()
    for secret in SECRETS:
        assert secret not in text


def test_every_loss_is_a_warning(converted) -> None:  # type: ignore[no-untyped-def]
    text = "\n".join(converted.warnings)
    for expected in (
        "global.resolve_timeout: not converted",
        "route.routes[0].matchers[0]: severity 'page' is 'critical'",
        "route.routes[1]: match/match_re (deprecated in Alertmanager) became matchers",
        "pagerduty_configs[0].routing_key: secret written inline: not copied; set the environment variable "
        "STORMWATCH_PAGERDUTY_ONCALL_PAGERDUTY_0_ROUTING_KEY",
        "pagerduty_configs[0].description: Go template '{{ template \"pagerduty.default.description\" . }}'",
        "email_configs[0].headers.Subject: Go template",
        "email_configs[0].html: Go template",
        "slack_configs[0].api_url: webhook URL (it carries a token) not copied",
        "slack_configs[0].title: Go template",
        "opsgenie became an Apprise URL",
        "victorops_configs: no stormwatch receiver for it yet",
        "mute_time_intervals[0].time_intervals[1].location: 'Local'",
        "inhibit_rules: 1 inhibit rule(s) not converted: inhibition is done by the correlator",
        "templates: 1 template file pattern(s) not converted",
        "the Alertmanager grouping was: group_by [alertname, cluster, service] at route; group_wait only at "
        "route.routes[0]",
        "matchers use the labels alertname, env, service, team: routes see an incident's group labels only",
    ):
        assert expected in text, expected
    header = converted.to_yaml().split("\nversion: 1\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert yaml.safe_load(converted.to_yaml()) == converted.config


def test_severity_regexes_and_reserved_names() -> None:
    result = from_alertmanager(
        """
        route:
          receiver: r
          routes:
            - {receiver: r, matchers: ['severity=~"page|critical|warn"']}
            - {receiver: r, matchers: ['severity=~"crit.*"']}
            - {receiver: r, matchers: ['state="firing"']}
        receivers: [{name: r}]
        """
    )
    first, second, third = result.config["route"]["routes"]
    assert first["matchers"] == ['severity=~"critical|warning"']
    assert second["matchers"] == ['severity=~"crit.*"']
    assert third["matchers"] == ['state="firing"']
    text = "\n".join(result.warnings)
    assert "is matched against critical, error, warning and info only" in text
    assert "matchers use state, which in stormwatch name the incident's own fields" in text


def test_file_references_carry_over_and_v1_keys_are_refused() -> None:
    result = from_alertmanager(
        """
        route: {receiver: r}
        receivers:
          - name: r
            pagerduty_configs:
              - routing_key_file: /run/secrets/pd
              - service_key: v1-key
            slack_configs:
              - api_url_file: /run/secrets/slack
                send_resolved: true
            webhook_configs:
              - url_file: /run/secrets/hook
                http_config: {bearer_token: x}
        """
    )
    receiver = result.config["receivers"][0]
    assert receiver["pagerduty_configs"] == [{"routing_key_file": "/run/secrets/pd", "send_resolved": True}]
    assert receiver["apprise_configs"] == [{"urls_file": "/run/secrets/slack", "send_resolved": True}]
    assert receiver["webhook_configs"] == [{"url_file": "/run/secrets/hook", "send_resolved": True}]
    text = "\n".join(result.warnings)
    assert "service_key is PagerDuty's Events API v1" in text
    assert "webhook_configs[0]: not converted: http_config" in text
    assert "v1-key" not in result.to_yaml()
    parse_notifier_config(result.to_yaml())


@pytest.mark.parametrize("text", ["- just a list", "receivers: []", "route: [", "route: 3"])
def test_what_is_not_an_alertmanager_configuration_is_refused(text: str) -> None:
    with pytest.raises(AlertmanagerConversionError):
        from_alertmanager(text)
