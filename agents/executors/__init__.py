"""Action implementations: the safe built-ins and plugins found through Python entry points.

A plugin is a class with the ``agents.executors.base.Executor`` interface, published by any
installed distribution under the entry point group ``stormwatch.executors``; the entry point's
name is the action name used in workflow files::

    [project.entry-points."stormwatch.executors"]
    pagerduty = "mycompany.stormwatch_pd:PagerDutyExecutor"

Built-in names cannot be replaced by a plugin (a package could otherwise swap the ``exec``
safeguards for its own).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib.metadata import entry_points

from stormwatch.agents.executors.base import Executor, ExecutorPolicy, Outcome
from stormwatch.agents.executors.log import LogExecutor
from stormwatch.agents.executors.program import ProgramExecutor
from stormwatch.agents.executors.publish import KafkaExecutor
from stormwatch.agents.executors.webhook import WebhookExecutor

__all__ = [
    "BUILTIN_EXECUTORS",
    "ENTRY_POINT_GROUP",
    "Executor",
    "ExecutorPolicy",
    "Outcome",
    "available_executors",
    "create_executors",
]

log = logging.getLogger("stormwatch.executors")

ENTRY_POINT_GROUP = "stormwatch.executors"

BUILTIN_EXECUTORS: dict[str, type[Executor]] = {
    "webhook": WebhookExecutor,
    "exec": ProgramExecutor,
    "kafka": KafkaExecutor,
    "log": LogExecutor,
}


@lru_cache(maxsize=1)
def _plugins() -> tuple[tuple[str, type[Executor]], ...]:
    found: list[tuple[str, type[Executor]]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN_EXECUTORS:
            log.warning(
                "ignoring executor plugin %s (%s): %r is a built-in action", ep.name, ep.value, ep.name
            )
            continue
        try:
            cls = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down with it
            log.error("cannot load executor plugin %s (%s): %s", ep.name, ep.value, exc)
            continue
        if not callable(getattr(cls, "check_params", None)) or not callable(getattr(cls, "execute", None)):
            log.error("executor plugin %s (%s) lacks check_params/execute; ignored", ep.name, ep.value)
            continue
        found.append((ep.name, cls))
    return tuple(found)


def available_executors() -> dict[str, type[Executor]]:
    """Action name -> executor class: the built-ins, then the installed plugins."""
    return {**BUILTIN_EXECUTORS, **dict(_plugins())}


def create_executors(policy: ExecutorPolicy, only: set[str] | None = None) -> dict[str, Executor]:
    """Instantiate the executors (all, or the names in ``only``) with ``policy``."""
    out: dict[str, Executor] = {}
    for name, cls in available_executors().items():
        if only is None or name in only:
            out[name] = cls(policy)
    return out
