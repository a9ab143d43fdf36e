"""Soak run: the pipeline under a steady alert stream, watched for memory growth and lag.

    python -m stormwatch.bench.soak --minutes 20 --rate 2000    # the full soak
    python -m stormwatch.bench.soak                             # a short smoke run (2 min, 500/s)

It creates topics of its own (unique names) on ``--bootstrap`` (default $KAFKA_BOOTSTRAP_SERVERS),
starts one ``stormwatch ingest`` and one ``stormwatch correlate`` process, and produces alerts live
at ``--rate`` alerts/s for ``--minutes``. The stream is a rolling population of *episodes*: each is
one problem (its own alertname, so its own incident) with ``--alerts-per-episode`` alerts that
Prometheus-style re-sends every ``--resend-s`` seconds, then resolves after ``--episode-s``
seconds; its incident resolves and closes (short rule timings below) and a new episode takes its
place. So the pipeline's working set should stay the same size for the whole run.

Every ``--sample-s`` seconds it records each worker's RSS (VmRSS from /proc/PID/status), the
consumer lag of both stages (committed offsets of their groups against the end offsets), the
alerts/s produced, and the correlator's incident counters (from its /metrics). At the end it
prints a table and a JSON summary: RSS at the end of warm-up vs the end and its slope, max lag and
its trend, alerts/s achieved, incidents opened/resolved/closed, and the load average (the machine
may be shared). Exit status 0 when the run finished, whatever the numbers; they are for a human
(docs/reliability.md) or a CI threshold to judge. Everything is bounded by ``--minutes`` plus a
short drain, binds nothing but the workers' /metrics on 127.0.0.1, and stops what it started.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from prometheus_client.parser import text_string_to_metric_families

from stormwatch.config import Settings, load_settings
from stormwatch.kafka.client import delivery_failure
from stormwatch.kafka.topics import create_topics, delete_topics

RULES = """
defaults:
  group_wait: 2s
  group_interval: 10s
  resolve_timeout: 30s
  reopen_window: 2s
  close_after: 5s
allowed_lateness: 500ms
state_time_resolution: 1s
flap: {enabled: false}
"""

FLAT_SLOPE_MB_PER_MIN = 0.5
"""RSS counts as flat when it grows slower than this after warm-up ..."""
FLAT_GROWTH_FRACTION = 0.05
"""... or by less than this fraction of its warm-up value in total."""


# ------------------------------------------------------------------------------ the alert stream


@dataclass
class Episode:
    """One problem: its alerts are re-sent every resend interval until it resolves."""

    number: int
    started: float
    next_send: float
    labels: list[dict[str, str]]


@dataclass
class StreamStats:
    alerts_sent: int = 0
    records_sent: int = 0
    delivered: int = 0
    delivery_errors: int = 0
    episodes_started: int = 0
    episodes_resolved: int = 0
    last_error: str = ""


class AlertStream:
    """Produces the rolling episode population at a steady rate (Prometheus' push format)."""

    def __init__(
        self,
        sink: Callable[[bytes, int, int], None],
        args: argparse.Namespace,
        stats: StreamStats | None = None,
    ) -> None:
        self.sink = sink
        """Takes one push: its JSON body, its time (epoch ms) and the number of alerts in it."""
        self.per_episode: int = args.alerts_per_episode
        self.resend_s: float = args.resend_s
        self.episode_s: float = args.episode_s
        self.per_record: int = args.per_record
        # An episode sends its alerts ceil(episode_s / resend_s) times while firing, plus once
        # resolved, so rate = active episodes * alerts per episode * sends / episode_s.
        sends = math.ceil(self.episode_s / self.resend_s) + 1
        self.active_target = max(1, round(args.rate * self.episode_s / (self.per_episode * sends)))
        self.stats = stats or StreamStats()
        self.episodes: list[Episode] = []
        self._next_number = 0

    def _new_episode(self, now: float, first_send: float) -> Episode:
        n = self._next_number
        self._next_number += 1
        self.stats.episodes_started += 1
        labels = [
            {
                "alertname": f"SoakEpisode{n}",
                "service": f"svc{n % 20}",
                "severity": ("warning", "critical")[n % 2],
                "instance": f"10.{n % 200}.{i // 250}.{i % 250}:9100",
            }
            for i in range(self.per_episode)
        ]
        return Episode(n, now, first_send, labels)

    def start(self, now: float) -> None:
        """The initial population, staggered over one resend interval and one episode lifetime."""
        for i in range(self.active_target):
            episode = self._new_episode(now, now + self.resend_s * i / self.active_target)
            episode.started = now - self.episode_s * i / self.active_target  # ages spread out
            self.episodes.append(episode)

    def _send(self, episode: Episode, now_ms: int, resolved: bool) -> None:
        for start in range(0, len(episode.labels), self.per_record):
            chunk = episode.labels[start : start + self.per_record]
            items: list[dict[str, Any]] = []
            for labels in chunk:
                item: dict[str, Any] = {"labels": labels, "annotations": {"summary": "soak"}}
                if resolved:
                    item["endsAt"] = _iso(now_ms - 1)
                items.append(item)
            self.sink(orjson.dumps(items), now_ms, len(chunk))
            self.stats.records_sent += 1
            self.stats.alerts_sent += len(chunk)

    def step(self, now: float) -> None:
        """Send what is due at ``now``; resolve old episodes and start their replacements."""
        now_ms = int(now * 1000)
        keep: list[Episode] = []
        for episode in self.episodes:
            if now - episode.started >= self.episode_s:
                self._send(episode, now_ms, resolved=True)
                self.stats.episodes_resolved += 1
                replacement = self._new_episode(now, now)
                keep.append(replacement)
                continue
            if episode.next_send <= now:
                self._send(episode, now_ms, resolved=False)
                episode.next_send += self.resend_s
            keep.append(episode)
        self.episodes = keep


class KafkaSink:
    """Writes each push as one record of the raw topic (a sender that produces to Kafka itself)."""

    def __init__(self, bootstrap: str, topic: str, stats: StreamStats) -> None:
        self.topic = topic
        self.stats = stats
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 10}
        )

    def __call__(self, body: bytes, now_ms: int, _alerts: int) -> None:
        while True:
            try:
                self.producer.produce(self.topic, body, timestamp=now_ms, on_delivery=self._on_delivery)
                break
            except BufferError:
                self.producer.poll(0.05)
        self.producer.poll(0)

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if (failure := delivery_failure(err, msg)) is None:
            self.stats.delivered += 1
        else:
            self.stats.delivery_errors += 1
            self.stats.last_error = failure

    def close(self, timeout_s: float) -> int:
        return int(self.producer.flush(timeout_s))


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


# ------------------------------------------------------------------------------- the pipeline


@dataclass
class Worker:
    stage: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path


@dataclass
class Pipeline:
    settings: Settings
    workdir: Path
    workers: list[Worker] = field(default_factory=list)

    def start(self, stage: str, config: Path, rules: Path) -> Worker:
        port = _free_port()
        log = self.workdir / f"{stage}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the config file names the brokers
        with open(log, "ab") as out:
            command = [sys.executable, "-m", "stormwatch.cli", "--config", str(config), stage]
            command += ["--rules", str(rules), "--instance-id", f"soak-{stage}", "--metrics-port", str(port)]
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,  # not the caller's: `python -m` puts it first on sys.path
            )
        worker = Worker(stage, proc, port, log)
        self.workers.append(worker)
        return worker

    def check_alive(self) -> None:
        for w in self.workers:
            if w.proc.poll() is not None:
                tail = w.log.read_text(errors="replace")[-2000:]
                raise SystemExit(f"soak: the {w.stage} worker exited with {w.proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        for w in self.workers:
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait(5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS), 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def scrape(port: int) -> dict[str, float]:
    """Sums per metric name (labels folded) of a worker's /metrics; {} when it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name == "stormwatch_incident_events_total":
                name = f"{name}:{sample.labels.get('type', '')}"
            out[name] = out.get(name, 0.0) + sample.value
    return out


class LagProbe:
    """Committed offsets of a consumer group against the end offsets of its input topic."""

    def __init__(self, settings: Settings) -> None:
        conf = settings.kafka.client_config()
        self.admin = AdminClient({**conf, "log_level": 0})
        self.consumer = Consumer({**conf, "group.id": "stormwatch-soak-probe", "log_level": 0})

    def lag(self, group: str, topic: str, partitions: int) -> int | None:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        try:
            request = [ConsumerGroupTopicPartitions(group, tps)]
            result = self.admin.list_consumer_group_offsets(request, request_timeout=10)[group].result(10)
            committed = {tp.partition: tp.offset for tp in result.topic_partitions}
            total = 0
            for tp in tps:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=10)
                position = committed.get(tp.partition, -1)
                total += high - (position if position >= 0 else low)
            return total
        except (KafkaException, TimeoutError):
            return None

    def close(self) -> None:
        self.consumer.close()


# ------------------------------------------------------------------------------------- report


@dataclass
class Sample:
    t_s: float
    rss: dict[str, float]
    lag: dict[str, int | None]
    alerts_per_s: float
    incidents: dict[str, float]


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per unit of x); 0 for fewer than two points."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mean_x) * (y - mean_y) for x, y in points) / var


def summarize(
    samples: list[Sample], args: argparse.Namespace, stream: StreamStats, load: dict[str, str]
) -> dict[str, Any]:
    after = [s for s in samples if s.t_s >= args.warmup_s] or samples[-1:]
    summary: dict[str, Any] = {
        "command": " ".join(["python -m stormwatch.bench.soak", *sys.argv[1:]]),
        "minutes": args.minutes,
        "target_rate": args.rate,
        "warmup_s": args.warmup_s,
        "samples": len(samples),
        "load_average": load,
    }
    duration = samples[-1].t_s if samples else 0.0
    summary["alerts_sent"] = stream.alerts_sent
    summary["alerts_per_s_achieved"] = round(stream.alerts_sent / duration, 1) if duration else 0.0
    summary["delivery_errors"] = stream.delivery_errors
    summary["episodes_started"] = stream.episodes_started
    summary["episodes_resolved"] = stream.episodes_resolved
    workers: dict[str, Any] = {}
    for stage in sorted(samples[-1].rss) if samples else []:
        points = [(s.t_s / 60, s.rss[stage]) for s in after]
        start = statistics.median(p[1] for p in points[:3])
        end = statistics.median(p[1] for p in points[-3:])
        per_min = slope(points)
        growth = (end - start) / start if start else 0.0
        workers[stage] = {
            "rss_mb_at_warmup": round(start, 1),
            "rss_mb_at_end": round(end, 1),
            "rss_mb_max": round(max(s.rss[stage] for s in samples), 1),
            "rss_slope_mb_per_min": round(per_min, 3),
            "rss_growth_fraction": round(growth, 4),
            "flat": per_min < FLAT_SLOPE_MB_PER_MIN or growth < FLAT_GROWTH_FRACTION,
        }
        lags = [(s.t_s / 60, float(v)) for s in after if (v := s.lag.get(stage)) is not None]
        third = max(1, len(lags) // 3)
        workers[stage].update(
            {
                "lag_max": int(max((v for _, v in lags), default=0)),
                "lag_slope_per_min": round(slope(lags), 1),
                "lag_max_first_third": int(max((v for _, v in lags[:third]), default=0)),
                "lag_max_last_third": int(max((v for _, v in lags[-third:]), default=0)),
            }
        )
        first, last = workers[stage]["lag_max_first_third"], workers[stage]["lag_max_last_third"]
        workers[stage]["lag_growing"] = last > max(2 * first, args.lag_slack)
    summary["workers"] = workers
    if samples:
        summary["incidents"] = {k: int(v) for k, v in sorted(samples[-1].incidents.items())}
    summary["verdict"] = (
        "flat memory, no growing lag"
        if workers and all(w["flat"] and not w["lag_growing"] for w in workers.values())
        else "CHECK: memory growth or growing lag (see workers)"
    )
    return summary


def _table_row(s: Sample) -> str:
    lag = " ".join(f"{k}={'?' if v is None else v}" for k, v in sorted(s.lag.items()))
    rss = " ".join(f"{k}={v:.0f}MB" for k, v in sorted(s.rss.items()))
    inc = s.incidents
    return (
        f"{s.t_s:7.0f}s  {rss:<34} lag {lag:<28} {s.alerts_per_s:7.0f} alerts/s  "
        f"open={inc.get('stormwatch_open_incidents', 0):.0f} "
        f"closed={inc.get('stormwatch_incident_events_total:closed', 0):.0f}"
    )


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --------------------------------------------------------------------------------------- main


def add_stream_arguments(
    p: argparse.ArgumentParser, *, alerts_per_episode: int, resend_s: float, episode_s: float
) -> None:
    """The options ``AlertStream`` reads, with the caller's defaults (the soak, the chaos run)."""
    p.add_argument("--alerts-per-episode", type=int, default=alerts_per_episode)
    p.add_argument("--resend-s", type=float, default=resend_s, help="Re-send interval of a firing alert")
    p.add_argument("--episode-s", type=float, default=episode_s, help="How long an episode fires")
    p.add_argument("--per-record", type=int, default=100, help="Alerts per push (one raw record or one POST)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stormwatch.bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="How long to produce (default 2)")
    p.add_argument("--rate", type=float, default=500.0, help="Alerts per second (default 500)")
    p.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP_SERVERS)",
    )
    p.add_argument("--partitions", type=int, default=3, help="Partitions of the soak's topics")
    add_stream_arguments(p, alerts_per_episode=100, resend_s=10.0, episode_s=60.0)
    p.add_argument("--sample-s", type=float, default=5.0, help="Sampling interval")
    p.add_argument(
        "--warmup-s", type=float, help="Samples before this are warm-up (default: 1/4 of the run, max 5 min)"
    )
    p.add_argument("--lag-slack", type=int, default=5000, help="Lag (records) that never counts as growing")
    p.add_argument("--json", type=Path, help="Also write the summary (and samples) to this file")
    p.add_argument("--keep-topics", action="store_true", help="Do not delete the soak's topics at the end")
    args = p.parse_args(argv)
    if args.warmup_s is None:
        args.warmup_s = min(300.0, args.minutes * 60 / 4)
    if args.minutes <= 0 or args.rate <= 0:
        p.error("--minutes and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suffix = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"stormwatch-soak-{suffix}-"))
    names = {
        k: f"soak.{k}.{suffix}"
        for k in (
            "raw", "dlq", "incidents", "commands", "mitigation_commands", "mitigation_results",
            "correlator_input", "correlator_state", "silences", "agent_state", "approvals", "topology",
        )
    }  # fmt: skip
    config_data = {
        "kafka": {"bootstrap_servers": args.bootstrap},
        "topics": {**names, "partitions": args.partitions},
    }
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(config_data))
    rules = workdir / "rules.yaml"
    rules.write_text(RULES)
    settings = load_settings(config, kafka={"bootstrap_servers": args.bootstrap})
    create_topics(settings, timeout_s=30)
    load = {"start": _load()}
    print(
        f"soak: topics *.{suffix} on {args.bootstrap}; logs in {workdir}; load average {load['start']}",
        flush=True,
    )

    pipeline = Pipeline(settings, workdir)
    probe = LagProbe(settings)
    stats = StreamStats()
    sink = KafkaSink(args.bootstrap, settings.topics.raw, stats)
    stream = AlertStream(sink, args, stats)
    groups = {
        "ingest": (f"stormwatch-ingest-{names['correlator_input']}", names["raw"]),
        "correlate": (f"stormwatch-correlator-{names['correlator_input']}", names["correlator_input"]),
    }
    samples: list[Sample] = []
    try:
        ingest = pipeline.start("ingest", config, rules)
        correlate = pipeline.start("correlate", config, rules)
        time.sleep(3)  # let both join their groups before the stream starts
        pipeline.check_alive()
        started = time.time()
        stream.start(started)
        end = started + args.minutes * 60
        next_sample = started + args.sample_s
        last_sent = 0
        print(
            f"soak: {stream.active_target} active episodes x {args.alerts_per_episode} alerts, "
            f"re-sent every {args.resend_s:g}s, each firing {args.episode_s:g}s",
            flush=True,
        )
        while (now := time.time()) < end:
            stream.step(now)
            if now >= next_sample:
                pipeline.check_alive()
                rates = (stream.stats.alerts_sent - last_sent) / args.sample_s
                last_sent = stream.stats.alerts_sent
                metrics = scrape(correlate.metrics_port)
                sample = Sample(
                    t_s=now - started,
                    rss={w.stage: rss_mb(w.proc.pid) for w in (ingest, correlate)},
                    lag={stage: probe.lag(g, t, args.partitions) for stage, (g, t) in groups.items()},
                    alerts_per_s=rates,
                    incidents={
                        k: v
                        for k, v in metrics.items()
                        if k.startswith(
                            (
                                "stormwatch_incident_events_total",
                                "stormwatch_open_incidents",
                                "stormwatch_active_alerts",
                                "stormwatch_alerts_late_total",
                            )
                        )
                    },
                )
                samples.append(sample)
                print(_table_row(sample), flush=True)
                next_sample += args.sample_s
            time.sleep(0.01)
        undelivered = sink.close(30)
        if undelivered:
            print(f"soak: {undelivered} records still undelivered at the end", flush=True)
        pipeline.check_alive()
    finally:
        pipeline.stop()
        probe.close()
        if not args.keep_topics:
            delete_topics(settings, list(names.values()), timeout_s=30)
    load["end"] = _load()
    summary = summarize(samples, args, stream.stats, load)
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.write_text(
            json.dumps({"summary": summary, "samples": [s.__dict__ for s in samples]}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
