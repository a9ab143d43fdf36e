"""Alertmanager-style label matchers, shared by correlation rules, inhibitions and silences."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cached_property

from pydantic import Field, model_validator

from schemas.common import Contract


class MatchOp(StrEnum):
    EQ = "="
    NE = "!="
    RE = "=~"
    NRE = "!~"


_MATCHER_TEXT = re.compile(r'^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"?(.*?)"?\s*$')


class Matcher(Contract):
    """``name op value``; regexes are fully anchored as in Alertmanager; a missing label is ''."""

    name: str = Field(min_length=1)
    op: MatchOp = MatchOp.EQ
    value: str = ""

    @model_validator(mode="after")
    def _check_regex(self) -> Matcher:
        if self.op in (MatchOp.RE, MatchOp.NRE):
            try:
                re.compile(self.value)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.value!r} for label {self.name!r}: {exc}") from exc
        return self

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        return re.compile(f"(?:{self.value})\\Z")

    def matches(self, labels: dict[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op is MatchOp.EQ:
            return actual == self.value
        if self.op is MatchOp.NE:
            return actual != self.value
        hit = self._pattern.match(actual) is not None
        return hit if self.op is MatchOp.RE else not hit

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value``, ``name!="v"``, ``name=~regex`` or ``name!~regex``."""
        m = _MATCHER_TEXT.match(text)
        if not m:
            raise ValueError(
                f"cannot parse matcher {text!r}: expected NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"
            )
        return cls(name=m.group(1), op=MatchOp(m.group(2)), value=m.group(3))

    def __str__(self) -> str:
        return f'{self.name}{self.op.value}"{self.value}"'


def all_match(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
