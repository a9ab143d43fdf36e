"""Ticks on demand (issue #16) with real workers: an idle pipeline writes no ticks, yet after the
idle spell timers fire on time and an acknowledgement carries the time it was asked.

The lost cases this guards: a partition nobody ticks never opens its incident (group_wait would
wait for the next heartbeat), and a command applied at an idle partition's stale clock would date
the acknowledgement back to the last tick (MTTA from a stale clock).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.kafka.client import read_topic
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.pipeline import PipelineRun
from tests.kit.records import produce_records

pytestmark = [pytest.mark.kafka]

# Nothing comes due for minutes after an incident opens: the pipeline is truly idle meanwhile.
RULES = """
defaults: {group_wait: 2s, group_interval: 5m, resolve_timeout: 10m, reopen_window: 5m, close_after: 15m}
allowed_lateness: 100ms
state_time_resolution: 1s
"""
IDLE_S = 12


def _alert(run: PipelineRun, name: str) -> int:
    now = int(time.time() * 1000)
    body = [{"labels": {"alertname": name, "service": "api", "instance": "i0"}}]
    produce_records(run.bootstrap, run.settings.topics.raw, [(now, json.dumps(body).encode())])
    return now


def _opened(run: PipelineRun, name: str, timeout_s: float = 60) -> IncidentEvent:
    def found(events: list[IncidentEvent]) -> bool:
        return any(
            e.type.value == "opened" and e.snapshot.group_labels.get("alertname") == name for e in events
        )

    events = run.wait_until(found, timeout_s)
    return next(
        e for e in events if e.type.value == "opened" and e.snapshot.group_labels.get("alertname") == name
    )


def _input_records(run: PipelineRun) -> int:
    return sum(1 for _ in read_topic(run.settings, run.settings.topics.correlator_input))


def test_idle_writes_no_ticks_and_timers_and_commands_keep_their_times(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = PipelineRun(kafka_bootstrap, tmp_path, rules=RULES, partitions=3)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        sent = _alert(run, "First")
        first = _opened(run, "First")
        assert ms_from_dt(first.at) - sent < 3_000  # group_wait (2 s) after the alert, in event time

        time.sleep(3)  # the last hot ticks and demands settle
        before = _input_records(run)
        time.sleep(IDLE_S)
        run.assert_alive()
        idle_ticks = _input_records(run) - before
        # every 25 ms to 3 partitions would be ~1,400; the 60 s heartbeat may fall in the window once
        assert idle_ticks <= 3, f"{idle_ticks} records reached the correlator input while idle"

        # After the idle spell: an acknowledgement carries the time it was asked, not the last tick's.
        asked = int(time.time() * 1000)
        assert main(["--config", str(run.config_path), "ack", first.incident_id, "--by", "alice"]) == 0
        answered = int(time.time() * 1000)
        acked = next(
            e
            for e in run.wait_until(lambda es: any(e.type.value == "acknowledged" for e in es), 60)
            if e.type.value == "acknowledged"
        )
        # between asking and the answer (the last tick before it was at least IDLE_S earlier)
        assert asked - 500 <= ms_from_dt(acked.at) <= answered, (acked.at, asked, answered)

        # And a new group's group_wait fires on time, at the alert's time + 2 s.
        sent = _alert(run, "Second")
        second = _opened(run, "Second")
        assert 2_000 <= ms_from_dt(second.at) - sent < 3_000
    finally:
        run.stop_all()
