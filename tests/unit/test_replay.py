"""The pure core on its own: docs/architecture.md's replay example runs, and agrees with the stages."""

from __future__ import annotations

import contextlib
import io
import os
import re
from pathlib import Path

import orjson

from stormwatch.schemas.incident import IncidentEventType
from stormwatch.simulate import SIM_EPOCH_MS, encode_line, generate
from stormwatch.streams.core.replay import Replay
from stormwatch.streams.core.rules import parse_rules

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000


def _docs_example() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The core on its own", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "docs/architecture.md lost its replay example"
    return match.group(1)


def _storm_file(path: Path) -> None:
    with path.open("wb") as out:
        for record in generate("node-failure", size=40, seed=3):
            out.write(encode_line(record, SIM_EPOCH_MS))


def test_the_documented_replay_example_runs_and_prints_the_incidents(tmp_path: Path) -> None:
    _storm_file(tmp_path / "node-failure.jsonl")
    (tmp_path / "deploy").mkdir()
    rules = (ROOT / "deploy" / "correlation_rules.yaml").read_text(encoding="utf-8")
    (tmp_path / "deploy" / "correlation_rules.yaml").write_text(rules, encoding="utf-8")
    printed = io.StringIO()
    cwd = Path.cwd()
    os.chdir(tmp_path)
    try:
        with contextlib.redirect_stdout(printed):
            exec(compile(_docs_example(), "docs/architecture.md", "exec"), {})
    finally:
        os.chdir(cwd)
    lines = printed.getvalue().splitlines()
    assert any(" opened inc-" in line for line in lines), lines
    assert any(" closed inc-" in line for line in lines), lines


def test_replay_opens_one_incident_per_group_and_closes_it_once_time_has_passed() -> None:
    replay = Replay(parse_rules("{}"))
    last = 0
    for record in generate("node-failure", size=40, seed=3):
        last = SIM_EPOCH_MS + record.t_ms
        replay.record(record.value, last, {k: v.encode() for k, v in record.headers.items()})
    events = replay.take_events()
    opened = {e.incident_id for e in events if e.type is IncidentEventType.OPENED}
    assert opened
    replay.advance(last + 6 * HOUR_MS)
    closed = {e.incident_id for e in replay.take_events() if e.type is IncidentEventType.CLOSED}
    assert closed == opened


def test_a_record_that_cannot_be_parsed_becomes_a_dead_letter_with_its_offset() -> None:
    replay = Replay(parse_rules("{}"))
    replay.record(orjson.dumps({"alerts": "not a list"}), SIM_EPOCH_MS)
    replay.record(b"\xff not json", SIM_EPOCH_MS + 1)
    assert [d.source_offset for d in replay.dead_letters] == [0, 1]
    assert all(d.reason.value for d in replay.dead_letters)
    assert replay.take_events() == []


def test_time_does_not_move_backwards_when_records_arrive_out_of_order() -> None:
    replay = Replay(parse_rules("{}"))
    records = list(generate("node-failure", size=10, seed=1))
    for record in reversed(records[-3:]):
        replay.record(record.value, SIM_EPOCH_MS + record.t_ms)
    assert replay._watermark == SIM_EPOCH_MS + records[-1].t_ms
