"""Safe ``{{ incident.field }}`` substitution for workflow parameters.

Workflow files are configuration, and the values substituted into them (label values, titles)
come from monitored systems, i.e. from outside. So the template language is deliberately tiny:
a hand-written parser, a fixed set of namespaces and fields, four filters, no attribute access,
no expressions, no eval. A substituted value is inserted as text and never parsed again, so a
label value like ``{{ labels.x }}`` or ``; rm -rf /`` stays that literal text. Using a field that
has no value is an error (``| default("...")`` supplies one), so a command is never sent with a
silently empty argument.

A URL is rendered differently (``render_url``): its scheme, host and port must be written
literally, and every substituted value is percent-encoded as one path segment (``/``, ``?``,
``#``, ``@`` and ``%`` included), so a label can neither add a path level, a query parameter or
a fragment, nor move the request to another host. A value that is empty, ``.`` or ``..`` is
refused, because it would make an empty or a dot segment.

Grammar::

    template := ( text | "{{" expr "}}" )*
    expr     := primary ( "|" filter )*
    primary  := string | NAMESPACE "." FIELD | NAMESPACE "[" string "]"
    filter   := "default" "(" string ")" | "lower" | "upper" | "urlencode"
    string   := '"' ... '"' | "'" ... "'"      (escapes: \\" \\' \\\\ \\n)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

__all__ = [
    "FIELDS",
    "FILTERS",
    "Context",
    "Template",
    "TemplateError",
    "is_template",
    "parse_template",
    "render_params",
    "render_value",
    "template_problems",
    "url_template_problem",
]

FIELDS: Mapping[str, frozenset[str] | None] = {
    "incident": frozenset(
        {
            "id",
            "title",
            "severity",
            "state",
            "group_key",
            "rule",
            "alert_count",
            "firing_count",
            "opened_at",
            "acknowledged_at",
            "assignee",
            "reopen_count",
        }
    ),
    "event": frozenset({"type", "seq", "at", "actor", "cause"}),
    "labels": None,  # any label name of the incident's group labels
    "workflow": frozenset({"name", "run"}),
    "step": frozenset({"name", "attempt"}),
    "command": frozenset({"id"}),
}
"""Namespace -> the fields a template may use (None: any key, e.g. label names)."""

FILTERS = ("default", "lower", "upper", "urlencode")

MAX_TEMPLATE_CHARS = 16_384

Context = Mapping[str, Mapping[str, str | None]]
"""Namespace -> field -> value as text (None or absent: the field has no value)."""


class TemplateError(ValueError):
    """A template cannot be parsed, uses an unknown field, or a field it needs has no value."""


@dataclass(frozen=True, slots=True)
class _Filter:
    name: str
    arg: str | None = None


@dataclass(frozen=True, slots=True)
class _Expr:
    namespace: str | None  # None: a string literal
    field: str  # the field, or the literal's text
    filters: tuple[_Filter, ...]

    def describe(self) -> str:
        if self.namespace is None:
            return repr(self.field)
        return (
            f"{self.namespace}.{self.field}"
            if _IDENT.fullmatch(self.field)
            else (f"{self.namespace}[{self.field!r}]")
        )


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal text and expressions, in order."""

    source: str
    parts: tuple[str | _Expr, ...]

    @property
    def is_literal(self) -> bool:
        return all(isinstance(p, str) for p in self.parts)

    @property
    def fields(self) -> list[str]:
        """The fields used, as ``namespace.field`` (for documentation and validation messages)."""
        return [p.describe() for p in self.parts if isinstance(p, _Expr) and p.namespace is not None]

    def render(self, context: Context) -> str:
        out: list[str] = []
        for part in self.parts:
            out.append(part if isinstance(part, str) else _evaluate(part, context))
        return "".join(out)

    def render_url(self, context: Context) -> str:
        """Render a URL: each value becomes one percent-encoded path segment (or query value).

        Encoding every value with nothing kept safe means a label cannot make a ``?``, ``#``,
        ``/`` or ``@`` of the URL; refusing ``''``, ``.`` and ``..`` means no combination of
        values and literal text can make an empty or dot segment either.
        """
        problem = url_template_problem(self)
        if problem is not None:
            raise TemplateError(f"template {_short(self.source)}: {problem}")
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _evaluate(part, context)
            if value in _BAD_URL_VALUES:
                raise TemplateError(
                    f"{part.describe()} is {value!r}, which would make an empty or dot segment in the URL "
                    f"{_short(self.source)}; refused"
                )
            encoded = part.filters and part.filters[-1].name == "urlencode"
            out.append(value if encoded else quote(value, safe=""))
        return "".join(out)


_BAD_URL_VALUES = frozenset({"", ".", ".."})
_URL_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@{}\\]+/")


def url_template_problem(template: Template) -> str | None:
    """Why ``template`` cannot be a templated URL, or None (a literal URL is not checked here).

    The scheme, host and port must be literal text up to the path's first ``/``: a value there
    would choose where the request goes, and the allowlist should not be the only thing in the way.
    """
    if template.is_literal:
        return None
    first = template.parts[0]
    if not isinstance(first, str) or _URL_PREFIX.match(first) is None:
        return (
            "the scheme, host and port of a templated URL must be written literally, up to the first "
            "'/' of the path (e.g. https://hooks.example.com/hook/{{ labels.service }}); templates "
            "may only fill in path segments and query values"
        )
    return None


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n"}


class _Scanner:
    """Tokenizes the inside of one ``{{ ... }}``; positions are reported 1-based like editors do."""

    def __init__(self, text: str, pos: int, source: str) -> None:
        self.text = text
        self.pos = pos
        self.source = source

    def error(self, message: str, at: int | None = None) -> TemplateError:
        column = (self.pos if at is None else at) + 1
        return TemplateError(f"template {_short(self.source)}: {message} (at character {column})")

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self, token: str) -> bool:
        self.skip_space()
        return self.text.startswith(token, self.pos)

    def expect(self, token: str, what: str) -> None:
        if not self.peek(token):
            found = self.text[self.pos : self.pos + 10] or "the end of the template"
            raise self.error(f"expected {what}, found {found!r}")
        self.pos += len(token)

    def ident(self, what: str) -> str:
        self.skip_space()
        m = _IDENT.match(self.text, self.pos)
        if m is None:
            found = self.text[self.pos : self.pos + 10] or "the end of the template"
            raise self.error(f"expected {what}, found {found!r}")
        self.pos = m.end()
        return m.group(0)

    def string(self) -> str:
        self.skip_space()
        start = self.pos
        quote_char = self.text[self.pos] if self.pos < len(self.text) else ""
        if quote_char not in ('"', "'"):
            raise self.error("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\":
                nxt = self.text[self.pos + 1] if self.pos + 1 < len(self.text) else ""
                if nxt not in _ESCAPES:
                    raise self.error(f"unknown escape \\{nxt} (use \\\", \\', \\\\ or \\n)")
                out.append(_ESCAPES[nxt])
                self.pos += 2
                continue
            if ch == quote_char:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.error("the string has no closing quote", at=start)


def parse_template(text: str) -> Template:
    """Parse ``text``; raises TemplateError with the position of the first problem."""
    if len(text) > MAX_TEMPLATE_CHARS:
        raise TemplateError(f"template is {len(text)} characters long; at most {MAX_TEMPLATE_CHARS} allowed")
    parts: list[str | _Expr] = []
    pos = 0
    literal: list[str] = []
    while pos < len(text):
        start = text.find("{{", pos)
        if start < 0:
            literal.append(text[pos:])
            break
        literal.append(text[pos:start])
        scanner = _Scanner(text, start + 2, text)
        expr = _parse_expr(scanner)
        scanner.skip_space()
        if not text.startswith("}}", scanner.pos):
            if scanner.pos >= len(text):
                raise scanner.error("'{{' is never closed with '}}'", at=start)
            raise scanner.error(f"expected '|' or '}}}}', found {text[scanner.pos : scanner.pos + 10]!r}")
        pos = scanner.pos + 2
        if "".join(literal):
            parts.append("".join(literal))
        literal = []
        parts.append(expr)
    if literal and "".join(literal):
        parts.append("".join(literal))
    return Template(text, tuple(parts))


def _parse_expr(s: _Scanner) -> _Expr:
    s.skip_space()
    if s.pos < len(s.text) and s.text[s.pos] in ('"', "'"):
        namespace: str | None = None
        field = s.string()
    else:
        at = s.pos
        namespace = s.ident("a field like incident.title or labels.service, or a quoted string")
        if namespace not in FIELDS:
            raise s.error(f"unknown namespace {namespace!r}; use one of {', '.join(sorted(FIELDS))}", at=at)
        if s.peek("["):
            s.pos += 1
            field = s.string()
            s.expect("]", "']'")
        else:
            s.expect(".", f"'.' and a field of {namespace}")
            at = s.pos
            field = s.ident(f"a field of {namespace}")
        allowed = FIELDS[namespace]
        if allowed is not None and field not in allowed:
            raise s.error(f"{namespace} has no field {field!r}; fields: {', '.join(sorted(allowed))}", at=at)
        if not field:
            raise s.error(f"empty {namespace} name")
        if s.peek(".") or s.peek("["):
            raise s.error(f"{namespace}.{field} has no sub-fields; fields are plain text values")
    filters: list[_Filter] = []
    while s.peek("|"):
        s.pos += 1
        at = s.pos
        name = s.ident(f"a filter ({', '.join(FILTERS)})")
        if name not in FILTERS:
            raise s.error(f"unknown filter {name!r}; filters: {', '.join(FILTERS)}", at=at)
        arg = None
        if name == "default":
            s.expect("(", "'(' after default")
            arg = s.string()
            s.expect(")", "')'")
        elif s.peek("("):
            raise s.error(f"filter {name!r} takes no argument")
        filters.append(_Filter(name, arg))
    return _Expr(namespace, field, tuple(filters))


def _evaluate(expr: _Expr, context: Context) -> str:
    if expr.namespace is None:
        value: str | None = expr.field
    else:
        value = context.get(expr.namespace, {}).get(expr.field)
    for f in expr.filters:
        if f.name == "default":
            if value is None or value == "":
                value = f.arg
            continue
        if value is None:
            break
        if f.name == "lower":
            value = value.lower()
        elif f.name == "upper":
            value = value.upper()
        elif f.name == "urlencode":
            value = quote(value, safe="")
    if value is None:
        raise TemplateError(
            f'{expr.describe()} has no value for this incident; add | default("...") to the template '
            "or a condition that makes sure it is set"
        )
    return value


def is_template(text: str) -> bool:
    return "{{" in text


def render_value(value: Any, context: Context) -> Any:
    """Render every string inside ``value`` (dicts, lists); keys and non-strings are kept as they are."""
    if isinstance(value, str):
        return parse_template(value).render(context) if "{{" in value else value
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def render_params(params: dict[str, Any], context: Context, url_keys: frozenset[str]) -> dict[str, Any]:
    """An action's parameters rendered; the top-level ``url_keys`` are URLs (``render_url``)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key in url_keys and isinstance(value, str):
            out[key] = parse_template(value).render_url(context)
        else:
            out[key] = render_value(value, context)
    return out


def template_problems(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, message) for every string inside ``value`` that does not parse (load-time check)."""
    problems: list[tuple[str, str]] = []
    if isinstance(value, str):
        if "{{" in value:
            try:
                parse_template(value)
            except TemplateError as exc:
                problems.append((path, str(exc)))
    elif isinstance(value, dict):
        for k, v in value.items():
            problems.extend(template_problems(v, f"{path}.{k}" if path else str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            problems.extend(template_problems(v, f"{path}[{i}]"))
    return problems


def _short(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:57] + "...")
