"""``log``: write a message to the executor's log. The harmless action, for trying workflows out."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from stormwatch.agents.executors.base import ExecutorPolicy, Outcome, ParamProblems, clip, unknown_keys
from stormwatch.schemas.commands import MitigationCommand

log = logging.getLogger("stormwatch.executor.log")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_KEYS = ("message", "level")


class LogExecutor:
    name: ClassVar[str] = "log"
    side_effects: ClassVar[bool] = False  # only the executor's own log: no approval by default

    def __init__(self, policy: ExecutorPolicy) -> None:
        self.policy = policy

    @staticmethod
    def check_params(params: dict[str, Any]) -> ParamProblems:
        problems = unknown_keys(params, _KEYS)
        if "message" not in params:
            problems.append(("", "missing parameter 'message' (the text to log)"))
        elif not isinstance(params["message"], str):
            problems.append(("message", "must be a string"))
        level = params.get("level", "info")
        if level not in _LEVELS:
            problems.append(("level", f"must be one of {', '.join(_LEVELS)}; got {level!r}"))
        return problems

    def execute(self, command: MitigationCommand, *, timeout_s: float, dry_run: bool) -> Outcome:
        problems = self.check_params(command.params)
        if problems:
            return Outcome(ok=False, reason=f"invalid parameters: {problems[0][1]}", retryable=False)
        message = str(command.params["message"])
        if dry_run:
            return Outcome(ok=True, output=f"would log: {clip(message)}")
        level = _LEVELS[str(command.params.get("level", "info"))]
        log.log(level, "%s [%s %s/%s]", message, command.incident_id, command.workflow, command.step)
        return Outcome(ok=True, output=clip(message))
