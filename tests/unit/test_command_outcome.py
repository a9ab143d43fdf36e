"""How an operator command finds its outcome: the audit event or the dead letter that answers it.

The engine writes the records here (no broker), exactly as the correlator would publish them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from stormwatch.commands.operator import outcome_in_audit_event, outcome_in_dead_letter
from stormwatch.schemas.commands import OperatorAction
from stormwatch.schemas.incident import IncidentEventType
from tests.kit.engine import Driver, at, config, note
from tests.kit.events import build_event

FAST = """
defaults: {group_wait: 30s, group_interval: 5m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
"""


def _opened(d: Driver) -> str:
    d.alerts([note({"alertname": "A", "service": "db"}, at(0))])
    d.tick(at(40))
    d.commit()
    return d.of_type("opened")[0].incident_id


def test_an_applied_command_is_found_by_its_event() -> None:
    d = Driver(config(FAST))
    inc = _opened(d)
    d.command(OperatorAction.ACKNOWLEDGE, inc, command_id="c-ack")
    (event,) = d.commit().events
    value = event.to_bytes()
    found = outcome_in_audit_event(value, "c-ack")
    assert found is not None and not found.refused
    assert found.text == f"acknowledged {inc} (event 2)"
    assert outcome_in_audit_event(value, "c-other") is None
    assert outcome_in_audit_event(b"not json c-ack", "c-ack") is None


def test_a_refusal_is_found_with_its_reason() -> None:
    d = Driver(config(FAST))
    inc = _opened(d)
    d.command(OperatorAction.ACKNOWLEDGE, inc, command_id="c1")
    d.command(OperatorAction.ACKNOWLEDGE, inc, command_id="c2")
    refused = d.commit().events[-1]
    found = outcome_in_audit_event(refused.to_bytes(), "c2")
    assert found is not None and found.refused
    assert found.text.startswith("cannot acknowledge an incident that is acknowledged")


def test_a_command_for_an_unknown_incident_is_answered_by_its_dead_letter() -> None:
    d = Driver(config(FAST))
    d.command(OperatorAction.ACKNOWLEDGE, "inc-905e083776ef3211-1", command_id="c-missing")
    (letter,) = d.commit().dead_letters
    found = outcome_in_dead_letter(letter.to_bytes(), "c-missing")
    assert found is not None and found.refused
    assert "inc-905e083776ef3211-1" in found.text and found.text.endswith("(unknown_incident)")
    assert outcome_in_dead_letter(letter.to_bytes(), "c-else") is None
    assert outcome_in_dead_letter(b"{}", "c-missing") is None


def test_a_split_is_answered_by_the_event_of_its_own_incident() -> None:
    """The primary's `unlinked` carries the same request id and may come first: it is not the answer."""
    when = datetime(2027, 1, 1, tzinfo=UTC)
    member = build_event("inc-m", 3, IncidentEventType.UNLINKED, at=when, details={"request": "c-split"})
    primary = build_event("inc-p", 5, IncidentEventType.UNLINKED, at=when, details={"request": "c-split"})
    assert outcome_in_audit_event(primary.to_bytes(), "c-split", "inc-m") is None
    found = outcome_in_audit_event(member.to_bytes(), "c-split", "inc-m")
    assert found is not None and not found.refused and "inc-m" in found.text
