"""What linking costs (issue #12; docs/performance.md, "Linking"), offline, on one core, no broker.

    .venv/bin/python -m stormwatch.cli bench linking [--seeds 3] [--repeat 5] [--json]

Two measurements over the storm-mix storms of ``stormwatch.storms`` (seeds 1..N), each run
``repeat`` times, medians reported, CPU time of this process (``time.process_time``: robust on a
busy machine):

1. **The linker** (``linker_cost``). A replay of the storm without linking
   (``stormwatch.bench.quality.replay_storm``) gives the incident events; ``EventNotes`` turns
   them into the group notes the correlator writes. They are encoded as the linker input records
   (``linkwire``: a note to the partition of its scope, keyed by scope; promises of every
   correlator partition to every linker partition, in the stage's steps of a quarter of
   ``link.delay``), one batch per step of event time, as a live correlator writes them. Each
   batch goes through ``LinkerPartition`` as the stage runs it: decode, ``NoteBuffer``,
   ``Linker``, commands encoded, marks, then the changed state records (``take_output``).
   Reported: CPU µs per group note and per decision, the pure ``Linker.process`` part alone, the
   share of the state records, and the restore of the final state.
2. **The correlator's side** (``correlator_overhead``). The same storm through the engine twice:
   without a topology, and with one (``LinkSetup``: a note per incident event that tells the linker
   something, promises, the gate on event time, linking commands applied at note time +
   ``link.delay``), where the linker partitions answer in the same process after every output
   (their CPU time is not counted in the correlator's). Reported: engine CPU µs per alert
   notification of each, and the difference.

Both drive the engine as the pipeline does at low rate: one ``take_output`` (a transaction) per
record and per clock tick. The figures are a function of the storm, so they compare across
commits; absolute values depend on the machine and its load (recorded in the result).
"""

from __future__ import annotations

import gc
import statistics
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from stormwatch.bench.procstat import loadavg, machine
from stormwatch.bench.quality import DRAIN_MS, DRAIN_TICK_MS, TICK_MS, replay_storm
from stormwatch.gctune import GC_THRESHOLDS
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.storms import Storm, build_storm
from stormwatch.streams.core import linkwire
from stormwatch.streams.core.engine import PartitionEngine
from stormwatch.streams.core.ids import gkhash_of_incident
from stormwatch.streams.core.linkgate import PROMISE_STEPS_PER_DELAY, LinkSetup, linker_partition_of
from stormwatch.streams.core.linking import EventNotes, GroupNote, Linker, NoteBuffer
from stormwatch.streams.core.linkpartition import LinkerPartition, TopologyLog
from stormwatch.streams.core.replay import SOURCE, Replay
from stormwatch.streams.core.rules import RulesConfig
from stormwatch.streams.core.topology import Topology, TopologyConfig

__all__ = [
    "CorrelatorRun",
    "LinkerInput",
    "LinkerRun",
    "correlator_overhead",
    "correlator_run",
    "linker_cost",
    "linker_input",
    "linker_run",
    "render",
    "run_linking",
    "storm_records",
]


Record = tuple[int, bytes, dict[str, bytes]]  # event time, raw value, headers


# ---------------------------------------------------------------------------------- input


def storm_records(storm: Storm, fmt: str = "prometheus", limit: int | None = None) -> list[Record]:
    """The storm's raw records with their event times (the first ``limit`` only, for tests)."""
    sim = storm.simulation(fmt)
    out: list[Record] = []
    for record in sim:
        if limit is not None and len(out) >= limit:
            break
        headers = {k: v.encode() for k, v in record.headers.items()}
        out.append((sim.start_ms + record.t_ms, record.value, headers))
    return out


@dataclass(slots=True)
class LinkerInput:
    """The linker input of one storm: per linker partition, its records in batches."""

    batches: list[list[list[bytes]]]
    notes: int
    promises: int
    correlators: int
    linkers: int

    @property
    def records(self) -> int:
        return self.notes + self.promises


def _source_of(incident_id: str, correlators: int) -> int:
    """The correlator partition that owns an incident (as the gkhash key would place it)."""
    gkhash = gkhash_of_incident(incident_id) or incident_id
    return zlib.crc32(gkhash.encode()) % correlators


def linker_input(
    events: Iterable[IncidentEvent], topology: Topology, correlators: int, linkers: int
) -> LinkerInput:
    """The records the correlator partitions would write for these events: each note to the
    linker partition of its scope, and each time event time moves by a promise step, a promise
    of every correlator partition to every linker partition; a batch ends after each promise."""
    promise_step = max(topology.link.delay_ms // PROMISE_STEPS_PER_DELAY, 1)  # as LinkGate.promise
    notes_of = EventNotes(topology)
    notes: list[GroupNote] = [n for event in events for n in notes_of.notes(event)]
    notes.sort(key=lambda n: n.t)  # stable: each source's notes stay in their order
    batches: list[list[list[bytes]]] = [[] for _ in range(linkers)]
    current: list[list[bytes]] = [[] for _ in range(linkers)]
    promises = 0

    def promise(wm: int) -> None:
        nonlocal promises
        for source in range(correlators):
            value = linkwire.encode_promise(source, correlators, wm)
            for part in current:
                part.append(value)
                promises += 1
        for p in range(linkers):
            if current[p]:
                batches[p].append(current[p])
                current[p] = []

    last: int | None = None
    for note in notes:
        step = note.t - note.t % promise_step
        if last is None or step > last:
            promise(step)
            last = step
        source = _source_of(note.incident_id, correlators)
        partition = linker_partition_of(note.scope, linkers)
        current[partition].append(linkwire.encode_note(source, correlators, note))
    if last is not None:
        promise(last + 2 * promise_step)  # past the last note: everything is released
    return LinkerInput(batches, len(notes), promises, correlators, linkers)


# ---------------------------------------------------------------------------------- the linker


@dataclass(slots=True)
class LinkerRun:
    """One pass of a linker input through ``LinkerPartition`` (CPU seconds)."""

    cpu_s: float
    decide_s: float  # ``Linker.process`` alone, over the same notes in the same order
    restore_s: float
    notes: int
    decisions: int
    commands: int
    marks: int
    transactions: int
    state_records: int
    state_bytes: int
    final_state_records: int
    peak_state_records: int  # the most state records one partition held after a batch
    take_output_s: float  # of ``cpu_s``: the state records (those the batch touched, encoded and compared)
    decisions_by_kind: dict[str, int] = field(default_factory=dict)


def linker_run(config: TopologyConfig, feed: LinkerInput) -> LinkerRun:
    log = TopologyLog()
    parts = [LinkerPartition(config, p, feed.correlators, feed.linkers, log) for p in range(feed.linkers)]
    commands = marks = transactions = state_records = state_bytes = 0
    states: list[dict[str, bytes]] = [{} for _ in parts]
    released: list[list[GroupNote]] = [[] for _ in parts]
    peak = 0
    take_output_s = 0.0
    start = time.process_time()
    for part, batches, state in zip(parts, feed.batches, states, strict=True):
        offset = 0
        for batch in batches:
            for value in batch:
                part.process(value, offset)
                offset += 1
            part.release()
            before = time.process_time()
            out = part.take_output()
            take_output_s += time.process_time() - before
            transactions += 1
            commands += len(out.commands)
            marks += len(out.marks)
            for key, changed in out.state.items():
                state_records += 1
                if changed is None:
                    state.pop(key, None)
                else:
                    state_bytes += len(changed)
                    state[key] = changed
            peak = max(peak, len(state))
            if out.bad_records:
                raise AssertionError(f"bad linker input: {out.bad_records[0][1]}")
    cpu_s = time.process_time() - start
    # The same notes, in the order the partitions released them, through the pure core alone.
    for p, batches in enumerate(feed.batches):
        buffer = NoteBuffer([str(s) for s in range(feed.correlators)])
        for batch in batches:
            for value in batch:
                record = orjson.loads(value)
                if record["t"] == linkwire.NOTE:
                    buffer.add(str(record["src"]), linkwire.decode_note(record["note"]))
                else:
                    buffer.advance(str(record["src"]), int(record["wm"]))
            released[p].extend(n for n in buffer.release() if isinstance(n, GroupNote))
    topology = Topology(config)
    linkers = [Linker(topology) for _ in parts]
    start = time.process_time()
    pure = 0
    for linker, notes in zip(linkers, released, strict=True):
        for note in notes:
            pure += len(linker.process(note))
    decide_s = time.process_time() - start
    start = time.process_time()
    for p, state in enumerate(states):
        LinkerPartition(config, p, feed.correlators, feed.linkers, log).restore(dict(state))
    restore_s = time.process_time() - start
    stats: Counter[str] = Counter()
    for part in parts:
        for key, count in part.stats.items():
            stats[key] += count
    decisions = stats["decisions"]
    if pure != decisions:
        raise AssertionError(f"the pure core decided {pure} times, the partitions {decisions}")
    by_kind: Counter[str] = Counter()
    for key, count in stats.items():
        if key.startswith("decision:"):
            by_kind[key.split(":")[1]] += count
    return LinkerRun(
        cpu_s=cpu_s,
        decide_s=decide_s,
        restore_s=restore_s,
        notes=stats["notes"],
        decisions=decisions,
        commands=commands,
        marks=marks,
        transactions=transactions,
        state_records=state_records,
        state_bytes=state_bytes,
        final_state_records=sum(len(s) for s in states),
        peak_state_records=peak,
        take_output_s=take_output_s,
        decisions_by_kind=dict(sorted(by_kind.items())),
    )


# ---------------------------------------------------------------------------------- the correlator


@dataclass(slots=True)
class CorrelatorRun:
    """One replay of a storm through one engine partition (CPU seconds)."""

    engine_s: float
    linker_s: float
    alerts: int
    records: int
    events: Counter[str]
    notes: int
    late_commands: int
    promises: int
    marks: int
    event_time_s: float


class _Loop:
    """One correlator partition and, with a topology, its linker partitions, in one process: the
    engine's output goes to the linker at once, the linker's commands and marks come back."""

    def __init__(self, rules: RulesConfig, config: TopologyConfig | None, linkers: int) -> None:
        self.replay = Replay(rules)
        self.parts: list[LinkerPartition] = []
        self.offsets: list[int] = []
        if config is not None:
            setup = LinkSetup(Topology(config), 1, linkers)
            self.replay.engine = PartitionEngine(rules, 0, SOURCE, linking=setup)
            log = TopologyLog()
            self.parts = [LinkerPartition(config, p, 1, linkers, log) for p in range(linkers)]
            self.offsets = [0] * linkers
        self.engine_s = 0.0
        self.linker_s = 0.0
        self.events: Counter[str] = Counter()
        self.promises = 0  # records to linker partitions that are not notes
        self.marks = 0  # marks back from the linker partitions

    def feed(self, action: Callable[[], None]) -> None:
        start = time.process_time()
        action()
        self.engine_s += time.process_time() - start
        self._exchange()

    def _exchange(self) -> None:
        engine = self.replay.engine
        for _ in range(10_000):
            start = time.process_time()
            out = engine.take_output()
            self.engine_s += time.process_time() - start
            self.events.update(e.type.value for e in out.events)
            if not self.parts or not out.links:
                return
            start = time.process_time()
            touched: set[int] = set()
            back: list[bytes] = []
            for link in out.links:
                self.promises += link.key is None
                self.parts[link.partition].process(link.value, self.offsets[link.partition])
                self.offsets[link.partition] += 1
                touched.add(link.partition)
            for p in sorted(touched):
                self.parts[p].release()
                answer = self.parts[p].take_output()
                back.extend(value for _key, value in answer.commands)
                back.extend(value for _p, value in answer.marks)
                self.marks += len(answer.marks)
            self.linker_s += time.process_time() - start
            if not back:
                return
            start = time.process_time()
            for value in back:
                self.replay.write(value)
            self.engine_s += time.process_time() - start
        raise AssertionError("the correlator and the linker did not settle")


def correlator_run(
    records: Sequence[Record],
    rules: RulesConfig,
    config: TopologyConfig | None,
    linkers: int = 6,
    *,
    idle: bool = False,
) -> CorrelatorRun:
    """``records`` through the engine as ``replay_storm`` does (ticks every second, then hours of
    drain), with linking when ``config`` is given. ``idle``: the same clock ticks without the
    alerts, to measure what time passing costs by itself."""
    loop = _Loop(rules, config, linkers)
    replay = loop.replay
    now = records[0][0] if records else 0
    for at, value, headers in records:
        while now + TICK_MS < at:
            now += TICK_MS
            loop.feed(partial(replay.advance, now))
        if idle:
            loop.feed(partial(replay.advance, at))
        else:
            loop.feed(partial(replay.record, value, at, headers))
        now = max(now, at)
    end = now + DRAIN_MS
    while now < end:
        now += DRAIN_TICK_MS
        loop.feed(partial(replay.advance, now))
    stats = replay.engine.state.stats
    start = records[0][0] if records else 0
    return CorrelatorRun(
        engine_s=loop.engine_s,
        linker_s=loop.linker_s,
        alerts=_notifications(records),
        records=len(records),
        events=loop.events,
        notes=stats["link_notes"],
        late_commands=stats["link_late_commands"],
        promises=loop.promises,
        marks=loop.marks,
        event_time_s=(now - start) / 1000,
    )


def _notifications(records: Sequence[Record]) -> int:
    """Alert notifications in the records (Prometheus pushes: JSON arrays)."""
    total = 0
    for _at, value, _headers in records:
        doc = orjson.loads(value)
        total += len(doc) if isinstance(doc, list) else 1
    return total


# ---------------------------------------------------------------------------------- the report


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def _timed_runs(fn: Callable[[], Any], repeat: int) -> list[Any]:
    old = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        out = []
        for _ in range(repeat):
            gc.collect()
            out.append(fn())
        return out
    finally:
        gc.set_threshold(*old)


def linker_cost(
    storms: Sequence[Storm],
    rules: RulesConfig,
    config: TopologyConfig,
    *,
    correlators: int = 6,
    linkers: int = 6,
    repeat: int = 5,
    limit: int | None = None,
) -> dict[str, Any]:
    topology = Topology(config)
    feeds = []
    for storm in storms:
        if limit is None:
            events = replay_storm(storm, rules).events
        else:
            events = _events_of(storm_records(storm, limit=limit), rules)
        feeds.append(linker_input(events, topology, correlators, linkers))
    runs = _timed_runs(lambda: [linker_run(config, feed) for feed in feeds], repeat)
    cpu = [sum(r.cpu_s for r in rs) for rs in runs]
    decide = [sum(r.decide_s for r in rs) for rs in runs]
    restore = [sum(r.restore_s for r in rs) for rs in runs]
    take = [sum(r.take_output_s for r in rs) for rs in runs]
    first = runs[0]
    notes = sum(r.notes for r in first)
    decisions = sum(r.decisions for r in first)
    by_kind: Counter[str] = Counter()
    for r in first:
        by_kind.update(r.decisions_by_kind)
    cpu_s = _median(cpu)
    return {
        "correlator_partitions": correlators,
        "linker_partitions": linkers,
        "busy_linker_partitions": sum(
            1 for p in range(linkers) if any(len(f.batches[p]) and _has_note(f.batches[p]) for f in feeds)
        ),
        "notes": notes,
        "promises": sum(f.promises for f in feeds),
        "transactions": sum(r.transactions for r in first),
        "decisions": decisions,
        "decisions_by_kind": dict(sorted(by_kind.items())),
        "commands": sum(r.commands for r in first),
        "marks": sum(r.marks for r in first),
        "state_records_written": sum(r.state_records for r in first),
        "state_bytes_written": sum(r.state_bytes for r in first),
        "final_state_records": sum(r.final_state_records for r in first),
        "peak_state_records": max(r.peak_state_records for r in first),
        "state_us_per_transaction": _us(_median(take), sum(r.transactions for r in first)),
        "state_share": round(_median(take) / cpu_s, 3) if cpu_s else None,
        "cpu_s": [round(x, 4) for x in cpu],
        "us_per_note": _us(cpu_s, notes),
        "us_per_decision": _us(cpu_s, decisions),
        "us_per_record": _us(cpu_s, notes + sum(f.promises for f in feeds)),
        "decide_us_per_note": _us(_median(decide), notes),
        "restore_ms": round(_median(restore) * 1000, 2),
    }


def _has_note(batches: list[list[bytes]]) -> bool:
    return any(b'"t":"note"' in value for batch in batches for value in batch)


def _events_of(records: Sequence[Record], rules: RulesConfig) -> list[IncidentEvent]:
    """The incident events of ``records`` without linking (as ``replay_storm``, for a prefix)."""
    replay = Replay(rules)
    events: list[IncidentEvent] = []
    now = records[0][0] if records else 0
    for at, value, headers in records:
        while now + TICK_MS < at:
            now += TICK_MS
            replay.advance(now)
        replay.record(value, at, headers)
        now = max(now, at)
        events.extend(replay.take_events())
    replay.advance(now + DRAIN_MS)
    events.extend(replay.take_events())
    return events


def correlator_overhead(
    storms: Sequence[Storm],
    rules: RulesConfig,
    config: TopologyConfig,
    *,
    linkers: int = 6,
    repeat: int = 5,
    limit: int | None = None,
) -> dict[str, Any]:
    inputs = [storm_records(storm, limit=limit) for storm in storms]

    def runs_of() -> tuple[list[CorrelatorRun], ...]:
        plain = [correlator_run(records, rules, None, linkers) for records in inputs]
        linked = [correlator_run(records, rules, config, linkers) for records in inputs]
        idle_plain = [correlator_run(records, rules, None, linkers, idle=True) for records in inputs]
        idle_linked = [correlator_run(records, rules, config, linkers, idle=True) for records in inputs]
        return plain, linked, idle_plain, idle_linked

    runs = _timed_runs(runs_of, repeat)
    alerts = sum(r.alerts for r in runs[0][0])

    def total(which: int, what: str = "engine_s") -> list[float]:
        return [sum(getattr(r, what) for r in run[which]) for run in runs]

    plain_s, linked_s, linker_s = total(0), total(1), total(1, "linker_s")
    idle_plain_s, idle_linked_s = total(2), total(3)
    diff = [b - a for a, b in zip(plain_s, linked_s, strict=True)]
    idle_diff = [b - a for a, b in zip(idle_plain_s, idle_linked_s, strict=True)]
    busy_diff = [d - i for d, i in zip(diff, idle_diff, strict=True)]
    event_time_s = sum(r.event_time_s for r in runs[0][3])
    events_plain: Counter[str] = Counter()
    events_linked: Counter[str] = Counter()
    for r in runs[0][0]:
        events_plain.update(r.events)
    for r in runs[0][1]:
        events_linked.update(r.events)
    notes = sum(r.notes for r in runs[0][1])
    return {
        "alerts": alerts,
        "records": sum(r.records for r in runs[0][0]),
        "notes": notes,
        "late_commands": sum(r.late_commands for r in runs[0][1]),
        "events_without_linking": sum(events_plain.values()),
        "events_with_linking": sum(events_linked.values()),
        "link_events": {
            k: v
            for k, v in sorted(events_linked.items())
            if k in ("linked", "member_added", "root_cause_changed", "unlinked", "refused")
        },
        "engine_cpu_s_without": [round(x, 4) for x in plain_s],
        "engine_cpu_s_with": [round(x, 4) for x in linked_s],
        "us_per_alert_without": _us(_median(plain_s), alerts),
        "us_per_alert_with": _us(_median(linked_s), alerts),
        "overhead_us_per_alert": _us(_median(diff), alerts),
        "overhead_pct": round(100 * _median(diff) / _median(plain_s), 1) if _median(plain_s) else None,
        "promises": sum(r.promises for r in runs[0][1]),
        "marks": sum(r.marks for r in runs[0][1]),
        "event_time_s": round(event_time_s, 1),
        "idle_engine_cpu_s_without": [round(x, 4) for x in idle_plain_s],
        "idle_engine_cpu_s_with": [round(x, 4) for x in idle_linked_s],
        "idle_overhead_us_per_event_second": _us(_median(idle_diff), round(event_time_s)),
        "busy_overhead_us_per_alert": _us(_median(busy_diff), alerts),
        "busy_overhead_us_per_note": _us(_median(busy_diff), notes),
        "linker_in_loop_cpu_s": [round(x, 4) for x in linker_s],
    }


def _us(seconds: float, count: int) -> float | None:
    return round(seconds * 1e6 / count, 2) if count else None


def run_linking(
    rules: RulesConfig,
    config: TopologyConfig,
    *,
    seeds: Sequence[int] = (1, 2, 3),
    partitions: int = 6,
    repeat: int = 5,
    limit: int | None = None,
    topology_name: str = "",
) -> dict[str, Any]:
    """Both measurements, with the machine and its load."""
    load_before = loadavg()
    storms = [build_storm("storm-mix", seed=seed) for seed in seeds]
    wall = time.monotonic()
    linker = linker_cost(
        storms, rules, config, correlators=partitions, linkers=partitions, repeat=repeat, limit=limit
    )
    correlator = correlator_overhead(storms, rules, config, linkers=partitions, repeat=repeat, limit=limit)
    return {
        "workload": "linking",
        "storm": "storm-mix",
        "seeds": list(seeds),
        "topology": topology_name,
        "repeat": repeat,
        "limit_records": limit,
        "linker": linker,
        "correlator": correlator,
        "wall_s": round(time.monotonic() - wall, 1),
        "machine": machine(),
        "load": {"before": list(load_before), "after": list(loadavg())},
    }


def render(result: dict[str, Any]) -> str:
    lk, co = result["linker"], result["correlator"]
    seeds = ", ".join(map(str, result["seeds"]))
    lines = [
        f"linking: storm-mix seeds {seeds}, topology {result['topology'] or '-'}, "
        f"{lk['correlator_partitions']} correlator x {lk['linker_partitions']} linker partitions, "
        f"median of {result['repeat']} (CPU time)",
        "",
        "| linker | |",
        "|---|---|",
        f"| group notes / promises / batches | {lk['notes']:,} / {lk['promises']:,} / {lk['transactions']:,} |",
        f"| decisions ({', '.join(f'{k} {v}' for k, v in lk['decisions_by_kind'].items())}) "
        f"| {lk['decisions']:,} -> {lk['commands']:,} commands |",
        f"| CPU µs per group note (all records, state records included) | {lk['us_per_note']} |",
        f"| CPU µs per decision | {lk['us_per_decision']} |",
        f"| of which Linker.process, µs per note | {lk['decide_us_per_note']} |",
        f"| CPU µs per input record | {lk['us_per_record']} |",
        f"| state records written (bytes) | {lk['state_records_written']:,} ({lk['state_bytes_written']:,}) |",
        f"| of the CPU: state records (what the batch touched), µs per batch "
        f"| {lk['state_share']:.0%}, {lk['state_us_per_transaction']} (peak {lk['peak_state_records']} records) |",
        f"| restore of the final state | {lk['restore_ms']} ms |",
        "",
        "| correlator (engine) | |",
        "|---|---|",
        f"| alerts / group notes | {co['alerts']:,} / {co['notes']:,} |",
        f"| events without / with linking | {co['events_without_linking']:,} / {co['events_with_linking']:,} "
        f"({', '.join(f'{k} {v}' for k, v in co['link_events'].items())}) |",
        f"| CPU µs per alert without linking | {co['us_per_alert_without']} |",
        f"| CPU µs per alert with linking | {co['us_per_alert_with']} |",
        f"| overhead, µs per alert | {co['overhead_us_per_alert']} (+{co['overhead_pct']}%) |",
        f"| of which time passing alone (promises, marks), µs per second of event time "
        f"| {co['idle_overhead_us_per_event_second']} ({co['event_time_s']:,.0f} s) |",
        f"| the rest, µs per alert (per group note) | {co['busy_overhead_us_per_alert']} "
        f"({co['busy_overhead_us_per_note']}) |",
        f"| late link commands | {co['late_commands']} |",
        "",
        f"load average before {result['load']['before'][0]:.2f}, after {result['load']['after'][0]:.2f}; "
        f"{result['machine']['cores']} cores, {result['machine']['cpu']}",
    ]
    return "\n".join(lines)
