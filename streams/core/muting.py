"""Why an alert is muted: the typed reason every mute returns, and the one interface mutes share.

Silences and inhibition decide from an alert's labels and the event time; flap detection decides
from the alert's own flips (streams.core.flapping). Each answers with a ``Suppression`` rather
than a string, so deciding what a mute means (its change kind, its counter) is a lookup, not
parsing. The state records keep the historical ``"silence:ID"`` / ``"inhibit:RULE"`` strings:
``Suppression.encode`` / ``decode`` are the only places that know that form.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from stormwatch.schemas.incident import AlertChangeKind

__all__ = ["Mute", "Suppression", "SuppressionKind"]


class SuppressionKind(StrEnum):
    """What muted an alert; the value is the prefix of the encoded reason and of its counter."""

    SILENCE = "silence"
    INHIBIT = "inhibit"
    FLAPPING = "flapping"


_CHANGES = {
    SuppressionKind.SILENCE: AlertChangeKind.SILENCED,
    SuppressionKind.INHIBIT: AlertChangeKind.INHIBITED,
    SuppressionKind.FLAPPING: AlertChangeKind.FLAPPING,
}
_STATS = {kind: f"suppressed_{kind.value}" for kind in SuppressionKind}


@dataclass(frozen=True, slots=True)
class Suppression:
    """One reason an alert is muted: its kind and the silence id, inhibit rule or detector."""

    kind: SuppressionKind
    id: str

    @property
    def change_kind(self) -> AlertChangeKind:
        """The alert change an incident event reports for an alert muted this way."""
        return _CHANGES[self.kind]

    @property
    def stat(self) -> str:
        """The engine counter of notifications muted this way (metrics label them by reason)."""
        return _STATS[self.kind]

    def encode(self) -> str:
        """The form the alert state records have always held: ``KIND:ID``."""
        return f"{self.kind.value}:{self.id}"

    @classmethod
    def of(cls, kind: SuppressionKind, ident: str) -> Suppression:
        """The shared reason for (kind, id): equal reasons are one object, so comparing an alert's
        reason with the one just decided is mostly an identity check, and restoring a million
        muted alerts does not make a million equal objects."""
        found = _SHARED.get((kind, ident))
        if found is None:
            if len(_SHARED) >= _SHARED_MAX:
                _SHARED.clear()  # only sharing is lost: equal reasons still compare equal
            found = _SHARED[(kind, ident)] = cls(kind, ident)
        return found

    @classmethod
    def decode(cls, text: str) -> Suppression:
        """The reason ``encode`` wrote (the shared object ``of`` gives)."""
        found = _DECODED.get(text)
        if found is None:
            kind, sep, ident = text.partition(":")
            if not sep or kind not in _KINDS:
                raise ValueError(f"not a suppression reason: {text!r} (expected silence:ID or inhibit:RULE)")
            found = cls.of(SuppressionKind(kind), ident)
            if len(_DECODED) >= _SHARED_MAX:
                _DECODED.clear()
            _DECODED[text] = found
        return found


_KINDS = frozenset(kind.value for kind in SuppressionKind)
_SHARED: dict[tuple[SuppressionKind, str], Suppression] = {}
_DECODED: dict[str, Suppression] = {}  # encoded form -> reason: restoring parses each form once
_SHARED_MAX = 4096


class Mute(Protocol):
    """Anything that can mute an alert by its labels at an event time (silences, inhibition).

    The engine asks its mutes in order for every notification and keeps the first reason; a new
    kind of mute implements ``muted`` and joins that list. It must not allocate: a mute hands
    out reasons it made beforehand (``Suppression.of``).
    """

    def muted(self, labels: dict[str, str], t: int) -> Suppression | None:
        """The reason the alert with ``labels`` is muted at ``t``, or None when it is not."""
        ...
