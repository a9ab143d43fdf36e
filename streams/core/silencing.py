"""Silences as a mute: the silences this partition holds, and which one mutes an alert at a time."""

from __future__ import annotations

from stormwatch.schemas.common import utc_from_ms
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.muting import Suppression, SuppressionKind

__all__ = ["Silences"]


class Silences:
    """The operator silences, by id, in the order they were added (the first active match wins).

    Every correlator partition keeps all of them: any partition may hold an alert one mutes.
    """

    def __init__(self) -> None:
        self.by_id: dict[str, Silence] = {}
        self._reasons: dict[str, Suppression] = {}  # made once per silence: ``muted`` never allocates

    def __len__(self) -> int:
        return len(self.by_id)

    def muted(self, labels: dict[str, str], t: int) -> Suppression | None:
        for key, silence in self.by_id.items():
            if silence.is_active_ms(t) and all(m.matches(labels) for m in silence.matchers):
                return self._reasons[key]
        return None

    def add(self, silence: Silence) -> None:
        """Add a silence, or replace the one with its id (an edit keeps its place in the order)."""
        self.by_id[silence.silence_id] = silence
        self._reasons[silence.silence_id] = Suppression.of(SuppressionKind.SILENCE, silence.silence_id)

    def get(self, silence_id: str) -> Silence | None:
        return self.by_id.get(silence_id)

    @staticmethod
    def expire(silence: Silence, at_ms: int) -> bool:
        """End a silence early at ``at_ms``; False when an operator had expired it already."""
        if silence.expired_at is not None:
            return False
        silence.expired_at = utc_from_ms(at_ms)
        return True

    def replace_all(self, by_id: dict[str, Silence]) -> None:
        """Take the silences of a restored state (keyed as they were written)."""
        self.by_id = by_id
        self._reasons = {
            key: Suppression.of(SuppressionKind.SILENCE, silence.silence_id) for key, silence in by_id.items()
        }
