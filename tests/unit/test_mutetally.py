"""Muted alerts are recorded on the muting incident (issue #12): counts and a bounded sample per
group_interval window, as ``muted`` events and the snapshot's ``muted`` count."""

from __future__ import annotations

from datetime import datetime, timedelta

from stormwatch.schemas.incident import IncidentEventType
from stormwatch.streams.core.mutetally import SAMPLE_SIZE, MuteTally
from tests.kit.engine import Driver, at, config, note

RULES = """
defaults: {group_wait: 10s, group_interval: 1m, resolve_timeout: 5m, reopen_window: 10m, close_after: 15m}
allowed_lateness: 1s
inhibit_rules:
  - name: node-down
    source_match: ['alertname="NodeDown"']
    target_match: ['alertname!="NodeDown"']
    equal: [node]
"""


def test_a_node_down_incident_says_what_it_muted() -> None:
    d = Driver(config(RULES))
    d.alerts([note({"alertname": "NodeDown", "node": "n1"}, at(0))])
    d.tick(at(5))
    pods = [note({"alertname": "PodNotReady", "node": "n1", "pod": f"p{i}"}, at(6 + i)) for i in range(12)]
    d.alerts(pods)
    d.alerts([note(p.labels, at(40)) for p in pods])  # re-sent: muted notifications, no new alerts
    d.alerts([note({"alertname": "PodNotReady", "node": "n2", "pod": "other"}, at(41))])  # not muted
    for second in range(10, 400, 10):
        d.tick(at(second))
        d.commit()
    node = next(e for e in d.of_type("opened") if e.snapshot.title.startswith("NodeDown"))
    muted = [e for e in d.events if e.incident_id == node.incident_id and e.type is IncidentEventType.MUTED]
    assert len(muted) == 1, "one window of one minute"
    (event,) = muted
    assert (event.details["alerts"], event.details["notifications"]) == (12, 24)
    assert event.details["rule"] == "node-down" and len(event.details["sample"]) == SAMPLE_SIZE
    assert event.details["sample"][0] == {"alertname": "PodNotReady", "node": "n1", "pod": "p0"}
    # applied one group_interval after its window ended, whenever it arrived
    assert event.at == datetime.fromisoformat(event.details["window_end"]) + timedelta(minutes=1)
    assert event.snapshot.muted == 12
    later = [e for e in d.events if e.incident_id == node.incident_id and e.seq > event.seq]
    assert all(e.snapshot.muted == 12 for e in later)
    assert all(not e.snapshot.title.startswith("PodNotReady (node=n1") for e in d.of_type("opened"))


def test_windows_are_sent_in_order_once_time_passes_them() -> None:
    tally = MuteTally(60_000)
    tally.count("g2", "r", {"a": "1"}, 61_000, True)
    tally.count("g1", "r", {"a": "2"}, 5_000, True)
    tally.count("g1", "r", {"a": "2"}, 6_000, False)
    assert tally.due(59_999) == []
    ((source, start, end, window),) = tally.due(60_000)
    assert (source, start, end, window.alerts, window.notifications) == ("g1", 0, 60_000, 1, 2)
    restored = MuteTally(60_000)
    restored.restore(tally.to_obj())
    assert restored.to_obj() == tally.to_obj() and len(restored) == 1
    tally.count("", "r", {}, 1, True)  # no source group known: nothing to tell
    assert len(tally) == 1
