"""Skewed senders (issue #17): alert senders whose clocks are 10 minutes off, through the gateway
and straight into the raw topic, against a real pipeline (gateway, ingest, correlator processes).

The policy under test:

- **Event time is the raw record's timestamp**, never the alert's own ``startsAt``/``endsAt``. The
  gateway stamps its records with its own clock when the request arrives (stormwatch/gateway.py;
  the adapters take ``received_at`` from the record timestamp), so a sender's skew there only moves the times it writes into the alert: ``startsAt`` is kept as
  sent (the ``joined`` change of an opened incident shows it), and ``endsAt`` decides the status
  against the arrival time (an alert whose ``endsAt`` already passed is a resolved notification:
  schemas/adapters/prometheus.py). A producer writing to the raw topic itself sets the record
  timestamp with its own clock.
- **Late**: a record whose timestamp is behind the partition's event-time clock (by more than
  ``allowed_lateness``: streams/core/reorder.py) is applied at the clock, counted in
  ``stormwatch_alerts_late_total`` and marked ``late`` in the audit log (``late_policy: apply``, the
  default; docs/correlation-rules.md, "Late alerts"), beside the ``joined`` change of the event that
  reports it. It is judged at the time it is applied (streams/core/engine.py ``_apply``): an
  ``endsAt`` already passed by then makes it a resolved notification, as on time.
- **Resolved on arrival** (an unknown alert's resolved notification: nothing to resolve) changes no
  incident and is counted in ``stormwatch_alerts_resolved_unknown_total``.

**Scenario** (``test_skewed_senders_are_judged_by_the_policy_and_every_decision_is_counted``): after
a warm-up incident (every correlator partition's clock running), senders post Prometheus alerts to
the gateway's ``/api/v2/alerts`` stamped as Prometheus stamps them (``startsAt`` 30 s before its
own now, ``endsAt`` 4 minutes after it): one 10 minutes ahead, one 10 minutes behind, one 10
minutes behind that sends no ``endsAt``, then one on time. A direct producer writes one record to
every raw partition stamped 10 minutes in the past, each with an alert without ``endsAt`` and one
with. Some alerts of the ahead, behind and on-time senders share a group (``team="mixed"``).

**Oracle**: every alert sent is accounted for by its fingerprint: in an incident of the audit log
with the change kinds the policy gives it (``joined``; ``joined`` and ``late``), or resolved on
arrival (in no incident); none is in the dead-letter topic and nothing else is. The counters
(ingest's and the correlator's /metrics, increases during the test) match exactly: alerts received
(every alert sent), late alerts (= ``late`` changes in the audit log + late alerts resolved on
arrival), resolved on arrival, dead letters (0). Timing stays sane: the on-time
sender's incident opens within ``OPEN_BOUND_S`` of its post (group_wait is 3 s), and so do the
groups with a sender 10 minutes ahead; no event's time runs ahead of the wall clock.

**A producer whose clock runs ahead** (``test_records_stamped_in_the_future_do_not_move_the_clock_for_everyone``,
last in the module; both tests share one pipeline, whose three processes took 40-50 s to start on
the busy 2-core machine): it stamps raw records 10 minutes ahead, one in every raw partition. Once
that moved every correlator partition's clock 10 minutes ahead (a raw partition's watermark was the
newest timestamp read): everybody's timers fired 10 minutes early and on-time alerts were late.
Now ingest's ticks never move a watermark further ahead of its wall clock than
``ingest.max_future_ms`` (0 here, the default): those records are counted
(``stormwatch_raw_records_ahead_total``) and their alerts wait in the correlator until their time,
while the on-time sender's incident opens on time and nothing is late.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from stormwatch.kafka.client import make_producer
from stormwatch.schemas.fingerprint import label_fingerprint
from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent
from tests.kit.metrics import metric
from tests.kit.pipeline import PipelineRun
from tests.kit.ports import free_port
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow]

RULES = """
rules:
  - name: skew
    group_by: [run, team]
defaults: {group_wait: 3s, group_interval: 2s, resolve_timeout: 10m, reopen_window: 5s, close_after: 10s}
allowed_lateness: 2s
state_time_resolution: 1s
flap: {enabled: false}
"""
"""One group per sender and team. allowed_lateness 2 s: the on-time senders' records (stamped by the
gateway on arrival, acknowledged by Kafka, then read by ingest) are never late on a busy machine,
while a record 10 minutes behind always is."""
CONFIG = {"ingest": {"heartbeat_interval_ms": 1000}}
"""Every correlator partition is ticked every second: its clock runs from the start, so a record
stamped in the past is late wherever it is routed (with the default 60 s heartbeat, a partition
nobody has asked for a tick yet has no clock, and nothing is late there)."""
TOKEN = "skewed-senders-token-0123"
SKEW_MS = 10 * 60_000
STARTED_BEFORE_MS = 30_000
"""Prometheus stamps an alert's startsAt when its rule started firing: here 30 s before the post."""
ENDS_AHEAD_MS = 4 * 60_000
"""Prometheus' endsAt: 4 x max(evaluation interval, resend delay 1m) after its own now."""
OPEN_BOUND_S = 60.0
"""An on-time incident opens within this long of its post (group_wait 3 s; a busy 2-core machine)."""
AHEAD_SLACK_MS = 60_000
"""No audit event may be stamped further than this ahead of the wall clock."""
SETTLE_S = 60.0


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Sent:
    """One alert a sender sent, and what the policy says becomes of it."""

    labels: dict[str, str]
    # "joined"; "late" (joined, and marked late); "resolved" (resolved on arrival: in no incident);
    # "late-resolved" (late, and its endsAt had passed when it was applied: resolved on arrival)
    expect: str
    starts_ms: int

    @property
    def fingerprint(self) -> str:
        return label_fingerprint(self.labels)


COUNTERS = {
    "received": ("ingest", "stormwatch_alerts_received_total"),
    "late": ("correlator", "stormwatch_alerts_late_total"),
    "resolved": ("correlator", "stormwatch_alerts_resolved_unknown_total"),
    "dead_ingest": ("ingest", "stormwatch_dead_letters_total"),
    "dead_correlator": ("correlator", "stormwatch_dead_letters_total"),
    "ahead": ("ingest", "stormwatch_raw_records_ahead_total"),
}
"""The decisions counted, by worker and metric."""


@dataclass
class Stack:
    """A pipeline with a gateway in front, shared by the module's tests; what the current test
    (its ``case``, part of every alert's ``run`` label) sent, and its counters as the test began."""

    run: PipelineRun
    url: str
    ports: dict[str, int]
    case: str = ""
    sent: list[Sent] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    clock_moved: bool = False  # a test moved the correlator's clocks: the stack is no good for more

    def begin(self, case: str) -> None:
        assert not self.clock_moved, "an earlier test moved this pipeline's clocks: run this test first"
        self.case, self.sent = case, []
        self.baseline = self._counters()

    @property
    def run_label(self) -> str:
        return f"{self.run.suffix}-{self.case}"

    def alert(self, sender: str, team: str, n: int, now_ms: int, expect: str, ends: bool) -> dict[str, Any]:
        """A Prometheus alert as a sender whose clock reads ``now_ms`` stamps it."""
        labels = {"alertname": f"Skew_{sender}_{n}", "run": self.run_label, "team": team, "sender": sender}
        self.sent.append(Sent(labels, expect, now_ms - STARTED_BEFORE_MS))
        alert: dict[str, Any] = {"labels": labels, "startsAt": _iso(now_ms - STARTED_BEFORE_MS)}
        if ends:
            alert["endsAt"] = _iso(now_ms + ENDS_AHEAD_MS)
        return alert

    def post(self, alerts: list[dict[str, Any]]) -> float:
        """POST to the gateway's Alertmanager API v2; the wall clock when it answered 200."""
        request = urllib.request.Request(
            self.url + "/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.status
        return time.time()

    def produce_raw(self, skew_ms: int, sender: str, expect: dict[bool, str]) -> None:
        """A producer writing to the raw topic with its own clock (``skew_ms`` off): one record
        per raw partition, each with an alert without endsAt and one with (``expect[ends]``)."""
        producer = make_producer(self.run.settings)
        ts = _now_ms() + skew_ms
        for partition in range(self.run.partitions):
            alerts = [
                self.alert(sender, sender, 2 * partition + ends, ts, expect[ends], ends)
                for ends in (False, True)
            ]
            producer.produce(
                self.run.settings.topics.raw, orjson.dumps(alerts), partition=partition, timestamp=ts
            )
        assert producer.flush(30) == 0, "the raw records were not delivered"

    def events(self) -> list[IncidentEvent]:
        """The current test's part of the audit log."""
        return [e for e in self.run.events() if e.snapshot.group_labels.get("run") == self.run_label]

    def opened(self, team: str) -> IncidentEvent | None:
        return next((e for e in self.events() if e.type.value == "opened" and _team(e) == team), None)

    def wait_opened(self, team: str, since: float) -> float:
        """Seconds from ``since`` (wall clock) until the incident of ``team`` is in the audit log."""
        wait_for(
            f"the incident of team {team} to open",
            lambda: self.opened(team),
            OPEN_BOUND_S,
            alive=self.run.assert_alive,
        )
        return time.time() - since

    def _counters(self) -> dict[str, float]:
        return {key: metric(self.ports[worker], name) for key, (worker, name) in COUNTERS.items()}

    def counters(self) -> dict[str, float]:
        """The counters' increase since the test began."""
        return {key: value - self.baseline.get(key, 0.0) for key, value in self._counters().items()}


def _team(event: IncidentEvent) -> str:
    return event.snapshot.group_labels.get("team", "")


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Gateway, ingest and correlator on fresh topics, ready: the gateway answers /-/ready, both
    workers serve /metrics and own their partitions. One for the module: starting three worker
    processes took 50 s on the busy 2-core machine."""
    workdir = tmp_path_factory.mktemp("skewed-senders")
    run = PipelineRun(kafka_bootstrap, workdir, rules=RULES, config_overrides=CONFIG)
    ports = {"ingest": free_port(), "correlator": free_port()}
    gateway_port = free_port()
    token = workdir / "token"
    token.write_text(TOKEN)
    try:
        run.start("ingest", "i1", ["--metrics-port", str(ports["ingest"])])
        run.start("correlate", "c1", ["--metrics-port", str(ports["correlator"])])
        run.start_gateway(token, gateway_port)
        url = f"http://127.0.0.1:{gateway_port}"

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=5) as response:
                    gateway = response.status == 200
            except (OSError, urllib.error.HTTPError):
                return False
            return (
                gateway
                and all(metric(port, "stormwatch_dead_letters_total") >= 0 for port in ports.values())
                and run.workers.assigned("ingest:i1")
                and run.workers.assigned("correlate:c1")
            )

        wait_for("the gateway and the workers to be ready", ready, 120, alive=run.assert_alive)
        yield Stack(run, url, ports)
    finally:
        run.stop_all()


def _warm_up(stack: Stack, case: str) -> None:
    """An on-time incident first: the correlator's clocks run (they start with the first ticks)."""
    stack.begin(case)
    posted = stack.post([stack.alert("ontime", "warm", 0, _now_ms(), "joined", ends=True)])
    stack.wait_opened("warm", posted)
    time.sleep(2.0)  # a few heartbeats: every correlator partition has its clock


def _changes(events: list[IncidentEvent]) -> dict[str, list[tuple[AlertChangeKind, str]]]:
    """Per fingerprint, its alert changes in the audit log: (kind, incident id)."""
    out: dict[str, list[tuple[AlertChangeKind, str]]] = {}
    for event in events:
        for change in event.alerts:
            out.setdefault(change.fingerprint, []).append((change.change, event.incident_id))
    return out


def _ahead_of_wall(events: list[IncidentEvent], wall_ms: int) -> list[str]:
    """Events stamped further than AHEAD_SLACK_MS ahead of the wall clock ``wall_ms``."""
    return [
        f"{e.type.value} of team {_team(e)} at {e.at.isoformat()} ({(e.at.timestamp() * 1000 - wall_ms) / 1000:.0f}s ahead)"
        for e in events
        if e.at.timestamp() * 1000 > wall_ms + AHEAD_SLACK_MS
    ]


def test_skewed_senders_are_judged_by_the_policy_and_every_decision_is_counted(stack: Stack) -> None:
    _warm_up(stack, "policy")
    now = _now_ms()
    stack.produce_raw(-SKEW_MS, "rawbehind", {False: "late", True: "late-resolved"})
    ahead = [stack.alert("ahead", "ahead", n, now + SKEW_MS, "joined", ends=True) for n in range(2)]
    ahead_posted = stack.post([*ahead, stack.alert("ahead", "mixed", 9, now + SKEW_MS, "joined", ends=True)])
    behind = [stack.alert("behind", "behind", n, now - SKEW_MS, "resolved", ends=True) for n in range(2)]
    stack.post([*behind, stack.alert("behind", "mixed", 8, now - SKEW_MS, "resolved", ends=True)])
    no_ends = [
        stack.alert("behindnoends", "behindnoends", n, now - SKEW_MS, "joined", ends=False) for n in range(2)
    ]
    stack.post(no_ends)
    on_time = [stack.alert("ontime", "ontime", n, _now_ms(), "joined", ends=True) for n in range(2)]
    on_time_posted = stack.post([*on_time, stack.alert("ontime", "mixed", 7, _now_ms(), "joined", ends=True)])

    opened_s = {
        "ontime": stack.wait_opened("ontime", on_time_posted),
        "ahead": stack.wait_opened("ahead", ahead_posted),
        "mixed": stack.wait_opened("mixed", ahead_posted),
    }
    sent = stack.sent
    expected = Counter(s.expect for s in sent)
    in_incidents = {s.fingerprint for s in sent if s.expect in ("joined", "late")}

    def settled() -> list[IncidentEvent] | None:
        events = stack.events()
        changes = _changes(events)
        late = sum(kind is AlertChangeKind.LATE for kinds in changes.values() for kind, _ in kinds)
        if in_incidents <= set(changes) and late >= expected["late"]:
            return events
        return None

    wait_for("every alert that fires to be in an incident", settled, SETTLE_S, alive=stack.run.assert_alive)
    want = {
        "received": len(sent),
        "late": expected["late"] + expected["late-resolved"],
        "resolved": expected["resolved"] + expected["late-resolved"],
        "dead_ingest": 0,
        "dead_correlator": 0,
        "ahead": 0,  # the gateway stamps its records: a sender's clock is only in the alerts
    }

    def counted() -> dict[str, float] | None:
        now = stack.counters()
        return now if all(now[k] >= v for k, v in want.items()) else None

    with contextlib.suppress(AssertionError):  # the exact comparison below shows the numbers
        wait_for("the counters to count every decision", counted, 20, alive=stack.run.assert_alive)
    time.sleep(1.0)  # anything still in flight (a decision counted twice) would show now
    seen = stack.counters()
    wall = _now_ms()
    events = stack.events()
    dead_letters = [
        d for d in stack.run.dead_letters() if stack.run_label.encode() in base64.b64decode(d["original"])
    ]

    changes = _changes(events)
    print(
        f"skewed senders: {len(sent)} alerts sent ({dict(expected)}); incidents opened "
        f"{ {team: round(s, 1) for team, s in opened_s.items()} } s after their post; counters {seen}; "
        f"{len(events)} audit events"
    )
    for s in sent:
        print(
            f"  {s.labels['alertname']:<22} {s.expect:<9} {[k.value for k, _ in changes.get(s.fingerprint, [])]}"
        )

    # Every alert is accounted for, as the policy says.
    wrong = {}
    for s in sent:
        kinds = [kind for kind, _ in changes.get(s.fingerprint, [])]
        incidents = {iid for _, iid in changes.get(s.fingerprint, [])}
        want_kinds = {
            "joined": [AlertChangeKind.JOINED],
            "late": [AlertChangeKind.JOINED, AlertChangeKind.LATE],
        }
        if sorted(kinds) != sorted(want_kinds.get(s.expect, [])) or len(incidents) > 1:
            wrong[s.labels["alertname"]] = (s.expect, [k.value for k in kinds])
    assert wrong == {}, f"alerts not handled as the policy says (expected, changes seen): {wrong}"
    assert dead_letters == [], dead_letters[:3]
    assert set(changes) <= {s.fingerprint for s in sent}, "the audit log names alerts nobody sent"
    # The counters count every decision, and match the audit log.
    late_changes = sum(kind is AlertChangeKind.LATE for kinds in changes.values() for kind, _ in kinds)
    assert seen == {k: float(v) for k, v in want.items()}, f"counters {seen}, expected {want}"
    late_resolved = expected["late-resolved"]
    assert late_changes + late_resolved == seen["late"], (
        f"{late_changes} late changes in the audit log and {late_resolved} late alerts resolved on "
        f"arrival, late counter {seen['late']}"
    )
    # A sender's startsAt is kept as sent (the joined change of the opening event shows it) ...
    opening = {c.fingerprint: c for e in events if e.type.value == "opened" for c in e.alerts}
    for s in sent:
        if s.expect == "joined" and s.fingerprint in opening:
            assert abs(opening[s.fingerprint].at.timestamp() * 1000 - s.starts_ms) < 1, s.labels
    # ... yet neither the sender ahead nor the one behind moves anybody's timing.
    assert all(s < OPEN_BOUND_S for s in opened_s.values()), opened_s
    assert _ahead_of_wall(events, wall) == []


def test_records_stamped_in_the_future_do_not_move_the_clock_for_everyone(stack: Stack) -> None:
    """Last in the module: were the bug back, it would move the shared pipeline's clocks 10 minutes ahead."""
    _warm_up(stack, "future")
    stack.clock_moved = True
    stack.produce_raw(SKEW_MS, "rawahead", {False: "held", True: "held"})
    time.sleep(2.0)  # ingest has read them and ticked
    on_time_posted = stack.post(
        [stack.alert("ontime", "ontime", n, _now_ms(), "joined", ends=True) for n in range(2)]
    )
    ontime_fingerprints = {s.fingerprint for s in stack.sent if s.labels["team"] == "ontime"}
    stamped_ahead: list[str] = []

    def opened_or_ahead() -> bool:
        stamped_ahead[:] = _ahead_of_wall(stack.events(), _now_ms())
        return bool(stamped_ahead) or stack.opened("ontime") is not None

    wait_for(
        "the on-time incident, or an event ahead of the wall clock",
        opened_or_ahead,
        OPEN_BOUND_S,
        alive=stack.run.assert_alive,
    )
    opened_s = time.time() - on_time_posted
    events = stack.events()
    counters = stack.counters()
    late = counters["late"]
    print(f"future records: events ahead of the wall clock {stamped_ahead}; counters {counters}")
    assert counters["ahead"] == stack.run.partitions, "each raw record stamped ahead is counted"
    assert stamped_ahead == [], f"the correlator's clock ran ahead of the wall clock: {stamped_ahead}"
    warm = [e.type.value for e in events if _team(e) == "warm"]
    assert warm == ["opened"], f"the on-time warm-up incident was decided early: {warm}"
    changes = _changes(events)
    assert all(
        [k for k, _ in changes.get(fp, [])] == [AlertChangeKind.JOINED] for fp in ontime_fingerprints
    ), {fp: changes.get(fp) for fp in ontime_fingerprints}
    assert late == 0 and opened_s < OPEN_BOUND_S
