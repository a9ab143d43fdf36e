"""Workers join and leave while a storm is being produced live: the result must not change.

Two pipeline runs read the same raw topic while the storm is written to it (``PacedProducer``):
in each, a second ingest worker and a second correlator join (consumer-group rebalances move
partitions, and the correlator state of the moved partitions is restored from the changelog),
then the original ingest worker and correlator leave — one run stops them with SIGTERM (a clean
leave: the group rebalances at once), the other SIGKILLs them (the group waits for the session
timeout and the broker aborts their open transactions). Both audit logs must equal the one of a
single-worker run over the same raw topic, written after the storm.

Time: the storm's records carry timestamps ``LEAD_S`` ahead of the moment they are produced. The
ingest stage's clock is the newest record timestamp it has read (the wall clock only when a
partition is caught up and the clock is behind the data), so while the storm is live the
pipeline's clock follows the data, no alert is ever late, and the incidents are a function of the
raw log alone: exactly what a later replay (the reference run, started once the storm is written)
computes. With timestamps in the
past instead, every moment the live runs caught up with the producer would let the wall clock jump
ahead of the data still to come, making those alerts late and the result depend on timing.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent
from tests.kit.pipeline import PipelineRun, canonical, check_audit_integrity, incidents_by_id
from tests.kit.records import PacedProducer, leading_clock, storm_records
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.faults, pytest.mark.slow]

GROUPS = 8
LEAD_S = 20.0


def _closed(events: list[IncidentEvent]) -> bool:
    return sum(1 for e in events if e.type.value == "closed") >= GROUPS


def facts(events: list[IncidentEvent]) -> dict[str, tuple[str, list[str]]]:
    """Per incident: its final state and the fingerprints that joined it (what a user sees)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for iid, evs in incidents_by_id(events).items():
        joined = sorted(c.fingerprint for e in evs for c in e.alerts if c.change is AlertChangeKind.JOINED)
        out[iid] = (evs[-1].type.value, joined)
    return out


def _leave(run: PipelineRun, name: str, sig: signal.Signals) -> int:
    proc = run.procs.pop(name)
    proc.send_signal(sig)
    return proc.wait(30)


@pytest.fixture
def runs_to_stop() -> Iterator[list[PipelineRun]]:
    """Runs whose workers are stopped when the test ends, however it ends."""
    runs: list[PipelineRun] = []
    yield runs
    for run in runs:
        run.stop_all()


def test_workers_join_and_leave_during_a_live_storm(
    kafka_bootstrap: str, tmp_path: Path, runs_to_stop: list[PipelineRun]
) -> None:
    graceful = PipelineRun(kafka_bootstrap, tmp_path / "sigterm", config_overrides=leading_clock(LEAD_S))
    raw = graceful.settings.topics.raw
    crashed = PipelineRun(
        kafka_bootstrap, tmp_path / "sigkill", raw_topic=raw, config_overrides=leading_clock(LEAD_S)
    )
    runs = {signal.SIGTERM: graceful, signal.SIGKILL: crashed}
    t0 = int(time.time() * 1000) + int(LEAD_S * 1000) + 3000
    records = storm_records(
        seed=31, t0_ms=t0, groups=GROUPS, alerts_per_group=300, rounds=10, per_record=100, span_s=40
    )
    producer = PacedProducer(kafka_bootstrap, raw, records, LEAD_S)
    producer.start()
    exit_codes: dict[str, int] = {}
    try:
        for run in runs.values():
            run.start("ingest", "i1")
            run.start("correlate", "c1")
        for run in runs.values():
            wait_for("the first incident events", run.events, 90)
        for run in runs.values():  # scale out: partitions move to the new workers
            run.start("ingest", "i2")
            run.start("correlate", "c2")
        time.sleep(8)
        for run in runs.values():
            run.assert_alive()
        assert producer.is_alive(), "the storm ended before the workers left"
        for sig, run in runs.items():  # scale in: the original workers leave
            exit_codes[f"{sig.name} ingest"] = _leave(run, "ingest:i1", sig)
            exit_codes[f"{sig.name} correlate"] = _leave(run, "correlate:c1", sig)
        producer.join(LEAD_S + 120)
        assert not producer.is_alive(), "the storm producer did not finish"
        # The raw topic is complete and every worker change is done: the single-worker reference
        # run starts now, while the two runs wait for the wall clock to pass the storm's end.
        reference_run = PipelineRun(
            kafka_bootstrap, tmp_path / "reference", raw_topic=raw, config_overrides=leading_clock(LEAD_S)
        )
        runs_to_stop.append(reference_run)
        reference_run.start("ingest", "i1")
        reference_run.start("correlate", "c1")
        results = {sig: run.wait_until(_closed, timeout_s=120) for sig, run in runs.items()}
    finally:
        for run in runs.values():
            run.stop_all()
    assert producer.errors == [] and producer.delivered == len(records)
    # A SIGTERM is a clean stop: the worker finishes its batch, commits and leaves the group.
    assert exit_codes["SIGTERM ingest"] == 0 and exit_codes["SIGTERM correlate"] == 0, exit_codes

    try:
        reference_events = reference_run.wait_until(_closed, timeout_s=120)
    finally:
        reference_run.stop_all()
    reference = canonical(reference_events)
    assert len(reference) == GROUPS
    for sig, events in results.items():
        check_audit_integrity(events)
        assert facts(events) == facts(reference_events), f"{sig.name}: different incidents"
        assert canonical(events) == reference, f"{sig.name}: same incidents, different audit log"
