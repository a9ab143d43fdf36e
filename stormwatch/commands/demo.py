"""`stormwatch demo`: push a simulated alert storm through a running gateway and report the outcome.

`make up` runs it after starting the stack, so a new user sees the whole path at work: HTTP in
(as Prometheus would send it), dedup and grouping, incidents out, and how much noise was removed.
With a topology (correlator.topology_file, and `stormwatch link` running, as `make up` has them),
the default storm is a database outage spreading through the services that use it: its label
groups are linked into one incident, and the summary names its root cause.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_topic
from stormwatch.output import clean, command_prefix, render_table
from stormwatch.schemas.durations import parse_duration
from stormwatch.schemas.incident import IncidentEvent, IncidentEventType
from stormwatch.simulate import SCENARIOS, SimulationError, generate

ENDPOINTS = {
    "prometheus": "/api/v2/alerts",
    "alertmanager": "/api/v1/webhook/alertmanager",
    "pagerduty": "/v2/enqueue",
    "cloudevents": "/api/v1/cloudevents",
    "native": "/api/v1/alerts",
}


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "demo",
        help="send a simulated storm through the gateway and summarize the incidents",
        description=__doc__,
    )
    p.add_argument("--gateway", default=None, help="gateway URL (default: http://gateway.host:gateway.port)")
    p.add_argument(
        "--scenario",
        default=None,
        choices=SCENARIOS,
        help="storm scenario (default: topology-cascade with correlator.topology_file set, else node-failure)",
    )
    p.add_argument("--size", type=int, default=300, help="distinct alerts (default: 300)")
    p.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    p.add_argument("--format", default="prometheus", choices=sorted(ENDPOINTS), help="input format")
    p.add_argument(
        "--duration", default="40s", help="simulated storm length, sent in real time (default: 40s)"
    )
    p.add_argument("--eval-interval", default="3s", help="how often the simulated Prometheus re-sends (3s)")
    p.add_argument("--settle", default="15s", help="how long to wait for the last incident events (15s)")
    p.add_argument("--token", default=None, help="gateway bearer token, if the gateway requires one")
    p.set_defaults(handler=run_demo)


def _post(url: str, body: bytes, token: str | None) -> int:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise UserError(
            f"cannot reach the gateway at {url}: {exc}; is `stormwatch gateway` running?"
        ) from None


def _wait_ready(base: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/-/ready", timeout=3) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.5)
    raise UserError(f"the gateway at {base} is not ready after {timeout_s:g}s ({last}); check its log")


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    base = (args.gateway or f"http://{settings.gateway.host}:{settings.gateway.port}").rstrip("/")
    try:
        duration_ms = parse_duration(args.duration)
        eval_ms = parse_duration(args.eval_interval)
        settle_s = parse_duration(args.settle) / 1000
    except ValueError as exc:
        raise UserError(str(exc)) from None
    scenario = args.scenario or ("topology-cascade" if settings.correlator.topology_file else "node-failure")
    _wait_ready(base)
    start_ms = int(time.time() * 1000)
    try:
        sim = generate(
            scenario,
            size=args.size,
            seed=args.seed,
            fmt=args.format,
            duration_ms=duration_ms,
            start_ms=start_ms,
            eval_interval_ms=eval_ms,
        )
    except SimulationError as exc:
        raise UserError(str(exc)) from None
    url = base + ENDPOINTS[args.format]
    before = {e.event_id for e in _events(settings)}
    statuses: Counter[int] = Counter()
    sent_alerts = 0
    started = last_report = time.monotonic()
    print(
        f"sending a {scenario} storm ({args.size} distinct alerts, {args.duration}) to {url}",
        file=sys.stderr,
    )
    for record in sim:
        delay = start_ms / 1000 + record.t_ms / 1000 - time.time()
        if delay > 0:
            time.sleep(delay)
        statuses[_post(url, record.value, args.token)] += 1
        sent_alerts += record.alerts
        if time.monotonic() - last_report >= 5:
            last_report = time.monotonic()
            print(f"  {time.monotonic() - started:4.0f}s  {sent_alerts} alerts sent", file=sys.stderr)
    print(f"  {sent_alerts} alerts sent in {sum(statuses.values())} requests", file=sys.stderr)
    print(f"waiting {settle_s:g}s for the last incident events ...", file=sys.stderr)
    time.sleep(settle_s)
    events = [e for e in _events(settings) if e.event_id not in before]
    _summarize(args, settings, base, statuses, sent_alerts, events)
    return 0 if events and set(statuses) <= {200, 202} else 1


def _events(settings: Settings) -> list[IncidentEvent]:
    return [
        IncidentEvent.from_bytes(m.value() or b"") for m in read_topic(settings, settings.topics.incidents)
    ]


def _summarize(
    args: argparse.Namespace,
    settings: Settings,
    base: str,
    statuses: Counter[int],
    sent_alerts: int,
    events: list[IncidentEvent],
) -> None:
    latest: dict[str, IncidentEvent] = {}
    for event in events:
        if event.incident_id not in latest or event.seq > latest[event.incident_id].seq:
            latest[event.incident_id] = event
    # Only the incidents of this storm: an earlier run's may still be closing meanwhile.
    opened = {e.incident_id for e in events if e.type is IncidentEventType.OPENED}
    latest = {i: e for i, e in latest.items() if i in opened} or latest
    ratio = sent_alerts / len(events) if events else 0.0
    # Linking (issue #12): a member group points at its primary; the primary lists its members.
    primaries = sorted(
        (e for e in latest.values() if e.snapshot.linked_into is None), key=lambda e: e.snapshot.opened_at
    )
    linked = len(latest) - len(primaries)
    out = sys.stdout
    out.write("\n== stormwatch demo ==\n")
    out.write(
        f"alerts in:        {sent_alerts} ({', '.join(f'HTTP {k}: {v}' for k, v in sorted(statuses.items()))})\n"
    )
    if linked:
        out.write(
            f"incidents:        {len(primaries)} ({len(latest)} label groups, {linked} of them linked "
            "into the incident of their root cause)\n"
        )
    else:
        out.write(f"incidents:        {len(latest)}\n")
    out.write(f"incident events:  {len(events)} (by type: {dict(Counter(e.type.value for e in events))})\n")
    out.write(f"storm suppression: {ratio:.0f} alerts per incident event")
    if linked:
        out.write(f", {sent_alerts / max(1, len(primaries)):.0f} alerts per incident after linking")
    out.write("\n\n")
    rows = [
        [
            e.incident_id,
            e.snapshot.state.value,
            e.snapshot.severity.value,
            str(_alerts(e, latest)),
            *([f"1 + {len(e.snapshot.members)}"] if linked else []),
            e.snapshot.title,
        ]
        for e in primaries
    ]
    if rows:
        headers = ["INCIDENT", "STATE", "SEVERITY", "ALERTS", *(["GROUPS"] if linked else []), "TITLE"]
        out.write(render_table(headers, rows) + "\n")
    roots = _root_causes(latest, primaries)
    if roots:
        out.write("\nroot causes (the linker: related label groups are one incident):\n")
        out.writelines(f"  {line}\n" for line in roots)
    sw = command_prefix(args.config)
    linking = [e for e in primaries if e.snapshot.members or e.snapshot.root_cause is not None]
    example = linking[0].incident_id if linking else rows[0][0] if rows else "INCIDENT_ID"
    hints = [
        (f"{sw} incidents", "incidents rebuilt from the audit log"),
        (f"{sw} timeline {example}", "every decision, with the rule that made it"),
        (f"{sw} ack {example}", "acknowledge as $USER (--by NAME otherwise), and see the outcome"),
        (f"{base}/metrics", "gateway metrics"),
        ("http://127.0.0.1:9096/metrics", "ingest; 9097 correlator, 9094 linker, 9098 agent, 9099 executor"),
        ("make down", "stop everything"),
    ]
    width = max(len(command) for command, _ in hints)
    out.write("\nwhere to look next (run from " + str(Path.cwd()) + "):\n")
    out.writelines(f"  {command:<{width}}  # {why}\n" for command, why in hints)


def _alerts(event: IncidentEvent, latest: dict[str, IncidentEvent]) -> int:
    """Distinct alerts of an incident and of the label groups linked into it."""
    members = (latest[m].snapshot.alert_count for m in event.snapshot.members if m in latest)
    return event.snapshot.alert_count + sum(members)


def _root_causes(latest: dict[str, IncidentEvent], primaries: list[IncidentEvent]) -> list[str]:
    """One line per incident the linker worked on: its title, root cause and member groups."""
    lines = []
    for event in primaries:
        snap = event.snapshot
        if not snap.members and snap.root_cause is None:
            continue
        root = snap.root_cause
        named = f"{root.component} ({root.decided_by})" if root is not None else "not named yet"
        lines.append(
            f"{event.incident_id} {clean(snap.title.split(' (', 1)[0])} — root cause {clean(named)} — "
            f"1 + {len(snap.members)} linked groups, {_alerts(event, latest)} alerts"
        )
    return lines
