"""Operators and the pipeline, through the real CLI and a real broker.

`stormwatch ack/assign/resolve/silence` publish commands; ingest routes them to the partition that
owns the incident; the correlator turns them into audit events that `stormwatch incidents` and
`stormwatch timeline` read back.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.pipeline import PipelineRun
from tests.kit.records import produce_records
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.kafka]

RULES = """
defaults: {group_wait: 1s, group_interval: 2s, resolve_timeout: 60s, reopen_window: 5s, close_after: 5s}
allowed_lateness: 100ms
state_time_resolution: 1s
"""


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path) -> Iterator[PipelineRun]:
    run = PipelineRun(kafka_bootstrap, tmp_path, rules=RULES, partitions=2)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        yield run
    finally:
        run.stop_all()


def _cli(run: PipelineRun, *args: str) -> int:
    return main(["--config", str(run.config_path), *args])


def _alerts(run: PipelineRun, alertname: str, n: int, *, resolved: bool = False) -> None:
    now = int(time.time() * 1000)
    payload = []
    for i in range(n):
        item: dict[str, object] = {"labels": {"alertname": alertname, "service": "api", "instance": f"i{i}"}}
        if resolved:
            item["endsAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now / 1000 - 1))
        payload.append(item)
    produce_records(run.bootstrap, run.settings.topics.raw, [(now, json.dumps(payload).encode())])


def _wait(run: PipelineRun, predicate: object, timeout_s: float = 60) -> list[IncidentEvent]:
    return run.wait_until(predicate, timeout_s)  # type: ignore[arg-type]


def test_ack_assign_and_resolve_become_audit_events(
    live: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    _alerts(live, "ApiDown", 5)
    events = _wait(live, lambda evs: any(e.type.value == "opened" for e in evs))
    incident_id = events[0].incident_id
    assert _cli(live, "ack", incident_id, "--by", "alice", "--note", "on it") == 0
    assert _cli(live, "assign", incident_id, "bob", "--by", "alice") == 0
    assert _cli(live, "ack", incident_id, "--by", "carol") == 0  # refused: already acknowledged
    events = _wait(live, lambda evs: any(e.type.value == "refused" for e in evs))
    assert _cli(live, "resolve", incident_id, "--by", "bob") == 0
    _wait(live, lambda evs: any(e.type.value == "resolved" for e in evs))
    capsys.readouterr()

    assert _cli(live, "timeline", incident_id, "--json") == 0
    timeline = json.loads(capsys.readouterr().out)
    kinds = [e["type"] for e in timeline]
    assert kinds == ["opened", "acknowledged", "assigned", "refused", "resolved"]
    assert timeline[1]["actor"] == "operator:alice" and timeline[2]["snapshot"]["assignee"] == "bob"
    assert "already" in timeline[3]["details"]["reason"] or "cannot" in timeline[3]["details"]["reason"]
    assert [e["seq"] for e in timeline] == [1, 2, 3, 4, 5]

    assert _cli(live, "incidents", "--json") == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["incident_id"] == incident_id and summary["state"] == "resolved"
    assert summary["alert_count"] == 5 and summary["rule"] == "default"
    assert summary["opened_at"] and summary["resolved_at"]


def test_silence_keeps_matching_alerts_from_opening_incidents(
    live: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _cli(
            live,
            "silence",
            "add",
            'alertname="Noisy"',
            "--duration",
            "1h",
            "--by",
            "alice",
            "--comment",
            "maintenance",
        )
        == 0
    )
    silence_id = capsys.readouterr().out.strip().split()[-1]
    time.sleep(1.0)
    _alerts(live, "Noisy", 3)
    _alerts(live, "Real", 2)
    events = _wait(live, lambda evs: any(e.type.value == "opened" for e in evs))
    time.sleep(3.0)  # well past group_wait: a silenced group would have opened by now
    events = live.events()
    assert {e.snapshot.title.split(" ")[0] for e in events if e.type.value == "opened"} == {"Real"}

    def listed() -> list[dict[str, str]]:
        assert _cli(live, "silence", "list", "--json") == 0
        found: list[dict[str, str]] = json.loads(capsys.readouterr().out)
        return found

    silences = wait_for("the silence to be listed", listed, 30, interval_s=1.0)
    assert [s["silence_id"] for s in silences] == [silence_id]
