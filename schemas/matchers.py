"""Alertmanager-style label matchers, shared by correlation rules, inhibitions and silences."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import lru_cache

from pydantic import Field, model_validator

from stormwatch.schemas.common import Contract


class MatchOp(StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


_MATCHER_TEXT = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)
_PARSE_HELP = "expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"


@lru_cache(maxsize=4096)
def _anchored(value: str) -> re.Pattern[str]:
    """Compile once per distinct regex; keyed by the value so a copied or edited Matcher never
    matches with a stale pattern (a per-instance cache would be copied by model_copy)."""
    return re.compile(f"(?:{value})\\Z")


def _unquote(raw: str, text: str) -> str:
    """Alertmanager's rules: inside quotes ``\\"``, ``\\\\`` and ``\\n`` are escapes, any other
    backslash is literal (so regexes like ``"a\\.b"`` keep theirs); a bare quote is an error."""
    if not raw.startswith('"'):
        if '"' in raw:
            raise ValueError(f"cannot parse matcher {text!r}: unquoted value contains a double quote")
        return raw
    body = raw[1:]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append("\n" if nxt == "n" else nxt if nxt in '"\\' else ch + nxt)
            i += 2
            continue
        if ch == '"':
            if i != len(body) - 1:
                raise ValueError(
                    f'cannot parse matcher {text!r}: unescaped double quote inside the value (write \\")'
                )
            return "".join(out)
        out.append(ch)
        i += 1
    raise ValueError(f"cannot parse matcher {text!r}: the value has no closing double quote")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class Matcher(Contract):
    """``name op value``; regexes are fully anchored as in Alertmanager; a missing label is ''."""

    name: str = Field(min_length=1)
    op: MatchOp = MatchOp.EQ
    value: str = ""

    @model_validator(mode="after")
    def _check_regex(self) -> Matcher:
        if self.op in (MatchOp.RE, MatchOp.NRE):
            try:
                _anchored(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r} for label {self.name!r}: {exc}") from exc
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op is MatchOp.EQ:
            return actual == self.value
        if self.op is MatchOp.NE:
            return actual != self.value
        hit = _anchored(self.value).match(actual) is not None
        return hit if self.op is MatchOp.RE else not hit

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value``, ``name!="v"``, ``name=~regex`` or ``name!~"regex"``.

        Quoted values use Alertmanager's escapes (``\\"``, ``\\\\``, ``\\n``); ``str()`` is the inverse.
        """
        m = _MATCHER_TEXT.match(text)
        if not m:
            raise ValueError(f"cannot parse matcher {text!r}: {_PARSE_HELP}")
        return cls(name=m.group(1), op=MatchOp(m.group(2)), value=_unquote(m.group(3), text))

    def __str__(self) -> str:
        return f"{self.name}{self.op.value}{_quote(self.value)}"


def all_match(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
