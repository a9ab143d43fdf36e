"""Runs one named workload against a real broker and returns its result as a JSON-able dict.

Pre-written workloads (storm-batched, storm-single, flapping, high-cardinality):

1. the storm is written to a fresh raw topic (event times in the past, so the run replays history);
2. the floor is measured on it: a bare confluent-kafka consumer that reads and parses every record;
3. the correlator, then the ingest worker, are started as subprocesses; once each has its
   partitions, their CPU time and memory are sampled (start-up is not counted);
4. the run is over when ingest has committed the whole raw topic and the correlator has committed
   everything ingest wrote by then (committed offsets of both consumer groups); CPU time, memory and
   the correlator's own metrics are taken;
5. the correlator is killed with SIGKILL and started again: restart-to-ready is the time until it
   has restored every partition and commits again.

storm-http is storm-batched's storm sent the way Prometheus sends it: the record bodies POSTed to
the stormwatch gateway's /api/v2/alerts (gateway -> raw topic -> ingest -> correlator), then the
same bodies with the same client to Alertmanager; gateway + ingest + correlator CPU against
Alertmanager's, in one run.

steady produces live at a fixed rate and measures, for every incident opened at full rate, the
time from its group_wait deadline to the incident event (see bench/README.md).
"""

from __future__ import annotations

import json
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
import orjson
from confluent_kafka import Consumer, TopicPartition

from stormwatch.bench.httppush import PushResult, push, storm_bodies, wait_ready
from stormwatch.bench.pipeline import BenchPipeline, Worker
from stormwatch.bench.procstat import ProcSample, loadavg, machine
from stormwatch.bench.results import check_targets, percentiles, process_figures, rate, ratio
from stormwatch.bench.workloads import WORKLOADS, SteadyLoad, SteadySpec, Storm, StormSpec, default_spec
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_topic
from stormwatch.kafka.txloop import TRIM_INTERVAL_S
from stormwatch.streams.core.rules import CorrelationRule, RulesConfig

__all__ = ["BenchOptions", "LoadWatch", "kafka_version", "run", "storm_spec", "versions"]

_POM = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "pom.xml"
"""The broker version the checkout pins; absent when stormwatch is installed from a wheel."""

_RESTORED = re.compile(r"restored partitions ([0-9,]+) in ([0-9.]+)s")


@dataclass
class BenchOptions:
    bootstrap: str
    workdir: Path
    size: float = 1.0
    alerts: int | None = None
    fingerprints: int | None = None
    groups: int | None = None
    per_record: int | None = None
    partitions: int = 6
    rules_file: Path | None = None
    floor: bool = True
    restart: bool = True
    alertmanager: bool = True
    read_api: bool = True  # storm-http: the gateway serves its read API (and follows its read model)
    steady_rate: int = 5_000
    steady_seconds: float = 120.0
    profile_dir: Path | None = None
    keep_topics: bool = False
    timeout_s: float = 900.0
    ingest_settings: dict[str, Any] = field(default_factory=dict)
    log: Any = None  # callable(str) for progress lines, or None

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


def storm_spec(workload: str, options: BenchOptions) -> StormSpec:
    """The workload's storm at ``--size``, with explicit counts taking precedence."""
    spec = default_spec(workload).scaled(options.size) if options.size != 1.0 else default_spec(workload)
    changes: dict[str, Any] = {}
    for name in ("alerts", "fingerprints", "groups", "per_record"):
        value = getattr(options, name)
        if value is not None:
            changes[name] = value
    if workload == "high-cardinality" and "fingerprints" not in changes and "alerts" in changes:
        changes["fingerprints"] = changes["alerts"]  # every alert distinct
    if changes:
        fields = {
            "alerts": spec.alerts,
            "fingerprints": spec.fingerprints,
            "groups": spec.groups,
            "per_record": spec.per_record,
            **changes,
        }
        fields["groups"] = min(fields["groups"], fields["fingerprints"])
        spec = StormSpec(
            alerts=fields["alerts"],
            fingerprints=fields["fingerprints"],
            groups=fields["groups"],
            per_record=fields["per_record"],
            change_ratio=spec.change_ratio,
            interval_ms=spec.interval_ms,
            ends_ahead_ms=spec.ends_ahead_ms,
            seed=spec.seed,
        )
    return spec


def _version_text(version: object) -> str:
    """confluent_kafka.version() is a (text, number) pair in some releases and the text in others."""
    return str(version[0] if isinstance(version, tuple) else version)


def kafka_version(pom: Path = _POM) -> str:
    """The Kafka release pinned in a checkout's deploy/kafka/pom.xml, or "unknown".

    The broker cannot tell: the Kafka protocol carries no broker software version (ApiVersions
    lists API ranges, DescribeCluster nodes, and no broker config names it; checked on 4.1.1).
    So a run from an installed package records "unknown": name the broker where it is published.
    """
    try:
        found = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text(encoding="utf-8"))
    except OSError:
        return "unknown"
    return found.group(1).strip() if found else "unknown"


def versions(bootstrap: str) -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "confluent_kafka": _version_text(confluent_kafka.version()),
        "librdkafka": confluent_kafka.libversion()[0],
        "kafka_pinned": kafka_version(),
        "orjson": orjson.__version__,
        "bootstrap": bootstrap,
    }


class LoadWatch:
    """The 1-minute load average, sampled every second while a run lasts."""

    def __init__(self) -> None:
        self.before = loadavg()[0]
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(loadavg()[0])

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(2)
        return {
            "before": self.before,
            "max_during": max(self.samples, default=self.before),
            "after": loadavg()[0],
            "cores": machine()["cores"],
        }


def run(workload: str, options: BenchOptions) -> dict[str, Any]:
    if workload not in WORKLOADS:
        raise ValueError(f"unknown workload {workload!r}; choose one of {', '.join(WORKLOADS)}")
    watch = LoadWatch()
    result: dict[str, Any] = {
        "workload": workload,
        "machine": machine(),
        "versions": versions(options.bootstrap),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if workload == "steady":
        result.update(_run_steady(options))
    elif workload == "storm-http":
        result.update(_run_storm_http(workload, options))
    else:
        result.update(_run_storm(workload, options))
    result["load"] = watch.finish()
    result["targets"] = check_targets(result)
    return result


# ---------------------------------------------------------------------------------- pre-written


def _rules_yaml(options: BenchOptions) -> str | None:
    return options.rules_file.read_text() if options.rules_file is not None else None


def _write_storm(env: BenchPipeline, storm: Storm, t0_ms: int) -> dict[str, Any]:
    producer = env.producer()
    topic = env.topics.raw
    started = time.monotonic()
    alerts = 0
    # Round robin, as many producers spread live traffic: every raw partition advances through the
    # storm's event time at the same pace. (A sticky partitioner writing as fast as it can leaves
    # some partitions minutes of event time behind others; the correlator's clock is the slowest
    # partition's, so it would buffer everything in between.)
    for i, record in enumerate(storm.records(t0_ms)):
        alerts += record.alerts
        while True:
            try:
                producer.produce(
                    topic, record.value, partition=i % env.partitions, timestamp=record.timestamp_ms
                )
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RuntimeError("the storm was not completely written to the raw topic")
    summary = storm.summary
    return {
        "alerts": alerts,
        "records": summary.records,
        "bytes": summary.bytes,
        "fingerprints": storm.spec.fingerprints,
        "groups": storm.spec.groups,
        "per_record": storm.spec.per_record,
        "rounds": storm.spec.rounds,
        "interval_ms": storm.spec.interval_ms,
        "resend_ratio": round(summary.resend_ratio, 4),
        "firing_at_end": summary.firing_at_end,
        "write_s": round(time.monotonic() - started, 2),
    }


def _floor(options: BenchOptions, topic: str, follow_s: float | None = None) -> subprocess.Popen[bytes]:
    """The floor consumer as a process of its own (its CPU time is its own).

    It runs in the run's work directory: ``python -m`` puts the working directory first on
    sys.path, and the caller's (or a checkout's) could shadow installed modules.
    """
    cmd = [sys.executable, "-m", "stormwatch.bench.floor", "--bootstrap", options.bootstrap, "--topic", topic]
    if follow_s is not None:
        cmd += ["--follow", str(follow_s)]
    options.workdir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, cwd=options.workdir)


def _floor_result(proc: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"floor measurement failed with exit code {proc.returncode}")
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def _start_workers(env: BenchPipeline, options: BenchOptions) -> tuple[Worker, Worker, float]:
    """Correlator first (idle until input arrives), then ingest; returns when both have partitions."""
    correlator = env.start("correlate", "c1", verbose=True)
    env.wait_assigned(env.correlator_group, [correlator], timeout_s=options.timeout_s)
    ingest = env.start("ingest", "i1")
    started = env.wait_assigned(env.ingest_group, [ingest, correlator], timeout_s=options.timeout_s)
    return ingest, correlator, started


def _profilers(options: BenchOptions, workers: list[Worker], tag: str) -> list[subprocess.Popen[bytes]]:
    """py-spy recorders attached to the workers (``--profile DIR``); they stop when a worker does."""
    if options.profile_dir is None:
        return []
    if shutil.which(_py_spy()) is None:
        raise UserError(
            "--profile records with py-spy, which is not installed: "
            "run `.venv/bin/pip install -e '.[bench]' -c constraints.txt` and try again"
        )
    options.profile_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for w in workers:
        out = options.profile_dir / f"{tag}-{w.stage}.txt"  # collapsed stacks: flamegraph.pl, speedscope
        procs.append(
            subprocess.Popen(
                [
                    _py_spy(),
                    "record",
                    "--pid",
                    str(w.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def _py_spy() -> str:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else "py-spy"


def _stop_profilers(procs: list[subprocess.Popen[bytes]]) -> None:
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def _count_events(env: BenchPipeline) -> dict[str, Any]:
    by_type: dict[str, int] = {}
    events = 0
    for msg in read_topic(env.settings, env.topics.incidents, timeout_s=60):
        value = msg.value()
        if value is None:
            continue
        kind = str(orjson.loads(value).get("type"))
        by_type[kind] = by_type.get(kind, 0) + 1
        events += 1
    return {"events": events, "by_type": dict(sorted(by_type.items()))}


def _restart(env: BenchPipeline, correlator: Worker, timeout_s: float) -> dict[str, Any]:
    """SIGKILL the correlator and start it again: time until restored and committing again (its
    first transaction)."""
    correlator.kill()
    env.workers.remove(correlator)
    spawned = time.monotonic()
    fresh = env.start("correlate", "c1", verbose=True)
    restored_at: float | None = None
    restore_s = 0.0
    deadline = spawned + timeout_s
    while time.monotonic() < deadline:
        fresh.check()
        found = [m for line in fresh.log_lines("restored partitions") if (m := _RESTORED.search(line))]
        if len({p for m in found for p in m.group(1).split(",")}) >= env.partitions:
            restored_at = time.monotonic()
            restore_s = sum(float(m.group(2)) for m in found)
            break
        time.sleep(0.02)
    if restored_at is None:
        raise TimeoutError(f"the restarted correlator did not restore within {timeout_s:.0f}s")
    after_restore = fresh.sample()
    ready = _first_transaction(fresh, deadline)
    return {
        "restart_to_ready_s": round(ready - spawned, 3),
        "restart_to_restored_s": round(restored_at - spawned, 3),
        "restore_s": round(restore_s, 3),
        "rss_after_restore": after_restore.rss,
        "worker": fresh,
    }


def _first_transaction(worker: Worker, deadline: float) -> float:
    """When ``worker`` committed its first transaction (stormwatch_transactions_total): restored and
    running. A restarted correlator's first one writes its partitions' clock demands at once; the
    input may hold nothing new to commit (ingest ticks an idle partition only on demand)."""
    while time.monotonic() < deadline:
        worker.check()
        try:
            if worker.metrics().get("stormwatch_transactions_total", 0.0) >= 1:
                return time.monotonic()
        except OSError:
            pass  # its /metrics is not up yet
        time.sleep(0.02)
    raise TimeoutError("the restarted correlator committed no transaction in time")


def _pipeline(options: BenchOptions) -> BenchPipeline:
    return BenchPipeline(
        options.bootstrap,
        options.workdir,
        partitions=options.partitions,
        rules_yaml=_rules_yaml(options),
        ingest=options.ingest_settings or None,
    )


def _run_storm(workload: str, options: BenchOptions) -> dict[str, Any]:
    spec = storm_spec(workload, options)
    storm = Storm(spec)
    env = _pipeline(options)
    out: dict[str, Any] = {"spec": _spec_dict(spec), "topics_suffix": env.suffix}
    try:
        t0 = int(time.time() * 1000) - spec.span_ms - 120_000
        options.say(f"writing {spec.alerts:,} alerts in {workload} records ...")
        sent = out["sent"] = _write_storm(env, storm, t0)
        raw_end = env.end_offsets(env.topics.raw)
        if options.floor:
            options.say("measuring the floor (raw consume + parse) ...")
            out["floor"] = _floor_result(_floor(options, env.topics.raw), options.timeout_s)
        options.say("starting the pipeline ...")
        ingest, correlator, started = _start_workers(env, options)
        i0, c0 = ingest.sample(), correlator.sample()
        profilers = _profilers(options, [ingest, correlator], workload)
        ingest_done, i1, done = _wait_caught_up(env, raw_end, ingest, [ingest, correlator], options)
        c1 = correlator.sample()
        _stop_profilers(profilers)
        options.say("pipeline caught up; collecting figures ...")
        alerts = sent["alerts"]
        out["pipeline"] = _pipeline_figures(alerts, started, ingest_done, done, i0, i1, c0, c1)
        # Memory held for the state: sampled once the correlator, idle but for ticks, has handed
        # freed memory back (streams.txloop releases it every TRIM_INTERVAL_S while running).
        time.sleep(TRIM_INTERVAL_S + 2)
        settled = correlator.sample()
        corr_metrics = correlator.metrics()
        ingest_metrics = ingest.metrics()
        active = int(corr_metrics.get("stormwatch_active_alerts", 0))
        out["memory"] = {
            "correlator_rss_before": c0.rss,
            "correlator_rss_at_done": c1.rss,
            "correlator_rss_settled": settled.rss,
            "correlator_peak_rss": settled.peak_rss,
            "active_fingerprints": active,
            "bytes_per_fingerprint": round((settled.rss - c0.rss) / active) if active else None,
        }
        out["correlator_metrics"] = _interesting(corr_metrics)
        out["ingest_metrics"] = _interesting(ingest_metrics)
        incidents = _count_events(env)
        incidents["suppression_ratio"] = (
            round(alerts / incidents["events"], 1) if incidents["events"] else None
        )
        out["incidents"] = incidents
        if options.restart:
            options.say("restart: SIGKILL the correlator and start it again ...")
            recovery = _restart(env, correlator, options.timeout_s)
            recovery.pop("worker")
            recovery["active_fingerprints"] = active
            out["recovery"] = recovery
        out["floor_ratios"] = _floor_ratios(out)
        if options.alertmanager and workload == "storm-batched":
            _alertmanager_side(env, spec, options, out, ("side_by_side", _side_by_side))
    finally:
        env.close(delete=not options.keep_topics)
    return out


def _wait_caught_up(
    env: BenchPipeline, raw_end: dict[int, int], ingest: Worker, workers: list[Worker], options: BenchOptions
) -> tuple[float, ProcSample, float]:
    """Until ingest has committed ``raw_end`` (when, and its sample then), then until the correlator
    has committed everything ingest wrote by then (when): the end of a storm run."""
    ingest_done = env.wait_committed(
        env.ingest_group, env.topics.raw, raw_end, workers, timeout_s=options.timeout_s
    )
    after = ingest.sample()
    input_end = env.end_offsets(env.topics.correlator_input)
    done = env.wait_committed(
        env.correlator_group,
        env.topics.correlator_input,
        {p: max(0, end - 1) for p, end in input_end.items()},
        workers,
        timeout_s=options.timeout_s,
    )
    return ingest_done, after, done


def _alertmanager_side(
    env: BenchPipeline,
    spec: StormSpec,
    options: BenchOptions,
    out: dict[str, Any],
    compare: tuple[str, Callable[[dict[str, Any]], dict[str, Any]]],
    rules: dict[str, str] | None = None,
) -> None:
    """The same storm into a fresh Alertmanager, once the run's topics and workers are gone (the
    cores are free again): ``out["alertmanager"]``, and ``out[key] = function(out)`` for ``compare``
    = (key, function); ``{"skipped": ...}`` when Alertmanager is not installed."""
    from stormwatch.bench.alertmanager import find_binary, run_alertmanager

    if find_binary() is None:
        out["alertmanager"] = {"skipped": "prometheus-alertmanager is not installed"}
        return
    env.close(delete=not options.keep_topics)
    options.say("side by side: the same storm, the same HTTP client, into Alertmanager ...")
    out["alertmanager"] = run_alertmanager(spec, options.workdir, rules=rules)
    key, function = compare
    out[key] = function(out)


def _pipeline_figures(
    alerts: int,
    started: float,
    ingest_done: float,
    done: float,
    i0: ProcSample,
    i1: ProcSample,
    c0: ProcSample,
    c1: ProcSample,
) -> dict[str, Any]:
    ingest = process_figures(alerts, i1.cpu_s - i0.cpu_s, ingest_done - started, i1.rss, i1.peak_rss)
    correlator = process_figures(alerts, c1.cpu_s - c0.cpu_s, done - started, c1.rss, c1.peak_rss)
    cpu_total = (i1.cpu_s - i0.cpu_s) + (c1.cpu_s - c0.cpu_s)
    # With a core each, the two stages overlap; the slower one sets the pace.
    one_core = min(ingest["alerts_per_cpu_s"], correlator["alerts_per_cpu_s"])
    return {
        "wall_s": round(done - started, 3),
        "alerts_per_s": round(rate(alerts, done - started)),
        "alerts_per_cpu_s": round(rate(alerts, cpu_total)),
        "cpu_us_per_alert": round(cpu_total / alerts * 1e6, 2) if alerts else None,
        "one_core_alerts_per_s": one_core,
        "ingest": ingest,
        "correlator": correlator,
    }


def _floor_ratios(out: dict[str, Any]) -> dict[str, float | None]:
    floor = out.get("floor") or {}
    pipe = out.get("pipeline") or {}
    ratios: dict[str, float | None] = {}
    for stage in ("ingest", "correlator"):
        figures = pipe.get(stage) or {}
        ratios[f"{stage}_wall"] = ratio(figures.get("alerts_per_s"), floor.get("alerts_per_s"))
        ratios[f"{stage}_cpu"] = ratio(figures.get("alerts_per_cpu_s"), floor.get("alerts_per_cpu_s"))
        ratios[f"{stage}_peak_rss"] = ratio(figures.get("peak_rss"), floor.get("peak_rss"))
    ratios["pipeline_wall"] = ratio(pipe.get("alerts_per_s"), floor.get("alerts_per_s"))
    ratios["pipeline_one_core"] = ratio(pipe.get("one_core_alerts_per_s"), floor.get("alerts_per_cpu_s"))
    latency = out.get("latency") or {}
    floor_p99 = (floor.get("latency_ms") or {}).get("p99")
    for key in ("visible_ms", "record_ms"):
        ratios[f"latency_{key}_p99"] = ratio((latency.get(key) or {}).get("p99"), floor_p99)
    return {k: (round(v, 3) if v is not None else None) for k, v in ratios.items()}


def _side_by_side(out: dict[str, Any]) -> dict[str, Any]:
    pipe = out["pipeline"]
    am = out["alertmanager"]
    return {
        "stormwatch": {
            "alerts_per_s": pipe["alerts_per_s"],
            "one_core_alerts_per_s": pipe["one_core_alerts_per_s"],
            "cpu_us_per_alert": pipe["cpu_us_per_alert"],
            "peak_rss": pipe["ingest"]["peak_rss"] + pipe["correlator"]["peak_rss"],
            "notifications": out["incidents"]["events"],
            "opened": out["incidents"]["by_type"].get("opened", 0),
        },
        "alertmanager": {
            "alerts_per_s": am["alerts_per_s"],
            "cpu_us_per_alert": am["cpu_us_per_alert"],
            "peak_rss": am["peak_rss"],
            "notifications": am["notifications"],
        },
    }


def _interesting(metrics: dict[str, float]) -> dict[str, float]:
    keep = (
        "stormwatch_alerts_received_total",
        "stormwatch_raw_records_total",
        "stormwatch_alerts_deduplicated_total",
        "stormwatch_alerts_grouped_total",
        "stormwatch_alerts_late_total",
        "stormwatch_alerts_suppressed_total",
        "stormwatch_flapping_detected_total",
        "stormwatch_incident_events_total",
        "stormwatch_active_alerts",
        "stormwatch_open_incidents",
        "stormwatch_transactions_total",
        "stormwatch_dead_letters_total",
        "stormwatch_notes_signature_total",
    )
    return {k: metrics[k] for k in keep if k in metrics}


def _spec_dict(spec: StormSpec | SteadySpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


# ------------------------------------------------------------------------------------ storm-http


def _run_storm_http(workload: str, options: BenchOptions) -> dict[str, Any]:
    """The storm POSTed to the gateway, as Prometheus sends it, then the same bodies to Alertmanager.

    The clock starts at the first request. The gateway stamps each record with its arrival, so the
    pipeline runs in live time (not on a replayed past, as the pre-written workloads do).
    """
    spec = storm_spec(workload, options)
    storm = Storm(spec)
    rule = _default_rule(options)
    env = _pipeline(options)
    out: dict[str, Any] = {"spec": _spec_dict(spec), "topics_suffix": env.suffix}
    try:
        signed = "signs its notes, ingest verifies them" if env.notes_key_file else "does not sign its notes"
        options.say(f"starting the pipeline and the gateway (it {signed}: ingest.notes_key_file) ...")
        gateway = env.start_gateway(read_api=options.read_api)  # starts while the workers join
        ingest, correlator, _ = _start_workers(env, options)
        wait_ready(
            gateway.metrics_port, gateway.popen, name="the stormwatch gateway", timeout_s=options.timeout_s
        )
        bodies = storm_bodies(storm, int(time.time() * 1000))
        alerts = sum(n for _, n in bodies)
        workers = [gateway, ingest, correlator]
        profilers = _profilers(options, workers, workload)
        g0, i0, c0 = (w.sample() for w in workers)
        options.say(f"POSTing {alerts:,} alerts in {len(bodies):,} requests to the gateway ...")
        pushed = push(gateway.metrics_port, [body for body, _ in bodies], receiver="the stormwatch gateway")
        summary = storm.summary
        out["sent"] = {
            "alerts": alerts,
            "records": len(bodies),
            "bytes": sum(len(body) for body, _ in bodies),
            "fingerprints": spec.fingerprints,
            "groups": spec.groups,
            "per_record": spec.per_record,
            "rounds": spec.rounds,
            "resend_ratio": round(summary.resend_ratio, 4),
            "firing_at_end": summary.firing_at_end,
        }
        del bodies
        # every request was answered once Kafka acknowledged its record: the raw topic is complete
        raw_end = {p: end for p, end in env.end_offsets(env.topics.raw).items() if end > 0}
        ingest_done, i1, done = _wait_caught_up(env, raw_end, ingest, workers, options)
        c1, g1 = correlator.sample(), gateway.sample()
        _stop_profilers(profilers)
        options.say("pipeline caught up; collecting figures ...")
        out["pipeline"] = _http_pipeline_figures(
            alerts, pushed, ingest_done, done, (g0, g1), (i0, i1), (c0, c1)
        )
        out["client"] = _client_figures(alerts, pushed)
        out["gateway"] = {
            "read_api": options.read_api,
            "port": gateway.metrics_port,
            "notes_signed": env.notes_key_file is not None,
        }
        out["gateway_metrics"] = {
            k: v
            for k, v in gateway.metrics().items()
            if k.startswith("stormwatch_gateway_alerts") and k.endswith("_total")
        }
        out["ingest_metrics"] = _interesting(ingest.metrics())
        # Incidents open group_wait after a group's first alert, in live time: counted in the window
        # Alertmanager's notifications are counted in (group_wait + 10 s from the first request).
        window_s = rule.group_wait_ms / 1000 + 10
        time.sleep(max(0.0, pushed.started + window_s - time.monotonic()))
        out["correlator_metrics"] = _interesting(correlator.metrics())
        incidents = _count_events(env)
        incidents["window_s"] = window_s
        incidents["suppression_ratio"] = (
            round(alerts / incidents["events"], 1) if incidents["events"] else None
        )
        out["incidents"] = incidents
        if options.floor:
            options.say("measuring the floor on the raw topic the gateway wrote ...")
            out["floor"] = _floor_result(_floor(options, env.topics.raw), options.timeout_s)
        out["floor_ratios"] = _floor_ratios(out)
        if options.alertmanager:
            _alertmanager_side(env, spec, options, out, ("like_for_like", _like_for_like), _am_timings(rule))
    finally:
        env.close(delete=not options.keep_topics)
    return out


def _http_pipeline_figures(
    alerts: int,
    pushed: PushResult,
    ingest_done: float,
    done: float,
    gateway: tuple[ProcSample, ProcSample],
    ingest: tuple[ProcSample, ProcSample],
    correlator: tuple[ProcSample, ProcSample],
) -> dict[str, Any]:
    """Per stage from the first request: the gateway until the correlator caught up (its read
    model, when on, follows the pipeline's output until then), ingest until it committed the raw
    topic, the correlator until it committed what ingest wrote."""
    started = pushed.started
    ends = {"gateway": done, "ingest": ingest_done, "correlator": done}
    samples = {"gateway": gateway, "ingest": ingest, "correlator": correlator}
    stages = {
        stage: process_figures(alerts, s1.cpu_s - s0.cpu_s, ends[stage] - started, s1.rss, s1.peak_rss)
        for stage, (s0, s1) in samples.items()
    }
    cpu_total = sum(s1.cpu_s - s0.cpu_s for s0, s1 in samples.values())
    return {
        "wall_s": round(done - started, 3),
        "alerts_per_s": round(rate(alerts, done - started)),
        "accepted_wall_s": round(pushed.wall_s, 3),
        "accepted_alerts_per_s": round(rate(alerts, pushed.wall_s)),
        "alerts_per_cpu_s": round(rate(alerts, cpu_total)),
        "cpu_us_per_alert": round(cpu_total / alerts * 1e6, 2) if alerts else None,
        "one_core_alerts_per_s": min(figures["alerts_per_cpu_s"] for figures in stages.values()),
        **stages,
    }


def _client_figures(alerts: int, pushed: PushResult) -> dict[str, Any]:
    """The HTTP client's own cost (bench/httppush.py), not counted in either system's CPU."""
    return {
        "clients": pushed.clients,
        "requests": pushed.requests,
        "cpu_s": round(pushed.client_cpu_s, 3),
        "cpu_us_per_alert": round(pushed.client_cpu_s / alerts * 1e6, 2) if alerts else None,
        "utilization": round(pushed.client_cpu_s / pushed.wall_s, 3) if pushed.wall_s > 0 else None,
    }


def _am_timings(rule: CorrelationRule) -> dict[str, str]:
    """Alertmanager's route timings equal to the rule's (its repeat_interval stays 4 h)."""

    def duration(ms: int) -> str:
        for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if ms % size == 0:
                return f"{ms // size}{unit}"
        return f"{ms}ms"

    return {
        "group_wait": duration(rule.group_wait_ms),
        "group_interval": duration(rule.group_interval_ms),
        "resolve_timeout": duration(rule.resolve_timeout_ms),
    }


def _like_for_like(out: dict[str, Any]) -> dict[str, Any]:
    """Both systems from the same HTTP requests: stormwatch counted from the gateway on."""
    pipe = out["pipeline"]
    am = out["alertmanager"]
    stages = ("gateway", "ingest", "correlator")
    stormwatch = {
        "alerts_per_s": pipe["alerts_per_s"],
        "accepted_alerts_per_s": pipe["accepted_alerts_per_s"],
        "cpu_us_per_alert": pipe["cpu_us_per_alert"],
        **{f"{stage}_cpu_us_per_alert": pipe[stage]["cpu_us_per_alert"] for stage in stages},
        "client_cpu_us_per_alert": out["client"]["cpu_us_per_alert"],
        "peak_rss": sum(pipe[stage]["peak_rss"] for stage in stages),
        "notifications": out["incidents"]["events"],
        "opened": out["incidents"]["by_type"].get("opened", 0),
    }
    alertmanager = {
        "alerts_per_s": am["alerts_per_s"],
        "cpu_us_per_alert": am["cpu_us_per_alert"],
        "client_cpu_us_per_alert": am["client_cpu_us_per_alert"],
        "peak_rss": am["peak_rss"],
        "notifications": am["notifications"],
    }
    cpu_ratio = ratio(stormwatch["cpu_us_per_alert"], alertmanager["cpu_us_per_alert"])
    wall_ratio = ratio(stormwatch["alerts_per_s"], alertmanager["alerts_per_s"])
    return {
        "clients": out["client"]["clients"],
        "requests": out["client"]["requests"],
        "stormwatch": stormwatch,
        "alertmanager": alertmanager,
        "cpu_ratio": round(cpu_ratio, 3) if cpu_ratio is not None else None,
        "wall_ratio": round(wall_ratio, 3) if wall_ratio is not None else None,
    }


# ---------------------------------------------------------------------------------------- steady


class _EventListener:
    """Reads the incident topic as a notifier would (read_committed), stamping each arrival."""

    def __init__(self, env: BenchPipeline) -> None:
        self.events: list[tuple[float, int, bytes]] = []  # (arrival ms, record timestamp ms, value)
        self._env = env
        self._stop = threading.Event()
        self._consumer = Consumer(
            {
                "bootstrap.servers": env.bootstrap,
                "group.id": f"stormwatch-bench-listener-{env.suffix}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
                "log_level": 3,
            }
        )
        topic = env.topics.incidents
        self._consumer.assign([TopicPartition(topic, p, 0) for p in range(env.partitions)])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(0.05)  # returns as soon as a record is there
            if first is None:
                continue
            now_ms = time.time() * 1000
            for msg in [first, *self._consumer.consume(500, 0)]:
                if msg.error() is None:
                    self.events.append((now_ms, msg.timestamp()[1], msg.value() or b""))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._consumer.close()


def _default_rule(options: BenchOptions) -> CorrelationRule:
    """The catch-all rule (the last one), which groups the benchmark's alerts."""
    rules = RulesConfig() if options.rules_file is None else None
    if rules is None:
        from stormwatch.loaders import load_rules

        rules = load_rules(str(options.rules_file))
    return rules.rules[-1]


def _group_wait_ms(options: BenchOptions) -> int:
    return _default_rule(options).group_wait_ms


def _run_steady(options: BenchOptions) -> dict[str, Any]:
    spec = SteadySpec(rate=options.steady_rate, seconds=options.steady_seconds)
    load = SteadyLoad(spec)
    group_wait = _group_wait_ms(options)
    env = _pipeline(options)
    out: dict[str, Any] = {"spec": _spec_dict(spec), "group_wait_ms": group_wait, "topics_suffix": env.suffix}
    listener: _EventListener | None = None
    try:
        options.say("starting the pipeline ...")
        ingest, correlator, _ = _start_workers(env, options)
        listener = _EventListener(env)
        floor = _floor(options, env.topics.raw, follow_s=spec.seconds + 2) if options.floor else None
        time.sleep(2.0)  # the floor consumer is assigned and at the end of the topic
        producer = env.producer(**{"linger.ms": 2})
        i0, c0 = ingest.sample(), correlator.sample()
        profilers = _profilers(options, [ingest, correlator], "steady")
        options.say(f"producing {spec.rate:,} alerts/s for {spec.seconds:.0f}s ...")
        first_seen: dict[int, int] = {}
        start_wall_ms = int(time.time() * 1000)
        start = time.monotonic()
        alerts = 0
        for s in range(spec.slots):
            delay = start + s * spec.slot_ms / 1000 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            now_ms = int(time.time() * 1000)
            for indexes in load.slot(s):
                producer.produce(env.topics.raw, load.encode(indexes, now_ms, first_seen), timestamp=now_ms)
                alerts += len(indexes)
            producer.poll(0)
            if s % 50 == 0:
                ingest.check()
                correlator.check()
        producer.flush(30)
        end = time.monotonic()
        end_wall_ms = int(time.time() * 1000)
        i1, c1 = ingest.sample(), correlator.sample()
        _stop_profilers(profilers)
        wall = end - start
        out["correlator_metrics"] = _interesting(correlator.metrics())  # late alerts among them
        # every group started opens group_wait after its first alert
        time.sleep(group_wait / 1000 + 5)
        listener.close()
        floor_result = _floor_result(floor, 60) if floor is not None else None
        opened: list[tuple[float, float]] = []
        late_groups = 0
        for arrival, record_ts, value in listener.events:
            event = orjson.loads(value)
            if event.get("type") != "opened":
                continue
            at_ms = _epoch_ms(event["at"])
            opened_ms = int(event["incident_id"].rsplit("-", 1)[1])
            if opened_ms < start_wall_ms + spec.ramp_ms or at_ms > end_wall_ms:
                late_groups += 1  # opened during the ramp-up or after the load stopped
                continue
            opened.append((arrival - at_ms, record_ts - at_ms))
        out["sent"] = {"alerts": alerts, "rate": round(rate(alerts, wall)), "seconds": round(wall, 2)}
        out["latency"] = {
            "visible_ms": percentiles([v for v, _ in opened]),
            "record_ms": percentiles([r for _, r in opened]),
            "events_measured": len(opened),
            "events_outside_window": late_groups,
            "what": "opened events of groups started at full rate: arrival at a read_committed consumer "
            "(visible_ms) or the incident record's timestamp (record_ms), minus the group_wait deadline",
        }
        ingest_fig = process_figures(alerts, i1.cpu_s - i0.cpu_s, wall, i1.rss, i1.peak_rss)
        corr_fig = process_figures(alerts, c1.cpu_s - c0.cpu_s, wall, c1.rss, c1.peak_rss)
        out["pipeline"] = {"ingest": ingest_fig, "correlator": corr_fig}
        if floor_result is not None:
            out["floor"] = floor_result
        out["settings"] = {
            "tick_interval_ms": env.settings.ingest.tick_interval_ms,
            "allowed_lateness_ms": _lateness_ms(options),
        }
        out["floor_ratios"] = _floor_ratios(out)
    finally:
        if listener is not None and listener._thread.is_alive():
            listener.close()
        env.close(delete=not options.keep_topics)
    return out


def _lateness_ms(options: BenchOptions) -> int:
    if options.rules_file is None:
        return RulesConfig().allowed_lateness_ms
    from stormwatch.loaders import load_rules

    return load_rules(str(options.rules_file)).allowed_lateness_ms


def _epoch_ms(text: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
