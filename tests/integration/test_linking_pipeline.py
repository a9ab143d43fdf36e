"""Linking (issue #12) through real worker processes and a real broker: a database cascade and a
node failure become one incident each with their root cause named, unrelated failures stay apart,
and SIGKILLs of the linker and the correlator mid-storm leave the audit log byte-identical."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.schemas.incident import IncidentEvent, IncidentSnapshot
from tests.kit.linkloop import CASCADE_TOPOLOGY as TOPOLOGY
from tests.kit.pipeline import PipelineRun, canonical, check_audit_integrity, incidents_by_id
from tests.kit.records import produce_records
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


SPAN_S = 40
ROUNDS = 20


def _cascade(t0: int) -> list[tuple[int, bytes]]:
    """Four causes, re-sent every round (Prometheus push format), resolved at the end:
    the orders database and the services on it (prod), node n1 and its pods (prod), the same
    checkout errors in staging, and search latency (prod, related to nothing)."""
    alerts: list[tuple[float, dict[str, str]]] = [
        (6.0, {"alertname": "PostgresDown", "service": "orders-db"})
    ]
    alerts += [
        (1.0, {"alertname": "HighErrorRate", "service": "checkout", "pod": f"checkout-{i}"}) for i in range(8)
    ]
    alerts += [
        (2.0, {"alertname": "HighErrorRate", "service": "payments", "pod": f"payments-{i}"}) for i in range(4)
    ]
    alerts += [(3.0, {"alertname": "NodeDown", "node": "n1"})]
    alerts += [
        (3.5, {"alertname": "KubePodNotReady", "node": "n1", "pod": f"web-{i}", "service": "web"})
        for i in range(10)
    ]
    alerts += [(1.5, {"alertname": "HighLatency", "service": "search"})]
    prod = [(start, {**labels, "cluster": "prod"}) for start, labels in alerts]
    staging = [
        (2.0, {"alertname": "HighErrorRate", "cluster": "staging", "service": "checkout", "pod": "c-1"})
    ]
    records = []
    step = SPAN_S / ROUNDS
    for r in range(ROUNDS + 1):
        now = r * step
        batch: list[dict[str, Any]] = []
        for start, labels in prod + staging:
            if start <= now:
                item: dict[str, Any] = {"labels": labels, "annotations": {"summary": "cascade"}}
                if r == ROUNDS:
                    item["endsAt"] = _iso(t0 + int(now * 1000) - 1)
                batch.append(item)
        if batch:
            records.append((t0 + int(now * 1000), orjson.dumps(batch)))
    return records


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _run(
    bootstrap: str, workdir: Path, raw_topic: str | None = None, topology_text: str = TOPOLOGY
) -> PipelineRun:
    workdir.mkdir(parents=True, exist_ok=True)
    topology = workdir / "topology.yaml"
    topology.write_text(topology_text)
    return PipelineRun(
        bootstrap,
        workdir,
        raw_topic=raw_topic,
        config_overrides={"correlator": {"topology_file": str(topology)}},
    )


def _opened(events: list[IncidentEvent]) -> int:
    return sum(1 for e in events if e.type.value == "opened")


def _all_closed(events: list[IncidentEvent]) -> bool:
    opened = _opened(events)
    return opened >= 7 and sum(1 for e in events if e.type.value == "closed") == opened


def _last(events: list[IncidentEvent]) -> dict[str, IncidentSnapshot]:
    return {iid: evs[-1].snapshot for iid, evs in incidents_by_id(events).items()}


@pytest.fixture(scope="module")
def linked_run(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[PipelineRun, dict[str, list[bytes]]]]:
    run = _run(kafka_bootstrap, tmp_path_factory.mktemp("linking"))
    produce_records(kafka_bootstrap, run.settings.topics.raw, _cascade(int(time.time() * 1000) - 60_000))
    for stage in ("ingest", "correlate", "link"):
        run.start(stage, "w1")
    try:
        events = run.wait_until(_all_closed, timeout_s=180)
    finally:
        run.stop_all()
    yield run, canonical(events)


def test_each_cause_is_one_incident_with_its_root_cause(
    linked_run: tuple[PipelineRun, dict[str, list[bytes]]],
) -> None:
    run, _ = linked_run
    events = run.events()
    check_audit_integrity(events)
    last = _last(events)
    primaries = {iid: snap for iid, snap in last.items() if snap.linked_into is None}
    roots = sorted(snap.root_cause.component for snap in primaries.values() if snap.root_cause)
    assert roots == [
        '{cluster="prod"}database/orders-db',
        '{cluster="prod"}node/n1',
        '{cluster="prod"}service/search',
        '{cluster="staging"}service/checkout',
    ]
    by_root = {snap.root_cause.name: snap for snap in primaries.values() if snap.root_cause}

    def names(root: str) -> list[str]:
        snap = by_root[root]
        return sorted(s.title.split(" (")[0] for s in [snap, *(last[m] for m in snap.members)])

    assert names("orders-db") == ["HighErrorRate", "HighErrorRate", "PostgresDown"]  # checkout, payments
    assert names("n1") == ["KubePodNotReady", "NodeDown"]
    assert names("search") == ["HighLatency"] and names("checkout") == ["HighErrorRate"]
    assert run.dead_letters() == []


@pytest.mark.parametrize("stage", ["link", "correlate", "ingest"])
def test_sigkills_mid_storm_change_nothing(
    linked_run: tuple[PipelineRun, dict[str, list[bytes]]], tmp_path: Path, stage: str
) -> None:
    base, reference = linked_run
    run = _run(base.bootstrap, tmp_path, raw_topic=base.settings.topics.raw)
    rnd = random.Random({"link": 21, "correlate": 22, "ingest": 23}[stage])
    try:
        for name in ("ingest", "correlate", "link"):
            run.start(name, "w1")
        progress = []
        for kill in range(3):
            # Within half a second of the stage taking its partitions: the storm is already in
            # the raw topic, and the pipeline gets through all of it in about a second.
            wait_for(
                f"{stage}:w1 to own partitions (start {kill + 1})",
                lambda starts=kill: run.workers.assignments(f"{stage}:w1") > starts,
                60,
                alive=run.assert_alive,
            )
            time.sleep(rnd.uniform(0.0, 0.5))
            run.assert_alive()
            run.kill(stage, "w1")
            progress.append(len(run.events()))
            run.start(stage, "w1")
        events = run.wait_until(_all_closed, timeout_s=240)
        # The audit log's length after each kill, for the record. Not asserted below the
        # reference's: the storm is already in the raw topic and, since the linking notes match
        # each naming of a group's alerts once (f70a7e8), the pipeline gets through all of it
        # within a second of starting, so whether a kill lands before its last event is timing.
        print(
            f"audit events after each SIGKILL of {stage}: {progress} (of {sum(len(v) for v in reference.values())})"
        )
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert canonical(events) == reference


def test_without_a_linker_incidents_go_on_after_max_wait(kafka_bootstrap: str, tmp_path: Path) -> None:
    """Nobody runs `stormwatch link`: the correlator waits link.max_wait (wall time), then goes
    on without it, once, and says so; every incident still opens and closes, unlinked."""
    run = _run(kafka_bootstrap, tmp_path, topology_text=TOPOLOGY.replace("max_wait: 10m", "max_wait: 3s"))
    produce_records(kafka_bootstrap, run.settings.topics.raw, _cascade(int(time.time() * 1000) - 60_000))
    started = time.monotonic()
    try:
        run.start("ingest", "w1")
        run.start("correlate", "w1")
        events = run.wait_until(_all_closed, timeout_s=120)
    finally:
        run.stop_all()
    check_audit_integrity(events)
    assert time.monotonic() - started > 3, "it waited for the linker first"
    assert all(s.linked_into is None and not s.members for s in _last(events).values())
    logs = "".join(p.read_text() for p in tmp_path.glob("correlate-w1-*.log"))
    assert "going on without the linker" in logs


def test_an_operator_splits_and_joins_with_the_cli(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stormwatch split` takes payments out of the database incident, `stormwatch join` puts
    search into it; each waits for the linker's answer on the audit log and exits 0."""
    run = _run(kafka_bootstrap, tmp_path)
    # no resolve round, stamped from now: the incidents stay open while the commands run
    records = [r for r in _cascade(int(time.time() * 1000) - 2_000) if b"endsAt" not in r[1]]
    produce_records(kafka_bootstrap, run.settings.topics.raw, records)
    try:
        for stage in ("ingest", "correlate", "link"):
            run.start(stage, "w1")

        def cascade_linked(events: list[IncidentEvent]) -> bool:
            return any(e.type.value == "root_cause_changed" and "orders-db" in e.cause for e in events)

        events = run.wait_until(cascade_linked, timeout_s=90)
        last = _last(events)
        by_name = {
            f"{snap.group_labels.get('cluster')}/{snap.group_labels.get('service')}": iid
            for iid, snap in last.items()
        }
        payments, search, staging = (
            by_name["prod/payments"],
            by_name["prod/search"],
            by_name["staging/checkout"],
        )
        primary = last[payments].linked_into
        assert primary is not None
        capsys.readouterr()
        cli = ["--config", str(run.config_path)]
        assert main([*cli, "split", payments, "--by", "alice", "--wait", "60"]) == 0
        assert f"unlinked {payments}" in capsys.readouterr().err
        assert main([*cli, "join", search, "--into", payments, "--by", "alice", "--wait", "60"]) == 0
        assert main([*cli, "join", staging, "--into", primary, "--by", "alice", "--wait", "60"]) == 1
        assert "different scopes" in capsys.readouterr().err
        after = _last(run.events())
        assert after[payments].linked_into is None
        assert after[search].linked_into == payments and after[payments].members == [search]
        assert after[staging].linked_into is None
    finally:
        run.stop_all()
