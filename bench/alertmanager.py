"""Prometheus Alertmanager side by side: the same storm pushed through its /api/v2/alerts.

The harness starts Debian's ``prometheus-alertmanager`` on loopback with a config of its own (a
route whose group_by equals stormwatch's default rule for the benchmark's labels, the same
group_wait / group_interval / repeat_interval / resolve_timeout), clustering off and storage in a
temporary directory, plus a webhook receiver that counts the notifications. The storm's record
bodies are exactly what Prometheus POSTs to Alertmanager; their times are moved to Alertmanager's
wall clock, since Alertmanager has no event time (it compares endsAt with now). They are sent by
bench/httppush.py, the client ``storm-http`` sends them to the stormwatch gateway with.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import yaml

from stormwatch.bench.httppush import CLIENTS, push, storm_bodies, wait_ready
from stormwatch.bench.pipeline import free_port
from stormwatch.bench.procstat import ProcSample, sample
from stormwatch.bench.results import rate
from stormwatch.bench.workloads import Storm, StormSpec

__all__ = ["BINARY", "WebhookReceiver", "find_binary", "run_alertmanager"]

BINARY = "prometheus-alertmanager"


def find_binary() -> str | None:
    return shutil.which(BINARY) or shutil.which("alertmanager")


class WebhookReceiver:
    """A loopback HTTP server that counts Alertmanager's webhook notifications and their alerts."""

    def __init__(self) -> None:
        self.notifications = 0
        self.alerts = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    count = len(orjson.loads(body).get("alerts", []))
                except (orjson.JSONDecodeError, AttributeError):
                    count = 0
                receiver._count(count)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _count(self, alerts: int) -> None:
        with self._lock:
            now = time.monotonic()
            self.notifications += 1
            self.alerts += alerts
            self.first_at = self.first_at or now
            self.last_at = now

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _config(webhook_port: int, group_by: list[str], rules: dict[str, str]) -> dict[str, Any]:
    return {
        "global": {"resolve_timeout": rules["resolve_timeout"]},
        "route": {
            "receiver": "bench",
            "group_by": group_by,
            "group_wait": rules["group_wait"],
            "group_interval": rules["group_interval"],
            "repeat_interval": rules["repeat_interval"],
        },
        "receivers": [
            {
                "name": "bench",
                "webhook_configs": [
                    {"url": f"http://127.0.0.1:{webhook_port}/hook", "send_resolved": True, "max_alerts": 0}
                ],
            }
        ],
    }


def _wait_idle(
    pid: int, *, window_s: float = 1.0, below_s: float = 0.02, timeout_s: float = 60.0
) -> ProcSample:
    """Wait until ``pid`` used less than ``below_s`` CPU seconds in ``window_s``; the last sample."""
    deadline = time.monotonic() + timeout_s
    last = sample(pid)
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = sample(pid)
        if now.cpu_s - last.cpu_s < below_s:
            return now
        last = now
    return last


def version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def run_alertmanager(
    spec: StormSpec,
    workdir: Path,
    *,
    clients: int = CLIENTS,
    rules: dict[str, str] | None = None,
    notify_wait_s: float | None = None,
) -> dict[str, Any]:
    """Push ``spec``'s storm into a fresh Alertmanager and measure it; raises if it is not installed."""
    binary = find_binary()
    if binary is None:
        raise FileNotFoundError(
            f"{BINARY} is not installed; install Debian's package with `apt-get install {BINARY}`"
        )
    timings = {"group_wait": "30s", "group_interval": "5m", "repeat_interval": "4h", "resolve_timeout": "5m"}
    timings.update(rules or {})
    storm = Storm(spec)
    # stormwatch's default rule groups by every label but the per-replica ones (instance, pod):
    # for the benchmark's alerts exactly the labels their group shares
    group_by = sorted(storm.group_labels(0))
    receiver = WebhookReceiver()
    am_dir = workdir / f"alertmanager-{time.time_ns()}"
    (am_dir / "data").mkdir(parents=True)
    config = am_dir / "alertmanager.yml"
    config.write_text(yaml.safe_dump(_config(receiver.port, group_by, timings)))
    port = free_port()
    log = open(am_dir / "alertmanager.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.path={am_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_ready(port, proc, name="alertmanager")
        bodies = storm_bodies(storm, int(time.time() * 1000))
        alerts = sum(n for _, n in bodies)
        idle = _wait_idle(proc.pid, window_s=0.5)
        before = sample(proc.pid)
        pushed = push(port, [body for body, _ in bodies], receiver="alertmanager", clients=clients)
        started = pushed.started
        settled = _wait_idle(proc.pid, window_s=0.5)
        wall = pushed.wall_s
        cpu = settled.cpu_s - before.cpu_s
        # Group notifications go out group_wait after each group's first alert.
        wait = notify_wait_s if notify_wait_s is not None else _seconds(timings["group_wait"]) + 10
        time.sleep(max(0.0, started + wait - time.monotonic()))
        final = sample(proc.pid)
        return {
            "version": version(binary),
            "alerts": alerts,
            "records": len(bodies),
            "clients": clients,
            "wall_s": round(wall, 3),
            "alerts_per_s": round(rate(alerts, wall)),
            "cpu_s": round(cpu, 3),
            "cpu_us_per_alert": round(cpu / alerts * 1e6, 2) if alerts else None,
            "alerts_per_cpu_s": round(rate(alerts, cpu)),
            "client_cpu_s": round(pushed.client_cpu_s, 3),
            "client_cpu_us_per_alert": round(pushed.client_cpu_s / alerts * 1e6, 2) if alerts else None,
            "rss_idle": idle.rss,
            "rss": final.rss,
            "peak_rss": final.peak_rss,
            "notifications": receiver.notifications,
            "notified_alerts": receiver.alerts,
            "notification_window_s": round(wait, 1),
            "group_by": group_by,
            "timings": timings,
        }
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        receiver.close()
        shutil.rmtree(am_dir, ignore_errors=True)


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if duration.endswith(suffix):
            return float(duration[: -len(suffix)]) * units[suffix]
    return float(duration)
