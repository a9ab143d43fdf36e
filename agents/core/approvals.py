"""Operators' answers to commands awaiting approval (the approvals topic's records).

``stormwatch approve`` / ``stormwatch deny`` publish one ``ApprovalDecision`` keyed by the
command id; the agent applies it only while that command is awaiting approval and records the
outcome (approved, denied, or expired if the answer came too late) in the audit log with the
operator's name.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import Field, field_validator

from stormwatch.schemas.common import Contract

__all__ = ["COMMAND_ID_HELP", "ApprovalDecision", "Decision", "is_command_id"]

_COMMAND_ID = re.compile(r"[0-9a-f]{32}")
COMMAND_ID_HELP = "a command id is 32 lowercase hex digits, as shown in the incident timeline"


def is_command_id(text: str) -> bool:
    return _COMMAND_ID.fullmatch(text) is not None


class Decision(StrEnum):
    APPROVE = "approve"
    DENY = "deny"


class ApprovalDecision(Contract):
    command_id: str
    decision: Decision
    by: str = Field(min_length=1, max_length=200)
    at: datetime
    note: str | None = Field(default=None, max_length=2000)  # approval comment, or the denial reason

    @field_validator("command_id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not is_command_id(value):
            raise ValueError(f"invalid command id {value!r}: {COMMAND_ID_HELP}")
        return value
