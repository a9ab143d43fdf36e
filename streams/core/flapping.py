"""Flap detection as a mute: an alert that flips too often is held back until it settles.

Unlike silences and inhibition it decides from the alert's own history, not its labels, so it is
asked on every status flip rather than on every notification; its reason is a ``Suppression``
all the same, reported on the FLAPPING change.
"""

from __future__ import annotations

from stormwatch.streams.core.groups import AlertState
from stormwatch.streams.core.muting import Suppression, SuppressionKind
from stormwatch.streams.core.rules import FlapPolicy

__all__ = ["FLAPPING", "FlapDetector"]

FLAPPING = Suppression.of(SuppressionKind.FLAPPING, "flap_detection")
"""The reason a flapping alert's changes are held back."""


class FlapDetector:
    """Counts each alert's status flips over a sliding window (the flips live on the alert)."""

    def __init__(self, policy: FlapPolicy) -> None:
        self.enabled = policy.enabled
        self.max_flips = policy.max_flips
        self.window_ms = policy.window_ms
        self.settle_ms = policy.settle_ms

    def record_flip(self, alert: AlertState, t: int) -> Suppression | None:
        """Remember a flip at ``t``; the flapping reason when this flip starts the alert flapping."""
        flips = [f for f in alert.flips if f > t - self.window_ms]
        flips.append(t)
        alert.flips = flips
        if not alert.flapping and len(flips) > self.max_flips:
            alert.flapping = True
            return FLAPPING
        return None

    def muted(self, alert: AlertState) -> Suppression | None:
        """Why the alert's flips are held back, while it flaps."""
        return FLAPPING if alert.flapping else None
