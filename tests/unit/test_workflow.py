"""The workflow file: loading, defaults, conditions, and precise error messages."""

from __future__ import annotations

import json
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from stormwatch.agents.core.workflow import (
    Backoff,
    OnFailure,
    TimeWindow,
    TriggerEvent,
    WorkflowError,
    parse_workflows,
    render_workflow_schema,
    workflow_json_schema,
)
from stormwatch.agents.executors import available_executors
from stormwatch.commands.agent import SCHEMA_FILE
from stormwatch.loaders import load_workflows
from stormwatch.schemas.common import Severity

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "incident_workflow_config.yaml"


def parse(text: str):  # type: ignore[no-untyped-def]
    return parse_workflows(textwrap.dedent(text), source="wf.yaml", executors=available_executors())


def errors(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as info:
        parse(text)
    return str(info.value).splitlines()


def test_shipped_example_validates() -> None:
    config = load_workflows(EXAMPLE, executors=available_executors())
    names = [w.name for w in config.workflows]
    assert "restart-crashlooping-service" in names and "escalate-unacknowledged" in names
    restart = config.get("restart-crashlooping-service")
    assert restart is not None
    step = next(s for s in restart.steps if s.name == "restart")
    assert step.guards.rate_limit is not None and step.guards.rate_limit.max == 3
    assert step.guards.rate_limit.per_ms == 3_600_000
    # Approval fails closed: no label value lets the restart skip it (issue #15 item 10).
    assert all(step.needs_approval(labels) for labels in ({"env": "production"}, {"env": "Production"}, {}))
    announce = next(s for s in restart.steps if s.name == "announce")
    assert not announce.needs_approval({}) and announce.approval.reason
    assert step.on_failure is OnFailure.ESCALATE
    assert restart.escalate_after_ms == 15 * 60_000
    unacked = config.get("escalate-unacknowledged")
    assert unacked is not None and unacked.events == {TriggerEvent.NOT_ACKNOWLEDGED}
    assert config.get("scale-checkout-after-hours") is not None
    assert config.get("scale-checkout-after-hours").dry_run  # type: ignore[union-attr]


def test_defaults_apply_field_by_field() -> None:
    config = parse(
        """
        defaults:
          timeout: 45s
          retries: 2
          on_failure: continue
          guards: {max_concurrent: 4, cooldown: 1m}
        workflows:
          - name: w
            trigger: {events: [opened]}
            steps:
              - {name: a, action: log, params: {message: hi}}
              - name: b
                action: log
                params: {message: hi}
                timeout: 5s
                retries: 0
                guards: {cooldown: 10m, rate_limit: {max: 2, per: 1h}}
        """
    )
    a, b = config.workflows[0].steps
    assert (a.timeout_ms, a.retries, a.on_failure) == (45_000, 2, OnFailure.CONTINUE)
    assert (a.guards.max_concurrent, a.guards.cooldown_ms, a.guards.rate_limit) == (4, 60_000, None)
    assert (b.timeout_ms, b.retries) == (5_000, 0)
    assert b.guards.max_concurrent == 4 and b.guards.cooldown_ms == 600_000
    assert b.guards.rate_limit is not None and b.guards.rate_limit.max == 2
    assert config.guard_window_ms == 3_600_000


def test_approval_forms() -> None:
    config = parse(
        """
        workflows:
          - name: w
            trigger: {events: [opened]}
            steps:
              - {name: a, action: exec, params: {argv: [/bin/x]}}
              - {name: b, action: exec, params: {argv: [/bin/x]}, approval: required}
              - {name: c, action: exec, params: {argv: [/bin/x]}, approval: true}
              - {name: d, action: exec, params: {argv: [/bin/x]}, approval: {required: true}}
              - {name: e, action: exec, params: {argv: [/bin/x]}, approval: {required: false, reason: ok}}
              - name: f
                action: exec
                params: {argv: [/bin/x]}
                approval: {required: false, reason: ok, required_when: ['env="prod"', 'team="sre"']}
              - {name: g, action: log, params: {message: x}}
              - {name: h, action: log, params: {message: x}, approval: required}
        """
    )
    a, b, c, d, e, f, g, h = config.workflows[0].steps
    assert all(s.needs_approval({}) for s in (a, b, c, d, h))
    assert not e.needs_approval({"env": "prod"}) and e.approval.reason == "ok"
    assert f.needs_approval({"env": "prod", "team": "sre"}) and not f.needs_approval({"env": "prod"})
    assert not g.needs_approval({"env": "prod"})


def test_malformed_file_is_refused_with_file_line_path_and_fix() -> None:
    lines = errors(
        """
        workflows:
          - name: restart
            trigger: {events: [opend]}
            steps:
              - name: go
                action: webhook
                params: {url: "https://x/", bodyy: {}}
                timeout: 5x
        """
    )
    assert lines[0].startswith("wf.yaml:4: workflows[0].trigger.events[0]: expected one of 'opened'")
    assert "got the string 'opend'" in lines[0]
    assert lines[1].startswith("wf.yaml:8: workflows[0].steps[0].params.bodyy: unknown parameter 'bodyy'")
    assert lines[2].startswith("wf.yaml:9: workflows[0].steps[0].timeout: invalid duration '5x'")


def test_semantic_problems_are_all_reported() -> None:
    lines = errors(
        """
        workflows:
          - name: w
            trigger: {events: [not_acknowledged]}
            steps:
              - name: s
                action: exec
                params:
                  argv: ["{{ labels.program }}", "{{ incident.secret }}"]
                on_failure: escalate
              - name: s
                action: teleport
          - name: w
            trigger: {events: [opened], not_acknowledged_within: 5m}
            steps:
              - {name: x, action: webhook, params: {url: "ftp://files/"}}
        """
    )
    text = "\n".join(lines)
    assert "wf.yaml:4: workflows[0].trigger: event not_acknowledged needs not_acknowledged_within" in text
    assert (
        "wf.yaml:9: workflows[0].steps[0].params.argv[0]: the program must be a literal absolute path" in text
    )
    assert (
        "workflows[0].steps[0].params.argv[1]: template '{{ incident.secret }}': incident has no field"
        in text
    )
    assert (
        "wf.yaml:10: workflows[0].steps[0].on_failure: on_failure is escalate but workflow 'w' has no" in text
    )
    assert "wf.yaml:11: workflows[0].steps[1].name: step name 's' is already used by steps[0]" in text
    assert (
        "workflows[0].steps[1].action: unknown action 'teleport'; available: exec, kafka, log, webhook"
        in text
    )
    assert "wf.yaml:13: workflows[1].name: workflow name 'w' is already used by workflows[0]" in text
    assert "workflows[1].trigger.not_acknowledged_within: only used with event not_acknowledged" in text
    assert "workflows[1].steps[0].params.url: only http and https URLs are allowed" in text


EVERY_KIND_OF_MISTAKE = """\
defaults:
  timeout: 5x
workflows:
  - name: w
    trigger: {events: [opend]}
    steps:
      - name: a
        action: webhook
        params: {url: "https://x/", bodyy: {}}
        timeout: 11m
      - name: a
        action: teleport
        retires: 2
      - name: c
        action: log
        params: {message: "{{ incident.secret }}"}
        target: "{{ labels. }}"
        guards: {rate_limit: {max: 3, per: 1hour}}
        approval: {required: false}
  - name: w
    trigger: {events: [opened]}
    conditions: {match: ['env=~"("'], min_alerts: 5, max_alerts: 1}
    steps:
      - {name: x, action: exec, params: {argv: ["{{ labels.p }}"]}, on_failure: escalate}
"""


def test_every_mistake_is_reported_in_one_pass() -> None:
    """Issue #15 item 4: structural (pydantic) and semantic problems together, each with its line.

    Before, a file with structural mistakes reported only those; the unknown parameter, the bad
    templates, the duplicate names ... came out only after they were fixed.
    """
    with pytest.raises(WorkflowError) as info:
        parse_workflows(EVERY_KIND_OF_MISTAKE, source="wf.yaml", executors=available_executors())
    lines = str(info.value).splitlines()
    expected = [
        "wf.yaml:2: defaults.timeout: invalid duration '5x'",
        "wf.yaml:5: workflows[0].trigger.events[0]: expected one of 'opened'",
        "wf.yaml:9: workflows[0].steps[0].params.bodyy: unknown parameter 'bodyy'",
        "wf.yaml:10: workflows[0].steps[0].timeout: 11m is longer than the maximum 10m",
        "wf.yaml:11: workflows[0].steps[1].name: step name 'a' is already used by steps[0]",
        "wf.yaml:12: workflows[0].steps[1].action: unknown action 'teleport'",
        "wf.yaml:13: workflows[0].steps[1].retires: unknown key 'retires'",
        "wf.yaml:16: workflows[0].steps[2].params.message: template '{{ incident.secret }}': incident has "
        "no field 'secret'",
        "wf.yaml:17: workflows[0].steps[2].target: template '{{ labels. }}'",
        "wf.yaml:18: workflows[0].steps[2].guards.rate_limit.per: invalid duration '1hour'",
        "wf.yaml:19: workflows[0].steps[2].approval: an exemption needs a reason",
        "wf.yaml:20: workflows[1].name: workflow name 'w' is already used by workflows[0]",
        "wf.yaml:22: workflows[1].conditions.match[0]: invalid regex '('",
        "wf.yaml:22: workflows[1].conditions.min_alerts: is larger than max_alerts",
        "wf.yaml:24: workflows[1].steps[0].params.argv[0]: the program must be a literal absolute path",
        "wf.yaml:24: workflows[1].steps[0].on_failure: on_failure is escalate but workflow 'w' has no "
        "escalation steps",
    ]
    missing = [e for e in expected if not any(line.startswith(e) for line in lines)]
    assert missing == [], "\n".join(lines)
    assert len(lines) == len(expected), "\n".join(lines)
    assert [int(line.split(":")[1]) for line in lines] == sorted(int(line.split(":")[1]) for line in lines)


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "workflows: [{name: w, trigger: {events: [opened]}, steps: [], extra: 1}]",
            "wf.yaml:1: workflows[0].extra: unknown key 'extra'; allowed keys: cancel_when_resolved, ",
        ),
        (
            "workflows: [{name: 'bad name!', trigger: {events: [opened]}, steps: [{name: a, action: log, "
            "params: {message: x}}]}]",
            "workflows[0].name: invalid name 'bad name!'",
        ),
        ("defaults: {timeout: 0s}", "defaults.timeout: must be longer than 0s; got 0s"),
        ("defaults: {retries: -1}", "defaults.retries: must be at least 0; got the number -1"),
        (
            "defaults: {guards: {rate_limit: {max: 3}}}",
            "defaults.guards.rate_limit.per: missing required key",
        ),
        ("version: 2", "version: expected one of 1; got the number 2"),
        ("workflows: {name: w}", "workflows: expected a list; got a mapping"),
        (
            "workflows: [{name: w, trigger: {events: [opened]}, steps: [{name: a, action: log, "
            "params: {message: x}}], conditions: {match: ['env=~\"(\"']}}]",
            "workflows[0].conditions.match[0]: invalid regex '('",
        ),
        (
            "workflows: [{name: w, trigger: {events: [opened]}, steps: [{name: a, action: log, "
            "params: {message: x}}], conditions: {time_windows: [{start: '9:00', timezone: Mars/Olympus}]}}]",
            "time_windows[0].start: expected a time of day as HH:MM",
        ),
        ("a: 1\na: 2", "found duplicate key 'a'"),
        ("[1, 2", "invalid YAML"),
        ("- just a list", "expected a mapping with keys: defaults, dry_run, version, workflows"),
    ],
)
def test_error_messages(snippet: str, expected: str) -> None:
    text = "\n".join(errors(snippet))
    assert expected in text


def test_timeout_above_the_maximum_is_refused() -> None:
    text = "\n".join(
        errors(
            """
            workflows:
              - name: w
                trigger: {events: [opened]}
                steps: [{name: a, action: log, params: {message: x}, timeout: 11m}]
            """
        )
    )
    assert "workflows[0].steps[0].timeout: 11m is longer than the maximum 10m" in text


def test_escalation_steps_cannot_escalate() -> None:
    text = "\n".join(
        errors(
            """
            workflows:
              - name: w
                trigger: {events: [opened]}
                steps: [{name: a, action: log, params: {message: x}, on_failure: escalate}]
                escalation:
                  steps: [{name: b, action: log, params: {message: x}, on_failure: escalate}]
            """
        )
    )
    assert "workflows[0].escalation.steps[0].on_failure: escalation steps cannot escalate again" in text


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"missing.yaml: cannot read the workflow file"):
        load_workflows(tmp_path / "missing.yaml", executors=available_executors())


def test_conditions() -> None:
    config = parse(
        """
        workflows:
          - name: w
            trigger: {events: [opened]}
            conditions:
              match: ['team="sre"']
              min_severity: error
              service: [checkout, cart]
              min_alerts: 2
              max_alerts: 10
            steps: [{name: a, action: log, params: {message: x}}]
        """
    )
    c = config.workflows[0].conditions
    at = datetime(2025, 1, 6, 12, tzinfo=UTC)
    labels = {"team": "sre", "service": "checkout"}
    assert c.holds(labels, Severity.CRITICAL, 3, at)
    assert c.holds(labels, Severity.ERROR, 10, at)
    assert not c.holds(labels, Severity.WARNING, 3, at)
    assert not c.holds(labels, Severity.CRITICAL, 1, at)
    assert not c.holds(labels, Severity.CRITICAL, 11, at)
    assert not c.holds({**labels, "service": "search"}, Severity.CRITICAL, 3, at)
    assert not c.holds({"service": "checkout"}, Severity.CRITICAL, 3, at)


def test_time_windows() -> None:
    night = TimeWindow.model_validate({"days": ["mon"], "start": "22:00", "end": "06:00", "timezone": "UTC"})
    monday = datetime(2025, 1, 6, tzinfo=UTC)  # a Monday
    assert night.contains(monday.replace(hour=23))
    assert night.contains(monday.replace(day=7, hour=5, minute=59))  # Tuesday morning: Monday's window
    assert not night.contains(monday.replace(hour=5))  # Monday morning belongs to Sunday's window
    assert not night.contains(monday.replace(hour=12))
    berlin = TimeWindow.model_validate({"start": "09:00", "end": "17:00", "timezone": "Europe/Berlin"})
    assert berlin.contains(monday.replace(hour=8, minute=30))  # 09:30 in Berlin (UTC+1 in winter)
    assert not berlin.contains(monday.replace(hour=16, minute=30))
    whole = TimeWindow.model_validate({"days": ["sat", "sun"]})
    assert whole.contains(datetime(2025, 1, 4, 0, 0, tzinfo=UTC)) and not whole.contains(monday)


def test_backoff_is_deterministic_and_capped() -> None:
    b = Backoff.model_validate({"initial": "10s", "multiplier": 3, "max": "1m"})
    assert [b.delay_ms(n) for n in (1, 2, 3, 4)] == [10_000, 30_000, 60_000, 60_000]


def test_json_schema_file_is_up_to_date() -> None:
    assert SCHEMA_FILE.read_text(encoding="utf-8") == render_workflow_schema(), (
        "run `stormwatch workflows schema --output schemas/json/workflow.schema.json`"
    )


def test_json_schema_describes_the_yaml_spelling() -> None:
    schema = workflow_json_schema()
    assert schema["$schema"].endswith("2020-12/schema")
    step = schema["$defs"]["Step"]["properties"]
    assert {"timeout", "approval_ttl", "approval", "params", "target"} <= set(step)
    assert "timeout_ms" not in step and "require_approval" not in step
    assert {"const": "required"} in step["approval"]["anyOf"]
    exemption = schema["$defs"]["Approval"]
    assert exemption["then"] == {"required": ["reason"]}
    assert schema["$defs"]["Step"]["additionalProperties"] is False
    events = schema["$defs"]["TriggerEvent"]["enum"]
    assert "not_acknowledged" in events
    json.dumps(schema)  # serializable
