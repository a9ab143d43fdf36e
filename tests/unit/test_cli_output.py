"""CLI rendering and argument handling that needs no broker: tables, times, JSON, validation."""

from __future__ import annotations

import argparse
import io
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

import stormwatch.cli
from stormwatch.commands import incidents, operator, silences
from stormwatch.errors import UserError
from stormwatch.output import (
    ProgressLine,
    clean,
    display_width,
    dump_json,
    human_duration,
    human_time,
    render_table,
    rfc3339,
    truncate,
)
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.commands import OperatorAction
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from stormwatch.schemas.matchers import MatchOp
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.projection import IncidentProjection

NOW = datetime(2025, 1, 31, 12, 0, 0, tzinfo=UTC)
INC = "inc-0123456789abcdef-1"
OTHER = "inc-fedcba9876543210-1"
OUR_MODULES = [
    "stormwatch.commands.incidents",
    "stormwatch.commands.operator",
    "stormwatch.commands.silences",
]


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse with a fresh parser holding only this helper's commands (cli.py is not ours to edit)."""
    parser = argparse.ArgumentParser(prog="stormwatch")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (incidents, operator, silences):
        module.register(sub)
    return parser.parse_args(argv)


# ---------------------------------------------------------------- times


def test_rfc3339_is_utc_with_milliseconds() -> None:
    assert rfc3339(None) is None
    assert rfc3339(datetime(2025, 1, 31, 12, 0, 5, 250_999, tzinfo=UTC)) == "2025-01-31T12:00:05.250Z"
    assert rfc3339(datetime(2025, 1, 31, 12, 0, 5)) == "2025-01-31T12:00:05.000Z"  # naive means UTC
    plus2 = datetime(2025, 1, 31, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert rfc3339(plus2) == "2025-01-31T12:00:00.000Z"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (0, "0s"),
        (59.9, "59s"),
        (60, "1m00s"),
        (192, "3m12s"),
        (3600, "1h00m"),
        (7500, "2h05m"),
        (90061, "1d01h"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_time() -> None:
    assert human_time(None, NOW) == "-"
    assert human_time(NOW - timedelta(minutes=3, seconds=12), NOW) == "2025-01-31 11:56:48 (3m12s ago)"
    assert human_time(NOW + timedelta(hours=2), NOW) == "2025-01-31 14:00:00 (in 2h00m)"


# ---------------------------------------------------------------- tables


def test_clean_makes_untrusted_text_one_safe_line() -> None:
    assert clean("plain täxt") == "plain täxt"
    assert clean("two\nlines\tand tab") == "two lines and tab"
    assert clean("\x1b[31mred") == "\\x1b[31mred"
    assert clean(None) == "None"


def test_width_counts_wide_characters_twice() -> None:
    assert display_width("abc") == 3
    assert display_width("日本") == 4
    assert display_width("e\u0301") == 1  # combining accent
    assert truncate("日本語テキスト", 7) == "日本語…"
    assert truncate("short", 10) == "short"
    assert truncate("abcdef", 0) == ""


def test_render_table_aligns_columns() -> None:
    text = render_table(
        ("ID", "STATE", "TITLE"), [("inc-1", "open", "db down"), ("inc-22", None, "日本 api")]
    )
    lines = text.split("\n")
    assert lines[0] == "ID      STATE  TITLE"
    assert lines[1] == "inc-1   open   db down"
    assert lines[2] == "inc-22  -      日本 api"
    assert render_table((), []) == ""


def test_render_table_cuts_only_the_last_column_to_the_width() -> None:
    rows = [("a", "x" * 50)]
    text = render_table(("K", "V"), rows, max_width=20)
    assert text.split("\n")[1] == "a  " + "x" * 16 + "…"
    assert all(display_width(line) <= 20 for line in text.split("\n"))


def test_render_table_keeps_rows_on_one_line() -> None:
    text = render_table(("K", "V"), [("a", "line1\nline2\x1b[0m")])
    assert text.count("\n") == 1
    assert "\x1b" not in text


def test_render_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells, expected 3"):
        render_table(("A", "B", "C"), [("1", "2")])


def test_dump_json_keeps_key_order_and_parses_back() -> None:
    data = [{"z": 1, "a": None, "t": "2025-01-31T12:00:00.000Z"}]
    text = dump_json(data)
    assert orjson.loads(text) == data
    assert text.index('"z"') < text.index('"a"')
    assert "\n" in text


# ---------------------------------------------------------------- progress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_draws_after_the_delay_and_erases_itself() -> None:
    stream = FakeTty()
    line = ProgressLine("reading t", stream=stream, delay_s=0.0)
    line.update(5, 10)
    assert stream.getvalue() == "\r\x1b[2Kreading t: 5/10 records"
    line.close()
    assert stream.getvalue().endswith("\r\x1b[2K")


def test_progress_line_is_silent_off_a_terminal_and_for_quick_reads() -> None:
    pipe = io.StringIO()
    ProgressLine("x", stream=pipe, delay_s=0.0).update(1, 2)
    assert pipe.getvalue() == ""
    tty = FakeTty()
    quick = ProgressLine("x", stream=tty, delay_s=60.0)
    quick.update(1, 2)
    quick.close()
    assert tty.getvalue() == ""


# ---------------------------------------------------------------- incidents / timeline rendering


def lifecycle() -> list[IncidentEvent]:
    """opened (2 alerts) -> acknowledged -> annotated -> resolved, one minute apart."""
    steps: list[tuple[IncidentEventType, IncidentState | None, IncidentState, str, dict[str, object]]] = [
        (IncidentEventType.OPENED, None, IncidentState.OPEN, "correlator", {}),
        (IncidentEventType.ACKNOWLEDGED, IncidentState.OPEN, IncidentState.ACKNOWLEDGED, "operator:al", {}),
        (IncidentEventType.ANNOTATED, IncidentState.ACKNOWLEDGED, IncidentState.ACKNOWLEDGED, "operator:al",
         {"note": "db failover\nin progress", "command_id": "c-1"}),
        (IncidentEventType.RESOLVED, IncidentState.ACKNOWLEDGED, IncidentState.RESOLVED, "correlator", {}),
    ]  # fmt: skip
    events = []
    for seq, (etype, before, after, actor, details) in enumerate(steps, start=1):
        t = NOW + timedelta(minutes=seq)
        change = AlertChangeKind.JOINED if seq == 1 else AlertChangeKind.RESOLVED
        alerts = (
            [
                AlertChange(
                    fingerprint=fp, change=change, status=AlertStatus.FIRING, severity=Severity.CRITICAL, at=t
                )
                for fp in ("fp-a", "fp-b")
            ]
            if seq in (1, 4)
            else []
        )
        snapshot = IncidentSnapshot(
            state=after,
            severity=Severity.CRITICAL,
            title="HighLatency on api",
            group_key='{service="api"}',
            group_labels={"service": "api"},
            rule="default",
            alert_count=2,
            firing_count=0 if seq == 4 else 2,
            opened_at=NOW + timedelta(minutes=1),
            acknowledged_at=NOW + timedelta(minutes=2) if seq >= 2 else None,
            resolved_at=t if seq == 4 else None,
            assignee="bob",
        )
        events.append(
            IncidentEvent(
                event_id=f"{seq:032x}",
                incident_id=INC,
                seq=seq,
                type=etype,
                from_state=before,
                to_state=after,
                at=t,
                actor=actor,
                cause=f"{etype.value} in the test",
                rule="default" if actor == "correlator" else None,
                alerts=alerts,
                details=details,
                snapshot=snapshot,
            )
        )
    return events


def test_incident_table_lists_the_essentials() -> None:
    projection = IncidentProjection()
    for event in lifecycle():
        projection.apply(event)
    inc = projection.get(INC)
    assert inc is not None
    text = incidents.render_incident_table([inc], NOW + timedelta(hours=1))
    header, row = text.split("\n")
    assert header.split() == [
        "INCIDENT",
        "STATE",
        "SEVERITY",
        "FIRING/ALERTS",
        "OPENED",
        "(UTC)",
        "ASSIGNEE",
        "TITLE",
    ]
    assert row.startswith(INC)
    for part in (
        "resolved",
        "critical",
        "0/2",
        "2025-01-31 12:01:00 (59m00s ago)",
        "bob",
        "HighLatency on api",
    ):
        assert part in row
    assert header.index("TITLE") == row.index("HighLatency")


def test_timeline_shows_header_notes_and_one_row_per_event() -> None:
    projection = IncidentProjection()
    for event in lifecycle():
        projection.apply(event)
    inc = projection.get(INC)
    assert inc is not None
    text = incidents.render_timeline(inc, projection.timeline(INC), NOW + timedelta(minutes=10))
    head, table = text.split("\n\n")
    assert head.startswith(f"{INC}  HighLatency on api")
    assert "state resolved, severity critical, 0 of 2 alert(s) firing, assignee bob" in head
    assert "note: db failover in progress" in head  # the newline in the note is flattened
    assert 'group {service="api"}, rule default' in head
    rows = table.split("\n")
    assert rows[0].split() == ["SEQ", "AT", "(UTC)", "EVENT", "STATE", "ACTOR", "ALERTS", "CAUSE"]
    assert len(rows) == 5
    assert rows[1].startswith("1    2025-01-31 12:01:00.000  opened")
    assert "- -> open" in rows[1] and "joined 2" in rows[1] and "(rule default)" in rows[1]
    assert "open -> acknowledged" in rows[2] and "operator:al" in rows[2]
    assert rows[3].split()[3:6] == ["annotated", "acknowledged", "operator:al"]  # no transition: the state
    assert "[note=db failover in progress, command_id=c-1]" in rows[3]
    assert "resolved 2" in rows[4]


def test_timeline_width_limit_cuts_the_cause_column() -> None:
    projection = IncidentProjection()
    for event in lifecycle():
        projection.apply(event)
    inc = projection.get(INC)
    assert inc is not None
    text = incidents.render_timeline(inc, projection.timeline(INC), NOW, max_width=110)
    table = text.split("\n\n")[1]
    assert all(len(line) <= 110 for line in table.split("\n"))
    assert table.split("\n")[3].endswith("…")


# ---------------------------------------------------------------- incident ids and operator commands


def test_valid_incident_ids() -> None:
    assert incidents.validate_incident_id(INC) == INC
    assert (
        incidents.validate_incident_id("inc-9f86d081884c7d65-1738324800000")
        == "inc-9f86d081884c7d65-1738324800000"
    )


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("INC-0123456789abcdef-1", "must start with 'inc-'"),
        ("0123456789abcdef-1", "must start with 'inc-'"),
        ("inc-0123456789abcdef", "exactly three '-'-separated parts, found 2"),
        ("inc-0123456789abcdef-1-2", "found 4"),
        ("inc-0123456789ABCDEF-1", "'0123456789ABCDEF' must be exactly 16 lowercase hex digits"),
        ("inc-0123456789abcde-1", "16 lowercase hex digits"),
        ("inc-0123456789abcdef-0", "the number '0' must be a positive integer"),
        ("inc-0123456789abcdef-01", "without leading zeros"),
        ("inc-0123456789abcdef-x", "the number 'x'"),
    ],
)
def test_invalid_incident_ids_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(UserError) as info:
        incidents.validate_incident_id(text)
    message = str(info.value)
    assert why in message
    assert (
        message.startswith(f"invalid incident id {text!r}")
        and "expected inc-<16 hex digits>-<opened ms>" in message
    )


def test_ack_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "carol")
    cmd = operator.build_command(parse(["ack", INC, "--note", "looking"]), now=NOW)
    assert cmd.action is OperatorAction.ACKNOWLEDGE
    assert (cmd.incident_id, cmd.by, cmd.at, cmd.note) == (INC, "carol", NOW, "looking")
    assert len(cmd.command_id) == 36  # a uuid4
    again = operator.build_command(parse(["ack", INC]), now=NOW)
    assert again.command_id != cmd.command_id and again.note is None


def test_each_operator_action_fills_its_field() -> None:
    by = ["--by", "dave", "--command-id", "retry-42"]
    assign = operator.build_command(parse(["assign", INC, "erin", *by]))
    assert (assign.action, assign.assignee, assign.by, assign.command_id) == (
        OperatorAction.ASSIGN,
        "erin",
        "dave",
        "retry-42",
    )
    note = operator.build_command(parse(["annotate", INC, "rolled back deploy 123", *by]))
    assert (note.action, note.note) == (OperatorAction.ANNOTATE, "rolled back deploy 123")
    sev = operator.build_command(parse(["severity", INC, "info", *by]))
    assert (sev.action, sev.severity) == (OperatorAction.SET_SEVERITY, Severity.INFO)
    merge = operator.build_command(parse(["merge", INC, "--into", OTHER, *by]))
    assert (merge.action, merge.merge_into) == (OperatorAction.MERGE, OTHER)
    resolve = operator.build_command(parse(["resolve", INC, *by]))
    assert resolve.action is OperatorAction.RESOLVE
    assert resolve.at.tzinfo is not None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["merge", INC, "--into", INC, "--by", "x"], "into itself"),
        (["merge", INC, "--into", "inc-zz", "--by", "x"], "invalid incident id 'inc-zz'"),
        (["ack", "inc-1", "--by", "x"], "invalid incident id 'inc-1'"),
        (["ack", INC, "--by", " "], "--by NAME"),
        (["ack", INC, "--by", "x", "--command-id", "has space"], "invalid --command-id"),
        (["annotate", INC, "  ", "--by", "x"], "NOTE must not be empty"),
        (["assign", INC, "", "--by", "x"], "ASSIGNEE must not be empty"),
    ],
)
def test_operator_errors(argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        operator.build_command(parse(argv))


def test_by_is_required_without_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USER", raising=False)
    with pytest.raises(UserError, match=r"--by NAME \(\$USER is not set\)"):
        operator.build_command(parse(["ack", INC]))


def test_severity_must_be_a_known_level(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["severity", INC, "fatal", "--by", "x"])
    assert "invalid choice: 'fatal'" in capsys.readouterr().err


def test_cli_main_reports_a_bad_id_as_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stormwatch.cli, "COMMAND_MODULES", OUR_MODULES)
    code = stormwatch.cli.main(["ack", "inc-nothex0000000000-1", "--by", "x"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("stormwatch ack: error: invalid incident id 'inc-nothex0000000000-1'")
    assert "\n" not in err


def test_cli_main_rejects_a_bad_limit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(stormwatch.cli, "COMMAND_MODULES", OUR_MODULES)
    with pytest.raises(SystemExit) as info:
        stormwatch.cli.main(["incidents", "--limit", "0"])
    assert info.value.code == 2
    assert "expected a positive integer, got 0" in capsys.readouterr().err


def test_incidents_accepts_several_states() -> None:
    args = parse(
        ["incidents", "--state", "open", "acknowledged", "--state", "resolved", "--json", "--limit", "5"]
    )
    assert args.state == ["open", "acknowledged", "resolved"]
    assert args.json and args.limit == 5
    assert parse(["incidents"]).state is None
    assert {s.value for s in IncidentState} >= set(args.state)
    assert IncidentEventType.OPENED.value == "opened"


# ---------------------------------------------------------------- silences


def test_matchers_parse_and_bad_ones_are_explained() -> None:
    ms = silences.parse_matchers(['alertname="HighLatency"', "env!=dev", "instance=~web-.*"])
    assert [(m.name, m.op, m.value) for m in ms] == [
        ("alertname", MatchOp.EQ, "HighLatency"),
        ("env", MatchOp.NE, "dev"),
        ("instance", MatchOp.RE, "web-.*"),
    ]
    with pytest.raises(UserError, match="cannot parse matcher 'no operator'"):
        silences.parse_matchers(["no operator"])
    with pytest.raises(UserError, match=r"invalid matcher 'job=~\(': invalid regex"):
        silences.parse_matchers(["job=~("])
    with pytest.raises(UserError, match="match every alert"):
        silences.parse_matchers(["env!=prod", "job=~.*"])


def _add(argv: list[str]) -> Silence:
    return silences.build_silence(parse(["silence", "add", *argv]), NOW)


def test_silence_with_duration_starts_now() -> None:
    s = _add(["alertname=Foo", "--duration", "2h", "--by", "ops", "--comment", "maintenance"])
    assert (s.starts_at, s.ends_at) == (NOW, NOW + timedelta(hours=2))
    assert (s.created_by, s.comment, len(s.silence_id)) == ("ops", "maintenance", 36)


def test_silence_with_explicit_times_and_id() -> None:
    s = _add(
        [
            "alertname=Foo",
            "--starts",
            "2025-01-31T13:00:00+01:00",
            "--until",
            "2025-01-31 18:00",
            "--id",
            "maint-1",
            "--by",
            "ops",
            "--comment",
            "x",
        ]
    )
    assert s.starts_at == datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
    assert s.ends_at == datetime(2025, 1, 31, 18, 0, tzinfo=UTC)
    assert s.silence_id == "maint-1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "2x"], "--duration: invalid duration '2x'"),
        (["--duration", "0s"], "longer than zero"),
        (["--until", "tomorrow"], "invalid time 'tomorrow' for --until"),
        (["--starts", "2025-01-31T10:00:00Z", "--until", "2025-01-31T11:00:00Z"], "would already be over"),
        (["--starts", "2025-02-01T00:00:00Z", "--until", "2025-01-31T20:00:00Z"], "end .* before it starts"),
        (["--duration", "1h", "--comment", " "], "--comment must say why"),
        (["--duration", "1h", "--id", "a b"], "invalid --id"),
    ],
)
def test_silence_errors(argv: list[str], message: str) -> None:
    base = ["alertname=Foo", "--by", "ops"]
    if "--comment" not in argv:
        base += ["--comment", "c"]
    with pytest.raises(UserError, match=message):
        _add([*base, *argv])


def test_silence_needs_exactly_one_of_duration_and_until(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["silence", "add", "a=b", "--comment", "c"])
    with pytest.raises(SystemExit):
        parse(
            ["silence", "add", "a=b", "--comment", "c", "--duration", "1h", "--until", "2030-01-01T00:00:00Z"]
        )
    assert "not allowed with argument" in capsys.readouterr().err


def test_silence_state() -> None:
    s = _add(["a=b", "--duration", "1h", "--by", "o", "--comment", "c"])
    assert silences.silence_state(s, NOW) == "active"
    assert silences.silence_state(s, NOW - timedelta(seconds=1)) == "pending"
    assert silences.silence_state(s, NOW + timedelta(hours=1)) == "expired"
    early = s.model_copy(update={"expired_at": NOW + timedelta(minutes=10)})
    assert silences.silence_state(early, NOW + timedelta(minutes=5)) == "active"
    assert silences.silence_state(early, NOW + timedelta(minutes=10)) == "expired"
    summary = silences.silence_summary(s, NOW)
    assert next(iter(summary)) == "state" and summary["silence_id"] == s.silence_id
    table = silences.render_silence_table([early], NOW)
    assert 'a="b"' in table and "2025-01-31 12:10:00" in table and "active" in table
