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
    capsys.readouterr()
    assert _cli(live, "ack", incident_id, "--by", "alice", "--note", "on it") == 0
    assert f"acknowledged {incident_id} (event 2)" in capsys.readouterr().err
    assert _cli(live, "assign", incident_id, "bob", "--by", "alice") == 0
    assert f"assigned {incident_id} (event 3)" in capsys.readouterr().err
    # Refused (already acknowledged): the command waits for the outcome and says why.
    assert _cli(live, "ack", incident_id, "--by", "carol") == 1
    err = capsys.readouterr().err
    assert err.startswith("stormwatch ack: refused: cannot acknowledge") and err.count("\n") == 1
    assert _cli(live, "resolve", incident_id, "--by", "bob", "--command-id", "resolve-1") == 0
    assert f"resolved {incident_id}" in capsys.readouterr().err
    # A retry with the same command id reports the recorded outcome without sending it again.
    assert _cli(live, "resolve", incident_id, "--by", "bob", "--command-id", "resolve-1") == 0
    assert "handled before; not sent again" in capsys.readouterr().err
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


def test_a_command_for_an_unknown_incident_is_refused_with_the_reason(
    live: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    _alerts(live, "Warmup", 1)  # the pipeline is up and owns its partitions before the command
    _wait(live, lambda evs: any(e.type.value == "opened" for e in evs))
    capsys.readouterr()
    missing = "inc-905e083776ef3211-1"
    assert _cli(live, "ack", missing, "--by", "alice", "--wait", "60") == 1
    out, err = capsys.readouterr()
    assert out.strip()  # the command id, for a retry
    assert err.startswith(f"stormwatch ack: refused: acknowledge for incident {missing}")
    assert "(unknown_incident)" in err


def test_no_wait_returns_once_kafka_has_the_command(
    live: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "inc-905e083776ef3211-2"
    assert _cli(live, "ack", missing, "--by", "alice", "--no-wait", "--command-id", "nw-1") == 0
    assert capsys.readouterr().out.strip() == "nw-1"


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
