"""A degraded network (issue #17): a slow, lossy then flapping network, a minority leader, and a
leader isolated from everyone.

Three brokers run in hosts ``b1``, ``b2``, ``b3`` of deploy/faults/netswitch.py (local-kafka.sh
with STORMWATCH_KAFKA_NETNS_PREFIX, tests.kit.netfaults.kafka_in_hosts), one module-scoped cluster
shared by both tests; every run has its own topics (replication factor 3, min.insync.replicas 2,
acks=all and transactional producers). The faulted pipeline's ingest worker runs in host ``wi``,
its correlator in host ``wc``; the storm producer (``PacedProducer``) and the test run in the
root namespace. Needs root and network namespaces (skipped with the reason otherwise).

1. **Slow network during a storm.** While a storm is produced live, the links between the workers
   (``wi``, ``wc``) and every broker get 200 ms latency each way plus 5 % loss (a lost chunk is
   held for a TCP retransmission timeout, doubling on each repeat) for 25 s; then the link between
   the correlator and the brokers flaps (down with a RST / up, every 1 s for 15 s); then
   everything heals. An uninterrupted reference pipeline reads the same raw topic live, at the same
   time, with its workers in the root namespace (whose links stay clean), so the storm's duration
   with and without the faults is measured under the same load. Beyond the oracle below: both
   stages committed offsets while the network was slow (progress, not a rate).
2. **Minority leader.** The broker that leads the most partitions of the raw topic and the
   correlator input (among equals, one that leads a raw partition) is cut from the other two
   brokers only (``partition bN bX,bY``): the clients (the workers, the storm producer, this test)
   still reach it. It can no longer replicate, and it cannot shrink its ISR without the controller
   quorum, which the other two hold, so no acks=all write may succeed on it: a probe record sent
   to it right after the cut must time out, unacknowledged. The majority fences it after
   broker.session.timeout.ms (9 s) and elects new leaders (seen in the majority's metadata, and a
   probe to the new leader must be acknowledged; CI runs starved of CPU twice took about 60 s, with
   acks=all requests to the majority's own leaders timing out meanwhile: a slow controller. Then
   the test warns, with the nodes' election log lines, and checks everything else). The cut is
   held 60 s whatever the election does, past replica.lag.time.max.ms (Kafka's default 30 s:
   deploy/kafka/ leaves it unset), then healed; the old leader truncates what it appended alone
   and catches up. The raw topic must hold every storm record exactly once, and the pipeline must
   finish the storm. Seen: the clients stay on the cut-off leader until the heal (the storm
   producer's writes to its raw partition are held the whole cut: that partition grew by 1 record
   on the majority during a cut in which the two others grew by ~90), so these records land ~35 s
   late; the storm's timestamps lead by ``MINORITY_LEAD_S`` so that they are not late alerts
   (a late alert is applied at the current event time, which a replay would not do), and the test
   asserts that none was. A worker whose group coordinator was the cut-off broker committed
   nothing until the heal (its heartbeats still reach the old coordinator, its transactional
   offset commits the new one, which answers UNKNOWN_MEMBER_ID), then caught up.

3. **An isolated leader.** A broker that leads a partition of a plain topic (replication factor 3,
   min.insync.replicas 2) is cut from everyone: the two other brokers and the clients in the root
   namespace. The majority must fence it and take its partitions over, and idempotent acks=all
   writes go on through the two others with nothing lost or twice; after the heal every replica
   is back in sync and later writes land too. Kafka alone, no pipeline: the switch under Kafka.

The oracle of 1 and 2 is the crash suite's: the faulted run's audit log equals, incident by incident,
the one of an uninterrupted run over the same raw topic (``assert_same_audit``: nothing lost, nothing
twice, nothing decided differently), each passes ``check_audit_integrity``, no alert came late
(``stormwatch_alerts_late_total``, read in the correlator's host), and every worker is still alive
at the end and stops cleanly (exit status 0).
"""

from __future__ import annotations

import collections
import functools
import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic  # type: ignore[attr-defined]  # re-exported, not in __all__
from prometheus_client.parser import text_string_to_metric_families

from stormwatch.errors import UserError
from stormwatch.kafka.client import make_consumer
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.kafka import ScriptKafka, wait_for_brokers, wait_fully_replicated
from tests.kit.netfaults import NetSwitch, kafka_in_hosts, skip_reason
from tests.kit.paths import ROOT
from tests.kit.pipeline import PipelineRun, assert_same_audit
from tests.kit.ports import worker_dir, worker_port
from tests.kit.records import PacedProducer, leading_clock, storm_records
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.netns]

PORT = worker_port(25600)
"""Brokers on 25600-25602, their controllers on 25700-25702 (node N in host bN): below the
ephemeral range (32768-60999), where a client's source port once held 36700 when the switch
wanted to listen on it."""
METRICS_PORT = worker_port(25650)
"""The faulted correlator's /metrics (in its host); the reference correlator's is the next port."""
BROKER_HOSTS = ["b1", "b2", "b3"]
REPLICATED = {"replication_factor": 3, "min_insync_replicas": 2}
GROUPS = 6
LEAD_S = 15.0
"""Record timestamps run this far ahead of the wall clock while the storm is produced (see
tests/faults/test_network_partitions.py): more than the storm's gaps between rounds and than any
delay the faults add to a worker's view of the raw topic, so the incidents depend on the raw log
alone."""

SLOW_S = 25.0
LATENCY_MS = 200.0
LOSS_PCT = 5.0
FLAP_EVERY_MS = 1000.0
FLAP_S = 15.0
CUT_S = 60.0
"""The minority leader's cut: past replica.lag.time.max.ms (30 s, Kafka's default)."""
MINORITY_LEAD_S = 110.0
"""The minority test's lead: the cut-off leader holds the acks=all writes to its raw partition
until the heal (the storm producer's retries go back to it; seen: nothing reached the new leader
of that partition during a 35 s cut), and a pending request may wait out request.timeout.ms (30 s)
after the heal. Records landing later than the lead are late (the watermark of a caught-up
partition follows the wall clock), and late alerts are applied at the current event time, so a
replay would decide differently: with a 15 s lead, 4422 of them in one run. The lead covers
CUT_S plus that timeout plus 20 s for reads that overrun (the cut itself ends at CUT_S whatever the
election does), and the test asserts no alert came late, so the oracle compares like with like."""
RECORD_READS_S = 12.0
"""Time kept before the heal for the minority test's reads of committed and end offsets (for the
record: one may wait 10 s on a coordinator on the minority), so that the cut ends on time."""
PROBE_TIMEOUT_MS = 6000
"""The probe's message.timeout.ms: shorter than broker.session.timeout.ms (9 s), so no new leader
can exist before it gives up; only the cut-off leader could have acknowledged it."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[ScriptKafka, NetSwitch]]:
    """The switch (brokers' hosts b1-b3, workers' hosts wi, wc) and the 3-node cluster behind it."""
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    servers = {f"b{i}": [PORT + i - 1, PORT + 100 + i - 1] for i in (1, 2, 3)}
    kafka = ScriptKafka(3, PORT, worker_dir(ROOT / "var" / "kafka" / "netdegraded"))
    with pytest.MonkeyPatch.context() as env:
        # Three JVMs starting behind a userspace switch on a busy 2-core machine: more than 60 s.
        env.setenv("STORMWATCH_KAFKA_START_TIMEOUT", "240")
        with NetSwitch([*servers, "wi", "wc"], servers) as net, kafka_in_hosts(net, kafka, "b"):
            yield kafka, net


@pytest.fixture
def healed(cluster: tuple[ScriptKafka, NetSwitch]) -> Iterator[tuple[ScriptKafka, NetSwitch]]:
    """The cluster, healed and fully replicated again after the test, whatever it left."""
    kafka, net = cluster
    wait_fully_replicated(kafka.bootstrap, 120)
    yield cluster
    net.heal()
    wait_fully_replicated(kafka.bootstrap, 180)


# --- helpers ------------------------------------------------------------------------------------


def _replicated_run(
    bootstrap: str, workdir: Path, lead_s: float, raw_topic: str | None = None
) -> PipelineRun:
    """A pipeline on topics of replication factor 3 (min.insync.replicas 2) reading a storm whose
    records lead the wall clock by ``lead_s``."""
    return PipelineRun(
        bootstrap,
        workdir,
        raw_topic=raw_topic,
        topics_overrides=REPLICATED,
        config_overrides=leading_clock(lead_s),
    )


def _storm(seed: int, span_s: float, lead_s: float) -> list[tuple[int, bytes]]:
    """A storm of GROUPS incidents, re-sent every 5 s for ``span_s``, whose first record is
    produced ~4 s from now with timestamps ``lead_s`` ahead (PacedProducer)."""
    t0 = int(time.time() * 1000) + int(lead_s * 1000) + 4000
    rounds = int(span_s // 5)
    return storm_records(
        seed=seed, t0_ms=t0, groups=GROUPS, alerts_per_group=500, rounds=rounds, per_record=100, span_s=span_s
    )


def _start_workers(run: PipelineRun, net: NetSwitch | None, metrics_port: int) -> None:
    """Ingest in host wi and correlator in host wc (``net`` None: both in root), each once its
    consumer has its partitions; the correlator serves /metrics on ``metrics_port``."""
    for stage, instance, host in (("ingest", "i1", "wi"), ("correlate", "c1", "wc")):
        extra = ["--metrics-port", str(metrics_port)] if stage == "correlate" else []
        run.start(stage, instance, extra, prefix=[] if net is None else net.prefix(host))
        name = f"{stage}:{instance}"
        wait_for(
            f"{name} to own partitions",
            functools.partial(run.workers.assigned, name),
            90,
            alive=run.assert_alive,
        )


def _late_alerts(net: NetSwitch, host: str, port: int) -> float:
    """The correlator's stormwatch_alerts_late_total, read in its own host (-1: no answer): alerts
    that came behind the event time it had already released, so a replay would treat differently."""
    try:
        with net.socket(host) as sock:
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            data = b""
            while more := sock.recv(65536):
                data += more
    except OSError:
        return -1.0
    body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "stormwatch_alerts_late_total"
    )


def _events(run: PipelineRun) -> list[IncidentEvent] | None:
    """The audit log so far, or None while a leader moves or Kafka is slow to answer."""
    try:
        return run.events()
    except UserError:
        return None


def _closed(events: list[IncidentEvent] | None) -> bool:
    return events is not None and sum(1 for e in events if e.type.value == "closed") >= GROUPS


class Offsets:
    """Committed offsets of a run's two consumer groups, read from the root namespace through
    one long-lived client per group (it never subscribes): progress without a /metrics port."""

    def __init__(self, run: PipelineRun) -> None:
        topics = run.settings.topics
        self.inputs = {"ingest": topics.raw, "correlator": topics.correlator_input}
        self.partitions = run.partitions
        self.consumers = {
            stage: make_consumer(run.settings, f"stormwatch-{stage}-{topics.correlator_input}")
            for stage in self.inputs
        }

    def by_partition(self, stage: str) -> dict[int, int] | None:
        """``stage``'s committed offset of each partition of its input (-1: none yet)."""
        topic = self.inputs[stage]
        try:
            found = self.consumers[stage].committed(
                [TopicPartition(topic, p) for p in range(self.partitions)], timeout=10
            )
        except KafkaException:
            return None
        return {tp.partition: tp.offset if tp.error is None else -1 for tp in found}

    def committed(self, stage: str) -> int | None:
        """Sum of ``stage``'s committed offsets over its input's partitions; None while Kafka
        cannot say (a coordinator moving, an open transaction's offsets)."""
        found = self.by_partition(stage)
        return None if found is None else sum(max(offset, 0) for offset in found.values())

    def both(self) -> dict[str, int] | None:
        out = {stage: self.committed(stage) for stage in self.inputs}
        return (
            None if any(v is None for v in out.values()) else {k: v for k, v in out.items() if v is not None}
        )

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()


def _both_committed(offsets: Offsets) -> dict[str, int] | None:
    """Both stages' committed offsets once each has committed something: the pipeline is busy."""
    found = offsets.both()
    return found if found is not None and all(found.values()) else None


def _hold(seconds: float, runs: Sequence[PipelineRun], each: Callable[[], None] | None = None) -> None:
    """Wait ``seconds`` while every worker of ``runs`` stays alive (fail at once otherwise)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        for run in runs:
            run.assert_alive()
        if each is not None:
            each()
        time.sleep(min(1.0, max(left, 0.0)))


def _stop(run: PipelineRun) -> dict[str, int | None]:
    """Stop the run's workers (SIGTERM); their exit statuses by name."""
    procs = dict(run.procs)
    run.stop_all()
    return {name: proc.returncode for name, proc in procs.items()}


def _warnings(log: Path) -> collections.Counter[str]:
    """A worker's WARNING/ERROR messages (JSON log lines) and how often each came: what it noticed."""
    found: collections.Counter[str] = collections.Counter()
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and str(entry.get("level", "")).upper() in (
            "WARNING",
            "ERROR",
            "CRITICAL",
        ):
            found[f"{entry.get('level')} {str(entry.get('msg'))[:140]}"] += 1
    return found


def _print_warnings(run: PipelineRun, label: str) -> None:
    for name, log in run.workers.logs.items():
        counted = _warnings(log)
        shown = "; ".join(f"{n}x {msg}" for msg, n in counted.most_common(6)) or "none"
        print(f"  {label} {name} warnings: {shown}")


def _link_faults(net: NetSwitch, a: str, hosts: Sequence[str]) -> dict[str, int]:
    """What the switch did on the links between ``a`` and ``hosts`` (summed counters)."""
    keys = ("connections_reset", "connections_refused", "chunks_retransmitted", "connections_total")
    rows = [net.link(a, h) for h in hosts]
    return {k: sum(int(r.get(k, 0)) for r in rows) for k in keys}


# --- 1. slow, lossy, flapping -------------------------------------------------------------------


@dataclass
class Finish:
    """When a run had finished the storm: all incidents closed, and ingest at the raw topic's end."""

    events: list[IncidentEvent]
    closed_s: float
    drained_s: float


def _wait_finished(
    runs: dict[str, tuple[PipelineRun, Offsets]], raw_records: int, since: float, timeout_s: float
) -> dict[str, Finish]:
    """Poll every run until its incidents closed; the seconds after ``since`` at which each closed
    and its ingest group had committed the whole raw topic."""
    closed: dict[str, tuple[list[IncidentEvent], float]] = {}
    drained: dict[str, float] = {}

    def done() -> bool:
        for name, (run, offsets) in runs.items():
            run.assert_alive()
            if name not in drained and offsets.committed("ingest") == raw_records:
                drained[name] = time.monotonic() - since
            if name not in closed and _closed(events := _events(run)) and events is not None:
                closed[name] = (events, time.monotonic() - since)
        return len(closed) == len(runs) and len(drained) == len(runs)

    wait_for("every run to close its incidents", done, timeout_s, interval_s=1.0)
    return {name: Finish(closed[name][0], closed[name][1], drained[name]) for name in runs}


def test_a_slow_lossy_then_flapping_network_mid_storm_changes_nothing(
    healed: tuple[ScriptKafka, NetSwitch], runs_to_stop: list[PipelineRun], tmp_path: Path
) -> None:
    kafka, net = healed
    bootstrap = kafka.bootstrap
    run = _replicated_run(bootstrap, tmp_path / "faulted", LEAD_S)
    raw = run.settings.topics.raw
    reference = _replicated_run(bootstrap, tmp_path / "reference", LEAD_S, raw_topic=raw)
    runs_to_stop += [run, reference]
    _start_workers(run, net, METRICS_PORT)
    _start_workers(reference, None, METRICS_PORT + 1)
    # Its timestamps count from now: after the workers started.
    records = _storm(seed=23, span_s=60, lead_s=LEAD_S)
    producer = PacedProducer(bootstrap, raw, records, LEAD_S)
    offsets, ref_offsets = Offsets(run), Offsets(reference)
    both = [run, reference]
    behind: list[int] = []  # raw records the faulted ingest had committed fewer than the reference

    def sample_lag() -> None:
        mine, theirs = offsets.committed("ingest"), ref_offsets.committed("ingest")
        if mine is not None and theirs is not None:
            behind.append(theirs - mine)

    try:
        producer.start()
        started = time.monotonic()
        at_slow = wait_for(
            "both stages to commit", lambda: _both_committed(offsets), 60, alive=run.assert_alive
        )
        events_at_slow = len(_events(run) or [])

        net.latency(LATENCY_MS, "wi,wc", BROKER_HOSTS)
        net.loss(LOSS_PCT, "wi,wc", BROKER_HOSTS)
        slow_at = time.monotonic()
        _hold(SLOW_S, both, sample_lag)
        at_fast = wait_for("committed offsets at the end of the slow phase", offsets.both, 30)
        events_at_fast = len(_events(run) or [])
        slow = {h: _link_faults(net, h, BROKER_HOSTS) for h in ("wi", "wc")}
        net.heal("wi,wc", BROKER_HOSTS)
        slow_s = time.monotonic() - slow_at
        assert producer.is_alive(), "the storm ended before the flapping phase"

        net.flap(FLAP_EVERY_MS, FLAP_S, "wc", BROKER_HOSTS, mode="reset")
        _hold(FLAP_S + 1, both, sample_lag)
        flapped = _link_faults(net, "wc", BROKER_HOSTS)
        net.heal("wc", BROKER_HOSTS)
        healed_at = time.monotonic()
        at_heal = wait_for("committed offsets after the heal", offsets.both, 30)

        producer.join(LEAD_S + 90)
        assert not producer.is_alive(), "the storm producer did not finish"
        produced_s = time.monotonic() - started
        finished = _wait_finished(
            {"faulted": (run, offsets), "reference": (reference, ref_offsets)}, len(records), started, 150
        )
        time.sleep(2.0)  # a late or repeated write would land now
        events, ref_events = run.events(), reference.events()
        late = (_late_alerts(net, "wc", METRICS_PORT), _late_alerts(net, "root", METRICS_PORT + 1))
        for r in both:
            r.assert_alive()
    finally:
        offsets.close()
        ref_offsets.close()
    statuses = {**_stop(run), **{f"reference {k}": v for k, v in _stop(reference).items()}}

    fin, ref = finished["faulted"], finished["reference"]
    print(
        f"\nslow network: storm of {len(records)} raw records produced in {produced_s:.1f}s; "
        f"{LATENCY_MS:g} ms + {LOSS_PCT:g}% loss for {slow_s:.1f}s, then flap every {FLAP_EVERY_MS:g} ms "
        f"for {FLAP_S:g}s, healed {healed_at - started:.1f}s into the storm.\n"
        f"  storm finished (all {GROUPS} incidents closed) {fin.closed_s:.1f}s after its start with the faults, "
        f"{ref.closed_s:.1f}s without; ingest at the raw topic's end after {fin.drained_s:.1f}s with, "
        f"{ref.drained_s:.1f}s without; faulted ingest behind the reference by at most "
        f"{max(behind, default=0)} raw records.\n"
        f"  committed (ingest raw / correlator input): {at_slow} at the slow phase's start, {at_fast} at "
        f"its end, {at_heal} at the heal; audit events {events_at_slow} -> {events_at_fast} during the "
        f"slow phase, {len(events)} at the end.\n"
        f"  switch: slow phase {slow}; flap {flapped}; late alerts (faulted, reference) {late}; "
        f"worker exit statuses {statuses}"
    )
    _print_warnings(run, "faulted")
    assert producer.errors == [] and producer.delivered == len(records)
    # The pipeline kept going on the slow network: both stages committed while it was slow.
    assert at_fast["ingest"] > at_slow["ingest"], (
        f"ingest committed nothing in the slow phase: {at_slow} {at_fast}"
    )
    assert at_fast["correlator"] > at_slow["correlator"], (
        f"the correlator committed nothing in the slow phase: {at_slow} {at_fast}"
    )
    assert slow["wi"]["chunks_retransmitted"] > 0 and flapped["connections_reset"] > 0, (slow, flapped)
    assert late == (0.0, 0.0), f"late alerts (faulted, reference): {late}"
    assert_same_audit(events, ref_events, incidents=GROUPS)
    assert set(statuses.values()) == {0}, statuses


# --- 2. a minority leader -----------------------------------------------------------------------


def _metadata(bootstrap: str, not_from: int | None = None) -> ClusterMetadata | None:
    """The cluster's metadata, unless unanswered or answered by broker ``not_from``: a client
    bootstrapped with the majority learns the cut-off broker's address too and may ask it, and
    that broker still believes it leads."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        metadata = admin.list_topics(timeout=10)
    except KafkaException:
        return None
    return None if metadata.orig_broker_id == not_from else metadata


def _leaders(
    bootstrap: str, topics: Sequence[str], not_from: int | None = None
) -> dict[tuple[str, int], int]:
    """``(topic, partition) -> leader`` as the brokers of ``bootstrap`` see it ({} if unanswered)."""
    if (metadata := _metadata(bootstrap, not_from)) is None:
        return {}
    return {
        (topic, p): int(part.leader)
        for topic in topics
        if topic in metadata.topics
        for p, part in metadata.topics[topic].partitions.items()
    }


def _active_controller(kafka: ScriptKafka) -> int | None:
    """The node that last became the active controller, from the nodes' logs (a client cannot ask:
    in KRaft the metadata's "controller" is a random broker)."""
    latest: tuple[str, int] | None = None
    for node in (1, 2, 3):
        for line in _server_log_lines(kafka, node, ["Becoming the active controller"], 0)[-1:]:
            latest = max(latest or (line[:25], node), (line[:25], node))  # "[yyyy-mm-dd hh:mm:ss,ms]"
    return None if latest is None else latest[1]


def _kafka_partition(key: str, partitions: int) -> int:
    """The partition of an internal topic that holds ``key``'s coordinator state, as Kafka
    computes it: abs(Java String.hashCode) % partitions."""
    h = 0
    for unit in key.encode("utf-16-be").hex(" ", 2).split():
        h = (31 * h + int(unit, 16)) & 0xFFFFFFFF
    signed = h - (1 << 32) if h >= 1 << 31 else h
    return (0 if signed == -(1 << 31) else abs(signed)) % partitions


def _coordinators(bootstrap: str, run: PipelineRun) -> dict[str, int]:
    """The brokers coordinating the workers' transactions and groups (the leaders of their
    __transaction_state and __consumer_offsets partitions; 10 of each: deploy/kafka/)."""
    corr_in = run.settings.topics.correlator_input
    keys = {
        "ingest txn": ("__transaction_state", f"stormwatch-ingest-{corr_in}-i1"),
        "correlator txn": ("__transaction_state", f"stormwatch-correlator-{corr_in}-c1"),
        "ingest group": ("__consumer_offsets", f"stormwatch-ingest-{corr_in}"),
        "correlator group": ("__consumer_offsets", f"stormwatch-correlator-{corr_in}"),
    }
    leaders = _leaders(bootstrap, ["__transaction_state", "__consumer_offsets"])
    return {what: leaders.get((topic, _kafka_partition(key, 10)), -1) for what, (topic, key) in keys.items()}


def _probe_topic(bootstrap: str, name: str) -> None:
    """A topic like the pipeline's (rf 3, min.insync.replicas 2) for the probe record."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topic = NewTopic(name, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"})
    admin.create_topics([topic])[name].result(timeout=30)


def _probe(bootstrap: str, topic: str, partition: int) -> tuple[KafkaError | None, float]:
    """Send one acks=all record to ``partition``; its delivery error (None: acknowledged) and
    how long the answer took."""
    outcome: list[KafkaError | None] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        outcome.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "message.timeout.ms": PROBE_TIMEOUT_MS,
            "request.timeout.ms": PROBE_TIMEOUT_MS - 1000,
            "log_level": 0,
        }
    )
    sent = time.monotonic()
    producer.produce(topic, b"probe", partition=partition, on_delivery=delivered)
    producer.flush(PROBE_TIMEOUT_MS / 1000 + 10)
    return (outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT)), time.monotonic() - sent


def _topic_values(bootstrap: str, topic: str) -> list[bytes]:
    """Every committed record of ``topic`` (read_committed, from the beginning)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "netdegraded-reader",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    values: list[bytes] = []
    at_end: set[int] = set()
    deadline = time.monotonic() + 60
    try:
        while len(at_end) < len(partitions) and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_end.add(int(msg.partition() or 0))
                continue
            values.append(bytes(msg.value() or b""))
    finally:
        consumer.close()
    return values


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Each partition's high watermark, asked of the leaders that ``bootstrap``'s brokers name."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "netdegraded-reader", "log_level": 0})
    try:
        ends = {}
        for p in range(partitions):
            try:
                ends[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            except KafkaException:
                ends[p] = -1
        return ends
    finally:
        consumer.close()


def _server_log_lines(kafka: ScriptKafka, node: int, needles: Sequence[str], since: int) -> list[str]:
    """Lines of node ``node``'s server.log written after byte ``since`` that mention a needle."""
    log = kafka.data_dir / f"node-{node}" / "logs" / "server.log"
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if any(n in line for n in needles)]


ELECTION_NEEDLES = ("fenc", "Fenc", "QuorumController", "RaftClient", "Elect", "session", "ISR", "quorum")
ELECTION_NOISE = ("ReplicaFetcher", "NetworkClient")
"""Lines that flood the log of a cut (one per failed fetch) and hide the election's own lines."""


def _election_report(
    kafka: ScriptKafka,
    majority: str,
    victim: int,
    partitions: set[tuple[str, int]],
    controller: int | None,
    log_sizes: dict[int, int],
) -> str:
    """Why no new leader: what the majority reports now, and what each node logged since the cut."""
    metadata = _metadata(majority)
    told = "no answer" if metadata is None else f"answered by broker {metadata.orig_broker_id}"
    lines = [
        f"victim b{victim}; active controller before the cut {controller}, now {_active_controller(kafka)}; "
        f"the majority's metadata ({told}):"
    ]
    for topic, p in sorted(partitions):
        part = metadata.topics[topic].partitions[p] if metadata and topic in metadata.topics else None
        lines.append(
            f"  {topic}[{p}]: " + ("?" if part is None else f"leader {part.leader}, ISR {part.isrs}")
        )
    for node in (1, 2, 3):
        found = [
            line
            for line in _server_log_lines(kafka, node, ELECTION_NEEDLES, log_sizes[node])
            if not any(noise in line for noise in ELECTION_NOISE)
        ][-25:]
        lines.append(f"node {node} server.log since the cut (last {len(found)} of the matching lines):")
        lines.extend("  " + line[:300] for line in found)
    return "\n".join(lines)


def test_a_leader_cut_from_the_other_brokers_loses_no_acknowledged_write(
    healed: tuple[ScriptKafka, NetSwitch], runs_to_stop: list[PipelineRun], tmp_path: Path
) -> None:
    kafka, net = healed
    bootstrap = kafka.bootstrap
    run = _replicated_run(bootstrap, tmp_path / "faulted", MINORITY_LEAD_S)
    runs_to_stop.append(run)
    topics = run.settings.topics
    raw, inputs = topics.raw, [topics.raw, topics.correlator_input]
    probe_topic = f"t.probe.{run.suffix}"
    _probe_topic(bootstrap, probe_topic)
    _start_workers(run, net, METRICS_PORT)
    offsets = Offsets(run)
    wait_fully_replicated(bootstrap, 60)

    leaders = _leaders(bootstrap, [*inputs, probe_topic])
    led = collections.Counter(leader for (topic, _), leader in leaders.items() if topic in inputs)
    coordinators = _coordinators(bootstrap, run)
    leads_raw = {leader for (topic, _), leader in leaders.items() if topic == raw}
    # Among the brokers that lead the most (usually all three lead two), one that leads a raw
    # partition: then the storm producer meets the cut-off leader too.
    victim = min(led, key=lambda node: (-led[node], node not in leads_raw, node))
    victim_host = f"b{victim}"
    others = [h for h in BROKER_HOSTS if h != victim_host]
    majority = ",".join(f"127.0.0.1:{kafka.node_port(int(h[1:]))}" for h in others)
    victim_partitions = {tp for tp, leader in leaders.items() if leader == victim and tp[0] in inputs}
    probe_partition = next(p for (t, p), leader in leaders.items() if t == probe_topic and leader == victim)
    controller = _active_controller(kafka)
    log_sizes = {n: (kafka.data_dir / f"node-{n}" / "logs" / "server.log").stat().st_size for n in (1, 2, 3)}
    log_since = log_sizes[victim]
    records = _storm(seed=29, span_s=45, lead_s=MINORITY_LEAD_S)  # stamped from now (PacedProducer)
    producer = PacedProducer(bootstrap, raw, records, MINORITY_LEAD_S)

    try:
        producer.start()
        started = time.monotonic()
        at_cut = wait_for(
            "both stages to commit", lambda: _both_committed(offsets), 60, alive=run.assert_alive
        )
        raw_ends_at_cut = _end_offsets(majority, raw, run.partitions)
        assert producer.is_alive(), "the storm ended before the cut"

        net.partition(victim_host, others)
        cut_at = time.monotonic()
        # Right away, before the majority can have fenced it (9 s): only the victim leads the
        # probe's partition, it cannot replicate, and it must not acknowledge an acks=all write.
        probe_error, probe_s = _probe(bootstrap, probe_topic, probe_partition)

        def moved() -> dict[tuple[str, int], int] | None:
            now = _leaders(majority, inputs, not_from=victim)
            ok = now and all(now.get(tp, victim) != victim for tp in victim_partitions)
            return now if ok else None

        # The cut ends on time whatever the election does: a longer one would make the held
        # records land later than the storm's lead, as late alerts (a CI run starved of CPU once took
        # 61 s to elect, and the cut then lasted 83 s).
        heal_at = cut_at + CUT_S
        new_leaders: dict[tuple[str, int], int] | None = None
        not_elected = ""
        try:
            new_leaders = wait_for(
                "the majority to elect new leaders for the victim's partitions",
                moved,
                max(1.0, heal_at - RECORD_READS_S - PROBE_TIMEOUT_MS / 1000 - time.monotonic()),
                interval_s=1.0,
                alive=run.assert_alive,
            )
        except AssertionError as exc:  # what the cluster did instead: its logs go with the test
            not_elected = f"{exc}\n{_election_report(kafka, majority, victim, victim_partitions, controller, log_sizes)}"
        elected_s = time.monotonic() - cut_at if new_leaders is not None else None
        # A client that asks the cut-off leader for metadata is told it still leads (seen: a probe
        # bootstrapped with all three brokers timed out on it after the election), so this one
        # asks the majority.
        after_probe_error = _probe(majority, probe_topic, probe_partition)[0] if new_leaders else None
        samples: list[str] = []  # committed offsets through the cut, every few seconds

        def sample() -> None:  # a read may wait 10 s on a coordinator on the minority: not near the end
            since = time.monotonic() - cut_at
            if (not samples or since >= 4 * len(samples)) and since < CUT_S - RECORD_READS_S - 10:
                found = offsets.both()
                shown = "?" if found is None else f"{found['ingest']}/{found['correlator']}"
                samples.append(f"+{time.monotonic() - cut_at:.0f}s {shown}")

        _hold(heal_at - RECORD_READS_S - time.monotonic(), [run], sample)
        # For the record only, one try each, just before the heal: a coordinator on the minority
        # may not answer (None).
        at_heal = offsets.both()
        ingest_at_heal = offsets.by_partition("ingest")
        raw_ends_at_heal = _end_offsets(majority, raw, run.partitions)
        _hold(heal_at - time.monotonic(), [run])
        link = _link_faults(net, victim_host, others)
        net.heal()
        cut_s = time.monotonic() - cut_at
        wait_for_brokers(bootstrap, 3, 60)
        wait_fully_replicated(bootstrap, 120)
        caught_up_s = time.monotonic() - cut_at - cut_s

        producer.join(90)
        assert not producer.is_alive(), "the storm producer did not finish"
        reference = _replicated_run(bootstrap, tmp_path / "reference", MINORITY_LEAD_S, raw_topic=raw)
        runs_to_stop.append(reference)
        _start_workers(reference, None, METRICS_PORT + 1)
        events = wait_for(
            "the faulted run's incidents to close",
            lambda: e if _closed(e := _events(run)) else None,
            MINORITY_LEAD_S + 120,
            interval_s=1.0,
            alive=run.assert_alive,
        )
        finished_s = time.monotonic() - started
        time.sleep(2.0)  # a late or repeated write would land now
        events = run.events()
        run.assert_alive()
        late = _late_alerts(net, "wc", METRICS_PORT)
        ref_events = wait_for(
            "the reference run's incidents to close",
            lambda: e if _closed(e := _events(reference)) else None,
            120,
            interval_s=1.0,
            alive=reference.assert_alive,
        )
        ref_late = _late_alerts(net, "root", METRICS_PORT + 1)
    finally:
        offsets.close()
    statuses = _stop(run)
    _stop(reference)
    raw_values = _topic_values(bootstrap, raw)
    probes = _topic_values(bootstrap, probe_topic)
    truncated = [
        line
        for line in _server_log_lines(
            kafka, victim, [f"partition={raw}-", f"partition={probe_topic}-"], log_since
        )
        if "Truncating to offset" in line
    ]
    moved_to = sorted({new_leaders[tp] for tp in victim_partitions}) if new_leaders else []

    print(
        f"\nminority leader: broker {victim} led {led[victim]} of {sum(led.values())} input partitions "
        f"({sorted(victim_partitions)}), leaders before {dict(led)}, active controller {controller}, "
        f"coordinators {coordinators}; "
        f"cut from {others} for {cut_s:.1f}s.\n"
        f"  acks=all probe to it right after the cut: {probe_error} after {probe_s:.1f}s; after the election: "
        f"{after_probe_error} (bootstrapped with the majority); the majority led its partitions (now on {moved_to}) "
        f"{'?' if elected_s is None else f'{elected_s:.1f}'}s after the cut; every replica in sync {caught_up_s:.1f}s after the heal.\n"
        f"  committed (ingest raw / correlator input): {at_cut} at the cut, then {samples}, {at_heal} at the heal; "
        f"raw end offsets on the majority {raw_ends_at_cut} at the cut, {raw_ends_at_heal} at the heal "
        f"(ingest had committed {ingest_at_heal}); late alerts (faulted, reference) {(late, ref_late)}; storm "
        f"finished {finished_s:.1f}s after its start; {len(events)} audit events; worker exit statuses "
        f"{statuses}; switch b{victim}-{others}: {link}.\n"
        f"  victim's log truncations of the raw and probe topics after the heal: "
        f"{[line[line.find('partition=') :][:90] for line in truncated]}; probe records kept: {len(probes)} "
        f"of {2 if new_leaders else 1} sent (the first was refused)"
    )
    _print_warnings(run, "faulted")
    if not_elected:  # Kafka's doing, not the pipeline's: every guarantee below is still checked
        warnings.warn(
            f"no new leader within the {CUT_S:.0f}s cut (a starved machine?): {not_elected}", stacklevel=1
        )
    # Only the cut-off leader could have taken the probe, and it acknowledged nothing.
    assert probe_error is not None, "the cut-off leader acknowledged an acks=all write"
    assert after_probe_error is None, f"the new leader refused the probe: {after_probe_error}"
    # Every storm record was acknowledged, and the raw topic holds each exactly once.
    assert producer.errors == [] and producer.delivered == len(records), producer.errors[:5]
    assert sorted(raw_values) == sorted(value for _, value in records), (
        f"the raw topic holds {len(raw_values)} records ({len(set(raw_values))} distinct), "
        f"the storm had {len(records)}"
    )
    if new_leaders:  # else no second probe was sent
        assert b"probe" in probes, "the probe the new leader acknowledged is gone"
    assert set(statuses.values()) == {0}, statuses
    assert (late, ref_late) == (0.0, 0.0), f"late alerts (faulted, reference): {(late, ref_late)}"
    assert_same_audit(events, ref_events, incidents=GROUPS)


# --- 3. an isolated leader ---------------------------------------------------------------------

ISOLATED_TOPIC = "netns-isolated"
PER_PHASE = 300


def _produce_acked(bootstrap: str, keys: list[str]) -> None:
    """Idempotent acks=all writes of ``keys`` (value = key) to ISOLATED_TOPIC; fails the test
    unless every one is acknowledged."""
    failures: list[KafkaError] = []

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "delivery.timeout.ms": 120000,
        }
    )
    for key in keys:
        producer.produce(ISOLATED_TOPIC, key.encode(), key=key.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(150) == 0, "records still undelivered after 150 s"
    assert not failures, f"{len(failures)} records failed: {failures[:3]}"


def test_an_isolated_leader_is_fenced_and_the_majority_keeps_serving(
    healed: tuple[ScriptKafka, NetSwitch],
) -> None:
    kafka, net = healed
    bootstrap = kafka.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    topic = NewTopic(
        ISOLATED_TOPIC, num_partitions=3, replication_factor=3, config={"min.insync.replicas": "2"}
    )
    admin.create_topics([topic])[ISOLATED_TOPIC].result(timeout=30)
    wait_fully_replicated(bootstrap)

    before = [f"before-{i}" for i in range(PER_PHASE)]
    _produce_acked(bootstrap, before)
    leader = _leaders(bootstrap, [ISOLATED_TOPIC])[(ISOLATED_TOPIC, 0)]
    victim = f"b{leader}"

    net.isolate(victim)
    assert all(row["state"] == "down" for row in net.status()["links"] if victim in (row["a"], row["b"]))
    during = [f"during-{i}" for i in range(PER_PHASE)]
    _produce_acked(bootstrap, during)  # the two others fence the victim and take over its partitions
    moved = wait_for(
        f"partition 0 led by a broker other than {leader}",
        lambda: (
            (lead := _leaders(bootstrap, [ISOLATED_TOPIC]).get((ISOLATED_TOPIC, 0), leader)) != leader
            and lead
        ),
        60,
        interval_s=1.0,
    )
    values = _topic_values(bootstrap, ISOLATED_TOPIC)
    assert sorted(values) == sorted(k.encode() for k in before + during), (
        "lost or duplicated records while a leader was isolated"
    )
    cut = net.link(victim, "root")
    assert cut["connections_refused"] + cut["connections_reset"] > 0

    net.heal()
    wait_for_brokers(bootstrap, 3, 120)
    wait_fully_replicated(bootstrap, 180)  # the victim caught up: every replica back in sync
    after = [f"after-{i}" for i in range(PER_PHASE)]
    _produce_acked(bootstrap, after)
    values = _topic_values(bootstrap, ISOLATED_TOPIC)
    assert sorted(values) == sorted(k.encode() for k in before + during + after)
    assert moved != leader
