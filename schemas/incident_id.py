"""Incident ids, ``inc-<gkhash>-<opened_ms>``: the one definition of their format.

The correlator makes them (docs/architecture.md, "Ids"), ingest routes operator commands and
mitigation results by the group hash inside them, and the CLI checks what an operator typed. All
of them go through ``IncidentId`` so they accept exactly the same ids and give the same reasons
for refusing one.

An ``IncidentId`` is a ``str``: it serializes to the very same bytes (orjson, pydantic, f-strings),
so the contracts keep typing the field as plain ``str`` and their JSON Schemas do not change.
Code that builds contracts passes ``str(incident_id)``, though: given a str subclass for a ``str``
field, pydantic-core (2.50) keeps the copy it makes in a process-wide cache of up to 16,384 strings,
which pins memory arenas (``streams.core.ids.incident_id_for``).
"""

from __future__ import annotations

import re
from enum import StrEnum

__all__ = ["EXAMPLE", "FORM", "HELP", "PREFIX", "IdFlaw", "IncidentId", "InvalidIncidentId"]

PREFIX = "inc-"
FORM = "inc-<16 hex digits>-<opened ms>"
EXAMPLE = "inc-9f86d081884c7d65-1796269688419"
HELP = f"{FORM}, e.g. {EXAMPLE}"
"""How to write one, for help texts and error messages."""

_GKHASH_DIGITS = 16
_ID = re.compile(r"inc-([0-9a-f]{16})-[1-9][0-9]*")
_GKHASH = re.compile(r"[0-9a-f]{16}")
# Where the parts start in a well-formed id: the group hash has a fixed width.
_GKHASH_AT = len(PREFIX)
_MS_AT = _GKHASH_AT + _GKHASH_DIGITS + 1


class IdFlaw(StrEnum):
    """What is wrong with a text that is not an incident id: the first problem, left to right."""

    EMPTY = "empty"  # no id at all
    PREFIX = "prefix"  # does not start with "inc-"
    PARTS = "parts"  # not three '-'-separated parts
    GKHASH = "gkhash"  # the middle part is not 16 lowercase hex digits
    OPENED_MS = "opened_ms"  # the last part is not a positive integer without leading zeros


class InvalidIncidentId(ValueError):
    """A text refused as an incident id: ``flaw`` for programs, ``why`` and the message for people.

    The message reads ``invalid incident id 'X': <why>; expected inc-<16 hex digits>-<opened ms>, e.g. ...``.
    """

    def __init__(self, text: str | None, flaw: IdFlaw, why: str) -> None:
        self.text = text
        self.flaw = flaw
        self.why = why
        super().__init__(f"invalid incident id {text!r}: {why}; expected {HELP}")


class IncidentId(str):
    """A well-formed incident id. ``IncidentId(text)`` checks ``text`` and raises
    ``InvalidIncidentId`` saying which part is wrong; ``IncidentId.of`` builds one from its parts."""

    __slots__ = ()

    def __new__(cls, text: str) -> IncidentId:
        problem = cls.problem(text)
        if problem is not None:
            raise problem
        return super().__new__(cls, text)

    @classmethod
    def parse(cls, text: str | None) -> IncidentId:
        """``text`` as an id, or ``InvalidIncidentId`` (also for None: a command without an id)."""
        if text is None:
            raise _refusal(text)
        return cls(text)

    @classmethod
    def of(cls, gkhash: str, opened_ms: int) -> IncidentId:
        """The id of group ``gkhash``'s incident whose group_wait began at ``opened_ms``.

        Not checked, so the correlator can never fail on an id of its own: it is well formed for
        every ``group_hash`` and every event time from 1 ms after the epoch on.
        """
        return str.__new__(cls, f"{PREFIX}{gkhash}-{opened_ms}")

    @staticmethod
    def gkhash_of(text: str | None) -> str | None:
        """The group hash inside a well-formed id (its correlator partition key), else None.

        The routing check of ingest and the correlator: one regex match, no exception.
        """
        if text is None:
            return None
        match = _ID.fullmatch(text)
        return match[1] if match is not None else None

    @staticmethod
    def problem(text: str | None) -> InvalidIncidentId | None:
        """Why ``text`` is not an incident id (the error, not raised), or None if it is one."""
        if text is not None and _ID.fullmatch(text) is not None:
            return None
        return _refusal(text)

    @property
    def gkhash(self) -> str:
        """The group hash: xxh3-64 of the group key, 16 lowercase hex digits."""
        return self[_GKHASH_AT : _MS_AT - 1]

    @property
    def opened_ms(self) -> int:
        """Event time (epoch ms) at which the incident's group_wait began."""
        return int(self[_MS_AT:])


def _refusal(text: str | None) -> InvalidIncidentId:
    """The first thing wrong with ``text``, reading left to right (for a text known to be bad)."""
    if not text:
        return InvalidIncidentId(text, IdFlaw.EMPTY, "it is empty")
    if not text.startswith(PREFIX):
        return InvalidIncidentId(text, IdFlaw.PREFIX, f"it must start with {PREFIX!r}")
    parts = text[len(PREFIX) :].split("-")
    if len(parts) != 2:
        why = f"it must have exactly three '-'-separated parts, found {len(parts) + 1}"
        return InvalidIncidentId(text, IdFlaw.PARTS, why)
    gkhash, number = parts
    if _GKHASH.fullmatch(gkhash) is None:
        why = f"the group hash {gkhash!r} must be exactly {_GKHASH_DIGITS} lowercase hex digits"
        return InvalidIncidentId(text, IdFlaw.GKHASH, why)
    why = f"the number {number!r} must be a positive integer without leading zeros"
    return InvalidIncidentId(text, IdFlaw.OPENED_MS, why)
