"""Silences: operator-declared matchers that mute alerts for a time range."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from stormwatch.schemas.common import Contract
from stormwatch.schemas.matchers import Matcher


class Silence(Contract):
    silence_id: str
    matchers: list[Matcher] = Field(min_length=1)
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str = ""
    expired_at: datetime | None = None  # set when an operator expires it early
