"""The executor plugin interface: what an action implementation provides and receives.

An executor is a class registered under an action name (the built-ins, or a Python entry point in
the group ``stormwatch.executors``). It is used twice:

- ``check_params(params)`` (a static method) when a workflow file is validated: the step's
  parameters exactly as written (templates not rendered yet); it returns (path, message) pairs;
- ``Executor(policy)`` then ``execute(command, timeout_s=..., dry_run=...)`` in the executor
  worker, on parameters the agent has rendered. It must enforce the policy (allowlists) itself,
  never raise for a failed action (return ``Outcome(ok=False, ...)``), and return within
  ``timeout_s``: the worker cannot interrupt it.

Two optional class attributes tell the agent how to treat the action's steps:

- ``side_effects`` (default ``True``): a step of an action with side effects needs an operator's
  approval unless the workflow exempts it with a reason (docs/security.md, "Approvals"). Only an
  action that changes nothing outside the executor (``log``) may say ``False``; a plugin that
  says nothing is treated as having side effects;
- ``url_params`` (default none): top-level parameters that are URLs; the agent renders their
  templates with each value percent-encoded as one path segment (``Template.render_url``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from stormwatch.config import KafkaSettings
from stormwatch.schemas.commands import MitigationCommand

__all__ = [
    "OUTPUT_LIMIT",
    "Executor",
    "ExecutorPolicy",
    "Outcome",
    "ParamProblems",
    "clip",
    "refused",
    "unknown_keys",
]

OUTPUT_LIMIT = 2048
"""Characters of an action's output kept in its CommandResult (the audit log is not a log store)."""

ParamProblems = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class ExecutorPolicy:
    """What the executor worker allows; built from ``agent.*`` settings and CLI flags."""

    allow_urls: tuple[str, ...] = ()
    allow_programs: tuple[str, ...] = ()
    allow_topics: tuple[str, ...] = ()
    kafka: KafkaSettings | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form options for plugins


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an action ended. ``retryable=False`` tells the agent a retry cannot help or is unsafe."""

    ok: bool
    output: str = ""
    reason: str | None = None
    retryable: bool = True


class Executor(Protocol):
    name: ClassVar[str]
    side_effects: ClassVar[bool]

    def __init__(self, policy: ExecutorPolicy) -> None: ...

    @staticmethod
    def check_params(params: dict[str, Any]) -> ParamProblems: ...

    def execute(self, command: MitigationCommand, *, timeout_s: float, dry_run: bool) -> Outcome: ...


def refused(reason: str) -> Outcome:
    """An action that was not run because its parameters break the policy: never worth a retry."""
    return Outcome(ok=False, reason=f"refused: {reason}", retryable=False)


def clip(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """Keep the end of long output (errors are usually last)."""
    return text if len(text) <= limit else "..." + text[-(limit - 3) :]


def unknown_keys(params: dict[str, Any], allowed: tuple[str, ...]) -> ParamProblems:
    return [
        (str(k), f"unknown parameter {k!r}; allowed: {', '.join(allowed)}")
        for k in params
        if k not in allowed
    ]
