"""`stormwatch incidents` and `stormwatch timeline`: incidents rebuilt by replaying the audit log.

Both read the incident topic from the beginning to its current end (read_committed) and fold it
with streams.projection, so what they show is exactly what the log proves, integrity warnings
included. Tables are for people; ``--json`` output is a stable contract (docs/cli.md).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from stormwatch.commands.args import positive_int
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_topic
from stormwatch.output import (
    ProgressLine,
    clean,
    dump_json,
    human_time,
    render_table,
    terminal_width,
    warn,
)
from stormwatch.schemas.common import SCHEMA_VERSION
from stormwatch.schemas.incident import Incident, IncidentEvent, IncidentEventType, IncidentState
from stormwatch.schemas.incident_id import HELP, IncidentId, InvalidIncidentId
from stormwatch.streams.core.projection import IncidentProjection, IntegrityIssue, to_summary

INCIDENT_ID_HELP = HELP  # for the INCIDENT_ID arguments here and in commands.operator
MAX_WARNINGS = 20  # integrity issues printed one per line; the rest are counted
MAX_MEMBERS_SHOWN = 10  # a timeline header lists this many members; --json has them all


def validate_incident_id(text: str) -> str:
    """``text`` as an incident id, else UserError saying which part is wrong (schemas.incident_id).

    Checked by ``IncidentId`` but returned as a plain ``str``: the console builds a command from it
    per request, and pydantic-core caches its copy of a str subclass given for a ``str`` field for good."""
    try:
        return str(IncidentId(text))
    except InvalidIncidentId as exc:
        raise UserError(str(exc)) from None


def register(subparsers: Any) -> None:
    states = [s.value for s in IncidentState]
    p = subparsers.add_parser(
        "incidents",
        help="list incidents rebuilt from the audit log",
        description="Replay the incident topic and list incidents, newest first.",
    )
    p.add_argument(
        "--state",
        action="extend",
        nargs="+",
        choices=states,
        metavar="STATE",
        help=f"only incidents in these states (repeatable; any of: {', '.join(states)})",
    )
    p.add_argument("--json", action="store_true", help="print a JSON array of incident summaries")
    p.add_argument("--limit", type=positive_int, metavar="N", help="show at most N incidents (the newest)")
    p.set_defaults(handler=run_incidents)

    t = subparsers.add_parser(
        "timeline",
        help="show every event of one incident",
        description="Replay the incident topic and show one incident's events in order.",
    )
    t.add_argument("incident_id", metavar="INCIDENT_ID", help=INCIDENT_ID_HELP)
    t.add_argument("--json", action="store_true", help="print the events as a JSON array")
    t.set_defaults(handler=run_timeline)


def load_projection(
    settings: Settings, command: str, *, keep_events: bool, only: str | None = None
) -> IncidentProjection:
    """Read the whole incident topic into a projection, warning about records it cannot use.

    ``only`` restricts the fold to one incident: other records are skipped before decoding
    (every event of an incident contains its id), which keeps ``timeline`` fast on a long log.
    """
    topic = settings.topics.incidents
    projection = IncidentProjection(keep_events=keep_events)
    needle = only.encode() if only is not None else None
    undecodable: list[str] = []
    progress = ProgressLine(f"reading {topic}")
    try:
        for msg in read_topic(settings, topic, progress=progress.update):
            value = msg.value()
            if needle is not None and (value is None or needle not in value):
                continue
            if not value:
                undecodable.append(f"partition {msg.partition()} offset {msg.offset()}: empty record")
                continue
            try:
                event = IncidentEvent.from_bytes(value)
            except ValidationError as exc:
                undecodable.append(
                    f"partition {msg.partition()} offset {msg.offset()}: {_why_invalid(value, exc)}"
                )
                continue
            if only is not None and event.incident_id != only:
                continue
            projection.apply(event)
    finally:
        progress.close()
    if undecodable:
        warn(
            command,
            f"skipped {len(undecodable)} record(s) of {topic} that are not incident events; "
            f"first: {undecodable[0]}",
        )
    return projection


def _why_invalid(value: bytes, exc: ValidationError) -> str:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "not JSON"
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, int) and version > SCHEMA_VERSION:
        return f"schema_version {version} is newer than this stormwatch reads ({SCHEMA_VERSION}); upgrade it"
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "record"
    return f"{where}: {first['msg']} ({exc.error_count()} error(s))"


def report_issues(command: str, issues: list[IntegrityIssue], duplicates: int) -> None:
    """Integrity problems go to stderr as warnings, so stdout stays clean for the table or JSON."""
    for issue in issues[:MAX_WARNINGS]:
        warn(command, f"audit log integrity: {issue}")
    if len(issues) > MAX_WARNINGS:
        warn(command, f"audit log integrity: {len(issues) - MAX_WARNINGS} more issue(s) not shown")
    if duplicates:
        warn(command, f"ignored {duplicates} duplicate event(s) (same incident, seq and event_id)")


def _newest_first(incidents: list[Incident]) -> list[Incident]:
    return sorted(incidents, key=lambda i: (i.opened_at, i.incident_id), reverse=True)


def run_incidents(args: argparse.Namespace, settings: Settings) -> int:
    projection = load_projection(settings, "incidents", keep_events=False)
    report_issues("incidents", projection.issues(), projection.duplicates)
    everything = projection.incidents()
    wanted = set(args.state or [])
    selected = _newest_first([i for i in everything if not wanted or i.state.value in wanted])
    shown = selected[: args.limit] if args.limit else selected
    if args.json:
        print(dump_json([to_summary(i) for i in shown]))
        return 0
    if not shown:
        where = f"in state {', '.join(sorted(wanted))} " if wanted else ""
        print(f"no incidents {where}in {settings.topics.incidents} ({len(everything)} in total)")
        return 0
    print(render_incident_table(shown, datetime.now(UTC), max_width=terminal_width(sys.stdout)))
    if len(shown) < len(selected):
        print(f"showing the {len(shown)} newest of {len(selected)} incidents; raise --limit to see more")
    return 0


def render_incident_table(incidents: list[Incident], now: datetime, *, max_width: int | None = None) -> str:
    """One row per incident. A ROOT CAUSE column appears only when some incident is linked
    (issue #12), so tables without linking stay as they were."""
    linking = any(i.linked_into or i.members or i.root_cause for i in incidents)
    rows = [
        (
            i.incident_id,
            i.state.value if i.merged_into is None else f"{i.state.value} (merged)",
            i.severity.value,
            f"{i.firing_count}/{i.alert_count}" + (f" (+{i.muted} muted)" if i.muted else ""),
            human_time(i.opened_at, now),
            i.assignee,
            *((_root_cell(i),) if linking else ()),
            i.title,
        )
        for i in incidents
    ]
    headers = (
        "INCIDENT",
        "STATE",
        "SEVERITY",
        "FIRING/ALERTS",
        "OPENED (UTC)",
        "ASSIGNEE",
        *(("ROOT CAUSE",) if linking else ()),
        "TITLE",
    )
    return render_table(headers, rows, max_width=max_width)


def _root_cell(incident: Incident) -> str:
    """A member points at its primary; a primary names its root cause and how many it links."""
    if incident.linked_into:
        return f"-> {incident.linked_into}"
    root = incident.root_cause
    text = f"{root.kind}/{root.name}" if root is not None else "-"
    return f"{text} (+{len(incident.members)} linked)" if incident.members else text


def run_timeline(args: argparse.Namespace, settings: Settings) -> int:
    incident_id = validate_incident_id(args.incident_id)
    projection = load_projection(settings, "timeline", keep_events=True, only=incident_id)
    incident = projection.get(incident_id)
    if incident is None:
        raise UserError(
            f"no incident {incident_id} in topic {settings.topics.incidents}; "
            "list them with `stormwatch incidents`"
        )
    report_issues("timeline", projection.issues(), projection.duplicates)
    events = projection.timeline(incident_id)
    if args.json:
        print(dump_json([e.model_dump(mode="json") for e in events]))
        return 0
    print(render_timeline(incident, events, datetime.now(UTC), max_width=terminal_width(sys.stdout)))
    return 0


def render_timeline(
    incident: Incident, events: list[IncidentEvent], now: datetime, *, max_width: int | None = None
) -> str:
    """A header describing the incident as it stands, then one row per event."""
    labels = ", ".join(f'{k}="{v}"' for k, v in sorted(incident.group_labels.items()))
    header = [
        f"{incident.incident_id}  {clean(incident.title)}",
        f"  state {incident.state.value}, severity {incident.severity.value}, "
        f"{incident.firing_count} of {incident.alert_count} alert(s) firing, "
        f"assignee {clean(incident.assignee or '-')}, reopened {incident.reopen_count}x",
        f"  group {{{clean(labels)}}}, rule {clean(incident.rule)}",
        f"  opened {human_time(incident.opened_at, now)}, "
        f"last event {human_time(incident.last_event_at, now)}",
    ]
    if incident.merged_into:
        header.append(f"  merged into {incident.merged_into}")
    if incident.linked_into:
        header.append(f"  linked into {incident.linked_into} (its primary)")
    if incident.members:
        shown = ", ".join(incident.members[:MAX_MEMBERS_SHOWN])
        more = len(incident.members) - MAX_MEMBERS_SHOWN
        header.append(
            f"  members ({len(incident.members)}): {shown}" + (f" +{more} more" if more > 0 else "")
        )
    if incident.muted:
        header.append(
            f"  muted {incident.muted} alert(s) of other groups by inhibition (see its muted events)"
        )
    if incident.root_cause is not None:
        root = incident.root_cause
        header.append(
            f"  root cause {clean(root.component)} ({clean(root.decided_by)}, "
            f"first firing {human_time(root.first_firing_at, now)})"
        )
    for note in incident.notes:
        header.append(f"  note: {clean(note)}")
    rows = [
        (
            e.seq,
            e.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            e.type.value,
            _states(e),
            e.actor,
            _alert_summary(e),
            _cause(e),
        )
        for e in events
    ]
    table = render_table(
        ("SEQ", "AT (UTC)", "EVENT", "STATE", "ACTOR", "ALERTS", "CAUSE"), rows, max_width=max_width
    )
    return "\n".join(header) + "\n\n" + table


def _states(event: IncidentEvent) -> str:
    if event.from_state is event.to_state:
        return event.to_state.value
    return f"{event.from_state.value if event.from_state else '-'} -> {event.to_state.value}"


def _alert_summary(event: IncidentEvent) -> str:
    counts = Counter(change.change.value for change in event.alerts)
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "-"


# A notification's outcome (issue #13) shows what a reader of the timeline needs, not its ids.
_NOTIFY_SHOWN = ("receiver", "integration", "attempt", "latency_ms", "delivery_latency_ms")
_NOTIFY_EVENTS = (IncidentEventType.NOTIFIED, IncidentEventType.NOTIFY_FAILED)


def _cause(event: IncidentEvent) -> str:
    """The event's cause, plus its scalar details (note, merged_into, command_id ...) as key=value."""
    details = event.details
    if event.type in _NOTIFY_EVENTS:
        details = {k: details[k] for k in _NOTIFY_SHOWN if k in details}  # the cause has the reason
    extras = [
        f"{k}={v}"
        for k, v in details.items()
        if isinstance(v, str | int | float | bool) and v not in ("", None)
    ]
    text = event.cause if not event.rule else f"{event.cause} (rule {event.rule})"
    return f"{text} [{', '.join(extras)}]" if extras else text
