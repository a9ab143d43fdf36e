"""stormwatch data contracts (pydantic v2); see docs/contracts.md."""

from schemas.alert import Alert, AlertStatus, InputFormat, Origin
from schemas.commands import (
    CommandResult,
    CommandStatus,
    MitigationCommand,
    OperatorAction,
    OperatorCommand,
)
from schemas.common import SCHEMA_VERSION, Contract, Severity
from schemas.dlq import DeadLetter, DeadLetterReason
from schemas.incident import (
    AlertChange,
    AlertChangeKind,
    Incident,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from schemas.matchers import Matcher, MatchOp
from schemas.silence import Silence

__all__ = [
    "SCHEMA_VERSION",
    "Alert",
    "AlertChange",
    "AlertChangeKind",
    "AlertStatus",
    "CommandResult",
    "CommandStatus",
    "Contract",
    "DeadLetter",
    "DeadLetterReason",
    "Incident",
    "IncidentEvent",
    "IncidentEventType",
    "IncidentSnapshot",
    "IncidentState",
    "InputFormat",
    "MatchOp",
    "Matcher",
    "MitigationCommand",
    "OperatorAction",
    "OperatorCommand",
    "Origin",
    "Severity",
    "Silence",
]
