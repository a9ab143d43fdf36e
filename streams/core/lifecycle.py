"""The incident state machine, as one table.

Every state change of every incident, whether decided by the correlator, an operator or the
mitigation agent, goes through ``transition``; anything not in ``TRANSITIONS`` is refused with a
reason that says what is allowed instead. Keeping it a table (not scattered ifs) makes the rules
reviewable at a glance and lets the tests check every (state, action) pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from itertools import product
from types import MappingProxyType

from stormwatch.schemas.incident import IncidentEventType, IncidentState

__all__ = [
    "ACTIVE_STATES",
    "EVENT_TYPES",
    "STATES",
    "TERMINAL_STATES",
    "TRANSITIONS",
    "Action",
    "Transition",
    "allowed_actions",
    "transition",
]


class Action(StrEnum):
    OPEN = "open"  # group_wait elapsed for a new group: the first incident event
    ACKNOWLEDGE = "acknowledge"  # an operator took it
    MITIGATE = "mitigate"  # a mitigation started
    RESOLVE = "resolve"  # an operator (or the agent) declared it resolved
    AUTO_RESOLVE = "auto_resolve"  # every alert of the incident resolved
    REOPEN = "reopen"  # the group fired again within reopen_window of resolution
    CLOSE = "close"  # quiet period after resolution passed, or max lifetime reached
    MERGE = "merge"  # merged into another incident, which carries on


_O, _A, _M, _R, _C = (
    IncidentState.OPEN,
    IncidentState.ACKNOWLEDGED,
    IncidentState.MITIGATING,
    IncidentState.RESOLVED,
    IncidentState.CLOSED,
)

TRANSITIONS: Mapping[tuple[IncidentState | None, Action], IncidentState] = MappingProxyType(
    {
        (None, Action.OPEN): _O,
        (_O, Action.ACKNOWLEDGE): _A,
        (_O, Action.MITIGATE): _M,
        (_A, Action.MITIGATE): _M,
        (_O, Action.RESOLVE): _R,
        (_A, Action.RESOLVE): _R,
        (_M, Action.RESOLVE): _R,
        (_O, Action.AUTO_RESOLVE): _R,
        (_A, Action.AUTO_RESOLVE): _R,
        (_M, Action.AUTO_RESOLVE): _R,
        (_R, Action.REOPEN): _O,
        (_R, Action.CLOSE): _C,
        # Only the max-lifetime cap closes an incident that is not resolved; the engine decides when.
        (_O, Action.CLOSE): _C,
        (_A, Action.CLOSE): _C,
        (_M, Action.CLOSE): _C,
        (_O, Action.MERGE): _C,
        (_A, Action.MERGE): _C,
        (_M, Action.MERGE): _C,
        (_R, Action.MERGE): _C,
    }
)
"""(state before, action) -> state after; ``None`` is "no incident yet". Absent pairs are refused."""

STATES: tuple[IncidentState | None, ...] = (None, *IncidentState)
"""Every possible 'state before', including None (no incident yet)."""

TERMINAL_STATES = frozenset({IncidentState.CLOSED})
ACTIVE_STATES = frozenset({IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.MITIGATING})

EVENT_TYPES: Mapping[Action, IncidentEventType] = MappingProxyType(
    {
        Action.OPEN: IncidentEventType.OPENED,
        Action.ACKNOWLEDGE: IncidentEventType.ACKNOWLEDGED,
        Action.MITIGATE: IncidentEventType.MITIGATING,
        Action.RESOLVE: IncidentEventType.RESOLVED,
        Action.AUTO_RESOLVE: IncidentEventType.RESOLVED,
        Action.REOPEN: IncidentEventType.REOPENED,
        Action.CLOSE: IncidentEventType.CLOSED,
        Action.MERGE: IncidentEventType.MERGED,
    }
)
"""The audit event type written for an allowed transition."""

_VERB = {
    Action.OPEN: "open",
    Action.ACKNOWLEDGE: "acknowledge",
    Action.MITIGATE: "start mitigating",
    Action.RESOLVE: "resolve",
    Action.AUTO_RESOLVE: "auto-resolve",
    Action.REOPEN: "reopen",
    Action.CLOSE: "close",
    Action.MERGE: "merge",
}

# Why a refusal is a refusal, where the bare "allowed from" would leave the operator guessing.
_HINTS: dict[tuple[IncidentState | None, Action], str] = {
    (_M, Action.ACKNOWLEDGE): "someone is already mitigating it, which is past acknowledgement",
    (_M, Action.MITIGATE): "one mitigation state covers every running mitigation",
    (_R, Action.ACKNOWLEDGE): "it reopens by itself if its alerts fire again",
    (_R, Action.MITIGATE): "it reopens by itself if its alerts fire again",
}


@dataclass(frozen=True, slots=True)
class Transition:
    """The verdict on one (state, action): the new state, or a refusal with the reason."""

    allowed: bool
    from_state: IncidentState | None
    to_state: IncidentState | None  # == from_state when refused; never None when allowed
    reason: str
    action: Action | None = None

    @property
    def new_state(self) -> IncidentState:
        """``to_state`` of an allowed transition, typed without None; raises ValueError on a refusal."""
        if not self.allowed or self.to_state is None:
            raise ValueError(f"refused transition has no new state: {self.reason}")
        return self.to_state


def _name(state: IncidentState | None) -> str:
    return "no incident" if state is None else state.value


def _decide(state: IncidentState | None, action: Action) -> Transition:
    target = TRANSITIONS.get((state, action))
    if target is not None:
        return Transition(True, state, target, f"{action.value}: {_name(state)} -> {target.value}", action)
    sources = [s for s in STATES if (s, action) in TRANSITIONS]
    allowed_from = ", ".join(_name(s) for s in sources)
    verb = _VERB[action]
    if state is None:
        what = f"cannot {verb}: there is no incident yet"
    elif state in TERMINAL_STATES:
        what = f"cannot {verb} an incident that is closed: closed is final (new alerts open a new incident)"
    elif action is Action.OPEN:
        what = f"cannot open an incident that already exists and is {state.value}"
    else:
        what = f"cannot {verb} an incident that is {state.value}"
        hint = _HINTS.get((state, action))
        if hint is not None:
            what += f" ({hint})"
    return Transition(False, state, state, f"{what}; allowed from: {allowed_from}", action)


_VERDICTS: Mapping[tuple[IncidentState | None, Action], Transition] = MappingProxyType(
    {(s, a): _decide(s, a) for s, a in product(STATES, Action)}
)
_ALLOWED: Mapping[IncidentState | None, frozenset[Action]] = MappingProxyType(
    {s: frozenset(a for a in Action if (s, a) in TRANSITIONS) for s in STATES}
)


def transition(state: IncidentState | None, action: Action) -> Transition:
    """The verdict for ``action`` on an incident in ``state`` (None: no incident yet)."""
    try:
        return _VERDICTS[(state, action)]
    except KeyError:
        raise ValueError(
            f"unknown incident state {state!r} or action {action!r}; states: "
            f"{', '.join(_name(s) for s in STATES)}; actions: {', '.join(a.value for a in Action)}"
        ) from None


def allowed_actions(state: IncidentState | None) -> frozenset[Action]:
    """The actions ``transition`` accepts from ``state``."""
    try:
        return _ALLOWED[state]
    except KeyError:
        raise ValueError(f"unknown incident state {state!r}") from None
