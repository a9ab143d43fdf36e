"""Operator commands: ack, resolve, assign, annotate, severity, merge.

Each publishes one ``OperatorCommand`` to the commands topic and waits for the broker's ack;
the correlator applies it and records the outcome (or a refusal) in the audit log. The printed
command id makes a retry safe: the correlator ignores a command id it has already applied.
"""

from __future__ import annotations

import argparse
import os
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from stormwatch.commands.incidents import INCIDENT_ID_HELP, validate_incident_id
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import make_producer, produce_sync, require_topic
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import Severity

PUBLISH_TIMEOUT_S = 10.0  # waiting for the broker's ack
METADATA_TIMEOUT_S = 5.0  # finding the topic: also how long an unreachable cluster takes to report
_COMMAND_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


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
    elif action is OperatorAction.MERGE:
        target = validate_incident_id(args.into)
        if target == incident_id:
            raise UserError(f"cannot merge {incident_id} into itself; --into must name another incident")
        fields["merge_into"] = target
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
    command = build_command(args)
    assert command.incident_id is not None  # set for every incident action
    publish_command(settings, command, command.incident_id)
    print(command.command_id)
    return 0
