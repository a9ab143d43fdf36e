"""The incident state machine: every (state, action) pair, and random walks."""

from __future__ import annotations

from itertools import product

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stormwatch.schemas.incident import IncidentEventType, IncidentState
from stormwatch.streams.core.lifecycle import (
    EVENT_TYPES,
    STATES,
    TRANSITIONS,
    Action,
    allowed_actions,
    transition,
)

O, A, M, R, C = (  # noqa: E741
    IncidentState.OPEN,
    IncidentState.ACKNOWLEDGED,
    IncidentState.MITIGATING,
    IncidentState.RESOLVED,
    IncidentState.CLOSED,
)

# The expected table, written out independently of streams.lifecycle.
EXPECTED: dict[tuple[IncidentState | None, Action], IncidentState] = {
    (None, Action.OPEN): O,
    (O, Action.ACKNOWLEDGE): A,
    (O, Action.MITIGATE): M,
    (A, Action.MITIGATE): M,
    **{(s, a): R for s in (O, A, M) for a in (Action.RESOLVE, Action.AUTO_RESOLVE)},
    (R, Action.REOPEN): O,
    (R, Action.CLOSE): C,
    **{(s, Action.CLOSE): C for s in (O, A, M)},
    **{(s, Action.MERGE): C for s in (O, A, M, R)},
}

ALLOWED_FROM = {
    Action.OPEN: "no incident",
    Action.ACKNOWLEDGE: "open",
    Action.MITIGATE: "open, acknowledged",
    Action.RESOLVE: "open, acknowledged, mitigating",
    Action.AUTO_RESOLVE: "open, acknowledged, mitigating",
    Action.REOPEN: "resolved",
    Action.CLOSE: "open, acknowledged, mitigating, resolved",
    Action.MERGE: "open, acknowledged, mitigating, resolved",
}

VERB = {
    Action.OPEN: "open",
    Action.ACKNOWLEDGE: "acknowledge",
    Action.MITIGATE: "start mitigating",
    Action.RESOLVE: "resolve",
    Action.AUTO_RESOLVE: "auto-resolve",
    Action.REOPEN: "reopen",
    Action.CLOSE: "close",
    Action.MERGE: "merge",
}

HINTS = {
    (M, Action.ACKNOWLEDGE): " (someone is already mitigating it, which is past acknowledgement)",
    (M, Action.MITIGATE): " (one mitigation state covers every running mitigation)",
    (R, Action.ACKNOWLEDGE): " (it reopens by itself if its alerts fire again)",
    (R, Action.MITIGATE): " (it reopens by itself if its alerts fire again)",
}


def expected_refusal(state: IncidentState | None, action: Action) -> str:
    verb = VERB[action]
    if state is None:
        what = f"cannot {verb}: there is no incident yet"
    elif state is C:
        what = f"cannot {verb} an incident that is closed: closed is final (new alerts open a new incident)"
    elif action is Action.OPEN:
        what = f"cannot open an incident that already exists and is {state.value}"
    else:
        what = f"cannot {verb} an incident that is {state.value}{HINTS.get((state, action), '')}"
    return f"{what}; allowed from: {ALLOWED_FROM[action]}"


def test_states_cover_the_enum_and_none() -> None:
    assert set(STATES) == {None, *IncidentState}


def test_table_is_exactly_the_specified_one() -> None:
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("state", "action"), list(product(STATES, Action)))
def test_every_pair(state: IncidentState | None, action: Action) -> None:
    verdict = transition(state, action)
    assert verdict.from_state is state
    assert verdict.action is action
    if (state, action) in EXPECTED:
        target = EXPECTED[(state, action)]
        assert verdict.allowed
        assert verdict.to_state is target
        from_name = "no incident" if state is None else state.value
        assert verdict.reason == f"{action.value}: {from_name} -> {target.value}"
    else:
        assert not verdict.allowed
        assert verdict.to_state is state
        assert verdict.reason == expected_refusal(state, action)


def test_reason_example_from_the_spec() -> None:
    verdict = transition(R, Action.ACKNOWLEDGE)
    assert verdict.reason.startswith("cannot acknowledge an incident that is resolved")
    assert verdict.reason.endswith("allowed from: open")


@pytest.mark.parametrize("state", STATES)
def test_allowed_actions_agree_with_transition(state: IncidentState | None) -> None:
    expected = frozenset(a for a in Action if (state, a) in EXPECTED)
    assert allowed_actions(state) == expected
    assert all(transition(state, a).allowed == (a in expected) for a in Action)


def test_closed_and_none_allowed_actions() -> None:
    assert allowed_actions(C) == frozenset()
    assert allowed_actions(None) == frozenset({Action.OPEN})


def test_plain_strings_work_like_the_enums() -> None:
    assert transition("open", "acknowledge") == transition(O, Action.ACKNOWLEDGE)  # type: ignore[arg-type]


def test_unknown_values_raise() -> None:
    with pytest.raises(ValueError, match="unknown incident state 'bogus' or action"):
        transition("bogus", Action.OPEN)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown incident state"):
        transition(O, "bogus")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown incident state 'bogus'"):
        allowed_actions("bogus")  # type: ignore[arg-type]


def test_event_types_cover_every_action() -> None:
    assert set(EVENT_TYPES) == set(Action)
    assert EVENT_TYPES[Action.AUTO_RESOLVE] is IncidentEventType.RESOLVED
    assert EVENT_TYPES[Action.MERGE] is IncidentEventType.MERGED


def test_new_state_is_typed_for_allowed_and_raises_for_refused() -> None:
    assert transition(None, Action.OPEN).new_state is O
    with pytest.raises(ValueError, match="refused transition has no new state: cannot acknowledge"):
        _ = transition(None, Action.ACKNOWLEDGE).new_state
    with pytest.raises(ValueError, match="refused transition"):
        _ = transition(C, Action.REOPEN).new_state


def test_transition_is_immutable() -> None:
    verdict = transition(O, Action.ACKNOWLEDGE)
    with pytest.raises(AttributeError):
        verdict.allowed = False  # type: ignore[misc]


@given(st.lists(st.sampled_from(list(Action)), max_size=60))
def test_random_walks_stay_in_the_enum_and_closed_is_terminal(actions: list[Action]) -> None:
    state: IncidentState | None = None
    closed = False
    for action in actions:
        verdict = transition(state, action)
        assert verdict.from_state is state
        if closed:
            assert not verdict.allowed
            assert verdict.to_state is C
        if verdict.allowed:
            assert isinstance(verdict.to_state, IncidentState)
            assert action in allowed_actions(state)
        else:
            assert verdict.to_state is state
            assert "allowed from: " in verdict.reason
        state = verdict.to_state
        closed = closed or state is C
    assert state is None or isinstance(state, IncidentState)


@given(st.lists(st.sampled_from(list(Action)), max_size=40))
def test_once_opened_there_is_always_an_incident(actions: list[Action]) -> None:
    state: IncidentState | None = transition(None, Action.OPEN).to_state
    for action in actions:
        state = transition(state, action).to_state
        assert state is not None
