"""IncidentId: the one format of incident ids, its parts, and why a text is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.fingerprint import group_hash
from stormwatch.schemas.incident_id import HELP, IdFlaw, IncidentId, InvalidIncidentId

GKHASH = group_hash('default:{alertname="HighCPU",cluster="eu-1"}')
OPENED_MS = 1_738_324_800_000
TEXT = f"inc-{GKHASH}-{OPENED_MS}"


def test_of_formats_the_id_the_correlator_always_made() -> None:
    made = IncidentId.of(GKHASH, OPENED_MS)
    assert made == TEXT and type(str(made)) is str and str(made) == TEXT
    assert (made.gkhash, made.opened_ms) == (GKHASH, OPENED_MS)
    assert IncidentId(TEXT) == made and IncidentId.parse(TEXT) == made


def test_an_id_serializes_to_the_same_bytes_as_its_text() -> None:
    made = IncidentId.of(GKHASH, OPENED_MS)
    assert orjson.dumps({"incident_id": made}) == orjson.dumps({"incident_id": TEXT})
    assert repr(made) == repr(TEXT) and f"{made}:1" == f"{TEXT}:1"
    at = datetime(2025, 1, 31, tzinfo=UTC)

    def ack(incident_id: str) -> bytes:
        action = OperatorAction.ACKNOWLEDGE
        return OperatorCommand(
            command_id="c1", action=action, by="op", at=at, incident_id=incident_id
        ).to_bytes()

    assert ack(made) == ack(TEXT)
    assert {made: 1}[TEXT] == 1  # hashes and compares as its text


def test_gkhash_of_routes_only_well_formed_ids() -> None:
    assert IncidentId.gkhash_of(TEXT) == GKHASH
    for bad in (None, "", "inc-zz-1", f"inc-{GKHASH.upper()}-1", f"inc-{GKHASH}-0", f"inc-{GKHASH}-x"):
        assert IncidentId.gkhash_of(bad) is None, bad
        assert IncidentId.problem(bad) is not None, bad
    assert IncidentId.problem(TEXT) is None


@pytest.mark.parametrize(
    ("text", "flaw", "why"),
    [
        (None, IdFlaw.EMPTY, "it is empty"),
        ("", IdFlaw.EMPTY, "it is empty"),
        ("INC-0123456789abcdef-1", IdFlaw.PREFIX, "it must start with 'inc-'"),
        ("inc-0123456789abcdef", IdFlaw.PARTS, "exactly three '-'-separated parts, found 2"),
        ("inc-0123456789abcdef-1-2", IdFlaw.PARTS, "found 4"),
        ("inc-0123456789abcdef--1", IdFlaw.PARTS, "found 4"),  # a negative number
        ("inc-0123456789ABCDEF-1", IdFlaw.GKHASH, "'0123456789ABCDEF' must be exactly 16 lowercase hex"),
        ("inc-zz-1", IdFlaw.GKHASH, "'zz' must be exactly 16 lowercase hex digits"),
        ("inc-0123456789abcdef-0", IdFlaw.OPENED_MS, "the number '0' must be a positive integer"),
        ("inc-0123456789abcdef-01", IdFlaw.OPENED_MS, "without leading zeros"),
        ("inc-0123456789abcdef-", IdFlaw.OPENED_MS, "the number ''"),
        ("inc-0123456789abcdef-1\n", IdFlaw.OPENED_MS, "the number '1\\n'"),
        ("inc-0123456789abcdef-\u0661", IdFlaw.OPENED_MS, "the number"),  # ARABIC-INDIC DIGIT ONE
    ],
)
def test_refusals_say_which_part_is_wrong(text: str | None, flaw: IdFlaw, why: str) -> None:
    with pytest.raises(InvalidIncidentId) as info:
        IncidentId.parse(text)
    assert info.value.flaw is flaw and why in info.value.why
    assert str(info.value) == f"invalid incident id {text!r}: {info.value.why}; expected {HELP}"
    problem = IncidentId.problem(text)
    assert problem is not None and (problem.flaw, problem.why) == (info.value.flaw, info.value.why)
    assert isinstance(info.value, ValueError)


def test_constructor_checks() -> None:
    with pytest.raises(InvalidIncidentId, match="must start with 'inc-'"):
        IncidentId("0123456789abcdef-1")
