"""`stormwatch demo`: push a simulated alert storm through a running gateway and report the outcome.

`make up` runs it after starting the stack, so a new user sees the whole path at work: HTTP in
(as Prometheus would send it), dedup and grouping, incidents out, and how much noise was removed.
With a topology (correlator.topology_file, and `stormwatch link` running, as `make up` has them),
the default storm is a database outage spreading through the services that use it: its label
groups are linked into one incident, and the summary names its root cause. With
`stormwatch notify` running (`make up` starts it with deploy/notify.yaml), the summary counts the
notifications of the storm's incidents (topics.notifications) and shows one that the demo receiver
(`stormwatch demo-receiver`, stormwatch/demoreceiver.py) got.

`stormwatch demo-receiver` is that receiver: a webhook endpoint on 127.0.0.1 that appends each
notification to a file (`make up`: var/stack/notifications.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

from stormwatch.config import Settings
from stormwatch.demoreceiver import read_received
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
    p.add_argument(
        "--notifications-file",
        metavar="FILE",
        default=None,
        help="what `stormwatch demo-receiver --out FILE` writes: the summary shows a notification from it",
    )
    p.set_defaults(handler=run_demo)

    text = "A webhook receiver for the demo: append each notification it gets to a file (JSON lines)."
    r: argparse.ArgumentParser = sub.add_parser("demo-receiver", help=text, description=text)
    r.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    r.add_argument("--port", type=int, default=9102, help="port (default: 9102; 0: any free port)")
    r.add_argument(
        "--out",
        metavar="FILE",
        default="var/stack/notifications.jsonl",
        help="append each notification here (default: var/stack/notifications.jsonl)",
    )
    r.set_defaults(handler=run_receiver)


def run_receiver(args: argparse.Namespace, settings: Settings) -> int:
    from stormwatch.demoreceiver import serve

    try:
        return serve(args.host, args.port, Path(args.out))
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None


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
    incidents = {e.incident_id for e in events}
    notified = _notifications(settings, incidents)
    _summarize(args, settings, base, statuses, sent_alerts, events, notified)
    return 0 if events and set(statuses) <= {200, 202} else 1


def _events(settings: Settings) -> list[IncidentEvent]:
    return [
        IncidentEvent.from_bytes(m.value() or b"") for m in read_topic(settings, settings.topics.incidents)
    ]


def _notifications(settings: Settings, incidents: set[str]) -> list[dict[str, Any]] | None:
    """The delivery records (docs/notifications.md, "Topics") about this storm's incidents, or
    None when there is no notifications topic (no `stormwatch notify` to tell about)."""
    records = []
    try:
        for m in read_topic(settings, settings.topics.notifications, timeout_s=5.0):
            try:
                record = json.loads(m.value() or b"")
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("incident_id") in incidents:
                records.append(record)
    except UserError:
        return None
    return records


def _summarize(
    args: argparse.Namespace,
    settings: Settings,
    base: str,
    statuses: Counter[int],
    sent_alerts: int,
    events: list[IncidentEvent],
    notifications: list[dict[str, Any]] | None = None,
) -> None:
    latest: dict[str, IncidentEvent] = {}
    for event in events:
        if event.incident_id not in latest or event.seq > latest[event.incident_id].seq:
            latest[event.incident_id] = event
    # Only the incidents of this storm: an earlier run's may still be closing meanwhile.
    opened = {e.incident_id for e in events if e.type is IncidentEventType.OPENED}
    latest = {i: e for i, e in latest.items() if i in opened} or latest
    # The notifier's own outcomes (`notified`, `notify_failed`) are on the audit log too, but they
    # are not what the storm became: the ratio leaves them out.
    notifier_events = {IncidentEventType.NOTIFIED, IncidentEventType.NOTIFY_FAILED}
    storm_events = sum(1 for e in events if e.type not in notifier_events)
    ratio = sent_alerts / storm_events if storm_events else 0.0
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
    if storm_events != len(events):
        out.write(" (not counting the notifier's)")
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
    if notifications is not None:
        shown = [e.incident_id for e in primaries]
        members = {i for i, e in latest.items() if e.snapshot.linked_into is not None}
        _summarize_notifications(
            out, notifications, getattr(args, "notifications_file", None), shown, members
        )
    sw = command_prefix(args.config)
    linking = [e for e in primaries if e.snapshot.members or e.snapshot.root_cause is not None]
    example = linking[0].incident_id if linking else rows[0][0] if rows else "INCIDENT_ID"
    hints = [
        (f"{sw} incidents", "incidents rebuilt from the audit log"),
        (f"{sw} timeline {example}", "every decision, with the rule that made it"),
        (f"{sw} ack {example}", "acknowledge as $USER (--by NAME otherwise), and see the outcome"),
        (f"{base}/metrics", "gateway metrics"),
        (
            "http://127.0.0.1:9096/metrics",
            "ingest; 9097 correlator, 9094 linker, 9098 agent, 9099 executor, 9101 notifier",
        ),
        ("make down", "stop everything"),
    ]
    received = getattr(args, "notifications_file", None)
    if notifications is not None and received:
        hints.insert(-1, (f"tail -n 1 {received}", "the last notification the demo webhook got"))
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


def _summarize_notifications(
    out: Any,
    records: list[dict[str, Any]],
    received_file: str | None,
    shown: list[str],
    members: set[str] | None = None,
) -> None:
    """How many notifications of this storm went out, to whom, and one the demo receiver got
    (about the first incident of ``shown`` that has one). ``members``: label groups linked into
    another incident; a message about one went out before it was linked."""
    sent = [r for r in records if r.get("outcome") == "sent"]
    by_receiver = Counter(f"{r.get('receiver')} ({r.get('integration')})" for r in sent)
    others = Counter(str(r.get("outcome")) for r in records if r.get("outcome") != "sent")
    out.write(f"\nnotifications:    {len(sent)} delivered")
    if len(by_receiver) == 1:
        out.write(f" to {clean(next(iter(by_receiver)))}")
    elif by_receiver:
        out.write(" (" + ", ".join(f"{n} to {clean(name)}" for name, n in sorted(by_receiver.items())) + ")")
    if received_file:
        out.write(f", see {received_file}")
    if others:
        out.write(f"; other attempts: {', '.join(f'{n} {k}' for k, n in sorted(others.items()))}")
    out.write("\n")
    early = sum(1 for r in sent if r.get("incident_id") in (members or set()))
    if early:
        out.write(
            f"                  {early} of them about label groups that opened before the linker linked "
            "them into their root cause's incident\n"
        )
    if not received_file:
        return
    ids = {r.get("notification_id") for r in sent}
    received = [e for e in read_received(Path(received_file)) if e.get("notification_id") in ids]
    rank = {incident: i for i, incident in enumerate(shown)}
    received.sort(key=lambda e: rank.get(str(e.get("incident_id")), len(rank)))
    if received:
        out.writelines(f"  {line}\n" for line in _show_received(received[0]))


def _show_received(entry: dict[str, Any]) -> list[str]:
    """One notification as the demo receiver got it, in a few lines (the payload is Alertmanager's)."""
    payload = entry.get("payload")
    payload = payload if isinstance(payload, dict) else {}
    alerts = payload.get("alerts")
    alerts = alerts if isinstance(alerts, list) else []
    labels = payload.get("groupLabels")
    labels = labels if isinstance(labels, dict) else {}
    first = alerts[0] if alerts and isinstance(alerts[0], dict) else {}
    lines = [
        f"e.g. about {entry.get('incident_id')}, received {entry.get('received_at')} "
        f"(POST {entry.get('path')}, X-Stormwatch-Notification-Id {entry.get('notification_id')}):",
        f"  status {payload.get('status')}, receiver {payload.get('receiver')}, {len(alerts)} alert(s)"
        + (f" (+{payload['truncatedAlerts']} truncated)" if payload.get("truncatedAlerts") else ""),
        "  groupLabels " + ", ".join(f"{k}={v}" for k, v in labels.items()),
    ]
    if first:
        alert_labels = first.get("labels")
        alert_labels = alert_labels if isinstance(alert_labels, dict) else {}
        shown = ", ".join(f"{k}={v}" for k, v in alert_labels.items())
        lines.append(f"  alerts[0] {first.get('status')} since {first.get('startsAt')}: {shown}")
    return [clean(line)[:240] for line in lines]
