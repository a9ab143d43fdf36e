"""`stormwatch silence add|expire|list`: mute alerts by label matchers for a time range.

add and expire publish an ``OperatorCommand`` the correlator applies (it owns silence state and
writes the compacted silences topic); list reads that topic, where the latest value per
silence id wins and a tombstone means deleted.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from stormwatch.commands.operator import command_id, operator_name, publish_command
from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_topic
from stormwatch.output import ProgressLine, dump_json, human_time, render_table, terminal_width, warn
from stormwatch.readmodel.model import silence_state as state_at_ms
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.durations import DURATION_HELP, parse_duration
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence

TIME_HELP = "RFC 3339 time, e.g. 2025-01-31T18:00:00Z (no zone means UTC)"


def parse_time(text: str, flag: str) -> datetime:
    """An RFC 3339 / ISO 8601 time as an aware UTC datetime; a time without zone is UTC."""
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UserError(f"invalid time {text!r} for {flag}: expected an {TIME_HELP}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_matchers(texts: list[str]) -> list[Matcher]:
    """Matchers from the command line, refusing sets that would silence every alert."""
    matchers = []
    for text in texts:
        try:
            matchers.append(Matcher.parse(text))
        except ValidationError as exc:
            reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
            raise UserError(f"invalid matcher {text!r}: {reasons}") from None
        except ValueError as exc:
            raise UserError(str(exc)) from None
    if all(m.matches({}) for m in matchers):
        raise UserError(
            "these matchers match every alert (each one also matches a missing label); "
            'add one that needs a label value, e.g. alertname="HighLatency"'
        )
    return matchers


def silence_state(silence: Silence, now: datetime) -> str:
    """active, pending (starts later) or expired (ended, or expired early by an operator).

    Whether it is active is the Silence's own answer, the one the correlator mutes alerts by;
    the read model (and so the Alertmanager API) answers with the same function.
    """
    return state_at_ms(silence, ms_from_dt(now))


def register(subparsers: Any) -> None:
    root = subparsers.add_parser(
        "silence", help="add, expire and list silences", description="Manage silences."
    )
    sub = root.add_subparsers(dest="silence_command", metavar="SUBCOMMAND")
    sub.required = True

    add = sub.add_parser(
        "add",
        help="mute alerts matching all MATCHERs for a time range",
        description="Mute alerts matching every MATCHER from --starts for --duration or until --until.",
    )
    add.add_argument(
        "matchers", nargs="+", metavar="MATCHER", help="NAME=VALUE, NAME!=VALUE, NAME=~REGEX or NAME!~REGEX"
    )
    length = add.add_mutually_exclusive_group(required=True)
    length.add_argument("--duration", metavar="DURATION", help="how long, e.g. 30m, 2h, 1d")
    length.add_argument("--until", metavar="TIME", help=f"when it ends: {TIME_HELP}")
    add.add_argument("--starts", metavar="TIME", help=f"when it starts (default: now): {TIME_HELP}")
    add.add_argument("--by", metavar="NAME", help="who creates it (default: $USER)")
    add.add_argument(
        "--comment", required=True, metavar="TEXT", help="why the alerts are muted; shown by `silence list`"
    )
    add.add_argument(
        "--id", dest="silence_id", metavar="SILENCE_ID", help="silence id (default: a new uuid4)"
    )
    add.add_argument("--command-id", metavar="ID", help="idempotency key for a retry (default: a new uuid4)")
    add.set_defaults(handler=run_add)

    expire = sub.add_parser("expire", help="end a silence now", description="End a silence now.")
    expire.add_argument(
        "silence_id", metavar="SILENCE_ID", help="as printed by `silence add` and `silence list`"
    )
    expire.add_argument("--by", metavar="NAME", help="who expires it (default: $USER)")
    expire.add_argument(
        "--command-id", metavar="ID", help="idempotency key for a retry (default: a new uuid4)"
    )
    expire.set_defaults(handler=run_expire)

    lst = sub.add_parser("list", help="show silences", description="Show active and pending silences.")
    lst.add_argument("--all", action="store_true", help="include expired silences")
    lst.add_argument("--json", action="store_true", help="print a JSON array of silences")
    lst.set_defaults(handler=run_list)


def _silence_id(given: str | None) -> str:
    if given is None:
        return str(uuid.uuid4())
    given = given.strip()
    if not given or len(given) > 128 or any(c.isspace() or not c.isprintable() for c in given):
        raise UserError(f"invalid --id {given!r}: use 1-128 printable characters without spaces")
    return given


def build_silence(args: argparse.Namespace, now: datetime) -> Silence:
    """The Silence the parsed ``silence add`` arguments describe, validated against ``now``."""
    matchers = parse_matchers(args.matchers)
    starts = parse_time(args.starts, "--starts") if args.starts else now
    if args.duration is not None:
        try:
            ms = parse_duration(args.duration)
        except ValueError as exc:
            raise UserError(f"--duration: {exc}") from None
        if ms <= 0:
            raise UserError(f"--duration must be longer than zero, got {args.duration!r}; {DURATION_HELP}")
        ends = starts + timedelta(milliseconds=ms)
    else:
        ends = parse_time(args.until, "--until")
    check_silence_times(starts, ends, now)
    comment = args.comment.strip()
    if not comment:
        raise UserError("--comment must say why the alerts are silenced")
    return new_silence(
        silence_id=_silence_id(args.silence_id),
        matchers=matchers,
        starts=starts,
        ends=ends,
        created_by=operator_name(args.by),
        comment=comment,
        now=now,
    )


def check_silence_times(starts: datetime, ends: datetime, now: datetime) -> None:
    """A silence must end after it starts, and after ``now``."""
    if ends <= starts:
        raise UserError(f"the silence would end ({ends.isoformat()}) before it starts ({starts.isoformat()})")
    if ends <= now:
        raise UserError(
            f"the silence would already be over (it ends {ends.isoformat()}, now is {now.isoformat()})"
        )


def new_silence(
    *,
    silence_id: str,
    matchers: list[Matcher],
    starts: datetime,
    ends: datetime,
    created_by: str,
    comment: str,
    now: datetime,
) -> Silence:
    """A Silence checked as `silence add` and the gateway's POST /api/v2/silences both check it:
    matchers that do not match every alert, an end after the start and after ``now``."""
    if all(m.matches({}) for m in matchers):
        raise UserError(
            "these matchers match every alert (each one also matches a missing label); "
            'add one that needs a label value, e.g. alertname="HighLatency"'
        )
    check_silence_times(starts, ends, now)
    return Silence(
        silence_id=silence_id,
        matchers=matchers,
        starts_at=starts,
        ends_at=ends,
        created_by=created_by,
        comment=comment,
    )


def publish_silence_add(
    settings: Settings, silence: Silence, *, now: datetime, command_id_: str | None = None
) -> OperatorCommand:
    """Send the SILENCE_ADD command the correlator applies (and writes to the silences topic);
    the one path `silence add` and the gateway's POST /api/v2/silences take."""
    command = OperatorCommand(
        command_id=command_id(command_id_),
        action=OperatorAction.SILENCE_ADD,
        by=silence.created_by,
        at=now,
        silence=silence,
    )
    publish_command(settings, command, silence.silence_id)
    return command


def publish_silence_expire(
    settings: Settings, silence_id: str, *, by: str, now: datetime, command_id_: str | None = None
) -> OperatorCommand:
    """Send the SILENCE_EXPIRE command; the one path `silence expire` and the gateway's
    DELETE /api/v2/silence/{id} take."""
    command = OperatorCommand(
        command_id=command_id(command_id_),
        action=OperatorAction.SILENCE_EXPIRE,
        by=by,
        at=now,
        silence_id=silence_id,
    )
    publish_command(settings, command, silence_id)
    return command


def run_add(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    silence = build_silence(args, now)
    publish_silence_add(settings, silence, now=now, command_id_=args.command_id)
    print(silence.silence_id)
    return 0


def run_expire(args: argparse.Namespace, settings: Settings) -> int:
    silence_id = args.silence_id.strip()
    if not silence_id:
        raise UserError("SILENCE_ID must not be empty; find it with `stormwatch silence list`")
    command = publish_silence_expire(
        settings, silence_id, by=operator_name(args.by), now=datetime.now(UTC), command_id_=args.command_id
    )
    print(command.command_id)
    return 0


def load_silences(settings: Settings) -> list[Silence]:
    """The current silences: the latest value per key of the compacted topic, tombstones removed."""
    topic = settings.topics.silences
    latest: dict[bytes, bytes | None] = {}
    progress = ProgressLine(f"reading {topic}")
    try:
        for msg in read_topic(settings, topic, progress=progress.update):
            key = msg.key()
            if key is not None:
                latest[key] = msg.value()
    finally:
        progress.close()
    silences = []
    bad = 0
    for value in latest.values():
        if value is None:
            continue
        try:
            silences.append(Silence.from_bytes(value))
        except ValidationError:
            bad += 1
    if bad:
        warn("silence list", f"skipped {bad} record(s) of {topic} that are not silences")
    return silences


def silence_summary(silence: Silence, now: datetime) -> dict[str, Any]:
    """The JSON form in ``silence list --json``: the Silence contract plus its computed state."""
    return {"state": silence_state(silence, now), **silence.model_dump(mode="json")}


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    now = datetime.now(UTC)
    silences = load_silences(settings)
    shown = [s for s in silences if args.all or silence_state(s, now) != "expired"]
    shown.sort(key=lambda s: (s.starts_at, s.silence_id), reverse=True)
    if args.json:
        print(dump_json([silence_summary(s, now) for s in shown]))
        return 0
    if not shown:
        hidden = len(silences)
        print("no silences" + (f" (and {hidden} expired; show them with --all)" if hidden else ""))
        return 0
    print(render_silence_table(shown, now, max_width=terminal_width(sys.stdout)))
    return 0


def render_silence_table(silences: list[Silence], now: datetime, *, max_width: int | None = None) -> str:
    rows = [
        (
            s.silence_id,
            silence_state(s, now),
            " ".join(str(m) for m in s.matchers),
            human_time(s.starts_at, now),
            human_time(
                s.expired_at if s.expired_at is not None and s.expired_at < s.ends_at else s.ends_at, now
            ),
            s.created_by,
            s.comment,
        )
        for s in silences
    ]
    headers = ("SILENCE", "STATE", "MATCHERS", "STARTS (UTC)", "ENDS (UTC)", "BY", "COMMENT")
    return render_table(headers, rows, max_width=max_width)
