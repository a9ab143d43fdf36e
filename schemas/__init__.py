"""stormwatch data contracts (pydantic v2); see docs/contracts.md."""

from stormwatch.schemas.alert import Alert, AlertStatus, InputFormat, Origin
from stormwatch.schemas.commands import (
    CommandResult,
    CommandStatus,
    MitigationCommand,
    OperatorAction,
    OperatorCommand,
)
from stormwatch.schemas.common import SCHEMA_VERSION, Contract, Severity
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    Incident,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from stormwatch.schemas.matchers import Matcher, MatchOp
from stormwatch.schemas.silence import Silence

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
