"""Alert senders against the mitigation agent (issue #15, items 10, 12 and 13).

Whoever can send an alert chooses its label values. These tests play that sender: a label must
never lift an approval requirement, change the structure of a webhook URL, or add a header line.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from stormwatch.agents.core.planner import Planner, PlanOutput
from stormwatch.agents.core.state import AgentState
from stormwatch.agents.core.workflow import WorkflowConfig, WorkflowError, parse_workflows
from stormwatch.agents.executors import available_executors
from stormwatch.agents.executors.base import ExecutorPolicy, ParamProblems
from stormwatch.agents.executors.webhook import UrlAllowlist, WebhookExecutor
from stormwatch.loaders import load_workflows
from stormwatch.schemas.commands import CommandResult, CommandStatus, MitigationCommand
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType, IncidentSnapshot, IncidentState
from tests.kit.http import QuietHandler, serve_http

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "deploy" / "incident_workflow_config.yaml"
T0 = 1_700_000_000_000


def parse(text: str, executors: dict[str, Any] | None = None) -> WorkflowConfig:
    return parse_workflows(
        textwrap.dedent(text), source="wf.yaml", executors=executors or available_executors()
    )


def errors(text: str, executors: dict[str, Any] | None = None) -> str:
    with pytest.raises(WorkflowError) as info:
        parse(text, executors)
    return str(info.value)


def opened(labels: dict[str, str], incident: str = "inc-00000000000000aa-1") -> IncidentEvent:
    snapshot = IncidentSnapshot(
        state=IncidentState.OPEN,
        severity=Severity.CRITICAL,
        title="checkout is crash-looping",
        group_key="default:{...}",
        group_labels=labels,
        rule="default",
        alert_count=1,
        firing_count=1,
        opened_at=utc_from_ms(T0),
    )
    return IncidentEvent(
        event_id="e1",
        incident_id=incident,
        seq=1,
        type=IncidentEventType.OPENED,
        from_state=None,
        to_state=IncidentState.OPEN,
        at=utc_from_ms(T0),
        actor="correlator",
        cause="test",
        snapshot=snapshot,
    )


def succeeded(cmd: MitigationCommand) -> CommandResult:
    return CommandResult(
        command_id=cmd.command_id,
        incident_id=cmd.incident_id,
        workflow=cmd.workflow,
        step=cmd.step,
        action=cmd.action,
        status=CommandStatus.SUCCEEDED,
        at=utc_from_ms(T0),
        actor="executor:test",
    )


def decisions_until(planner: Planner, labels: dict[str, str], step: str) -> PlanOutput:
    """Open an incident and let every command succeed until ``step`` is decided; its output."""
    state = AgentState()
    queue = [planner.on_event(state, opened(labels), T0)]
    while queue:
        out = queue.pop(0)
        if any(r.step == step for r in out.results):
            return out
        queue.extend(planner.on_result(state, succeeded(cmd), T0) for cmd in out.commands)
    raise AssertionError(f"step {step!r} was never decided")


# ------------------------------------------------------------------------ 10: approvals fail closed


@pytest.mark.parametrize(
    "env", ["production", "Production", "PRODUCTION", "prod", "production ", "staging", None]
)
def test_shipped_restart_waits_for_approval_whatever_the_sender_puts_in_env(env: str | None) -> None:
    """The reported bypass: env="Production" ran the shipped restart without an approval."""
    planner = Planner(load_workflows(SHIPPED, executors=available_executors()))
    labels = {"alertname": "KubePodCrashLooping", "service": "checkout", "namespace": "shop"}
    if env is not None:
        labels["env"] = env
    out = decisions_until(planner, labels, "restart")
    assert [(r.step, r.status) for r in out.results] == [("restart", CommandStatus.AWAITING_APPROVAL)]
    assert out.commands == []


class _Plugin:
    """An installed plugin that says nothing about side effects: it is assumed to have some."""

    @staticmethod
    def check_params(params: dict[str, Any]) -> ParamProblems:
        return []


def test_steps_with_side_effects_need_approval_unless_exempted_with_a_reason() -> None:
    config = parse(
        """
        workflows:
          - name: w
            trigger: {events: [opened]}
            steps:
              - {name: hook, action: webhook, params: {url: "https://h.example/x"}}
              - {name: run, action: exec, params: {argv: [/bin/restart]}}
              - {name: publish, action: kafka, params: {topic: t, value: v}}
              - {name: plugin, action: pagerduty}
              - {name: log, action: log, params: {message: m}}
              - {name: log-approved, action: log, params: {message: m}, approval: required}
              - name: exempt
                action: exec
                params: {argv: [/bin/restart]}
                approval: {required: false, reason: "idempotent, harmless restart of a cache"}
        """,
        {**available_executors(), "pagerduty": _Plugin},
    )
    needs = {s.name: s.needs_approval({}) for s in config.workflows[0].steps}
    assert needs == {
        "hook": True,
        "run": True,
        "publish": True,
        "plugin": True,
        "log": False,
        "log-approved": True,
        "exempt": False,
    }
    exempt = config.workflows[0].steps[-1]
    assert exempt.approval.reason == "idempotent, harmless restart of a cache"


def test_labels_can_add_an_approval_requirement_but_never_lift_one() -> None:
    config = parse(
        """
        workflows:
          - name: w
            trigger: {events: [opened]}
            steps:
              - name: s
                action: exec
                params: {argv: [/bin/restart]}
                approval:
                  required: false
                  reason: staging only
                  required_when: ['env=~"[Pp][Rr][Oo][Dd].*"']
        """
    )
    step = config.workflows[0].steps[0]
    assert step.needs_approval({"env": "Production"}) and step.needs_approval({"env": "prod-eu"})
    assert not step.needs_approval({"env": "staging"}) and not step.needs_approval({})


@pytest.mark.parametrize(
    ("approval", "expected"),
    [
        (
            "{when: ['env=\"production\"']}",
            "workflows[0].steps[0].approval: label matchers cannot lift an approval requirement",
        ),
        ("false", "workflows[0].steps[0].approval: an exemption needs a reason"),
        ("{required: false}", "workflows[0].steps[0].approval: an exemption needs a reason"),
        ("{required: false, reason: '  '}", "workflows[0].steps[0].approval: an exemption needs a reason"),
        (
            "{required_when: ['env=\"prod\"']}",
            "workflows[0].steps[0].approval: required_when only adds a requirement to a step",
        ),
        ("maybe", "workflows[0].steps[0].approval: expected required"),
    ],
)
def test_approval_exemptions_are_explicit_and_narrow(approval: str, expected: str) -> None:
    text = errors(
        f"""
        workflows:
          - name: w
            trigger: {{events: [opened]}}
            steps:
              - name: s
                action: exec
                params: {{argv: [/bin/restart]}}
                approval: {approval}
        """
    )
    assert f"wf.yaml:9: {expected}" in text


@pytest.mark.parametrize("old", ["true", "false", "{when: ['env=\"production\"']}"])
def test_the_old_require_approval_key_is_refused_with_the_new_spelling(old: str) -> None:
    text = errors(
        f"""
        workflows:
          - name: w
            trigger: {{events: [opened]}}
            steps:
              - {{name: s, action: exec, params: {{argv: [/bin/restart]}}, require_approval: {old}}}
        """
    )
    assert "wf.yaml:6: workflows[0].steps[0].require_approval: replaced by 'approval'" in text


# ------------------------------------------------------------------- 12: values in templated URLs

HOOK = """
workflows:
  - name: w
    trigger: {events: [opened]}
    steps:
      - name: hook
        action: webhook
        params: {url: "URL"}
        approval: {required: false, reason: "test receiver"}
"""


def rendered_url(url: str, labels: dict[str, str]) -> PlanOutput:
    planner = Planner(parse(HOOK.replace("URL", url)))
    return planner.on_event(AgentState(), opened(labels), T0)


@pytest.mark.parametrize(
    ("value", "segment"),
    [
        ("seg?x=1#f", "seg%3Fx%3D1%23f"),
        ("../admin", "..%2Fadmin"),
        ("%2e%2e", "%252e%252e"),
        ("@evil.com", "%40evil.com"),
        ("a b/c\\d", "a%20b%2Fc%5Cd"),
        ("checkout", "checkout"),
    ],
)
def test_a_label_in_a_url_is_one_encoded_path_segment(value: str, segment: str) -> None:
    out = rendered_url("http://hooks.example.com/hook/{{ labels.path }}", {"path": value})
    [cmd] = out.commands
    assert cmd.params["url"] == f"http://hooks.example.com/hook/{segment}"


def test_a_label_in_a_query_value_cannot_add_parameters() -> None:
    out = rendered_url("http://hooks.example.com/hook?service={{ labels.s }}", {"s": "a&admin=1#x"})
    assert out.commands[0].params["url"] == "http://hooks.example.com/hook?service=a%26admin%3D1%23x"


@pytest.mark.parametrize("value", ["..", ".", ""])
def test_a_label_that_would_be_a_dot_or_empty_segment_fails_the_step(value: str) -> None:
    out = rendered_url("http://hooks.example.com/hook/{{ labels.path }}/run", {"path": value})
    assert out.commands == []
    [failed] = out.results
    assert failed.status is CommandStatus.FAILED and not failed.retryable
    assert "cannot render the step's parameters" in (failed.reason or "")
    assert "labels.path" in (failed.reason or "")


@pytest.mark.parametrize(
    "url",
    [
        "https://{{ labels.host }}/hook",
        "https://hooks.example.com{{ labels.port }}/hook",
        "{{ labels.url }}",
        "https://{{ labels.user }}@hooks.example.com/hook",
    ],
)
def test_scheme_and_host_of_a_url_must_be_literal(url: str) -> None:
    text = errors(HOOK.replace("URL", url))
    assert "workflows[0].steps[0].params.url: the scheme, host and port of a templated URL" in text


def test_a_literal_url_with_a_fragment_is_refused() -> None:
    assert "params.url: URL has a fragment" in errors(HOOK.replace("URL", "https://h.example/x#top"))


class _Recorder(QuietHandler):
    received: ClassVar[list[tuple[str, list[tuple[str, str]]]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Recorder.received.append((self.path, list(self.headers.items())))
        self.send_response(200)
        self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve_http(_Recorder) as base:
        yield base


def send(base: str, params: dict[str, Any]) -> tuple[bool, str, bool]:
    cmd = MitigationCommand(
        command_id="0" * 32,
        incident_id="inc-00000000000000aa-1",
        workflow="w",
        step="hook",
        action="webhook",
        params=params,
        created_at=datetime.now(UTC),
    )
    ex = WebhookExecutor(ExecutorPolicy(allow_urls=(f"{base}/hook/",)))
    outcome = ex.execute(cmd, timeout_s=5, dry_run=False)
    return outcome.ok, outcome.reason or "", outcome.retryable


def test_the_reported_query_string_injection_reaches_the_server_as_one_segment(server: str) -> None:
    _Recorder.received.clear()
    out = rendered_url(f"{server}/hook/{{{{ labels.path }}}}", {"path": "seg?x=1#f"})
    ok, reason, _ = send(server, out.commands[0].params)
    assert ok, reason
    assert [path for path, _ in _Recorder.received] == ["/hook/seg%3Fx%3D1%23f"]


@pytest.mark.parametrize(
    "tail",
    [
        "seg?x=1#f",  # a fragment: never part of what a workflow means to send
        "..%2Fadmin",
        "%2e%2e/admin",
        "%2E%2E/admin",
        "a%5c..%5cadmin",
        "../admin",
        "a\\..\\admin",
        "x#",
    ],
)
def test_the_executor_checks_the_whole_url(server: str, tail: str) -> None:
    _Recorder.received.clear()
    ok, reason, retryable = send(server, {"url": f"{server}/hook/{tail}"})
    assert not ok and reason.startswith("refused: ") and not retryable, tail
    assert _Recorder.received == []


def test_the_allowlist_refuses_credentials_and_prefix_tricks() -> None:
    allow = UrlAllowlist(("https://hooks.example.com/hook/",))
    assert allow.allows("https://hooks.example.com/hook/a?x=1")[0]
    for url in (
        "https://hooks.example.com@evil.com/hook/a",
        "https://user:pw@hooks.example.com/hook/a",
        "https://hooks.example.com/hook/a#f",
        "https://hooks.example.com/hook/%2e%2e/admin",
        "https://hooks.example.com/hookX",
    ):
        assert not allow.allows(url)[0], url


# ---------------------------------------------------------------------------- 13: header values


@pytest.mark.parametrize(
    "value", ["ok\n X-Folded: yes", "ok\r\nX-Injected: yes", "ok\rX: y", "ok\x00", "ok\x7f", "ok\x0b"]
)
def test_header_values_with_line_breaks_or_control_characters_are_refused(server: str, value: str) -> None:
    _Recorder.received.clear()
    ok, reason, retryable = send(server, {"url": f"{server}/hook/a", "headers": {"X-Team": value}})
    assert not ok and not retryable
    assert reason.startswith("refused: invalid parameters: headers.X-Team: header values must not contain")
    assert _Recorder.received == []


def test_a_tab_in_a_header_value_is_allowed(server: str) -> None:
    _Recorder.received.clear()
    ok, reason, _ = send(server, {"url": f"{server}/hook/a", "headers": {"X-Team": "sre\tblue"}})
    assert ok, reason
    [(_, headers)] = _Recorder.received
    assert ("X-Team", "sre\tblue") in headers


def test_a_folded_header_from_a_label_fails_the_step_with_the_reason(server: str) -> None:
    workflow = HOOK.replace('{url: "URL"}', '{url: "URL", headers: {X-Team: "{{ labels.team }}"}}')
    planner = Planner(parse(workflow.replace("URL", f"{server}/hook/a")))
    out = planner.on_event(AgentState(), opened({"team": "ok\n X-Folded: yes"}), T0)
    _Recorder.received.clear()
    ok, reason, retryable = send(server, out.commands[0].params)
    assert not ok and not retryable and "CR, LF or other control characters" in reason
    assert _Recorder.received == []


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ('{X-Team: "a\\nb"}', "params.headers.X-Team: header values must not contain"),
        ('{"X Team": a}', "params.headers.X Team: invalid header name"),
        ('{"X-Team:": a}', "params.headers.X-Team:: invalid header name"),
        ('{"": a}', "invalid header name"),
    ],
)
def test_literal_headers_are_checked_when_the_file_loads(headers: str, expected: str) -> None:
    text = errors(
        HOOK.replace("URL", "https://h.example/hook").replace(
            '"https://h.example/hook"}', f'"https://h.example/hook", headers: {headers}}}'
        )
    )
    assert expected in text
