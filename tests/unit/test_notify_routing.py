"""The route tree: Alertmanager's matching (depth-first, continue, default), on incident labels."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stormwatch.agents.core.notify_config import NotifierConfig, NotifyOn, parse_notifier_config
from stormwatch.agents.core.notify_routing import matching_routes, muted_by, route, route_labels
from stormwatch.schemas.common import Severity, ms_from_dt
from stormwatch.schemas.incident import IncidentSnapshot, IncidentState, RootCauseInfo

TREE = """
route:
  receiver: default
  group_interval: 1m
  repeat_interval: 2h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - matchers: ['team="db"']
      receiver: db
      group_interval: 10m
      routes:
        - matchers: ['service=~"mysql|postgres"']
          receiver: db-sql
          notify_on: [opened, resolved]
        - matchers: ['env="prod"']
          receiver: db-prod
          continue: true
        - matchers: ['env=~"prod|stage"', 'region!="eu"']
          receiver: db-shared
    - matchers: ['team="web"']
      receiver: web
    - matchers: ['team="web"']
      receiver: web-shadow
    - matchers: ['state="resolved"']
      receiver: closer
    - matchers: ['root_cause=~".+"']
      receiver: rca
receivers:
  - name: default
  - name: pager
  - name: db
  - name: db-sql
  - name: db-prod
  - name: db-shared
  - name: web
  - name: web-shadow
  - name: closer
  - name: rca
"""


@pytest.fixture(scope="module")
def tree() -> NotifierConfig:
    return parse_notifier_config(textwrap.dedent(TREE), "tree.yaml")


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({}, ["default"]),  # nothing matches below the root: the root catches it
        ({"severity": "critical"}, ["pager"]),  # continue, but no later sibling matches
        ({"severity": "critical", "team": "web"}, ["pager", "web"]),
        ({"team": "db", "service": "mysql"}, ["db-sql"]),  # first matching child ends the level
        ({"team": "db", "service": "mysql", "env": "prod"}, ["db-sql"]),
        ({"team": "db", "env": "prod"}, ["db-prod", "db-shared"]),  # continue goes on to the next
        ({"team": "db", "env": "prod", "region": "eu"}, ["db-prod"]),
        ({"team": "db", "env": "dev"}, ["db"]),  # no child matches: the parent is the result
        ({"team": "web"}, ["web"]),  # the second team="web" route is never reached
        ({"team": "web", "state": "resolved"}, ["web"]),
        ({"state": "resolved"}, ["closer"]),
        ({"severity": "critical", "team": "db", "service": "postgres"}, ["pager", "db-sql"]),
    ],
)
def test_routing_follows_alertmanager(
    tree: NotifierConfig, labels: dict[str, str], receivers: list[str]
) -> None:
    assert [n.receiver for n in route(tree, labels)] == receivers


def test_matched_routes_carry_their_inherited_settings(tree: NotifierConfig) -> None:
    (sql,) = route(tree, {"team": "db", "service": "mysql"})
    assert (sql.path, sql.group_interval_ms, sql.repeat_interval_ms) == (
        "route.routes[1].routes[0]",
        600_000,
        7_200_000,
    )
    assert sql.notify_on == {NotifyOn.OPENED, NotifyOn.RESOLVED}
    (prod, shared) = route(tree, {"team": "db", "env": "prod"})
    assert prod.group_interval_ms == shared.group_interval_ms == 600_000
    assert prod.notify_on == tree.route.notify_on


def test_a_receiver_reached_twice_is_notified_once_on_the_first_route() -> None:
    config = parse_notifier_config(
        textwrap.dedent(
            """
            route:
              receiver: team
              routes:
                - {matchers: ['severity="critical"'], receiver: team, continue: true, group_interval: 1m}
                - {matchers: ['service="api"'], receiver: team, group_interval: 9m}
            receivers: [{name: team}]
            """
        )
    )
    labels = {"severity": "critical", "service": "api"}
    assert [n.path for n in matching_routes(config.route, labels)] == ["route.routes[0]", "route.routes[1]"]
    (only,) = route(config, labels)
    assert (only.path, only.group_interval_ms) == ("route.routes[0]", 60_000)


def _snapshot(**fields: object) -> IncidentSnapshot:
    base: dict[str, object] = {
        "state": IncidentState.OPEN,
        "severity": Severity.CRITICAL,
        "title": "t",
        "group_key": '{team="db"}',
        "group_labels": {"team": "db", "severity": "page", "state": "x"},
        "rule": "by-team",
        "alert_count": 1,
        "firing_count": 1,
        "opened_at": datetime(2025, 1, 6, tzinfo=UTC),
    }
    return IncidentSnapshot.model_validate({**base, **fields})


def test_the_incident_s_own_fields_win_over_group_labels_of_the_same_name() -> None:
    labels = route_labels(_snapshot())
    assert labels == {"team": "db", "severity": "critical", "state": "open", "rule": "by-team"}
    resolved = route_labels(_snapshot(state=IncidentState.RESOLVED, severity=Severity.INFO))
    assert (resolved["state"], resolved["severity"]) == ("resolved", "info")


def test_root_cause_is_a_label_only_when_the_incident_has_one(tree: NotifierConfig) -> None:
    assert "root_cause" not in route_labels(_snapshot(group_labels={"root_cause": "spoofed"}))
    root = RootCauseInfo(
        component='{cluster="prod"}database/orders-db',
        kind="database",
        name="orders-db",
        first_firing_at=datetime(2027, 1, 1, tzinfo=UTC),
        decided_by="first_firing",
    )
    assert route_labels(_snapshot(root_cause=root))["root_cause"] == "database/orders-db"
    assert [n.receiver for n in route(tree, {"root_cause": ""})] == ["default"]
    assert [n.receiver for n in route(tree, {"root_cause": "database/orders-db"})] == ["rca"]


def test_muting_and_active_intervals_at_a_time() -> None:
    config = parse_notifier_config(
        textwrap.dedent(
            """
            route: {receiver: r}
            receivers: [{name: r}]
            time_intervals:
              - name: weekend
                time_intervals: [{weekdays: [saturday, sunday]}]
              - name: office
                time_intervals: [{times: [{start_time: "09:00", end_time: "17:00"}]}]
            """
        )
    )
    saturday_noon = ms_from_dt(datetime(2025, 1, 11, 12, tzinfo=UTC))
    monday_night = ms_from_dt(datetime(2025, 1, 6, 22, tzinfo=UTC))
    monday_noon = ms_from_dt(datetime(2025, 1, 6, 12, tzinfo=UTC))
    intervals = config.time_intervals
    assert muted_by(intervals, ["weekend"], [], saturday_noon) == "muted by time interval 'weekend'"
    assert muted_by(intervals, ["weekend"], [], monday_noon) is None
    assert muted_by(intervals, [], ["office"], monday_night) == "outside the active time intervals 'office'"
    assert muted_by(intervals, [], ["office"], monday_noon) is None
    assert muted_by(intervals, ["gone"], ["also-gone"], monday_night) is None  # names from an older file


_LABEL = st.sampled_from(["team", "service", "env", "region", "severity", "state", "root_cause"])
_VALUE = st.sampled_from(
    ["", "db", "web", "mysql", "postgres", "prod", "stage", "eu", "critical", "resolved"]
)


@settings(max_examples=300, deadline=None)
@given(labels=st.dictionaries(_LABEL, _VALUE, max_size=6))
def test_routing_is_deterministic_and_never_empty(labels: dict[str, str]) -> None:
    config = parse_notifier_config(textwrap.dedent(TREE), "tree.yaml")
    first = route(config, labels)
    assert first, "the root catches everything"
    assert route(config, dict(reversed(list(labels.items())))) == first  # label order does not matter
    assert route(config, labels) == first
    receivers = [n.receiver for n in first]
    assert len(receivers) == len(set(receivers))
