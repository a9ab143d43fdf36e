"""The notifier's benchmark (`stormwatch bench notify`, ``python -m stormwatch.bench.notify``):
notifications per second per worker, and delivery latency p50/p99, against a webhook receiver on
loopback.

One ``stormwatch notify`` process (one worker: every partition of the incident topic), started as
deployed, with one webhook receiver (Alertmanager v4 payload) that answers 200 at once:

1. **backlog**: ``--incidents`` incidents, each opened then resolved (two notifications), written
   to the incident topic before the worker starts; the clock runs from the first delivery to the
   last. Notifications per second over that wall time, and per CPU-second of the worker (robust on
   a busy machine: what one dedicated core would sustain).
2. **live**: new incidents at ``--rate`` per second for ``--seconds``, each opened and resolved
   (the two events written together, the resolved one stamped 50 ms later); delivery latency per
   notification = the receiver's arrival time minus the time the event was written. p50, p99,
   max, for all and for opened and resolved apart: an incident's resolved message waits for its
   opened one to be delivered and committed (one lane per incident and receiver), so it carries
   one more transaction.

The receiver and the event builders here are also what ``bench/notify_outage.py`` and the
notifier's integration tests use: a receiver that can be taken down (its port closed) and brought
back on the same port, and that records every accepted message with its notification id.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import yaml

from stormwatch.agents.core.notify_policy import notification_id
from stormwatch.bench.procstat import loadavg, machine, sample
from stormwatch.config import Settings, TopicSettings, load_settings
from stormwatch.kafka.client import make_producer, read_topic
from stormwatch.kafka.topics import create_topics, delete_topics
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)

__all__ = [
    "Arrival",
    "Hook",
    "IncidentScript",
    "NotifyRun",
    "main",
    "percentile",
    "render",
    "run_notify_bench",
]

RECEIVER = "hook"

_STATES = {
    IncidentEventType.OPENED: IncidentState.OPEN,
    IncidentEventType.ACKNOWLEDGED: IncidentState.ACKNOWLEDGED,
    IncidentEventType.RESOLVED: IncidentState.RESOLVED,
    IncidentEventType.REOPENED: IncidentState.OPEN,
    IncidentEventType.CLOSED: IncidentState.CLOSED,
}


# ---------------------------------------------------------------------------- incident events


@dataclass
class IncidentScript:
    """One incident's events as the correlator writes them: contiguous seqs, states, snapshots."""

    incident_id: str
    service: str = "api"
    severity: Severity = Severity.CRITICAL
    alerts: int = 1
    seq: int = 0
    state: IncidentState | None = None

    def event(self, kind: IncidentEventType, at_ms: int) -> IncidentEvent:
        before = self.state
        after = _STATES.get(kind, before or IncidentState.OPEN)
        self.seq += 1
        self.state = after
        changes = []
        if kind is IncidentEventType.OPENED:
            changes = [
                AlertChange(
                    fingerprint=f"{self.incident_id}-fp{n}",
                    change=AlertChangeKind.JOINED,
                    status=AlertStatus.FIRING,
                    severity=self.severity,
                    at=utc_from_ms(at_ms),
                    labels={"alertname": "HighLatency", "service": self.service, "instance": f"i{n}"},
                    annotations={"summary": "p99 over 2s"},
                )
                for n in range(self.alerts)
            ]
        active = after in (IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.MITIGATING)
        return IncidentEvent(
            event_id=f"{self.incident_id}:{self.seq}",
            incident_id=self.incident_id,
            seq=self.seq,
            type=kind,
            from_state=before,
            to_state=after,
            at=utc_from_ms(at_ms),
            actor="correlator",
            cause=kind.value,
            alerts=changes,
            snapshot=IncidentSnapshot(
                state=after,
                severity=self.severity,
                title=f"HighLatency on {self.service}",
                group_key=f'{{service="{self.service}"}}',
                group_labels={"service": self.service},
                rule="by-service",
                alert_count=self.alerts,
                firing_count=self.alerts if active else 0,
                opened_at=utc_from_ms(at_ms),
            ),
        )


def publish(settings: Settings, events: Iterable[IncidentEvent]) -> None:
    producer = make_producer(settings)
    for event in events:
        producer.produce(settings.topics.incidents, event.to_bytes(), event.incident_id)
        producer.poll(0)
    if producer.flush(30) != 0:
        raise RuntimeError("incident events not written within 30 s")


# ---------------------------------------------------------------------------- the receiver


@dataclass(frozen=True, slots=True)
class Arrival:
    notification_id: str
    incident_id: str
    at: float  # wall clock, seconds
    status: str  # the payload's status: firing or resolved


@dataclass
class Hook:
    """A webhook receiver on 127.0.0.1 that records what it accepts; ``down()`` closes its port
    (connections are refused, as from a receiver that is not running) and ``up()`` listens on the
    same port again."""

    delay_s: float = 0.0
    port: int = 0
    arrivals: list[Arrival] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        hook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if hook.delay_s:
                    time.sleep(hook.delay_s)
                arrived = time.time()
                status = str(orjson.loads(body).get("status", ""))
                with hook.lock:
                    hook.arrivals.append(
                        Arrival(
                            self.headers.get("X-Stormwatch-Notification-Id", ""),
                            self.headers.get("X-Stormwatch-Incident-Id", ""),
                            arrived,
                            status,
                        )
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler

    def up(self) -> None:
        server = _Server(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="bench-hook", daemon=True)
        self._thread.start()

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def close(self) -> None:
        self.down()

    def ids(self) -> list[str]:
        with self.lock:
            return [a.notification_id for a in self.arrivals]

    def taken(self) -> list[Arrival]:
        with self.lock:
            return list(self.arrivals)


class _Server(ThreadingHTTPServer):
    # The listen backlog: http.server's default of 5 drops the connections of a notifier sending
    # more at once (max_parallel 8 or 32), and each dropped SYN costs a 1 s retransmit.
    request_queue_size = 256


# ---------------------------------------------------------------------------- one run


def notifier_file(url: str, *, retry: str = "") -> str:
    """One webhook receiver told of every opened, reopened and resolved at once."""
    text = (
        "route:\n"
        f"  receiver: {RECEIVER}\n"
        "  group_interval: 0s\n"
        "  repeat_interval: 0s\n"
        "receivers:\n"
        f"  - name: {RECEIVER}\n"
        f"    webhook_configs: [{{url: '{url}'}}]\n"
    )
    return text + (f"    retry: {retry}\n" if retry else "")


class NotifyRun:
    """Topics of one run (``bench.<topic>.<id>``), the config and notifier file, and the
    ``stormwatch notify`` worker processes; ``close()`` stops them and deletes the topics."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        hook_url: str,
        *,
        partitions: int = 3,
        retry: str = "",
        notify: dict[str, Any] | None = None,
        keep_topics: bool = False,
    ) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        topics = TopicSettings.with_prefix("bench", f".{self.suffix}", partitions=partitions)
        config: dict[str, Any] = {"kafka": {"bootstrap_servers": bootstrap}, "topics": topics}
        if notify:
            config["notify"] = notify
        self.config_path = workdir / f"config-{self.suffix}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.notify_path = workdir / f"notify-{self.suffix}.yaml"
        self.notify_path.write_text(notifier_file(hook_url, retry=retry))
        self.settings = load_settings(self.config_path, kafka={"bootstrap_servers": bootstrap})
        self.keep_topics = keep_topics
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.log_path = workdir / f"notify-{self.suffix}.log"
        create_topics(self.settings)

    def start(self, instance: str = "n1") -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "stormwatch.cli", "--config", str(self.config_path), "notify"]
        argv += ["--notify-file", str(self.notify_path), "--instance-id", instance, "--metrics-port", "0"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORMWATCH_")}
        with open(self.log_path, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs[instance] = proc
        return proc

    def kill(self, instance: str = "n1") -> None:
        """SIGKILL: a crash, with no chance to commit or leave the group."""
        proc = self.procs.pop(instance)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"notifier {name} exited with {proc.returncode}:\n{tail}")

    def log(self, topic: str | None = None) -> list[dict[str, Any]]:
        """The notification log (or another topic of JSON records), every committed record."""
        return [
            orjson.loads(m.value() or b"{}")
            for m in read_topic(self.settings, topic or self.settings.topics.notifications)
        ]

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()
        if not self.keep_topics:
            delete_topics(self.settings, list(self.settings.topics.names().values()), timeout_s=15)


def wait_until(what: str, done: Any, timeout_s: float, run: NotifyRun, interval_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        run.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout_s:g} s")
        time.sleep(interval_s)


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_notify_bench(
    bootstrap: str,
    *,
    incidents: int = 3000,
    rate: float = 20.0,
    seconds: float = 30.0,
    partitions: int = 3,
    workdir: Path | None = None,
    keep_topics: bool = False,
    max_parallel: int | None = None,
    log: Any = None,
) -> dict[str, Any]:
    say = log or (lambda line: None)
    notify = {"max_parallel": max_parallel} if max_parallel else None
    with tempfile.TemporaryDirectory(prefix="stormwatch-bench-notify-") as tmp:
        hook = Hook()
        run = NotifyRun(
            bootstrap,
            workdir or Path(tmp),
            hook.url,
            partitions=partitions,
            keep_topics=keep_topics,
            notify=notify,
        )
        try:
            return _measure(run, hook, incidents, rate, seconds, say)
        finally:
            run.close()
            hook.close()


def _measure(
    run: NotifyRun, hook: Hook, incidents: int, rate: float, seconds: float, say: Any
) -> dict[str, Any]:
    load_before = loadavg()
    t0 = int(time.time() * 1000)
    backlog: list[IncidentEvent] = []
    for n in range(incidents):
        inc = IncidentScript(f"inc-bench-{n:06d}", service=f"svc-{n}")
        backlog += [
            inc.event(IncidentEventType.OPENED, t0 + n),
            inc.event(IncidentEventType.RESOLVED, t0 + n + 50),
        ]
    publish(run.settings, backlog)
    expected = 2 * incidents
    say(f"{incidents} incidents ({expected} notifications) written; starting the notifier")
    proc = run.start()
    wait_until("the backlog's notifications", lambda: len(hook.ids()) >= expected, 900, run, 0.2)
    cpu_after = sample(proc.pid).cpu_s
    arrivals = hook.taken()
    first, last = arrivals[0].at, arrivals[-1].at
    backlog_wall = max(last - first, 1e-9)
    # CPU of the backlog: the worker's CPU from its start (start-up included: an upper bound)
    backlog_cpu = cpu_after
    say(f"backlog delivered in {backlog_wall:.1f} s; live phase at {rate:g} incidents/s for {seconds:g} s")

    # live: incidents arriving at a steady rate, each opened then resolved 50 ms later
    sent_at: dict[str, float] = {}
    producer = make_producer(run.settings)
    total = int(rate * seconds)
    started = time.monotonic()
    before_live = len(hook.ids())
    for n in range(total):
        due = started + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        written = time.time()
        now = int(written * 1000)
        inc = IncidentScript(f"inc-live-{n:06d}", service=f"live-{n}")
        for event in (
            inc.event(IncidentEventType.OPENED, now),
            inc.event(IncidentEventType.RESOLVED, now + 50),
        ):
            sent_at[notification_id(event.incident_id, event.seq, RECEIVER)] = written
            producer.produce(run.settings.topics.incidents, event.to_bytes(), event.incident_id)
        producer.poll(0)
    producer.flush(30)
    wait_until("the live notifications", lambda: len(hook.ids()) >= before_live + 2 * total, 300, run, 0.2)
    live = [a for a in hook.taken()[before_live:] if a.notification_id in sent_at]
    latencies = [max(a.at - sent_at[a.notification_id], 0.0) for a in live]
    opened = [max(a.at - sent_at[a.notification_id], 0.0) for a in live if a.status == "firing"]
    resolved = [max(a.at - sent_at[a.notification_id], 0.0) for a in live if a.status == "resolved"]
    doubled = len(hook.ids()) - len(set(hook.ids()))
    result = {
        "workload": "notify",
        "machine": machine(),
        "load_before": load_before,
        "load_after": loadavg(),
        "partitions": run.settings.topics.partitions,
        "backlog": {
            "incidents": incidents,
            "notifications": expected,
            "wall_s": round(backlog_wall, 3),
            "per_second": round(expected / backlog_wall, 1),
            "worker_cpu_s": round(backlog_cpu, 2),
            "per_cpu_second": round(expected / backlog_cpu, 1) if backlog_cpu else None,
        },
        "live": {
            "rate_incidents_per_s": rate,
            "seconds": seconds,
            "notifications": len(latencies),
            "latency_p50_ms": round(percentile(latencies, 0.5) * 1000, 1),
            "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "latency_max_ms": round(max(latencies, default=0.0) * 1000, 1),
            "opened_p50_ms": round(percentile(opened, 0.5) * 1000, 1),
            "opened_p99_ms": round(percentile(opened, 0.99) * 1000, 1),
            "resolved_p50_ms": round(percentile(resolved, 0.5) * 1000, 1),
            "resolved_p99_ms": round(percentile(resolved, 0.99) * 1000, 1),
        },
        "received_twice": doubled,
        "max_parallel": run.settings.notify.max_parallel,
    }
    return result


def render(result: dict[str, Any]) -> str:
    b, live = result["backlog"], result["live"]
    m = result["machine"]
    lines = [
        f"notifier benchmark: 1 worker, {result['partitions']} partitions, webhook receiver on loopback",
        f"machine: {m['cpu']}, {m['cores']} cores; load before {result['load_before'][0]:.1f}, "
        f"after {result['load_after'][0]:.1f}",
        f"backlog: {b['notifications']} notifications in {b['wall_s']:.1f} s = {b['per_second']:.0f}/s "
        f"per worker; {b['per_cpu_second']}/CPU-s ({b['worker_cpu_s']:.1f} CPU-s incl. start-up)",
        f"live: {live['notifications']} notifications at {live['rate_incidents_per_s']:g} incidents/s: "
        f"latency p50 {live['latency_p50_ms']:.1f} ms, p99 {live['latency_p99_ms']:.1f} ms, "
        f"max {live['latency_max_ms']:.1f} ms",
        f"  opened p50 {live['opened_p50_ms']:.1f} ms, p99 {live['opened_p99_ms']:.1f} ms; "
        f"resolved p50 {live['resolved_p50_ms']:.1f} ms, p99 {live['resolved_p99_ms']:.1f} ms",
        f"received twice: {result['received_twice']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m stormwatch.bench.notify", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    p.add_argument("--incidents", type=int, default=3000, help="backlog incidents (2 notifications each)")
    p.add_argument("--rate", type=float, default=20.0, help="live: incidents per second (20)")
    p.add_argument("--seconds", type=float, default=30.0, help="live: how long (30)")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--max-parallel", type=int, help="notify.max_parallel of the worker (default 8)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    result = run_notify_bench(
        args.bootstrap_servers,
        max_parallel=args.max_parallel,
        incidents=args.incidents,
        rate=args.rate,
        seconds=args.seconds,
        partitions=args.partitions,
        log=lambda line: print(f"... {line}", file=sys.stderr, flush=True),
    )
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
