"""Network partitions (issue #17): a zombie correlator, and the gateway cut off from Kafka.

Every process binds 127.0.0.1 in its own network namespace ("host") of deploy/faults/netswitch.py
and reaches the others only through the switch, which can cut a host pair while both sides keep
running (tests.kit.netfaults). Needs root and network namespaces (skipped with the reason
otherwise).

1. **Zombie correlator.** A storm is produced live (``PacedProducer``) through one ingest worker
   and two correlators of one group; correlator ``c1`` runs in host ``z``, the module's broker in
   the root namespace. ``z`` is cut from ``root`` in blackhole mode (nothing is reset: ``c1``
   keeps running, believes it still owns its partitions, and its requests hang) for longer than
   the workers' consumer session timeout and transaction timeout (both 10 s:
   ``session.timeout.ms`` and ``transaction.timeout.ms`` in stormwatch/kafka/txloop.py;
   heartbeats every 2 s; nothing in stormwatch/config.py overrides them; ``max.poll.interval.ms``
   is ``kafka.max_poll_interval_ms``, 60 s). The group coordinator expels ``c1`` after the session timeout and ``c2`` takes
   its partitions over, restoring their state from the changelog; then the link heals and
   ``c1``'s held requests reach the broker late. The oracle is the crash suite's: the run's audit
   log equals, incident by incident, the one of an uninterrupted single-correlator run over the
   same raw topic (nothing the zombie wrote landed, nothing lost, nothing twice), and the zombie
   either exits with a clear log line or rejoins the group (asserted from its exit status and log).
   Seen so far: the zombie's open transaction is aborted by the broker at its timeout, which bumps
   the producer epoch. Its held send-offsets (or the abort after its records timed out) then come
   back ``_FENCED`` after the heal and it replaces its producer, or its abort goes through on the
   aborted transaction; either way it rewinds, finds its partitions lost, rejoins and gets some
   back. A transaction it began during the cut (unknown to the broker) would be refused by the
   group generation check of its offsets (KIP-447) and aborted. All end in the same audit log.
2. **Gateway partitioned from Kafka.** The switch's faults are per host pair, not per port, so
   cutting the gateway's host from ``root`` would cut the test's HTTP client as well. So this test
   has a broker of its own in host ``k1`` (local-kafka.sh with STORMWATCH_KAFKA_NETNS_PREFIX), the
   gateway in host ``gw`` (its port declared as a server of ``gw``), and the client in ``root``:
   cutting ``gw``-``k1`` leaves client-gateway and client-broker up. Senders POST one alert per
   request (a unique ``seq`` label) before, during (blackhole) and after the cut. The oracle:
   every request sent after the cut and answered before the heal got 503 with Retry-After (no
   2xx for an alert Kafka had not acknowledged), every 2xx alert is in the raw topic exactly once,
   nothing there twice or unsent, and 200s again soon after the heal without a restart.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml
from confluent_kafka import KafkaException, TopicPartition

from stormwatch.config import load_settings
from stormwatch.kafka.client import make_consumer, read_topic
from stormwatch.kafka.topics import create_topics
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.gateway import Answer, probe_sender
from tests.kit.kafka import ScriptKafka
from tests.kit.netfaults import NetSwitch, assignment_log, kafka_in_hosts, owned_partitions, skip_reason
from tests.kit.paths import ROOT
from tests.kit.pipeline import PipelineRun, assert_same_audit
from tests.kit.ports import worker_dir, worker_port
from tests.kit.records import PacedProducer, leading_clock, reparse, storm_records
from tests.kit.waits import wait_for
from tests.kit.workers import Workers

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.netns]

BROKER_PORT = worker_port(25092)
"""The module's broker (root namespace): 25092, its controller 25093. Every port of the network
tests is below the ephemeral range (32768-60999): a client's source port there once took the
switch's listening port from it (tests/faults/conftest.py)."""
GATEWAY_KAFKA_PORT = worker_port(25292)
"""The gateway test's broker, in host k1: 25292, its controller 25293."""
GATEWAY_PORT = worker_port(25295)

SESSION_TIMEOUT_S = 10.0
"""The pipeline consumers' session.timeout.ms (stormwatch/kafka/txloop.py)."""
HEARTBEAT_INTERVAL_S = 2.0
"""Their heartbeat.interval.ms."""
TRANSACTION_TIMEOUT_S = 10.0
"""The pipeline producers' transaction.timeout.ms (stormwatch/kafka/txloop.py)."""
MIN_CUT_S = SESSION_TIMEOUT_S + TRANSACTION_TIMEOUT_S / 2 + 2
"""The zombie stays cut at least this long: past its session timeout and its transaction's
timeout, and until the other correlator owns every partition."""
MAX_CUT_S = 45.0

GROUPS = 6
LEAD_S = 10.0
"""Record timestamps run this far ahead of the wall clock while the storm is produced (see
tests/faults/test_rebalance_under_load.py: then the incidents depend on the raw log alone). More
than the storm's gaps between rounds (2 s), so a caught-up ingest never lets the clock jump."""


@pytest.fixture(scope="module")
def broker() -> Iterator[ScriptKafka]:
    """The module's single broker, in the root namespace (the zombie test)."""
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    kafka = ScriptKafka(1, BROKER_PORT, worker_dir(ROOT / "var" / "kafka" / "netpart"))
    kafka.fresh_start()
    try:
        yield kafka
    finally:
        kafka.destroy()


@pytest.fixture
def zombie_net(broker: ScriptKafka) -> Iterator[NetSwitch]:
    """The switch of the zombie test: host ``z``, the broker's port a server of ``root``."""
    with NetSwitch(["z"], {"root": [BROKER_PORT]}) as net:
        yield net


def _closed(events: list[IncidentEvent]) -> bool:
    return sum(1 for e in events if e.type.value == "closed") >= GROUPS


def _log_lines(log: Path, since: int = 0, until: int | None = None) -> list[dict[str, object]]:
    """A worker's log lines (JSON objects; other lines as ``{"msg": line}``), bytes since-until."""
    with log.open("rb") as f:
        f.seek(since)
        data = f.read() if until is None else f.read(max(until - since, 0))
    text = data.decode(errors="replace")
    lines: list[dict[str, object]] = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"msg": line}
        if isinstance(entry, dict):
            lines.append(entry)
    return lines


def _committed(run: PipelineRun, partitions: set[int]) -> dict[int, int] | None:
    """The correlator group's committed offsets of ``partitions`` of its input topic (-1: none);
    None while they are unstable (a transaction with offsets is open: read_committed waits)."""
    topic = run.settings.topics.correlator_input
    consumer = make_consumer(run.settings, f"stormwatch-correlator-{topic}")  # never subscribes
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in sorted(partitions)], timeout=10)
    except KafkaException:
        return None
    finally:
        consumer.close()
    return {tp.partition: tp.offset if tp.error is None else -1 for tp in found}


def _partition_numbers(names: set[str]) -> set[int]:
    """``{"topic[2]", ...}`` (the workers' log) -> ``{2, ...}``."""
    return {int(name.rsplit("[", 1)[1].rstrip("]")) for name in names}


def _notable(log: Path, since: int = 0, until: int | None = None) -> list[str]:
    """The zombie's warnings and lifecycle lines (from byte ``since`` to ``until``): what it
    noticed and did."""
    out = []
    for entry in _log_lines(log, since, until):
        level = str(entry.get("level", "")).upper()
        msg = str(entry.get("msg", ""))
        if level in ("WARNING", "ERROR", "CRITICAL") or msg.startswith(("partitions", "stopped", "started")):
            out.append(f"{level} {msg}"[:300])
    return out


def test_a_partitioned_zombie_correlator_is_fenced(
    broker: ScriptKafka, zombie_net: NetSwitch, runs_to_stop: list[PipelineRun], tmp_path: Path
) -> None:
    bootstrap, net = broker.bootstrap, zombie_net
    run = PipelineRun(bootstrap, tmp_path / "faulted", config_overrides=leading_clock(LEAD_S))
    runs_to_stop.append(run)
    raw = run.settings.topics.raw
    run.start("ingest", "i1")
    zombie = run.start("correlate", "c1", prefix=net.prefix("z"))
    zombie_log = run.workers.logs["correlate:c1"]
    wait_for("c1 (in host z) to own partitions", lambda: owned_partitions(zombie_log), 60)
    run.start("correlate", "c2")
    c2_log = run.workers.logs["correlate:c2"]
    wait_for("c2 to own partitions", lambda: owned_partitions(c2_log), 60)
    wait_for("c1 to keep some after c2 joined", lambda: owned_partitions(zombie_log), 30)
    # Stamped from now, once the workers run (PacedProducer: their start took 14 s in CI).
    t0 = int(time.time() * 1000) + int(LEAD_S * 1000) + 2000
    records = storm_records(
        seed=17, t0_ms=t0, groups=GROUPS, alerts_per_group=500, rounds=6, per_record=100, span_s=24
    )
    producer = PacedProducer(bootstrap, raw, records, LEAD_S)
    producer.start()
    wait_for("the first incident events", run.events, 60, alive=run.assert_alive)
    time.sleep(2.0)  # both correlators busy with the storm
    run.assert_alive()
    assert producer.is_alive(), "the storm ended before the partition"
    zombie_owned, c2_owned = owned_partitions(zombie_log), owned_partitions(c2_log)
    all_partitions = zombie_owned | c2_owned
    assert len(all_partitions) == run.partitions and zombie_owned, (zombie_owned, c2_owned)
    assert not zombie_owned & c2_owned, (zombie_owned, c2_owned)
    events_at_cut = len(run.events())
    zombie_numbers = _partition_numbers(zombie_owned)

    def others_alive() -> None:  # the zombie may exit (an allowed outcome), nobody else
        for name, proc in run.procs.items():
            if name != "correlate:c1" and proc.poll() is not None:
                run.assert_alive()

    cut_since = zombie_log.stat().st_size
    net.partition("z", "root", mode="blackhole")
    cut_at = time.monotonic()
    takeover = wait_for(
        "c2 to take over the zombie's partitions",
        lambda: (time.monotonic() - cut_at) if owned_partitions(c2_log) >= all_partitions else None,
        MAX_CUT_S,
        alive=others_alive,
    )
    # c2 carries on: it commits transactions on the zombie's partitions (its offset fetch
    # waits until the zombie's open transaction is aborted by its timeout).
    at_takeover = wait_for("committed offsets", lambda: _committed(run, zombie_numbers), 30)

    def c2_progressed() -> float | None:
        now = _committed(run, zombie_numbers) or {}
        return time.monotonic() - cut_at if any(o > at_takeover[p] for p, o in now.items()) else None

    progressed = wait_for(
        "c2 to commit on the zombie's partitions while the zombie is cut off",
        c2_progressed,
        max(MAX_CUT_S - (time.monotonic() - cut_at), 5.0),
        interval_s=1.0,
        alive=others_alive,
    )
    time.sleep(max(0.0, MIN_CUT_S - (time.monotonic() - cut_at)))
    events_at_heal = len(run.events())
    link = net.link("z", "root")
    heal_since = zombie_log.stat().st_size
    net.heal("z", "root")
    cut_s = time.monotonic() - cut_at

    # The zombie's held requests arrive now: it must be fenced, then exit or rejoin.
    def zombie_outcome() -> str | None:
        if zombie.poll() is not None:
            return "exited"
        if any(kind == "assigned" for kind, _ in assignment_log(zombie_log, heal_since)):
            return "rejoined"
        return None

    outcome = wait_for("the zombie to exit or rejoin", zombie_outcome, 60)
    if outcome == "exited":
        run.procs.pop("correlate:c1")  # gone for good: the run goes on without it
    producer.join(LEAD_S + 60)
    assert not producer.is_alive(), "the storm producer did not finish"
    reference_run = PipelineRun(
        bootstrap, tmp_path / "reference", raw_topic=raw, config_overrides=leading_clock(LEAD_S)
    )
    runs_to_stop.append(reference_run)
    reference_run.start("ingest", "i1")
    reference_run.start("correlate", "c1")
    events = run.wait_until(_closed, timeout_s=90)
    time.sleep(2.0)  # a late write of the zombie would land now
    events = run.events()
    zombie_lines = _notable(zombie_log)
    zombie_before = _notable(zombie_log, 0, cut_since)
    zombie_cut = _notable(zombie_log, cut_since, heal_since)
    zombie_after = _notable(zombie_log, heal_since)
    run.stop_all()
    zombie_rc = zombie.wait(5)
    reference_events = reference_run.wait_until(_closed, timeout_s=90)
    reference_run.stop_all()

    print(
        f"zombie: owned {sorted(zombie_numbers)}; cut {cut_s:.1f}s (blackhole), c2 owned all "
        f"partitions {takeover:.1f}s after the cut and committed on the zombie's {progressed:.1f}s "
        f"after it; audit events {events_at_cut} at the cut, {events_at_heal} at the heal, {len(events)} "
        f"at the end; zombie {outcome}, exit status {zombie_rc}; link z-root at heal: "
        f"{ {k: v for k, v in link.items() if k.startswith(('conn', 'bytes'))} }"
    )
    for name, lines in (
        ("before the cut", zombie_before),
        ("cut", zombie_cut),
        ("after the heal", zombie_after),
    ):
        print(f"zombie log, {name}:\n  " + "\n  ".join(lines[-30:]))
    assert producer.errors == [] and producer.delivered == len(records)
    # Its first records led the wall clock by most of LEAD_S (PacedProducer: a late start breaks the oracle).
    assert producer.late_ms <= LEAD_S * 500, f"the storm started {producer.late_ms} ms late"
    # c2 got the partitions because the zombie's session expired (it never left the group):
    # its last heartbeat was at most one heartbeat interval before the cut.
    assert takeover >= SESSION_TIMEOUT_S - HEARTBEAT_INTERVAL_S - 0.5, f"takeover after {takeover:.1f}s"
    assert_same_audit(events, reference_events, incidents=GROUPS)
    if outcome == "exited":
        assert zombie_rc != 0 or any("stopped" in line for line in zombie_lines), zombie_lines[-20:]
    else:
        # It noticed that it had lost its partitions (its consumer's session was gone), rejoined
        # and worked on until the clean stop at the end.
        assert any(line.endswith("partitions revoked") for line in zombie_cut + zombie_after), zombie_lines
        assert zombie_rc == 0, zombie_lines[-20:]


# --- the gateway --------------------------------------------------------------------------------


SENDERS = 4
UP_BEFORE_S = 3.0
CUT_S = 10.0
RECOVERY_BOUND_S = 20.0
"""The gateway must answer 2xx again within this long after the heal."""
DELIVERY_TIMEOUT_MS = 2000
ANSWER_SLACK_S = 2.0
"""Beyond the delivery timeout and the gateway's own second: a busy 2-core machine's delay."""


async def _ready_status(session: aiohttp.ClientSession, base: str) -> int:
    try:
        async with session.get(f"{base}/-/ready") as r:
            return r.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


async def _gateway_scenario(net: NetSwitch, base: str) -> tuple[list[Answer], dict[str, float]]:
    answers: list[Answer] = []
    marks: dict[str, float] = {}
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        deadline = time.monotonic() + 60
        while await _ready_status(session, base) != 200:
            assert time.monotonic() < deadline, "the gateway in host gw was not ready within 60 s"
            await asyncio.sleep(0.2)
        senders = [
            asyncio.create_task(
                probe_sender(session, f"{base}/api/v1/alerts", "NetProbe", i, SENDERS, stop, answers)
            )
            for i in range(SENDERS)
        ]
        try:
            await asyncio.sleep(UP_BEFORE_S)
            marks["cut_begin"] = time.monotonic()
            await asyncio.to_thread(net.partition, "gw", "k1", mode="blackhole")
            marks["cut_end"] = time.monotonic()
            await asyncio.sleep(CUT_S)
            marks["ready_status_cut"] = await _ready_status(session, base)
            marks["heal_begin"] = time.monotonic()
            await asyncio.to_thread(net.heal, "gw", "k1")
            marks["heal_end"] = time.monotonic()
            while not any(a.status == 200 and a.sent >= marks["heal_end"] for a in answers):
                if time.monotonic() - marks["heal_end"] > RECOVERY_BOUND_S + 10:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(3.0)
            marks["ready_status_after"] = await _ready_status(session, base)
        finally:
            stop.set()
            await asyncio.gather(*senders)
    return answers, marks


def test_gateway_partitioned_from_kafka_answers_503_and_loses_nothing(tmp_path: Path) -> None:
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    servers = {"k1": [GATEWAY_KAFKA_PORT, GATEWAY_KAFKA_PORT + 1], "gw": [GATEWAY_PORT]}
    kafka = ScriptKafka(1, GATEWAY_KAFKA_PORT, worker_dir(ROOT / "var" / "kafka" / "netpart-gw"))
    workers = Workers()
    with NetSwitch(["k1", "gw"], servers) as net, kafka_in_hosts(net, kafka, "k"):
        suffix = uuid.uuid4().hex[:8]
        config = {
            "kafka": {"bootstrap_servers": kafka.bootstrap},
            "topics": {"raw": f"t.raw.netgw.{suffix}", "dlq": f"t.dlq.netgw.{suffix}", "partitions": 3},
            "gateway": {"delivery_timeout_ms": DELIVERY_TIMEOUT_MS},
        }
        path = tmp_path / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        settings = load_settings(path, kafka={"bootstrap_servers": kafka.bootstrap})
        create_topics(settings, timeout_s=30)
        argv = [*net.prefix("gw"), sys.executable, "-m", "stormwatch.cli", "--config", str(path)]
        log = tmp_path / "gateway.log"
        try:
            proc = workers.start("gateway", [*argv, "gateway", "--port", str(GATEWAY_PORT)], log)
            answers, marks = asyncio.run(_gateway_scenario(net, f"http://127.0.0.1:{GATEWAY_PORT}"))
            link = net.link("gw", "k1")
            assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        finally:
            workers.stop()
        rc = proc.returncode
        written: list[int] = []
        for msg in read_topic(settings, settings.topics.raw, timeout_s=30):
            written += [int(note.labels["seq"]) for note in reparse(msg).alerts]

    gateway_log = log.read_text(errors="replace")
    ok = [a for a in answers if 200 <= a.status < 300]
    refused = [a for a in answers if a.status == 503]
    present = set(written)
    inside = [a for a in answers if a.sent >= marks["cut_end"] and a.answered <= marks["heal_begin"]]
    after = [a for a in ok if a.sent >= marks["heal_end"]]
    recovery = min((a.answered for a in after), default=float("inf")) - marks["heal_end"]
    landed_503 = len({a.seq for a in refused} & present)
    print(
        f"gateway cut from kafka: {len(answers)} requests, {len(ok)} 2xx, {len(refused)} 503 "
        f"({landed_503} of them landed after all), {len(inside)} inside the cut; slowest answer "
        f"{max(a.answered - a.sent for a in answers):.2f}s; first 2xx "
        f"{recovery:.2f}s after the heal; link gw-k1: "
        f"{ {k: v for k, v in link.items() if k.startswith(('conn', 'bytes'))} }"
    )
    assert rc == 0, gateway_log[-3000:]
    assert {a.status for a in answers} <= {200, 503}, sorted({a.status for a in answers})
    assert all(a.retry_after == "5" for a in refused), [a for a in refused if a.retry_after != "5"][:5]
    # Nothing acknowledged is lost, nothing is written twice, nothing unsent is there.
    missing = sorted({a.seq for a in ok} - present)
    assert missing == [], f"{len(missing)} alerts answered 2xx are not in the raw topic: {missing[:20]}"
    assert len(written) == len(present), "an alert is in the raw topic twice"
    assert present <= {a.seq for a in answers}, "the raw topic holds alerts nobody sent"
    # No 2xx while the gateway could not reach Kafka: every such request got 503 + Retry-After.
    assert len(inside) >= SENDERS * 5, f"only {len(inside)} requests inside the cut"
    assert all(a.status == 503 for a in inside), [(a.seq, a.status) for a in inside if a.status != 503][:10]
    assert marks["ready_status_cut"] == 503
    # ... and no request hangs on the black hole: the gateway gives up after its delivery timeout.
    slowest = max(a.answered - a.sent for a in answers)
    assert slowest <= DELIVERY_TIMEOUT_MS / 1000 + 1 + ANSWER_SLACK_S, f"a request took {slowest:.1f}s"
    # Before the cut everything went through; after the heal it recovers by itself.
    before = [a for a in answers if a.answered < marks["cut_begin"]]
    assert before and all(a.status == 200 for a in before)
    assert recovery <= RECOVERY_BOUND_S, f"the gateway took {recovery:.1f}s to answer 2xx again"
    assert marks["ready_status_after"] == 200
    last = max(a.answered for a in answers)
    tail = [a for a in answers if a.sent >= last - 1.0]
    assert tail and all(a.status == 200 for a in tail), [a.status for a in tail]
