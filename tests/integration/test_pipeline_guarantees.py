"""The pipeline's promises, proven against a real broker with real worker processes.

One storm is written to a raw topic once; every run below reads that same raw log with its own
correlator and incident topics, and must produce exactly the same audit log as an uninterrupted
run: after SIGKILLs of either stage, with two correlators sharing the partitions, and across a
rebalance onto a second worker.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.schemas.incident import AlertChangeKind, IncidentEvent
from tests.kit.pipeline import PipelineRun, canonical, check_audit_integrity, incidents_by_id
from tests.kit.records import produce_records, storm_records

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

GROUPS = 12
ALERTS_PER_GROUP = 1000
ROUNDS = 12


def _all_closed(events: list[IncidentEvent]) -> bool:
    return sum(1 for e in events if e.type.value == "closed") >= GROUPS


@pytest.fixture(scope="module")
def storm_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PipelineRun, dict[str, list[bytes]]]]:
    """Write the storm once and record the uninterrupted run's audit log as the reference."""
    workdir = tmp_path_factory.mktemp("guarantees")
    run = PipelineRun(kafka_bootstrap, workdir)
    t0 = int(time.time() * 1000) - 600_000
    records = storm_records(
        seed=7,
        t0_ms=t0,
        groups=GROUPS,
        alerts_per_group=ALERTS_PER_GROUP,
        rounds=ROUNDS,
        per_record=200,
        span_s=60,
    )
    produce_records(kafka_bootstrap, run.settings.topics.raw, records)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        events = run.wait_until(_all_closed, timeout_s=180)
    finally:
        run.stop_all()
    yield run, canonical(events)


def _new_run(storm_run: tuple[PipelineRun, dict[str, list[bytes]]], workdir: Path) -> PipelineRun:
    base, _ = storm_run
    return PipelineRun(base.bootstrap, workdir, raw_topic=base.settings.topics.raw)


def test_uninterrupted_storm_gives_one_incident_per_group(
    storm_run: tuple[PipelineRun, dict[str, list[bytes]]],
) -> None:
    run, _reference = storm_run
    events = run.events()
    check_audit_integrity(events)
    incidents = incidents_by_id(events)
    assert len(incidents) == GROUPS
    joined: dict[str, str] = {}
    for iid, evs in incidents.items():
        assert next(e.type.value for e in evs) == "opened"
        assert evs[-1].type.value == "closed"
        for e in evs:
            for change in e.alerts:
                if change.change is AlertChangeKind.JOINED:
                    assert change.fingerprint not in joined, "an alert joined two incidents"
                    joined[change.fingerprint] = iid
        # bounded by group_interval, not by the number of notifications (13 per alert here)
        assert len(evs) <= 8
    assert len(joined) == GROUPS * ALERTS_PER_GROUP  # every alert in exactly one incident
    assert sum(e.deduplicated for e in events) > GROUPS * ALERTS_PER_GROUP * (ROUNDS - 2)
    assert run.dead_letters() == []


@pytest.mark.parametrize("stage", ["correlate", "ingest"])
def test_sigkill_mid_storm_loses_and_duplicates_nothing(
    storm_run: tuple[PipelineRun, dict[str, list[bytes]]], tmp_path: Path, stage: str
) -> None:
    _, reference = storm_run
    run = _new_run(storm_run, tmp_path)
    rnd = random.Random(11 if stage == "ingest" else 13)
    try:
        run.start("ingest", "i1")
        run.start("correlate", "c1")
        progress_at_kills = []
        for _ in range(3):
            time.sleep(rnd.uniform(1.0, 3.0))
            run.assert_alive()
            run.kill(stage, "i1" if stage == "ingest" else "c1")
            progress_at_kills.append(len(run.events()))
            run.start(stage, "i1" if stage == "ingest" else "c1")
        events = run.wait_until(_all_closed, timeout_s=180)
        # the kills landed mid-storm, not after the work was done
        assert progress_at_kills[0] < sum(len(v) for v in reference.values()), progress_at_kills
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert canonical(events) == reference


def test_two_correlators_and_a_rebalance_give_the_same_result(
    storm_run: tuple[PipelineRun, dict[str, list[bytes]]], tmp_path: Path
) -> None:
    _, reference = storm_run
    run = _new_run(storm_run, tmp_path)
    try:
        run.start("ingest", "i1")
        run.start("correlate", "c1")
        time.sleep(2.0)
        run.start("correlate", "c2")  # takes over some partitions: state restored from the changelog
        time.sleep(3.0)
        run.kill("correlate", "c1")  # c2 takes everything over
        events = run.wait_until(_all_closed, timeout_s=180)
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert canonical(events) == reference


def test_ten_thousand_alert_storm_from_one_root_cause_is_one_incident(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = PipelineRun(kafka_bootstrap, tmp_path)
    t0 = int(time.time() * 1000) - 300_000
    records = storm_records(
        seed=3, t0_ms=t0, groups=1, alerts_per_group=10_000, rounds=4, per_record=256, span_s=40
    )
    produce_records(kafka_bootstrap, run.settings.topics.raw, records)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        events = run.wait_until(lambda evs: any(e.type.value == "closed" for e in evs), timeout_s=120)
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert len({e.incident_id for e in events}) == 1
    opened = events[0]
    assert opened.type.value == "opened" and opened.snapshot.alert_count == 10_000
    # 50,000 notifications over 40 s with group_interval 10 s: a handful of events, not one per alert
    assert len(events) <= 1 + 40 // 10 + 2, [e.type.value for e in events]
    assert events[-1].snapshot.deduplicated >= 30_000
