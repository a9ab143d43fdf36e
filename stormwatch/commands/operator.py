"""Operator commands: ack, resolve, assign, annotate, severity, merge, split, join.

Each publishes one ``OperatorCommand`` to the commands topic and waits for the broker's ack;
the correlator applies it and records the outcome (or a refusal) in the audit log. The command
then waits, bounded, for that outcome, so a refusal (an unknown incident, a state that does not
allow the change) is an error the operator sees, not a line in a topic nobody reads. The printed
command id makes a retry safe: the correlator ignores a command id it has already applied, and a
retry with ``--command-id`` reports the outcome already recorded.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer
from pydantic import ValidationError

from stormwatch.commands.incidents import INCIDENT_ID_HELP, validate_incident_id
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import make_producer, open_tail, produce_sync, read_topic, require_topic
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import Severity
from stormwatch.schemas.dlq import DeadLetter, DeadLetterReason
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType

PUBLISH_TIMEOUT_S = 10.0  # waiting for the broker's ack
METADATA_TIMEOUT_S = 5.0  # finding the topic: also how long an unreachable cluster takes to report
DEFAULT_WAIT_S = 30.0  # for the outcome: the correlator answers within a second when it runs
_COMMAND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")

EXIT_REFUSED = 1
EXIT_NO_OUTCOME = 3
# Dead letters that answer an operator command: the incident is not held, or the command is invalid.
_REFUSING_LETTERS = frozenset({DeadLetterReason.UNKNOWN_INCIDENT, DeadLetterReason.INVALID_COMMAND})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the correlator did with a command: applied (an audit event) or refused, and why."""

    refused: bool
    text: str


def outcome_in_audit_event(value: bytes, command_id: str, incident_id: str | None = None) -> Outcome | None:
    """The outcome an incident event records for ``command_id``, if it is that command's event.

    With ``incident_id``, an applied command's outcome is the event of that incident: a split or a
    join also writes an event on the other incident of the link (the primary's ``unlinked``,
    ``member_added``) with the same request id, which may come first. A refusal counts wherever it is.
    """
    if command_id.encode() not in value:  # most events are about something else: skip decoding
        return None
    try:
        event = IncidentEvent.from_bytes(value)
    except ValidationError:
        return None
    # A split or join is answered by the linker's commands, which name it as their request.
    if command_id not in (event.details.get("command_id"), event.details.get("request")):
        return None
    if event.type is IncidentEventType.REFUSED:
        return Outcome(True, str(event.details.get("reason") or event.cause or "refused"))
    if incident_id is not None and event.incident_id != incident_id:
        return None
    return Outcome(False, f"{event.type.value} {event.incident_id} (event {event.seq})")


def outcome_in_dead_letter(value: bytes, command_id: str) -> Outcome | None:
    """A refusal, if this dead letter is ``command_id`` sent back (unknown incident, invalid)."""
    try:
        letter = DeadLetter.from_bytes(value)
        original = base64.b64decode(letter.original, validate=True)
    except (ValidationError, ValueError):
        return None
    if letter.reason not in _REFUSING_LETTERS or command_id.encode() not in original:
        return None
    return Outcome(True, f"{letter.detail} ({letter.reason.value})")


class OutcomeWatch:
    """Reads the audit log and the dead-letter topic from their current ends for one command's
    outcome. Opened before the command is sent, so the answer cannot slip past it."""

    def __init__(self, settings: Settings, command_id: str, incident_id: str | None = None) -> None:
        self._command_id = command_id
        self._incident_id = incident_id
        self._incidents = settings.topics.incidents
        self._consumer: Consumer = open_tail(
            settings, [settings.topics.incidents, settings.topics.dlq], timeout_s=METADATA_TIMEOUT_S
        )

    def wait(self, timeout_s: float) -> Outcome | None:
        """The outcome, or None when none arrived within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                msg = self._consumer.poll(min(left, 0.5))
                if msg is None or msg.error() is not None:
                    continue
                value = msg.value() or b""
                if msg.topic() == self._incidents:
                    found = outcome_in_audit_event(value, self._command_id, self._incident_id)
                else:
                    found = outcome_in_dead_letter(value, self._command_id)
                if found is not None:
                    return found
            return None
        finally:
            self.close()

    def close(self) -> None:
        self._consumer.close()


def recorded_outcome(settings: Settings, command_id: str, incident_id: str | None = None) -> Outcome | None:
    """The outcome the audit log already holds for ``command_id`` (a retry of a sent command)."""
    for msg in read_topic(settings, settings.topics.incidents, timeout_s=METADATA_TIMEOUT_S):
        found = outcome_in_audit_event(msg.value() or b"", command_id, incident_id)
        if found is not None:
            return found
    return None


def operator_name(by: str | None) -> str:
    """``--by``, else $USER: every change in the audit log names a person."""
    name = (by if by is not None else os.environ.get("USER", "")).strip()
    if not name:
        raise UserError("say who is making the change with --by NAME ($USER is not set)")
    return name


def command_id(given: str | None) -> str:
    """``--command-id`` (to retry a request safely) or a fresh uuid4."""
    if given is None:
        return str(uuid.uuid4())
    if not _COMMAND_ID.fullmatch(given):
        raise UserError(
            f"invalid --command-id {given!r}: use 1-128 characters from letters, digits and . _ : -, "
            "starting with a letter or digit"
        )
    return given


def publish_command(settings: Settings, command: OperatorCommand, key: str) -> None:
    """Send ``command`` to the commands topic, keyed by ``key``, and wait until Kafka has it."""
    topic = settings.topics.commands
    require_topic(settings, topic, METADATA_TIMEOUT_S)
    overrides: dict[str, Any] = {"linger.ms": 0, "message.timeout.ms": int(PUBLISH_TIMEOUT_S * 1000)}
    producer = make_producer(settings, **overrides)
    produce_sync(
        producer,
        topic,
        key,
        command.to_bytes(),
        headers=[("content-type", "application/json")],
        timeout_s=PUBLISH_TIMEOUT_S + 1,
    )


def _common(parser: argparse.ArgumentParser, *, note: bool = True) -> None:
    parser.add_argument("--by", metavar="NAME", help="who is making the change (default: $USER)")
    if note:
        parser.add_argument("--note", metavar="TEXT", help="a comment recorded with the change")
    parser.add_argument(
        "--command-id",
        metavar="ID",
        help="idempotency key: repeat a failed call with the same id to retry it safely (default: new uuid4)",
    )
    parser.add_argument(
        "--wait",
        type=_wait_seconds,
        default=DEFAULT_WAIT_S,
        metavar="SECONDS",
        help=f"how long to wait for the correlator's outcome (default: {DEFAULT_WAIT_S:g})",
    )
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="return once Kafka has the command, without waiting for its outcome",
    )


def _wait_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"--wait takes seconds between 0 and 3600, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    def incident_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = subparsers.add_parser(
            name, help=help_text, description=help_text.capitalize() + "."
        )
        p.add_argument("incident_id", metavar="INCIDENT_ID", help=INCIDENT_ID_HELP)
        return p

    p = incident_parser("ack", "acknowledge an incident")
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.ACKNOWLEDGE)

    p = incident_parser("resolve", "resolve an incident")
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.RESOLVE)

    p = incident_parser("assign", "assign an incident to someone")
    p.add_argument("assignee", metavar="ASSIGNEE", help="who owns the incident from now on")
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.ASSIGN)

    p = incident_parser("annotate", "add a note to an incident's timeline")
    p.add_argument("text", metavar="NOTE", help="the note")
    _common(p, note=False)
    p.set_defaults(handler=run_operator, action=OperatorAction.ANNOTATE)

    p = incident_parser("severity", "override an incident's severity")
    p.add_argument(
        "level",
        metavar="SEVERITY",
        choices=[s.value for s in Severity],
        help="critical, error, warning or info",
    )
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.SET_SEVERITY)

    p = incident_parser("merge", "merge an incident into another one")
    p.add_argument("--into", required=True, metavar="OTHER", help="the incident that absorbs this one")
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.MERGE)

    p = incident_parser(
        "split", "take an incident out of the linked incident it is a member of (never linked back by itself)"
    )
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.SPLIT)

    p = incident_parser("join", "link an incident (with its members) into another one's linked incident")
    p.add_argument(
        "--into",
        required=True,
        metavar="OTHER",
        help="an incident of the linked incident to join (same scope)",
    )
    _common(p)
    p.set_defaults(handler=run_operator, action=OperatorAction.JOIN)


def build_command(args: argparse.Namespace, *, now: datetime | None = None) -> OperatorCommand:
    """The OperatorCommand the parsed arguments ask for (validated, not yet sent)."""
    action: OperatorAction = args.action
    incident_id = validate_incident_id(args.incident_id)
    fields: dict[str, Any] = {}
    note = getattr(args, "note", None)
    if action is OperatorAction.ASSIGN:
        assignee = args.assignee.strip()
        if not assignee:
            raise UserError("ASSIGNEE must not be empty")
        fields["assignee"] = assignee
    elif action is OperatorAction.ANNOTATE:
        note = args.text
        if not note.strip():
            raise UserError("NOTE must not be empty")
    elif action is OperatorAction.SET_SEVERITY:
        fields["severity"] = Severity(args.level)
    elif action in (OperatorAction.MERGE, OperatorAction.JOIN):
        target = validate_incident_id(args.into)
        if target == incident_id:
            raise UserError(
                f"cannot {action.value} {incident_id} into itself; --into must name another incident"
            )
        fields["merge_into" if action is OperatorAction.MERGE else "link_into"] = target
    return OperatorCommand(
        command_id=command_id(args.command_id),
        action=action,
        incident_id=incident_id,
        by=operator_name(args.by),
        at=now or datetime.now(UTC),
        note=note or None,
        **fields,
    )


def run_operator(args: argparse.Namespace, settings: Settings) -> int:
    """Send the command and, unless ``--no-wait``, report its outcome.

    Exit 0 when applied, 1 when refused (the reason on stderr), 3 when no outcome arrived in
    time (the command is in the log and is applied whenever a correlator reads it).
    """
    command = build_command(args)
    assert command.incident_id is not None  # set for every incident action
    name = args.command
    if args.no_wait:
        publish_command(settings, command, command.incident_id)
        print(command.command_id)
        return 0
    target = command.incident_id
    outcome = recorded_outcome(settings, command.command_id, target) if args.command_id else None
    if outcome is None:
        watch = OutcomeWatch(settings, command.command_id, target)
        try:
            publish_command(settings, command, command.incident_id)
        except BaseException:
            watch.close()
            raise
        print(command.command_id, flush=True)
        outcome = watch.wait(args.wait)
    else:
        print(command.command_id)
        print(f"stormwatch {name}: this command id was handled before; not sent again", file=sys.stderr)
    if outcome is None:
        print(
            f"stormwatch {name}: no outcome within {args.wait:g}s; the command is in "
            f"{settings.topics.commands} and is applied when a correlator reads it: is the pipeline "
            f"running? Check with `stormwatch timeline {command.incident_id}`",
            file=sys.stderr,
        )
        return EXIT_NO_OUTCOME
    if outcome.refused:
        print(f"stormwatch {name}: refused: {outcome.text}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"stormwatch {name}: {outcome.text}", file=sys.stderr)
    return 0
