"""A token bucket per receiver (``rate_limit: {per_second, burst}``): pure, time passed in.

A storm opens many incidents at once; without a limit the notifier would hit a chat service's own
rate limit and get every message refused (429) at the moment people most need them. The bucket
holds up to ``burst`` tokens and refills at ``per_second``; a message takes one token or waits
for it. The stage asks ``wait_ms`` before each send and sleeps (or schedules) that long.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from stormwatch.agents.core.notify_config import RateLimitConfig

__all__ = ["TokenBucket"]

_EPSILON = 1e-9


@dataclass(slots=True)
class TokenBucket:
    """``tokens`` available at ``updated_ms``; starts full so the first ``burst`` messages go at once."""

    per_second: float
    burst: int
    tokens: float = -1.0
    updated_ms: int | None = None

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError("a token bucket needs per_second > 0 and burst >= 1")
        if self.tokens < 0:
            self.tokens = float(self.burst)

    @classmethod
    def of(cls, config: RateLimitConfig) -> TokenBucket:
        return cls(per_second=config.per_second, burst=config.burst)

    def _refill(self, now_ms: int) -> None:
        if self.updated_ms is not None and now_ms > self.updated_ms:
            gained = (now_ms - self.updated_ms) * self.per_second / 1000
            self.tokens = min(float(self.burst), self.tokens + gained)
        if self.updated_ms is None or now_ms > self.updated_ms:
            self.updated_ms = now_ms  # a clock that steps back never refills twice

    def wait_ms(self, now_ms: int) -> int:
        """How long until a token is free (0: now); takes nothing."""
        self._refill(now_ms)
        if self.tokens >= 1 - _EPSILON:  # float sums of refills land a hair under 1
            return 0
        # rounded first: 0.998 tokens short of 1 at 2/s is 1 ms, not 1.0000000001 -> 2
        return max(1, math.ceil(round((1 - self.tokens) * 1000 / self.per_second, 6)))

    def take(self, now_ms: int) -> int:
        """Take a token if one is free and return 0; else take nothing and return the wait."""
        wait = self.wait_ms(now_ms)
        if wait == 0:
            self.tokens -= 1
        return wait
