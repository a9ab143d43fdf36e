"""Inhibition as a mute: the firing source alerts of each inhibit rule, and the targets they mute."""

from __future__ import annotations

from dataclasses import dataclass

from stormwatch.streams.core import wire
from stormwatch.streams.core.groups import round_up
from stormwatch.streams.core.muting import Suppression, SuppressionKind
from stormwatch.streams.core.rules import InhibitRule

__all__ = ["Inhibitions", "Inhibitor"]


@dataclass(slots=True)
class Inhibitor:
    """A source alert of an inhibit rule, as the rule needs it (ingest sends it to every partition)."""

    labels: dict[str, str]
    firing: bool
    expiry_ms: int
    gkhash: str = ""  # the source alert's group: where what it mutes is reported


class Inhibitions:
    """Per inhibit rule, its firing source alerts by fingerprint; a target is muted while one of
    them fires, has not expired, and the rule says it inhibits the target."""

    def __init__(self, rules: list[InhibitRule], resolve_timeout_ms: int, resolution_ms: int) -> None:
        self.rules = rules
        self.sources: dict[str, dict[str, Inhibitor]] = {}  # rule -> fingerprint -> source
        self._resolve_timeout_ms = resolve_timeout_ms  # how long a source with no endsAt lasts
        self._resolution_ms = resolution_ms
        self._reasons = {rule.name: Suppression.of(SuppressionKind.INHIBIT, rule.name) for rule in rules}
        self.last: tuple[str, Inhibitor] | None = None  # the rule and source of the last mute

    def muted(self, labels: dict[str, str], t: int) -> Suppression | None:
        for rule in self.rules:
            sources = self.sources.get(rule.name)
            if not sources:
                continue
            for inhibitor in sources.values():
                if inhibitor.firing and inhibitor.expiry_ms > t and rule.inhibits(inhibitor.labels, labels):
                    self.last = (rule.name, inhibitor)
                    return self._reasons[rule.name]
        return None

    def apply(self, rule_name: str, note: wire.AlertNote, t: int, gkhash: str = "") -> None:
        """A notification of a source alert of ``rule_name``: firing adds or renews it, resolved drops it."""
        sources = self.sources.setdefault(rule_name, {})
        if note.firing:
            expiry = note.ends_ms if note.ends_ms is not None else t + self._resolve_timeout_ms
            sources[note.fingerprint] = Inhibitor(
                note.labels, True, round_up(expiry, self._resolution_ms), gkhash
            )
        else:
            sources.pop(note.fingerprint, None)
