"""Broker failures on a 3-node cluster (replication factor 3, min.insync.replicas 2, acks=all).

Both tests compare the audit log of a run that suffered the fault with the audit log of an
uninterrupted run over the same raw topic (``tests.kit.pipeline.canonical``): identical means nothing
was lost, duplicated, reordered or decided differently.

- While a storm is being produced live, one broker is stopped cleanly (a rolling restart) and
  brought back, then another crashes (SIGKILL) and is brought back: each time the pipeline and
  the producer keep going on the two others (every partition keeps 2 in-sync replicas).
- Two brokers crash at once: every write needs 2 in-sync replicas and the controller quorum needs
  2 of 3 voters, so nothing can commit. The workers must stay alive and commit nothing for the whole
  outage (no partial, no corrupt output), then resume by themselves when the brokers return.

The cluster is the module's own (tests/faults/conftest.py), never the shared ``cluster_bootstrap``
one, because the tests stop its nodes. docs/reliability.md explains what each step proves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stormwatch.errors import UserError
from stormwatch.schemas.incident import IncidentEvent
from tests.kit.kafka import ScriptKafka, group_coordinator, wait_fully_replicated
from tests.kit.metrics import metric
from tests.kit.pipeline import PipelineRun, canonical, check_audit_integrity
from tests.kit.ports import free_port
from tests.kit.records import PacedProducer, leading_clock, produce_records, storm_records
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.faults, pytest.mark.slow]

REPLICATED = {"replication_factor": 3, "min_insync_replicas": 2}
LIVE_GROUPS = 6
BACKLOG_GROUPS = 12
LEAD_S = 20.0
"""The live storm's records carry timestamps this far ahead of the moment they are produced."""
OUTAGE_S = 30.0
"""How long two brokers stay down."""
STALL_GRACE_S = 5.0
"""A transaction already being committed when the brokers die may still finish within this."""


@pytest.fixture
def cluster(fault_cluster: ScriptKafka) -> Iterator[ScriptKafka]:
    """The module's cluster; after each test every node runs again, whatever a failure left down."""
    yield fault_cluster
    for node in range(1, fault_cluster.nodes + 1):
        fault_cluster.start_node(node)
    wait_fully_replicated(fault_cluster.bootstrap)


@pytest.fixture
def stopped_at_teardown() -> Iterator[list[PipelineRun]]:
    """Runs whose workers are stopped when the test ends, however it ends (a reference run that
    a failed assertion left running)."""
    runs: list[PipelineRun] = []
    yield runs
    for run in runs:
        run.stop_all()


def _closed(groups: int) -> Any:
    def done(events: list[IncidentEvent]) -> bool:
        return sum(1 for e in events if e.type.value == "closed") >= groups

    return done


def _events(run: PipelineRun) -> list[IncidentEvent] | None:
    """The audit log so far, or None while a leader moves (read_topic does not retry that)."""
    try:
        return run.events()
    except UserError:
        return None


def _count_events(run: PipelineRun) -> int:
    return len(wait_for("a readable incident topic", lambda: _events(run), 30))


def _more_events(run: PipelineRun, than: int) -> bool:
    return _count_events(run) > than


def _wait_closed(run: PipelineRun, groups: int, timeout_s: float) -> list[IncidentEvent]:
    """Like PipelineRun.wait_until, tolerating a read that meets a moving leader."""
    done = _closed(groups)

    def check() -> list[IncidentEvent] | None:
        run.assert_alive()
        events = _events(run)
        return events if events is not None and done(events) else None

    return wait_for(f"{groups} closed incidents", check, timeout_s, interval_s=1.0)


STAGE_LABELS = {"ingest": "ingest", "correlate": "correlator"}


def _start_with_metrics(run: PipelineRun) -> dict[str, int]:
    """Start one ingest and one correlator, each serving /metrics; return their ports."""
    ports = {"ingest": free_port(), "correlate": free_port()}
    run.start("ingest", "i1", ["--metrics-port", str(ports["ingest"])])
    run.start("correlate", "c1", ["--metrics-port", str(ports["correlate"])])
    return ports


def _committed(ports: dict[str, int]) -> dict[str, float]:
    """Committed transactions per stage (stormwatch_transactions_total; -1: no answer yet)."""
    return {
        stage: metric(port, "stormwatch_transactions_total", stage=STAGE_LABELS[stage])
        for stage, port in ports.items()
    }


def _committed_counts(ports: dict[str, int]) -> dict[str, float]:
    """``_committed`` once every worker has answered: a busy worker's /metrics can miss the
    scrape timeout, and a missed answer must not read as a change of its counter."""

    def answered() -> dict[str, float] | None:
        counts = _committed(ports)
        return counts if all(v >= 0 for v in counts.values()) else None

    return wait_for("every worker's transaction counter", answered, 30)


def _wait_progress(
    run: PipelineRun,
    ports: dict[str, int],
    since: dict[str, float],
    deduplicated: float,
    what: str,
    timeout_s: float,
) -> None:
    """Wait until both stages committed since ``since`` and the correlator folded more re-sent
    alerts; a timeout says which of them did not move."""
    seen: dict[str, float] = {}

    def progressed() -> bool:
        run.assert_alive()
        seen.update(_committed(ports))
        seen["folded"] = metric(ports["correlate"], "stormwatch_alerts_deduplicated_total")
        return all(seen[s] > since[s] for s in ports) and seen["folded"] > deduplicated

    try:
        wait_for(what, progressed, timeout_s)
    except AssertionError as exc:
        before = {**since, "folded": deduplicated}
        raise AssertionError(f"{exc}; transactions and folded alerts: {before} -> {seen}") from None


def _start_reference(bootstrap: str, workdir: Path, raw_topic: str) -> PipelineRun:
    """An uninterrupted run over the same raw topic, started once that topic is complete and the
    faults are over (its own topics and groups: it may run beside the faulted run's last stretch)."""
    run = PipelineRun(
        bootstrap,
        workdir,
        raw_topic=raw_topic,
        topics_overrides=REPLICATED,
        config_overrides=leading_clock(LEAD_S),
    )
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    return run


def _reference(run: PipelineRun, groups: int) -> dict[str, list[bytes]]:
    """The reference run's audit log once its ``groups`` incidents closed; its workers stopped."""
    try:
        events = _wait_closed(run, groups, 120)
    finally:
        run.stop_all()
    check_audit_integrity(events)
    return canonical(events)


def test_one_broker_stopped_then_another_crashed_mid_storm_loses_nothing(
    cluster: ScriptKafka, tmp_path: Path, stopped_at_teardown: list[PipelineRun]
) -> None:
    bootstrap = cluster.bootstrap
    run = PipelineRun(
        bootstrap, tmp_path / "faulted", topics_overrides=REPLICATED, config_overrides=leading_clock(LEAD_S)
    )
    t0 = int(time.time() * 1000) + int(LEAD_S * 1000) + 3000
    records = storm_records(
        seed=21, t0_ms=t0, groups=LIVE_GROUPS, alerts_per_group=500, rounds=20, per_record=100, span_s=100
    )
    producer = PacedProducer(bootstrap, run.settings.topics.raw, records, LEAD_S)
    producer.start()
    ports = _start_with_metrics(run)
    try:
        # Mid-storm: the first incidents are out, most of the storm is still to come.
        wait_for("the first incident events", lambda: _events(run), 90)
        group = f"stormwatch-correlator-{run.settings.topics.correlator_input}"
        coordinator = group_coordinator(bootstrap, group)  # also leads a third of every topic
        # A rolling restart's clean stop of the coordinator, then a crash of another node.
        for node, fault in (
            (coordinator, cluster.stop_node),
            (coordinator % 3 + 1, cluster.kill_node),
        ):
            since = _committed_counts(ports)
            folded = metric(ports["correlate"], "stormwatch_alerts_deduplicated_total")
            fault(node)
            assert producer.is_alive(), "the storm ended before the broker went down"
            # The pipeline keeps going on two brokers: both stages commit, re-sent alerts are folded.
            # Within 90 s: a worker may first sit out its session timeout (10 s), then a hung
            # send_offsets_to_transaction (20 s, docs/reliability.md) before it rewinds.
            _wait_progress(run, ports, since, folded, f"progress with node {node} down", 90)
            cluster.start_node(node)
            # As a rolling restart does: the next node only once this one has caught up.
            wait_fully_replicated(bootstrap)

        producer.join(LEAD_S + 120)
        assert not producer.is_alive(), "the storm producer did not finish"
        # The raw topic is complete and no fault is left: the reference runs while this run waits
        # for its incidents to close (the wall clock has to pass the storm's last timestamps).
        reference_run = _start_reference(bootstrap, tmp_path / "reference", run.settings.topics.raw)
        stopped_at_teardown.append(reference_run)
        events = _wait_closed(run, LIVE_GROUPS, 120)
        late = wait_for(
            "the correlator's late-alert counter",
            lambda: (v,) if (v := metric(ports["correlate"], "stormwatch_alerts_late_total")) >= 0 else None,
            30,
        )
        assert late == (0.0,)
    finally:
        run.stop_all()
    assert producer.errors == [] and producer.undelivered == 0
    assert producer.delivered == len(records)
    check_audit_integrity(events)
    assert run.dead_letters() == []
    reference = _reference(reference_run, LIVE_GROUPS)
    assert len(reference) == LIVE_GROUPS
    assert canonical(events) == reference


def test_two_brokers_down_stalls_then_resumes_identically(
    cluster: ScriptKafka, tmp_path: Path, stopped_at_teardown: list[PipelineRun]
) -> None:
    bootstrap = cluster.bootstrap
    run = PipelineRun(
        bootstrap, tmp_path / "faulted", topics_overrides=REPLICATED, config_overrides=leading_clock(LEAD_S)
    )
    records = storm_records(
        seed=22,
        t0_ms=int(time.time() * 1000) - 600_000,
        groups=BACKLOG_GROUPS,
        alerts_per_group=1000,
        rounds=12,
        per_record=200,
        span_s=60,
    )
    produce_records(bootstrap, run.settings.topics.raw, records)
    ports = _start_with_metrics(run)
    try:
        # Mid-storm: ingest has started committing, the correlator has not finished.
        wait_for("the first ingest transaction", lambda: _committed(ports)["ingest"] > 0, 90)
        events_before = metric(ports["correlate"], "stormwatch_incident_events_total")
        rnd = random.Random(22)
        victims = sorted(rnd.sample([1, 2, 3], 2))
        for node in victims:
            cluster.kill_node(node)
        down_at = time.monotonic()

        time.sleep(STALL_GRACE_S)
        before = _committed_counts(ports)
        while time.monotonic() - down_at < OUTAGE_S:
            run.assert_alive()  # no worker gives up while the cluster cannot take writes
            time.sleep(1.0)
        during = _committed_counts(ports)
        assert during == before, f"transactions committed without a quorum: {before} -> {during}"

        for node in victims:
            cluster.start_node(node)
        # It resumes by itself: both stages commit again.
        _wait_progress(run, ports, during, -1.0, "commits after the outage", 90)
        # The faults are over: the reference runs while this run works through the rest.
        reference_run = _start_reference(bootstrap, tmp_path / "reference", run.settings.topics.raw)
        stopped_at_teardown.append(reference_run)
        events = _wait_closed(run, BACKLOG_GROUPS, 180)
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert run.dead_letters() == []
    reference = _reference(reference_run, BACKLOG_GROUPS)
    assert events_before < sum(len(evs) for evs in reference.values()), "the outage came after the work"
    assert canonical(events) == reference
