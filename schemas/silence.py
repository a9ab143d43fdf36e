"""Silences: operator-declared matchers that mute alerts for a time range."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from stormwatch.schemas.common import Contract, ms_from_dt
from stormwatch.schemas.matchers import Matcher


class Silence(Contract):
    silence_id: str
    matchers: list[Matcher] = Field(min_length=1)
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str = ""
    expired_at: datetime | None = None  # set when an operator expires it early

    def is_active_ms(self, at_ms: int) -> bool:
        """Whether it mutes alerts at an epoch-ms time: started, not ended, not expired early.

        The one definition, in whole milliseconds as the correlator keeps event time (it asks
        for every alert, so the expiry is only converted when the rest already holds).
        """
        if not ms_from_dt(self.starts_at) <= at_ms < ms_from_dt(self.ends_at):
            return False
        expired = self.expired_at
        return expired is None or at_ms < ms_from_dt(expired)

    def is_active(self, at: datetime) -> bool:
        """``is_active_ms`` at a datetime (to the millisecond), so what `stormwatch silence list`
        shows as active is exactly what the correlator mutes."""
        return self.is_active_ms(ms_from_dt(at))
