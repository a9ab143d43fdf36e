"""The workflow template language: substitutes text, never evaluates anything."""

from __future__ import annotations

import contextlib
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.agents.core.templating import (
    TemplateError,
    parse_template,
    render_params,
    render_value,
    template_problems,
    url_template_problem,
)

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


# --------------------------------------------------------------------------------- URLs (issue #15)


@given(LABEL_VALUES)
def test_a_value_in_a_url_is_exactly_one_path_segment(value: str) -> None:
    """Whatever a label holds, it cannot add a segment, a query, a fragment or a host."""
    template = parse_template("https://hooks.example.com/hook/{{ labels.x }}/run")
    if value in ("", ".", ".."):
        with pytest.raises(TemplateError, match="empty or dot segment"):
            template.render_url({"labels": {"x": value}})
        return
    url = template.render_url({"labels": {"x": value}})
    split = urlsplit(url)
    assert (split.scheme, split.netloc, split.query, split.fragment) == ("https", "hooks.example.com", "", "")
    _, hook, segment, run = split.path.split("/")
    assert (hook, run) == ("hook", "run") and unquote(segment) == value


def test_urlencode_in_a_url_is_not_applied_twice() -> None:
    ctx = {"labels": {"x": "a b"}}
    assert parse_template("https://h.example/{{ labels.x | urlencode }}").render_url(ctx) == (
        "https://h.example/a%20b"
    )


def test_render_params_treats_only_the_url_keys_as_urls() -> None:
    params = {"url": "https://h.example/{{ labels.x }}", "body": {"text": "{{ labels.x }}"}}
    rendered = render_params(params, {"labels": {"x": "a/b?c"}}, frozenset({"url"}))
    assert rendered == {"url": "https://h.example/a%2Fb%3Fc", "body": {"text": "a/b?c"}}


@pytest.mark.parametrize(
    ("template", "ok"),
    [
        ("https://h.example/{{ labels.x }}", True),
        ("https://h.example:8443/a?b={{ labels.x }}", True),
        ("https://h.example/literal", True),
        ("https://{{ labels.x }}/a", False),
        ("https://h.example{{ labels.x }}/a", False),
        ("https://u@h.example/{{ labels.x }}", False),
        ("{{ labels.x }}/a", False),
        ("h.example/{{ labels.x }}", False),
    ],
)
def test_url_templates_keep_scheme_host_and_port_literal(template: str, ok: bool) -> None:
    assert (url_template_problem(parse_template(template)) is None) is ok
