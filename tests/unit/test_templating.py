"""The workflow template language: substitutes text, never evaluates anything."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.agents.core.templating import TemplateError, parse_template, render_value, template_problems

CTX = {
    "incident": {
        "id": "inc-0123456789abcdef-1",
        "title": "Checkout down",
        "severity": "critical",
        "assignee": None,
    },
    "labels": {"service": "checkout", "app.kubernetes.io/name": "shop", "empty": ""},
    "event": {"type": "opened"},
    "workflow": {"name": "restart", "run": "1"},
    "step": {"name": "s", "attempt": "2"},
    "command": {"id": "c0ffee"},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain text", "plain text"),
        ("{{ incident.id }}", "inc-0123456789abcdef-1"),
        ("{{incident.id}}", "inc-0123456789abcdef-1"),
        ("svc={{ labels.service }}!", "svc=checkout!"),
        ('{{ labels["app.kubernetes.io/name"] }}', "shop"),
        ("{{ labels['app.kubernetes.io/name'] }}", "shop"),
        ("{{ labels.service | upper }}", "CHECKOUT"),
        ("{{ incident.title | lower }}", "checkout down"),
        ("{{ incident.title | urlencode }}", "Checkout%20down"),
        ('{{ labels.missing | default("none") }}', "none"),
        ('{{ labels.empty | default("was empty") }}', "was empty"),
        ('{{ incident.assignee | default("nobody") | upper }}', "NOBODY"),
        ('{{ "{{" }} literal', "{{ literal"),
        ('{{ "say \\"hi\\"" }}', 'say "hi"'),
        ("}} stray closing braces are text", "}} stray closing braces are text"),
        ("{{ step.attempt }}/{{ workflow.run }}/{{ command.id }}", "2/1/c0ffee"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert parse_template(template).render(CTX) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ incident.id ", "never closed"),
        ("{{ }}", "expected a field"),
        ("{{ secrets.token }}", "unknown namespace 'secrets'"),
        ("{{ incident.password }}", "incident has no field 'password'"),
        ("{{ incident.__class__ }}", "incident has no field '__class__'"),
        ("{{ labels.service.upper }}", "has no sub-fields"),
        ("{{ labels.service | shell }}", "unknown filter 'shell'"),
        ("{{ labels.service | upper() }}", "takes no argument"),
        ("{{ labels.service | default(x) }}", "expected a quoted string"),
        ('{{ "unterminated }}', "no closing quote"),
        ("{{ labels.service + 1 }}", "expected '|' or '}}'"),
        ("{{ __import__('os') }}", "unknown namespace '__import__'"),
    ],
)
def test_parse_errors_say_what_is_wrong(template: str, message: str) -> None:
    with pytest.raises(
        TemplateError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")
    ):
        parse_template(template)


def test_undefined_field_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(TemplateError, match=r"labels.namespace has no value.*default"):
        parse_template("kubectl -n {{ labels.namespace }}").render(CTX)
    with pytest.raises(TemplateError, match=r"incident\.assignee has no value"):
        parse_template("{{ incident.assignee }}").render(CTX)


def test_render_value_walks_structures_and_keeps_keys_and_non_strings() -> None:
    params = {
        "argv": ["/bin/restart", "{{ labels.service }}"],
        "body": {"{{ not.a.template.key }}": "{{ incident.severity }}", "n": 3, "ok": True},
    }
    assert render_value(params, CTX) == {
        "argv": ["/bin/restart", "checkout"],
        "body": {"{{ not.a.template.key }}": "critical", "n": 3, "ok": True},
    }


def test_template_problems_report_paths() -> None:
    problems = template_problems({"argv": ["/x", "{{ incident.nope }}"], "body": {"t": "{{ oops"}})
    assert [p for p, _ in problems] == ["argv[1]", "body.t"]


LABEL_VALUES = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@given(LABEL_VALUES)
def test_substituted_values_are_never_evaluated(value: str) -> None:
    """Whatever a label holds (template syntax, shell syntax, quotes), it comes out verbatim."""
    ctx = {"labels": {"x": value}}
    assert parse_template("{{ labels.x }}").render(ctx) == value
    assert parse_template("a{{ labels.x }}b").render(ctx) == f"a{value}b"
    assert render_value(["{{ labels.x }}"], ctx) == [value]


@given(st.text(max_size=80))
def test_arbitrary_templates_either_parse_or_raise_template_error(text: str) -> None:
    try:
        template = parse_template(text)
    except TemplateError:
        return
    with contextlib.suppress(TemplateError):
        template.render(CTX)


@given(st.text(alphabet="{}|.\"' abcdefghijklmnopqrstuvwxyz_[]()", max_size=40))
def test_template_like_noise_never_crashes(text: str) -> None:
    with contextlib.suppress(TemplateError):
        parse_template(text).render(CTX)
