"""What stormwatch costs with no alerts at all (`stormwatch bench idle`, issue #16, target 4).

For each partition count of ``--partitions``, on a fresh set of topics with that many partitions:

1. ``--correlators`` correlators, with ``--topology`` a linker (``stormwatch link``; the correlator
   gets the same file as ``correlator.topology_file``, as ``make up`` configures them), then
   ``--ingest-workers`` ingest workers start, as deployed; nothing is ever written to the raw topic;
2. once every consumer group is stable with each worker assigned, ``--warmup`` seconds pass (the
   correlator stops writing for batches that only move its clock after 5 s of quiet);
3. for ``--seconds`` the harness measures, from outside the workers:
   - per stormwatch topic, the **offsets** the broker handed out (end-offset deltas summed over the
     partitions): records plus transaction markers, every offset a record of the log;
   - the **records** written in that window, read back (read_uncommitted: aborted ones too) with
     their **payload bytes** (key + value + header names and values); offsets - records = the
     **markers** (one per partition a transaction wrote to);
   - an **estimate of the log bytes**: the payload plus each record's framing in Kafka's record
     format v2 (computed from its sizes; time and offset deltas taken as one byte), 61 bytes of
     batch header per batch, and one 78-byte marker batch per marker; data batches are counted as
     one per marker (one per transaction and partition, the fewest a transaction can write);
   - ``__consumer_offsets`` and ``__transaction_state``: their end-offset deltas on every partition,
     and on the partitions this run's consumer groups and transactional ids hash to (Kafka's
     ``abs(id.hashCode()) % partitions``); other users of a shared broker add to both;
   - per worker, transactions per second (``stormwatch_transactions_total`` from its /metrics)
     and CPU (user + system, /proc), summed per stage.

Across the partition counts, records/min (and estimated bytes/min) of the stormwatch topics are
fitted by least squares to ``a + b x partitions x ingest workers``: ingest ticks every correlator
partition every ``ingest.tick_interval_ms``, so ``b`` is what the clock costs per partition.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, IsolationLevel, Message, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin import OffsetSpec as _OffsetSpec  # type: ignore[attr-defined]

from stormwatch.bench.pipeline import ROOT, BenchPipeline, Worker
from stormwatch.bench.procstat import ProcSample, machine
from stormwatch.bench.runner import LoadWatch, versions
from stormwatch.kafka.topics import topic_specs

__all__ = ["IdleOptions", "fit_line", "java_partition", "record_overhead", "render", "run_idle", "source"]

INTERNAL_TOPICS = ("__consumer_offsets", "__transaction_state")
STAGES = ("ingest", "correlator", "linker")
_STAGE_OF = {"ingest": "ingest", "correlate": "correlator", "link": "linker"}  # command -> stage

BATCH_HEADER_BYTES = 61  # record batch v2: base offset .. records count
MARKER_BATCH_BYTES = BATCH_HEADER_BYTES + 17  # one control record: 4-byte key, 6-byte value


@dataclass
class IdleOptions:
    bootstrap: str
    workdir: Path
    partitions: tuple[int, ...] = (6, 24, 48)
    ingest_workers: int = 1
    correlators: int = 1
    warmup_s: float = 20.0
    seconds: float = 60.0
    topology: Path | None = None
    rules_file: Path | None = None
    ingest_settings: dict[str, Any] = field(default_factory=dict)
    keep_topics: bool = False
    timeout_s: float = 900.0
    log: Callable[[str], None] | None = None

    def say(self, text: str) -> None:
        if self.log is not None:
            self.log(text)


# ---------------------------------------------------------------------------------- arithmetic


def _varint_len(value: int) -> int:
    """Bytes of ``value`` as a zigzag varint (Kafka's record fields)."""
    n = (value << 1) ^ (value >> 63)
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def record_overhead(key: int | None, value: int | None, headers: Iterable[tuple[int, int | None]]) -> int:
    """Bytes a record of these key/value/header sizes takes in a v2 batch beyond its payload
    (length, attributes, time and offset deltas taken as one byte each, the size fields)."""
    body = 3  # attributes, timestamp delta, offset delta
    body += _varint_len(-1 if key is None else key) + _varint_len(-1 if value is None else value)
    pairs = list(headers)
    body += _varint_len(len(pairs))
    for name, data in pairs:
        body += _varint_len(name) + _varint_len(-1 if data is None else data)
    payload = (key or 0) + (value or 0) + sum(name + (data or 0) for name, data in pairs)
    return _varint_len(body + payload) + body


def java_partition(text: str, partitions: int) -> int:
    """The partition of ``__consumer_offsets`` (group id) or ``__transaction_state`` (transactional
    id) that Kafka uses for ``text``: ``Utils.abs(text.hashCode()) % partitions``."""
    h = 0
    units = text.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (31 * h + int.from_bytes(units[i : i + 2], "big")) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return 0 if signed == -(1 << 31) else abs(signed) % partitions


def fit_line(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """Least squares ``y = a + b·x`` over ``points`` (x, y), with R²; None below two distinct x."""
    if len({x for x, _ in points}) < 2:
        return None
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for _, y in points)
    ss_res = sum((y - a - b * x) ** 2 for x, y in points)
    return {"a": a, "b": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


# ---------------------------------------------------------------------------------- measuring


Offsets = dict[tuple[str, int], int]
_LATEST: Any = _OffsetSpec.latest()  # type: ignore[no-untyped-call]  # OffsetSpec is untyped


def _end_offsets(admin: AdminClient, partitions: dict[str, int], timeout_s: float) -> Offsets:
    """End offsets (read_uncommitted: the log end) of every partition of ``partitions``' topics."""
    request = {TopicPartition(t, p): _LATEST for t, n in partitions.items() for p in range(n)}
    futures = admin.list_offsets(
        request, isolation_level=IsolationLevel.READ_UNCOMMITTED, request_timeout=timeout_s
    )
    return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}


@dataclass
class _Payload:
    records: int = 0
    payload_bytes: int = 0
    overhead_bytes: int = 0

    def add(self, msg: Message) -> None:
        key, value, raw = msg.key(), msg.value(), msg.headers() or []
        pairs = raw.items() if isinstance(raw, dict) else raw
        headers = [(len(name.encode()), None if data is None else len(data)) for name, data in pairs]
        self.records += 1
        self.payload_bytes += len(key or b"") + len(value or b"") + sum(n + (d or 0) for n, d in headers)
        self.overhead_bytes += record_overhead(
            None if key is None else len(key), None if value is None else len(value), headers
        )


def _read_window(bootstrap: str, start: Offsets, end: Offsets, timeout_s: float) -> dict[str, _Payload]:
    """Every record written between ``start`` and ``end``, per topic: count, payload, framing."""
    read: dict[str, _Payload] = {}
    remaining = {tp: off for tp, off in end.items() if off > start[tp]}
    if not remaining:
        return read
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"stormwatch-bench-idle-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_uncommitted",
            "log_level": 3,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, start[(t, p)]) for t, p in remaining])
        deadline = time.monotonic() + timeout_s
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read the window's records back: {len(remaining)} left")
            for msg in consumer.consume(10_000, 0.5):
                topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
                if msg.error() is not None or topic is None or partition is None or offset is None:
                    continue
                if offset < end.get((topic, partition), -1):
                    read.setdefault(topic, _Payload()).add(msg)
            # the position passes the markers, which are never delivered
            positions = consumer.position([TopicPartition(t, p) for t, p in remaining])
            for position in positions:
                if position.offset >= remaining[(position.topic, position.partition)]:
                    del remaining[(position.topic, position.partition)]
    finally:
        consumer.close()
    return read


def _wait(seconds: float, workers: list[Worker]) -> None:
    """Sleep ``seconds``, failing at once if a worker exits meanwhile."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        for w in workers:
            w.check()
        time.sleep(min(0.5, left))


@dataclass
class _Snapshot:
    at: float
    offsets: Offsets
    samples: dict[str, ProcSample]  # per worker instance
    transactions: dict[str, float]

    @classmethod
    def take(cls, admin: AdminClient, partitions: dict[str, int], workers: list[Worker]) -> _Snapshot:
        offsets = _end_offsets(admin, partitions, 30)
        at = time.monotonic()  # the window of the offsets; CPU samples carry their own times
        samples = {w.instance: w.sample() for w in workers}
        transactions = {w.instance: w.metrics().get("stormwatch_transactions_total", 0.0) for w in workers}
        return cls(at, offsets, samples, transactions)


def _topic_partitions(env: BenchPipeline, admin: AdminClient) -> dict[str, int]:
    """Partitions of every topic of the run and of Kafka's two internal topics."""
    counts = {spec.name: spec.partitions for spec in topic_specs(env.settings)}
    meta = admin.list_topics(timeout=30).topics
    for name in INTERNAL_TOPICS:
        if name in meta:  # __transaction_state exists once a transactional producer started
            counts[name] = len(meta[name].partitions)
    return counts


def _start(env: BenchPipeline, options: IdleOptions) -> list[Worker]:
    """Correlators (and the linker) first, then ingest; returns once every group is assigned."""
    p = env.partitions
    deployment = env.topics.correlator_input
    for n in range(1, options.correlators + 1):
        env.start("correlate", f"c{n}")
    groups = [(env.correlator_group, min(options.correlators, p))]
    if options.topology is not None:
        env.start("link", "l1")
        groups.append((f"stormwatch-linker-{deployment}", 1))
    for n in range(1, options.ingest_workers + 1):
        env.start("ingest", f"i{n}")
    groups.append((env.ingest_group, min(options.ingest_workers, 3 * p)))  # raw, commands, results
    workers = list(env.workers)
    for group, members in groups:
        env.wait_assigned(group, workers, timeout_s=options.timeout_s, members=members)
    return workers


def _ids(env: BenchPipeline, workers: list[Worker]) -> tuple[dict[str, str], dict[str, str]]:
    """This run's consumer groups and transactional ids, each with its stage (commands/pipeline.py
    names them)."""
    deployment = env.topics.correlator_input
    stages = {w: _STAGE_OF[w.stage] for w in workers}
    groups = {f"stormwatch-{stage}-{deployment}": stage for stage in stages.values()}
    txn = {f"stormwatch-{stage}-{deployment}-{w.instance}": stage for w, stage in stages.items()}
    return groups, txn


def _internal(ids: dict[str, str], partitions: int, delta: dict[int, int], per_min: float) -> dict[str, Any]:
    """An internal topic's end-offset deltas: all of it, the partitions of this run's ids, and per
    stage (``shared``: one of its partitions also holds another stage's id)."""
    where = {i: java_partition(i, partitions) for i in ids}
    by_stage: dict[str, Any] = {}
    for stage in dict.fromkeys(ids.values()):
        mine = sorted({p for i, p in where.items() if ids[i] == stage})
        others = {p for i, p in where.items() if ids[i] != stage}
        by_stage[stage] = {
            "partitions": mine,
            "offsets_per_min": round(sum(delta[p] for p in mine) * per_min, 1),
            "shared": bool(others & set(mine)),
        }
    ours = sorted(set(where.values()))
    return {
        "offsets_per_min": round(sum(delta.values()) * per_min, 1),
        "ours_offsets_per_min": round(sum(delta[p] for p in ours) * per_min, 1),
        "our_partitions": ours,
        "ids": dict(sorted(ids.items())),
        "by_stage": by_stage,
    }


def _run_one(partitions: int, options: IdleOptions) -> dict[str, Any]:
    correlator = {"topology_file": str(options.topology.resolve())} if options.topology else None
    env = BenchPipeline(
        options.bootstrap,
        options.workdir,
        partitions=partitions,
        rules_yaml=options.rules_file.read_text() if options.rules_file is not None else None,
        ingest=options.ingest_settings or None,
        correlator=correlator,
    )
    admin = AdminClient({"bootstrap.servers": options.bootstrap, "log_level": 3})
    try:
        options.say(f"{partitions} partitions: starting the workers ...")
        workers = _start(env, options)
        options.say(f"{partitions} partitions: assigned; warming up for {options.warmup_s:g} s ...")
        _wait(options.warmup_s, workers)
        counts = _topic_partitions(env, admin)
        options.say(f"{partitions} partitions: measuring for {options.seconds:g} s ...")
        first = _Snapshot.take(admin, counts, workers)
        _wait(options.seconds, workers)
        last = _Snapshot.take(admin, counts, workers)
        options.say(f"{partitions} partitions: reading the window's records back ...")
        ours = {t: n for t, n in counts.items() if t not in INTERNAL_TOPICS}
        window = {tp: off for tp, off in last.offsets.items() if tp[0] in ours}
        payload = _read_window(options.bootstrap, first.offsets, window, options.timeout_s)
        return _figures(env, partitions, options, workers, counts, first, last, payload)
    finally:
        env.close(delete=not options.keep_topics)


def _figures(
    env: BenchPipeline,
    partitions: int,
    options: IdleOptions,
    workers: list[Worker],
    counts: dict[str, int],
    first: _Snapshot,
    last: _Snapshot,
    payload: dict[str, _Payload],
) -> dict[str, Any]:
    seconds = last.at - first.at
    per_min = 60 / seconds
    names = {name: field for field, name in env.topics.names().items()}
    topics: dict[str, Any] = {}
    for topic, n in counts.items():
        if topic in INTERNAL_TOPICS:
            continue
        offsets = sum(last.offsets[(topic, p)] - first.offsets[(topic, p)] for p in range(n))
        read = payload.get(topic, _Payload())
        if not offsets:
            continue
        markers = offsets - read.records
        log_bytes = (
            read.payload_bytes
            + read.overhead_bytes
            + markers * (BATCH_HEADER_BYTES + MARKER_BATCH_BYTES)  # a data batch and a marker batch
        )
        topics[names[topic]] = {
            "offsets_per_min": round(offsets * per_min, 1),
            "records_per_min": round(read.records * per_min, 1),
            "markers_per_min": round(markers * per_min, 1),
            "payload_bytes_per_min": round(read.payload_bytes * per_min),
            "log_bytes_per_min_est": round(log_bytes * per_min),
        }
    keys = ("offsets_per_min", "records_per_min", "markers_per_min")
    total: dict[str, float] = {k: round(sum(t[k] for t in topics.values()), 1) for k in keys}
    for k in ("payload_bytes_per_min", "log_bytes_per_min_est"):
        total[k] = sum(t[k] for t in topics.values())
    groups, txn_ids = _ids(env, workers)
    internal: dict[str, Any] = {}
    for topic, ids in zip(INTERNAL_TOPICS, (groups, txn_ids), strict=True):
        if topic not in counts:
            continue
        delta = {p: last.offsets[(topic, p)] - first.offsets[(topic, p)] for p in range(counts[topic])}
        internal[topic] = _internal(ids, counts[topic], delta, per_min)
    stages: dict[str, Any] = {}
    for w in workers:
        stage = _STAGE_OF[w.stage]
        s0, s1 = first.samples[w.instance], last.samples[w.instance]
        cpu_pct = (s1.cpu_s - s0.cpu_s) / (s1.at - s0.at) * 100
        txn = last.transactions[w.instance] - first.transactions[w.instance]
        figures = stages.setdefault(stage, {"workers": 0, "transactions_per_s": 0.0, "cpu_pct": 0.0})
        figures["workers"] += 1
        figures["transactions_per_s"] = round(figures["transactions_per_s"] + txn / seconds, 2)
        figures["cpu_pct"] = round(figures["cpu_pct"] + cpu_pct, 2)
        figures.setdefault("per_worker", {})[w.instance] = {
            "transactions_per_s": round(txn / seconds, 2),
            "cpu_pct": round(cpu_pct, 2),
            "rss": s1.rss,
        }
    tick_ms = env.settings.ingest.tick_interval_ms
    ticking = min(options.ingest_workers, partitions)  # ingest workers that own a raw partition
    return {
        "partitions": partitions,
        "ingest_workers": options.ingest_workers,
        "correlators": options.correlators,
        "linker": options.topology is not None,
        "topics_suffix": env.suffix,
        "seconds": round(seconds, 2),
        "tick_interval_ms": tick_ms,
        "tick_records_per_min_expected": round(partitions * ticking * 60_000 / tick_ms, 1),
        "topics": topics,
        "total": total,
        "internal": internal,
        "stages": {s: stages[s] for s in STAGES if s in stages},
    }


# ---------------------------------------------------------------------------------- the run


def source() -> dict[str, Any] | None:
    """The checkout the workers ran from: its commit and the files changed or added in its working
    tree (idle traffic depends on the stages' code, uncommitted work included); None outside git."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = [line[3:] for line in git("status", "--porcelain").splitlines()]  # new files too
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "modified": changed}


def run_idle(options: IdleOptions) -> dict[str, Any]:
    watch = LoadWatch()
    result: dict[str, Any] = {
        "workload": "idle",
        "machine": machine(),
        "versions": versions(options.bootstrap),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "source": source(),
        "spec": {
            "partitions": list(options.partitions),
            "ingest_workers": options.ingest_workers,
            "correlators": options.correlators,
            "topology": str(options.topology) if options.topology else None,
            "warmup_s": options.warmup_s,
            "seconds": options.seconds,
        },
    }
    runs = [_run_one(p, options) for p in options.partitions]
    result["runs"] = runs
    x = [r["partitions"] * r["ingest_workers"] for r in runs]
    result["fit"] = {
        "x": "partitions x ingest workers",
        "records_per_min": fit_line(
            [(xi, r["total"]["offsets_per_min"]) for xi, r in zip(x, runs, strict=True)]
        ),
        "log_bytes_per_min_est": fit_line(
            [(xi, r["total"]["log_bytes_per_min_est"]) for xi, r in zip(x, runs, strict=True)]
        ),
    }
    result["load"] = watch.finish()
    return result


# ---------------------------------------------------------------------------------- the table


def _n(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _formula(fit: dict[str, float] | None) -> str:
    if fit is None:
        return "needs two partition counts or more"
    return f"{fit['a']:,.0f} + {fit['b']:,.1f} x partitions x ingest workers (R² {fit['r2']:.3f})"


def render(result: dict[str, Any]) -> str:
    spec = result["spec"]
    lines = [
        "stormwatch bench idle",
        f"no alerts; {spec['ingest_workers']} ingest, {spec['correlators']} correlator(s), "
        f"linker: {'yes (' + spec['topology'] + ')' if spec['topology'] else 'no'}; "
        f"measured {spec['seconds']:g} s after {spec['warmup_s']:g} s of warm-up",
        "offsets = records + transaction markers; bytes: payload = key + value + headers, "
        "log (est.) = with record framing and batch headers (bench/idle.py)",
        "transactions/s: the stage's stormwatch_transactions_total (an empty transaction, if the loop "
        "commits one, never reaches the broker); __transaction_state: records on the partitions of the "
        "stage's ids",
    ]
    src = result.get("source")
    if src:
        lines.append(
            f"workers ran from {src['commit'][:10]}"
            + (
                f" with {len(src['modified'])} files changed or added in the working tree"
                if src["modified"]
                else ""
            )
        )
    for run in result["runs"]:
        header = f"{'per minute':<28}  {'offsets':>10}  {'records':>10}  {'markers':>10}"
        header += f"  {'payload B':>12}  {'log B (est.)':>12}"
        lines += ["", f"{run['partitions']} partitions ({run['seconds']:.1f} s)", header]
        rows = [*sorted(run["topics"].items()), ("total", run["total"])]
        for name, t in rows:
            lines.append(
                f"{name:<28}  {_n(t['offsets_per_min']):>10}  {_n(t['records_per_min']):>10}  "
                f"{_n(t['markers_per_min']):>10}  {_n(t['payload_bytes_per_min']):>12}  "
                f"{_n(t['log_bytes_per_min_est']):>12}"
            )
        for name, t in run["internal"].items():
            lines.append(
                f"{name:<28}  {_n(t['offsets_per_min']):>10}  (partitions of this run's ids: "
                f"{_n(t['ours_offsets_per_min'])})"
            )
        lines.append(
            f"reference: a tick to every correlator partition every {run['tick_interval_ms']} ms "
            f"= {_n(run['tick_records_per_min_expected'])} records/min (partitions x ingest workers "
            f"owning a raw partition x 60,000 / tick interval)"
        )
        txn_log = (run["internal"].get("__transaction_state") or {}).get("by_stage", {})
        for stage, s in run["stages"].items():
            logged = txn_log.get(stage)
            lines.append(
                f"{stage:<12} {s['workers']} worker(s)  {s['transactions_per_s']:>8.2f} transactions/s  "
                f"{s['cpu_pct']:>6.1f} % CPU  __transaction_state {_n(logged and logged['offsets_per_min'])}/min"
                + (" (partition shared with another stage)" if logged and logged["shared"] else "")
            )
    fit = result.get("fit") or {}
    lines += [
        "",
        f"fit: records/min (offsets) = {_formula(fit.get('records_per_min'))}",
        f"fit: log bytes/min (est.) = {_formula(fit.get('log_bytes_per_min_est'))}",
    ]
    load = result.get("load") or {}
    if load:
        lines.append(f"load average before / max during: {load['before']:.2f} / {load['max_during']:.2f}")
    return "\n".join(lines)
