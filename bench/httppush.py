"""The HTTP client that pushes a storm's record bodies, as a Prometheus server sends its alerts.

One client for every system the harness sends alerts to over HTTP: Alertmanager
(bench/alertmanager.py) and the stormwatch gateway (``storm-http`` in bench/runner.py) get the same
bodies from the same code with the same concurrency, so their figures compare like for like.

Each client thread keeps one HTTP/1.1 connection open and POSTs the next body as soon as the
previous one was answered (Prometheus' notifier sends one batch per request and waits for the
answer). Bodies are encoded before the clock starts; the client's own CPU time (the sum of its
threads' CPU time) is measured, so a reader sees that it is not what limits the run.
"""

from __future__ import annotations

import http.client
import subprocess
import threading
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from stormwatch.bench.workloads import Storm

__all__ = ["CLIENTS", "PATH", "PushResult", "push", "storm_bodies", "wait_ready"]

CLIENTS = 4
"""Concurrent clients (connections) in every HTTP push of the harness."""

PATH = "/api/v2/alerts"
"""Alertmanager's API v2 alert endpoint, which the gateway serves too: what Prometheus POSTs to."""


@dataclass(frozen=True, slots=True)
class PushResult:
    """What one push did: requests sent, monotonic start and end, the client threads' CPU time."""

    requests: int
    clients: int
    started: float
    finished: float
    client_cpu_s: float

    @property
    def wall_s(self) -> float:
        return self.finished - self.started


def storm_bodies(storm: Storm, now_ms: int) -> list[tuple[bytes, int]]:
    """Every record body of ``storm`` with the number of alerts it holds, encoded as if sent now.

    The receiver compares times with its clock (Alertmanager has no event time; the gateway stamps
    a record with its arrival): each body's times are moved so that its own time is ``now_ms``.
    """
    return [(storm.encode(b, now_ms - b.t_rel), len(b.notes)) for b in storm.batches()]


def push(
    port: int,
    bodies: Sequence[bytes],
    *,
    receiver: str,
    clients: int = CLIENTS,
    host: str = "127.0.0.1",
    path: str = PATH,
    timeout_s: float = 60.0,
) -> PushResult:
    """POST every body, in order, from ``clients`` concurrent connections; raises unless all got 200.

    ``receiver`` names the system in the error. The first refusal stops every client.
    """
    lock = threading.Lock()
    position = 0
    errors: list[str] = []
    cpu: list[float] = []

    def client() -> None:
        nonlocal position
        cpu_start = time.thread_time()
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            while True:
                with lock:
                    if position >= len(bodies) or errors:
                        return
                    body = bodies[position]
                    position += 1
                conn.request("POST", path, body, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                answer = resp.read()
                if resp.status != 200:
                    with lock:
                        errors.append(f"HTTP {resp.status} {answer[:200]!r}")
        finally:
            conn.close()
            used = time.thread_time() - cpu_start
            with lock:
                cpu.append(used)

    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    finished = time.monotonic()
    if errors:
        raise RuntimeError(f"{receiver} refused pushes: {errors[:3]}")
    return PushResult(len(bodies), clients, started, finished, sum(cpu))


def wait_ready(port: int, proc: subprocess.Popen[bytes], *, name: str, timeout_s: float = 30.0) -> None:
    """Wait until ``proc`` answers 200 on ``/-/ready`` at 127.0.0.1:``port`` (Alertmanager and the
    gateway both serve it; the gateway once Kafka takes its writes)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{name} not ready on 127.0.0.1:{port} within {timeout_s:.0f}s")
