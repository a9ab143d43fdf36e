"""An hour under load with a fault every few minutes (issue #17): the reliability run.

    sudo .venv/bin/python -m stormwatch.bench.chaos --minutes 60 --rate 5000 --out var/chaos
    sudo .venv/bin/python -m stormwatch.bench.chaos                 # 6 minutes at 1,000/s, 2 faults

Everything runs on this machine, on loopback, inside network namespaces joined by the project's
userspace switch (deploy/faults/netswitch.py; needs root): three Kafka brokers (hosts b1, b2, b3),
the gateway with its console and Alertmanager API (host gw), ingest (host in) and two correlators
(hosts c1, c2); the linker, the notifier (to a demo webhook receiver), and the agent (dry run) run
in the root namespace, where the load generator and the probes are. The load is the soak's rolling
population of episodes (stormwatch.bench.soak.AlertStream) POSTed to the gateway's /api/v2/alerts
as Prometheus does, retried on 503 or a lost connection after Retry-After (Prometheus retries too).

Every ``--fault-every`` minutes after ``--first-fault`` minutes one fault of the cycle below is
applied with the operator's own commands (netswitch.py, local-kafka.sh, kill), held, and healed:
the run prints each command, so every fault can be repeated by hand (docs/reliability.md). Each
``--sample-s`` seconds it records every process's resident memory, every consumer group's lag,
and the alerts/s accepted and refused. After the load stops and the pipeline drains, the oracle
counts from the raw topic to the audit log: every alert fingerprint the gateway wrote is in an
incident (nothing lost), no incident event is there twice and every incident's sequence runs
1, 2, 3 ... (nothing twice), and no fingerprint joined one incident twice.

Output: a line per sample, a JSON summary (and the samples) in ``--out``/chaos.json, and the
curves as ``--out``/chaos.svg. Exit status 1 when the oracle finds a lost or duplicated alert,
2 when the run could not be carried out, 0 otherwise; memory slopes and recovery times are for a
human to judge against the issue's targets (printed in the verdict).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stormwatch.bench.chart import Band, Panel, Series, svg
from stormwatch.bench.pipeline import ROOT, BenchPipeline, Worker
from stormwatch.bench.soak import RULES as SOAK_RULES
from stormwatch.bench.soak import AlertStream, StreamStats, add_stream_arguments, rss_mb, slope
from stormwatch.kafka.client import read_topic
from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent

NETSWITCH = ROOT / "deploy" / "faults" / "netswitch.py"
LOCAL_KAFKA = ROOT / "deploy" / "kafka" / "local-kafka.sh"
WORKER_HOSTS = ("gw", "in", "c1", "c2")
BASE_PORT = 26892
"""Brokers on 26892-26894, their controllers on 26992-26994; the gateway and the metrics ports of
the workers in hosts on 26850-26866; the demo receiver on 26880 (docs/reliability.md). All below
the ephemeral range (32768-60999), so no client's source port can hold one of them."""
GATEWAY_PORT = 26850
METRICS_PORTS = {"in": 26861, "c1": 26862, "c2": 26863}
ROOT_METRICS = {"linker": 26864, "notifier": 26865, "agent": 26866}
RECEIVER_PORT = 26880
MAX_SELF_EXITS = 3
"""A worker that exits by itself more often than this is left down (a crash loop), not restarted."""
ROLES: dict[str, tuple[str, str | None, int]] = {
    "gateway": ("gateway", "gw", GATEWAY_PORT),
    "ingest": ("ingest", "in", METRICS_PORTS["in"]),
    "c1": ("correlate", "c1", METRICS_PORTS["c1"]),
    "c2": ("correlate", "c2", METRICS_PORTS["c2"]),
    "linker": ("link", None, ROOT_METRICS["linker"]),
    "notifier": ("notify", None, ROOT_METRICS["notifier"]),
    "agent": ("agent", None, ROOT_METRICS["agent"]),
}
"""Every worker: its command, its host of the switch (None: the root namespace), its port."""

RULES = SOAK_RULES.replace("resolve_timeout: 30s", "resolve_timeout: 2m")
"""The soak's timings, but a firing alert lives 2 minutes without a re-send, so the longest fault
(a minute) never expires the alerts of a sender whose pushes are held back meanwhile."""
GROUP_WAIT_MS = 2000
LATENESS_MS = 500
"""The rules' group_wait and allowed_lateness (the oracle's "resolved within group_wait")."""

NOTIFY = """
notify_on: [opened, resolved]
route:
  receiver: hook
  group_interval: 1m
  repeat_interval: 4h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{port}/alerts
        max_alerts: 5
    retry: {{initial: 1s, max: 30s, budget: 10m}}
"""


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] chaos: {text}", flush=True)


# ------------------------------------------------------------------------------- the network


class Net:
    """The switch, driven through its command line: the commands printed are the ones an operator
    types (deploy/faults/README.md)."""

    def __init__(self, workdir: Path, prefix: str, nodes: int) -> None:
        self.prefix = prefix
        self.brokers = tuple(f"b{n}" for n in range(1, nodes + 1))
        """Host bN runs broker N."""
        self.control = workdir / "netswitch.sock"
        self.log = workdir / "netswitch.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def up(self) -> None:
        controller = 1 if len(self.brokers) == 1 else 100  # local-kafka.sh's port layout
        servers = [
            f"{b}={BASE_PORT + i},{b}={BASE_PORT + controller + i}" for i, b in enumerate(self.brokers)
        ]
        servers.append(f"gw={GATEWAY_PORT}")
        servers += [f"{host}={port}" for host, port in METRICS_PORTS.items()]
        argv = [sys.executable, str(NETSWITCH), "--control", str(self.control), "up", "--prefix", self.prefix]
        argv += ["--host", ",".join(self.brokers + WORKER_HOSTS)]
        for server in servers:
            argv += ["--server", server]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + 30
        while self.command("status", quiet=True) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"chaos: the switch did not start:\n{self.log.read_text(errors='replace')}")
            time.sleep(0.2)

    def command(self, *args: str, quiet: bool = False) -> dict[str, Any] | None:
        """Run one switch command; its JSON answer, None when it failed."""
        argv = [sys.executable, str(NETSWITCH), "--control", str(self.control), *args]
        if not quiet:
            say("$ netswitch.py " + " ".join(args))
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            if not quiet:
                say(f"netswitch failed: {done.stderr.strip() or done.stdout.strip()}")
            return None
        try:
            answer: dict[str, Any] = json.loads(done.stdout or "{}")
        except json.JSONDecodeError:  # e.g. "down" as the switch exits: it printed its goodbye only
            if not quiet:
                say(f"netswitch answered no JSON: {done.stdout.strip()[:200]!r}")
            return None
        return answer

    def exec_prefix(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", self.prefix + host]

    def down(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.command("down", quiet=True)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for host in self.brokers + WORKER_HOSTS:  # what a killed switch left behind
            if Path("/run/netns", self.prefix + host).exists():
                subprocess.run(["ip", "netns", "del", self.prefix + host], capture_output=True, check=False)


class Cluster:
    """Three brokers of deploy/kafka/local-kafka.sh, node N in host bN of the switch."""

    def __init__(self, net: Net, data_dir: Path) -> None:
        self.net = net
        self.data_dir = data_dir
        self.nodes = len(net.brokers)
        self.bootstrap = ",".join(f"127.0.0.1:{BASE_PORT + i}" for i in range(self.nodes))

    def script(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "STORMWATCH_KAFKA_NETNS_PREFIX": f"{self.net.prefix}b",
            "STORMWATCH_KAFKA_START_TIMEOUT": "180",
        }
        argv = ["bash", str(LOCAL_KAFKA), *args, "--nodes", str(self.nodes), "--port", str(BASE_PORT)]
        argv += ["--data-dir", str(self.data_dir)]
        say("$ local-kafka.sh " + " ".join(args))
        done = subprocess.run(
            argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False
        )
        if check and done.returncode != 0:
            raise SystemExit(f"chaos: local-kafka.sh {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done

    def pid(self, node: int) -> int | None:
        try:
            node_dir = self.data_dir if self.nodes == 1 else self.data_dir / f"node-{node}"
            return int((node_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None


# ------------------------------------------------------------------------------ the senders


@dataclass
class SendStats:
    accepted_alerts: int = 0
    accepted_requests: int = 0
    refused: int = 0
    """Answers other than 200 (503 while Kafka is out of reach) and lost connections: retried."""
    last_refusal: str = ""


class HttpSink:
    """Prometheus' side: pushes queued in order, each retried until the gateway accepts it."""

    def __init__(self, port: int, clients: int, stats: SendStats) -> None:
        self.port = port
        self.stats = stats
        self.queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue()
        self.lock = threading.Lock()
        self.stop_at: float | None = None
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def __call__(self, body: bytes, _now_ms: int, alerts: int) -> None:
        self.queue.put((body, alerts))

    def _client(self) -> None:
        conn: http.client.HTTPConnection | None = None
        while (item := self.queue.get()) is not None:
            body, alerts = item
            while True:
                if self.stop_at is not None and time.monotonic() > self.stop_at:
                    return
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                    conn.request("POST", "/api/v2/alerts", body, {"Content-Type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    if response.status == 200:
                        with self.lock:
                            self.stats.accepted_alerts += alerts
                            self.stats.accepted_requests += 1
                        break
                    wait = min(float(response.getheader("Retry-After") or 1), 5.0)
                    refusal = f"HTTP {response.status}"
                except (OSError, http.client.HTTPException) as exc:
                    with contextlib.suppress(OSError):
                        if conn is not None:
                            conn.close()
                    conn, wait, refusal = None, 1.0, f"{type(exc).__name__}: {exc}"
                with self.lock:
                    self.stats.refused += 1
                    self.stats.last_refusal = refusal
                time.sleep(wait)

    def backlog(self) -> int:
        return self.queue.qsize()

    def drain(self, timeout_s: float) -> bool:
        """Wait until every queued push was accepted (or ``timeout_s``); stop the clients."""
        deadline = time.monotonic() + timeout_s
        while self.queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.stop_at = deadline
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 35)
        return self.queue.qsize() <= len(self.threads)


# ------------------------------------------------------------------------------- the faults


@dataclass
class Fault:
    name: str
    stage: str
    hold_s: float
    apply: Callable[[Run], str]
    """Applies the fault; returns what it did (e.g. which broker it cut)."""
    heal: Callable[[Run], None]
    min_brokers: int = 1

    @property
    def key(self) -> str:
        """The name as ``--faults`` takes it: ``broker-crash``."""
        return self.name.lower().replace(" ", "-")


@dataclass
class FaultRecord:
    name: str
    stage: str
    detail: str
    start_s: float
    healed_s: float
    recovered_s: float | None = None
    """Seconds from the heal until every group's lag was back to its pre-fault level."""
    lag_peak: int = 0


def _cut_correlator(run: Run) -> str:
    run.net.command("partition", "c1", run.brokers, "--mode", "blackhole")
    return "c1 cut from every broker (blackhole): a zombie past its session and transaction timeouts"


def _slow_ingest(run: Run) -> str:
    run.net.command("latency", "in", run.brokers, "--ms", "200")
    run.net.command("loss", "in", run.brokers, "--pct", "5")
    return "200 ms latency and 5% loss between ingest and every broker"


def _isolate_leader(run: Run) -> str:
    leader = run.busiest_leader()
    others = ",".join(b for b in run.net.brokers if b != leader)
    run.fault_state["leader"] = leader
    run.net.command("partition", leader, others)
    return f"{leader} (leading the most partitions) cut from {others}; clients still reach it"


def _heal_leader(run: Run) -> None:
    run.net.command("heal", run.fault_state.pop("leader", "b1"), run.brokers)


def _cut_gateway(run: Run) -> str:
    run.net.command("partition", "gw", run.brokers, "--mode", "blackhole")
    return "the gateway cut from every broker (blackhole); senders get 503 and retry"


def _flap_correlator(run: Run) -> str:
    run.net.command("flap", "c2", run.brokers, "--every", "2000", "--for", "40", "--mode", "reset")
    return "c2's links to the brokers down and up every 2 s for 40 s"


def _halfopen(run: Run) -> str:
    broker = run.net.brokers[-1]
    run.net.command("halfopen", "c2", broker)
    return f"c2-{broker} half-open: bytes swallowed both ways, nobody told"


def _kill_ingest(run: Run) -> str:
    run.kill("ingest")
    return "ingest SIGKILLed, restarted 5 s later"


def _restart_ingest(run: Run) -> None:
    run.restart("ingest")


def _kill_broker(run: Run) -> str:
    node = 1 + run.fault_count % run.cluster.nodes
    run.fault_state["node"] = str(node)
    run.cluster.script("kill-node", str(node))
    return f"broker {node} SIGKILLed, restarted after the hold"


def _restart_broker(run: Run) -> None:
    node = run.fault_state.pop("node", "1")
    run.cluster.script("start-node", node, check=False)
    run.lives.setdefault(f"kafka-{node}", [0.0]).append(time.monotonic() - run.started)


def _kill_correlator(run: Run) -> str:
    run.kill("c1")
    return "correlator c1 SIGKILLed, restarted after the hold"


def _restart_correlator(run: Run) -> None:
    run.restart("c1")


def _heal_all(run: Run) -> None:
    run.net.command("heal")


FAULTS = [
    Fault("zombie correlator", "correlator", 35, _cut_correlator, _heal_all),
    Fault("slow links", "ingest", 60, _slow_ingest, _heal_all),
    Fault("minority leader", "kafka", 40, _isolate_leader, _heal_leader, min_brokers=3),
    Fault("gateway cut from Kafka", "gateway", 25, _cut_gateway, _heal_all),
    Fault("broker crash", "kafka", 30, _kill_broker, _restart_broker),
    Fault("flapping links", "correlator", 40, _flap_correlator, _heal_all),
    Fault("ingest crash", "ingest", 5, _kill_ingest, _restart_ingest),
    Fault("half-open link", "correlator", 30, _halfopen, _heal_all),
    Fault("correlator crash", "correlator", 10, _kill_correlator, _restart_correlator),
]


def _fault_keys(text: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = sorted(set(keys) - {f.key for f in FAULTS})
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"unknown fault {', '.join(unknown) or '(none given)'}; choose from {', '.join(f.key for f in FAULTS)}"
        )
    return keys


# ------------------------------------------------------------------------------------ the run


@dataclass
class Sample:
    t_s: float
    rss: dict[str, float]
    lag: dict[str, int]
    accepted_per_s: float
    refused_per_s: float
    backlog: int
    load: float
    linker_state: dict[str, float] = field(default_factory=dict)
    """stormwatch_linker_state summed over partitions, by kind (incidents, groups, pending_notes):
    whether the linker's state grows or only its memory does."""


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    net: Net
    cluster: Cluster
    env: BenchPipeline | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    lives: dict[str, list[float]] = field(default_factory=dict)
    """Per process: the run times (s) it was (re)started at."""
    fault_state: dict[str, str] = field(default_factory=dict)
    fault_count: int = 0
    started: float = 0.0
    self_exits: dict[str, int] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)
    """Workers a fault killed, until its heal restarts them."""
    committed_seen: dict[str, set[int]] = field(default_factory=dict)
    """Per stage: the partitions its group was ever seen to have a committed offset on."""

    @property
    def brokers(self) -> str:
        """Every broker host, as the switch's command line takes one side: "b1,b2,b3"."""
        return ",".join(self.net.brokers)

    # --- workers

    def start_workers(self) -> None:
        for name in ROLES:
            self._launch(name)
            self.lives[name] = [0.0]
        receiver = [sys.executable, "-m", "stormwatch.cli", "demo-receiver", "--port", str(RECEIVER_PORT)]
        receiver += ["--out", str(self.workdir / "notifications.jsonl")]
        with (self.workdir / "receiver.log").open("ab") as out:
            proc = subprocess.Popen(receiver, stdout=out, stderr=out, cwd=ROOT)
        self.workers["receiver"] = Worker("receiver", "r1", proc, self.workdir / "receiver.log", 0)

    def _launch(self, name: str) -> None:
        assert self.env is not None
        stage, host, port = ROLES[name]
        prefix = self.net.exec_prefix(host) if host else []
        if stage == "gateway":
            self.workers[name] = self.env.start_gateway(port=port, prefix=prefix)
        else:
            self.workers[name] = self.env.start(stage, name, port=port, prefix=prefix)

    def kill(self, name: str) -> None:
        say(f"$ kill -KILL {self.workers[name].pid}   # {name}")
        self.killed.add(name)  # the fault's heal restarts it, not _check_workers
        self.workers[name].kill()

    def restart(self, name: str) -> None:
        """The same worker again (same instance id: its transactional id fences the old one); the
        old process is gone first, so two never share its metrics port or group membership."""
        self.workers[name].kill()
        self.killed.discard(name)
        self._launch(name)
        self.lives[name].append(time.monotonic() - self.started)
        say(f"restarted {name} (pid {self.workers[name].pid})")

    def check_alive(self) -> None:
        for worker in self.workers.values():
            worker.check()

    # --- probes

    def busiest_leader(self) -> str:
        assert self.env is not None
        admin = AdminClient({"bootstrap.servers": self.cluster.bootstrap, "log_level": 0})
        topics = [self.env.topics.raw, self.env.topics.correlator_input]
        counts = {b: 0 for b in self.net.brokers}
        metadata = admin.list_topics(timeout=10)
        for topic in topics:
            for partition in metadata.topics[topic].partitions.values():
                if partition.leader >= 1:
                    counts[f"b{partition.leader}"] += 1
        return max(sorted(counts), key=lambda b: counts[b])

    def lags(self) -> dict[str, int]:
        """Every consumer group of the run: end offsets minus committed, summed over partitions."""
        assert self.env is not None
        env = self.env
        groups = {
            "ingest": (env.ingest_group, env.topics.raw),
            "correlator": (env.correlator_group, env.topics.correlator_input),
            "linker": (f"stormwatch-linker-{env.topics.correlator_input}", env.topics.linker_input),
            "notifier": (f"stormwatch-notify-{env.topics.incidents}", env.topics.incidents),
            "agent": (f"stormwatch-agent-{env.topics.incidents}", env.topics.incidents),
        }
        out: dict[str, int] = {}
        for stage, (group, topic) in groups.items():
            try:
                committed = env.committed(group, topic)
                ends = env.end_offsets(topic)
            except Exception:  # a probe Kafka did not answer in time: no reading this round
                lag = -1
            else:
                lag = group_lag(committed, ends, self.committed_seen.setdefault(stage, set()))
            if lag < 0:  # the next round asks with a new client (see forget_monitor)
                env.forget_monitor(group)
            out[stage] = lag
        return out

    def linker_state(self) -> dict[str, float]:
        """The linker's state sizes from its /metrics ({} when it does not answer)."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{ROLES['linker'][2]}/metrics", timeout=2
            ) as answer:
                text = answer.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "stormwatch_linker_state":
                for sample in family.samples:
                    kind = sample.labels.get("kind", "?")
                    out[kind] = out.get(kind, 0.0) + sample.value
        return out

    def rss(self) -> dict[str, float]:
        out = {name: rss_mb(w.pid) for name, w in self.workers.items() if name != "receiver"}
        for node in range(1, self.cluster.nodes + 1):
            pid = self.cluster.pid(node)
            out[f"kafka-{node}"] = rss_mb(pid) if pid else 0.0
        return out


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_load(
    run: Run, stream: AlertStream, sink: HttpSink, sends: SendStats
) -> tuple[list[Sample], list[FaultRecord]]:
    args = run.args
    samples: list[Sample] = []
    faults: list[FaultRecord] = []
    started = run.started = time.monotonic()
    wall0 = time.time()
    stream.start(wall0)
    end = started + args.minutes * 60
    next_sample = started + args.sample_s
    next_fault = started + args.first_fault * 60
    active: tuple[Fault, FaultRecord, float] | None = None
    recovering: list[tuple[FaultRecord, dict[str, int]]] = []
    last = (0, 0)
    order = [
        f for f in FAULTS if f.min_brokers <= run.cluster.nodes and (not args.faults or f.key in args.faults)
    ]
    if args.shuffle:
        random.Random(args.seed).shuffle(order)
    while (now := time.monotonic()) < end:
        stream.step(wall0 + (now - started))
        if active is None and now >= next_fault and now + 120 < end:
            fault = order[run.fault_count % len(order)]
            say(f"fault {run.fault_count + 1}: {fault.name}")
            detail = fault.apply(run)
            record = FaultRecord(fault.name, fault.stage, detail, now - started, 0.0)
            faults.append(record)
            active = (fault, record, now + fault.hold_s)
            run.fault_count += 1
        if active is not None and now >= active[2]:
            fault, record, _ = active
            fault.heal(run)
            record.healed_s = time.monotonic() - started
            say(f"healed: {fault.name}")
            baseline = _baseline(samples, record.start_s)
            recovering.append((record, baseline))
            active = None
            next_fault = started + (args.first_fault + args.fault_every * run.fault_count) * 60
        if now >= next_sample:
            accepted, refused = sends.accepted_alerts, sends.refused
            sample = Sample(
                t_s=round(now - started, 1),
                rss={k: round(v, 1) for k, v in run.rss().items()},
                lag=run.lags(),
                accepted_per_s=(accepted - last[0]) / args.sample_s,
                refused_per_s=(refused - last[1]) / args.sample_s,
                backlog=sink.backlog(),
                load=_load(),
                linker_state=run.linker_state(),
            )
            last = (accepted, refused)
            samples.append(sample)
            _print_sample(sample)
            for record, baseline in list(recovering):
                record.lag_peak = max(record.lag_peak, sum(max(v, 0) for v in sample.lag.values()))
                if all(0 <= sample.lag.get(k, 0) <= v for k, v in baseline.items()) and sample.backlog < 10:
                    record.recovered_s = round(sample.t_s - record.healed_s, 1)
                    recovering.remove((record, baseline))
                    say(f"recovered from {record.name} {record.recovered_s:.0f} s after the heal")
            _check_workers(run)
            next_sample += args.sample_s
        time.sleep(0.005)
    if active is not None:
        active[0].heal(run)
        active[1].healed_s = time.monotonic() - started
    return samples, faults


def _check_workers(run: Run) -> None:
    """A worker that exited by itself is a finding: it is restarted (as its supervisor would) and
    the restart is recorded."""
    for name, worker in list(run.workers.items()):
        if worker.popen.poll() is not None and name != "receiver" and name not in run.killed:
            tail = worker.log.read_text(errors="replace")[-1500:]
            say(f"{name} exited by itself with {worker.popen.returncode}; restarting it. Log tail:\n{tail}")
            run.fault_state.setdefault("exits", "")
            run.fault_state["exits"] += f"{name}@{time.monotonic() - run.started:.0f}s "
            run.self_exits[name] = run.self_exits.get(name, 0) + 1
            if name in ROLES and run.self_exits[name] <= MAX_SELF_EXITS:
                run.restart(name)
            elif name in ROLES:
                run.killed.add(name)  # a crash loop: left down, and the summary says so
                say(f"{name} exited by itself {run.self_exits[name]} times: not restarted again")


def _baseline(samples: list[Sample], before_s: float) -> dict[str, int]:
    """Per group, the lag it may be back at to count as recovered: the highest of the minute
    before the fault, plus 20 records."""
    window = [s for s in samples if before_s - 60 <= s.t_s <= before_s] or samples[-3:]
    out: dict[str, int] = {}
    for stage in window[-1].lag if window else []:
        values = [s.lag[stage] for s in window if s.lag.get(stage, -1) >= 0]
        out[stage] = max(values, default=0) + 20
    return out


def _print_sample(s: Sample) -> None:
    lag = " ".join(f"{k}={v}" for k, v in s.lag.items())
    rss = " ".join(f"{k}={v:.0f}" for k, v in s.rss.items() if not k.startswith("kafka"))
    print(
        f"{s.t_s:7.0f}s  {s.accepted_per_s:6.0f}/s ok {s.refused_per_s:4.1f}/s refused  backlog {s.backlog:4d}  "
        f"lag {lag}  rss MB {rss}  load {s.load:.1f}  linker state "
        + (" ".join(f"{k}={v:.0f}" for k, v in s.linker_state.items()) or "?"),
        flush=True,
    )


# ------------------------------------------------------------------------------------ oracle


def group_lag(committed: dict[int, int], ends: dict[int, int], seen: set[int]) -> int:
    """End offsets minus committed, summed; -1 (no reading) when a partition ``seen`` with a
    committed offset has none now. A broker restarted a moment ago answers the offset fetch before it
    has loaded the group's offsets (hour run 4: a lag of 477,504, every record since the start);
    a partition never committed on counts from its start."""
    total = 0
    lost = False
    for p, end in ends.items():
        offset = committed.get(p, -1)
        if offset >= 0:
            seen.add(p)
        elif p in seen:
            lost = True
        total += max(0, end - max(offset, 0))
    return -1 if lost else total


def caught_up(lags: dict[str, int], partitions: int) -> bool:
    """Every group has read everything: what is left per partition is at most the commit markers
    its transactional producers wrote after their last records (one per producer and partition;
    never delivered, never committed past)."""
    return all(0 <= lag <= 3 * partitions for lag in lags.values())


def _drain(run: Run, timeout_s: float) -> tuple[float, dict[str, int]]:
    """Wait until every group is caught up (three probes in a row, 2 s apart); the seconds it took
    and the lags of the last probe (a probe after it may see an idle tick not yet committed: a
    quiet correlator commits its ticks only every few seconds)."""
    started = time.monotonic()
    streak = 0
    lags: dict[str, int] = {}
    while time.monotonic() - started < timeout_s and streak < 3:
        lags = run.lags()
        streak = streak + 1 if caught_up(lags, run.args.partitions) else 0
        time.sleep(2)
    return round(time.monotonic() - started, 1), lags


def oracle(run: Run) -> dict[str, Any]:
    """From the raw topic to the audit log: nothing lost (every alert the gateway wrote firing is
    in an incident, unless it was resolved before its group's group_wait ended: nobody is told of
    those, by design, as in Alertmanager), nothing twice."""
    assert run.env is not None
    settings = run.env.settings
    first_firing: dict[str, int] = {}
    first_resolved: dict[str, int] = {}
    """Per alert, when it was first sent firing and first sent resolved (record times). An alert
    only ever sent resolved (an episode of the initial population that ended before its first
    send) opens nothing, by design: a resolved notification of an unknown alert."""
    raw_alerts = raw_records = unread = 0
    say("reading the raw topic ...")
    for message in read_topic(settings, settings.topics.raw, timeout_s=60):
        raw_records += 1
        value = message.value() or b""
        headers = dict(message.headers() or [])
        if headers.get("stormwatch-encoding") != b"notes-v1":
            unread += 1
            continue
        at = message.timestamp()[1]
        for row in orjson.loads(value)["al"]:  # notes rows: [fingerprint, firing, ...]
            fingerprint = row[0]
            first = first_firing if row[1] else first_resolved
            first[fingerprint] = min(at, first.get(fingerprint, at))
            raw_alerts += 1
    say("reading the audit log ...")
    events: list[IncidentEvent] = []
    for message in read_topic(settings, settings.topics.incidents, timeout_s=60):
        events.append(IncidentEvent.model_validate_json(message.value() or b"{}"))
    seen: set[tuple[str, int]] = set()
    twice: list[str] = []
    seqs: dict[str, list[int]] = {}
    joined: dict[tuple[str, str], int] = {}
    audit_fps: set[str] = set()
    for event in events:
        key = (event.incident_id, event.seq)
        if key in seen:
            twice.append(f"{event.incident_id}#{event.seq}")
        seen.add(key)
        seqs.setdefault(event.incident_id, []).append(event.seq)
        for change in event.alerts:
            audit_fps.add(change.fingerprint)
            if change.change == AlertChangeKind.JOINED:
                pair = (event.incident_id, change.fingerprint)
                joined[pair] = joined.get(pair, 0) + 1
    gaps = [iid for iid, s in seqs.items() if sorted(s) != list(range(1, len(s) + 1))]
    raw_fps = set(first_firing)
    resolved_only = set(first_resolved) - raw_fps
    quick = GROUP_WAIT_MS + LATENESS_MS
    missing = raw_fps - audit_fps
    resolved_in_group_wait = {
        fp for fp in missing if first_resolved.get(fp, first_firing[fp] + quick) - first_firing[fp] < quick
    }
    lost = missing - resolved_in_group_wait
    joined_twice = sum(1 for n in joined.values() if n > 1)
    return {
        "raw_records": raw_records,
        "raw_alert_notifications": raw_alerts,
        "raw_records_not_notes": unread,
        "distinct_alerts_in_raw": len(raw_fps),
        "alerts_only_sent_resolved": len(resolved_only),
        "distinct_alerts_in_audit_log": len(audit_fps & raw_fps),
        "alerts_resolved_within_group_wait": len(resolved_in_group_wait),
        "lost_alerts": len(lost),
        "lost_examples": sorted(lost)[:5],
        "incident_events": len(events),
        "incidents": len(seqs),
        "events_twice": len(twice),
        "incidents_with_seq_gaps": len(gaps),
        "alerts_joined_one_incident_twice": joined_twice,
        "ok": not lost and not twice and not gaps and not joined_twice and unread == 0,
    }


# ------------------------------------------------------------------------------------ report


SETTLE_S = 60.0
"""A sample this long after a fault's recovery (lag back to its level before the fault) counts as
settled again."""


def disturbed(t_s: float, faults: Sequence[FaultRecord]) -> bool:
    """Whether time ``t_s`` falls in a fault, its recovery or the SETTLE_S after it: a catch-up's
    transient peak (a correlator restoring state held 600-900 MB for a sample or two in hour run 3)
    is not growth, what is left once it settled is."""
    for f in faults:
        end = float("inf") if f.recovered_s is None else f.healed_s + f.recovered_s + SETTLE_S
        if f.start_s <= t_s <= end:
            return True
    return False


def memory_verdict(
    samples: list[Sample], lives: dict[str, list[float]], warmup_s: float, faults: Sequence[FaultRecord] = ()
) -> dict[str, Any]:
    """Per process: the slope (MB/min) of its resident memory over its longest life after warm-up
    (a restarted process starts a new life; one shorter than 15 minutes is not judged), over every
    sample and over the settled ones only (``disturbed``)."""
    out: dict[str, Any] = {}
    end = samples[-1].t_s if samples else 0.0
    for name in samples[-1].rss if samples else []:
        starts = lives.get(name, [0.0])
        bounds = [
            (max(a + (warmup_s if a else 0), warmup_s), b)
            for a, b in zip(starts, [*starts[1:], end], strict=False)
        ]
        start, stop = max(bounds, key=lambda ab: ab[1] - ab[0])
        points = [(s.t_s / 60, s.rss[name]) for s in samples if start <= s.t_s <= stop and s.rss.get(name)]
        if stop - start < 15 * 60 or len(points) < 3:
            out[name] = {"judged": False, "restarts": len(starts) - 1}
            continue
        out[name] = {
            "judged": True,
            "from_min": round(start / 60, 1),
            "to_min": round(stop / 60, 1),
            "rss_mb_first": points[0][1],
            "rss_mb_last": points[-1][1],
            "rss_mb_max": max(p[1] for p in points),
            "slope_mb_per_min": round(slope(points), 4),
            "settled_slope_mb_per_min": round(
                slope([p for p in points if not disturbed(p[0] * 60, faults)]), 4
            ),
            "restarts": len(starts) - 1,
        }
    return out


def picture(samples: list[Sample], faults: list[FaultRecord], title: str) -> str:
    minutes = [s.t_s / 60 for s in samples]

    def series(name: str, values: list[float]) -> Series:
        return Series(name, list(zip(minutes, values, strict=True)))

    names = [n for n in (samples[0].rss if samples else {}) if not n.startswith("kafka")]
    kafka = [n for n in (samples[0].rss if samples else {}) if n.startswith("kafka")]
    stages = list(samples[0].lag) if samples else []
    panels = [
        Panel(
            "Resident memory, stormwatch processes",
            "MiB",
            [series(n, [s.rss.get(n, float("nan")) or float("nan") for s in samples]) for n in names],
        ),
        Panel(
            "Resident memory, Kafka brokers",
            "MiB",
            [series(n, [s.rss.get(n, float("nan")) or float("nan") for s in samples]) for n in kafka],
        ),
        Panel(
            "Consumer lag (records)",
            "records",
            [
                series(n, [float(s.lag[n]) if s.lag.get(n, -1) >= 0 else float("nan") for s in samples])
                for n in stages
            ],
            log_y=True,
        ),
        Panel(
            "Alerts accepted by the gateway",
            "alerts/s",
            [
                series("accepted", [s.accepted_per_s for s in samples]),
                series("refused requests x100", [s.refused_per_s * 100 for s in samples]),
            ],
        ),
    ]
    bands = [Band(f.start_s / 60, f.healed_s / 60, f.name) for f in faults]
    return svg(panels, x_label="minutes", title=title, bands=bands)


# --------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stormwatch.bench.chaos", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=6.0, help="How long the load runs (default 6)")
    p.add_argument("--rate", type=float, default=1000.0, help="Alerts per second POSTed (default 1000)")
    p.add_argument("--first-fault", type=float, default=2.0, help="Minute of the first fault (default 2)")
    p.add_argument("--fault-every", type=float, default=2.0, help="Minutes between faults (default 2)")
    p.add_argument("--shuffle", action="store_true", help="Faults in a shuffled order (--seed)")
    p.add_argument(
        "--faults",
        type=_fault_keys,
        default=[],
        help=f"Only these faults, comma-separated, in the usual order (default all): {', '.join(f.key for f in FAULTS)}",
    )
    p.add_argument("--seed", type=int, default=17)
    p.add_argument(
        "--brokers", type=int, choices=(1, 3), default=1, help="Kafka nodes (3: replication factor 3)"
    )
    p.add_argument("--partitions", type=int, default=6)
    add_stream_arguments(p, alerts_per_episode=500, resend_s=20.0, episode_s=120.0)
    p.add_argument("--clients", type=int, default=16, help="Concurrent HTTP connections")
    p.add_argument(
        "--priority", type=int, default=10, help="Run everything this much above normal priority (nice -N)"
    )
    p.add_argument("--sample-s", type=float, default=10.0, help="Sampling interval")
    p.add_argument("--warmup-min", type=float, default=10.0, help="Memory is judged after this (default 10)")
    p.add_argument(
        "--console-history",
        type=int,
        default=1000,
        help="Closed incidents the gateway's read model keeps (gateway.console_max_closed_incidents; "
        "default 1000). The load closes about 85 a minute, so this bounded history is full within "
        "warm-up and the gateway's memory is judged past it; the product default, 20,000, would take "
        "about 4 hours to fill",
    )
    p.add_argument("--out", type=Path, default=ROOT / "var" / "chaos", help="Report directory")
    p.add_argument("--keep", action="store_true", help="Keep the brokers' data and the logs")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0:
        p.error("--minutes and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print(
            "chaos: needs root and iproute2 (`ip netns`): the faults run in network namespaces",
            file=sys.stderr,
        )
        return 2
    if args.priority:
        os.nice(-args.priority)  # every broker and worker inherits it: the run before other work here
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = args.out / "work"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    net = Net(workdir, prefix=f"swc{os.getpid() % 100000}-", nodes=args.brokers)
    cluster = Cluster(net, workdir / "kafka")
    run = Run(args, workdir, net, cluster)
    say(f"logs in {workdir}; load average {Path('/proc/loadavg').read_text().split()[:3]}")
    with _cleanup(run):
        net.up()
        cluster.script("start")
        (workdir / "rules.yaml").write_text(RULES)
        (workdir / "notify.yaml").write_text(NOTIFY.format(port=RECEIVER_PORT))
        extra = {
            "correlator": {"topology_file": str(ROOT / "deploy" / "topology.yaml")},
            "notify": {"notify_file": str(workdir / "notify.yaml")},
            "agent": {
                "workflows_file": str(ROOT / "deploy" / "incident_workflow_config.yaml"),
                "dry_run": True,
            },
            "gateway": {"port": GATEWAY_PORT, "console_max_closed_incidents": args.console_history},
        }
        run.env = BenchPipeline(
            cluster.bootstrap,
            workdir,
            partitions=args.partitions,
            rules_yaml=RULES,
            topic_settings={"replication_factor": args.brokers, "min_insync_replicas": min(2, args.brokers)},
            extra_config=extra,
        )
        run.start_workers()
        wait_assigned(run, ("ingest", "c1", "c2"))
        wait_gateway(run)
        sends = SendStats()
        sink = HttpSink(GATEWAY_PORT, args.clients, sends)
        stream_stats = StreamStats()
        stream = AlertStream(sink, args, stream_stats)
        say(
            f"{args.rate:,.0f} alerts/s for {args.minutes:g} min: {stream.active_target} episodes x "
            f"{args.alerts_per_episode} alerts, re-sent every {args.resend_s:g} s, each firing {args.episode_s:g} s"
        )
        samples, faults = run_load(run, stream, sink, sends)
        say("load stopped; sending what is queued ...")
        drained = sink.drain(600)
        say("waiting for every stage to catch up ...")
        drain_s, left = _drain(run, 900)
        verdict = oracle(run)
        if not caught_up(left, args.partitions):
            # Unread input is not lost input: say so rather than count its alerts as lost.
            verdict["ok"] = False
            verdict["not_caught_up"] = left
            say(
                f"the pipeline had not caught up after {drain_s:.0f}s ({left}): lost_alerts includes unread input"
            )
        memory = memory_verdict(samples, run.lives, args.warmup_min * 60, faults)
        summary = {
            "command": " ".join(
                ["python -m stormwatch.bench.chaos", *(argv if argv is not None else sys.argv[1:])]
            ),
            "minutes": args.minutes,
            "target_rate": args.rate,
            "alerts_posted": stream_stats.alerts_sent,
            "alerts_accepted": sends.accepted_alerts,
            "requests_refused_and_retried": sends.refused,
            "senders_drained": drained,
            "drain_s": drain_s,
            "accepted_per_s_mean": round(statistics.fmean(s.accepted_per_s for s in samples), 1)
            if samples
            else 0,
            "faults": [asdict(f) for f in faults],
            "worker_exits": run.fault_state.get("exits", ""),
            "hung_calls": hung_calls(run.workdir),
            "memory": memory,
            "oracle": verdict,
            "load_average_mean": round(statistics.fmean(s.load for s in samples), 2) if samples else 0,
        }
        (args.out / "chaos.json").write_text(
            json.dumps({"summary": summary, "samples": [asdict(s) for s in samples]}, indent=1)
        )
        title = f"stormwatch: {args.minutes:g} min at {args.rate:,.0f} alerts/s, {len(faults)} faults"
        (args.out / "chaos.svg").write_text(picture(samples, faults, title))
        print(json.dumps(summary, indent=2), flush=True)
        say(f"report: {args.out / 'chaos.json'}, {args.out / 'chaos.svg'}")
        return 0 if verdict["ok"] else 1
    return 2


def hung_calls(workdir: Path) -> dict[str, dict[str, int]]:
    """Per worker log: transactional calls that hung (librdkafka #5456) and how many of them returned
    later, releasing their producer; a hung producer holds its memory until then."""
    out: dict[str, dict[str, int]] = {}
    for log_file in sorted(workdir.glob("*.log")):
        text = log_file.read_text(errors="replace")
        hung = text.count("(a librdkafka hang)")
        if hung:
            out[log_file.stem] = {"hung": hung, "returned": text.count("its producer is released")}
    return out


def wait_assigned(run: Run, names: tuple[str, ...], timeout_s: float = 180) -> None:
    """Until each worker's log says it got partitions (the workers' own word: an admin client's
    group description is avoided, its timeouts trip a librdkafka assertion under faults)."""
    deadline = time.monotonic() + timeout_s
    while not all(run.workers[n].log_lines("partitions assigned") for n in names):
        run.check_alive()
        if time.monotonic() > deadline:
            raise SystemExit(f"chaos: {', '.join(names)} got no partitions within {timeout_s:.0f}s")
        time.sleep(0.5)


def wait_gateway(run: Run, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run.check_alive()
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=5)
            conn.request("GET", "/-/ready")
            if conn.getresponse().status == 200:
                return
        time.sleep(0.5)
    raise SystemExit("chaos: the gateway did not get ready")


@contextlib.contextmanager
def _cleanup(run: Run) -> Iterator[None]:
    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second ^C must not strand brokers and namespaces
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        say("stopping ...")
        for worker in run.workers.values():
            with contextlib.suppress(Exception):
                worker.stop(20)
        if run.env is not None:
            with contextlib.suppress(Exception):
                run.env.close(delete=False)
        run.cluster.script("stop", check=False)
        run.net.down()
        if not run.args.keep:
            shutil.rmtree(run.cluster.data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
