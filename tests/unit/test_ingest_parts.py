"""Ingest handles a transaction's input in parts of ``handle_bytes`` (no broker).

A catch-up transaction reads up to 8 MiB; holding all of its alerts as objects until the end pinned
memory afterwards, so the loop hands the stage the transaction in parts (``split_by_bytes``). The
parts must change nothing but how many records carry the alerts: every alert once, in order within
its group, each to its group's key.
"""

from __future__ import annotations

import orjson

from stormwatch.config import Settings
from stormwatch.kafka.txloop import HANDLE_BYTES, split_by_bytes
from stormwatch.streams.core import wire
from stormwatch.streams.core.rules import parse_rules
from stormwatch.streams.ingest import INGEST_HANDLE_BYTES, IngestStage
from tests.kit.messages import FakeMessage

NOW = 1_800_000_000_000


def _stage() -> IngestStage:
    return IngestStage(Settings(), parse_rules("{}"), correlator_partitions=3, wall_clock_ms=lambda: NOW)


def _pushes(stage: IngestStage) -> list[FakeMessage]:
    """Ten pushes of three groups (service a/b/c), each alert firing on its own instance."""
    out = []
    for offset in range(10):
        alerts = [
            {"labels": {"alertname": "Down", "service": "abc"[i % 3], "instance": f"h{offset}-{i}"}}
            for i in range(6)
        ]
        out.append(
            FakeMessage(stage.topics.raw, orjson.dumps(alerts), offset=offset, timestamp_ms=NOW - 1000)
        )
    return out


def _alert_records(stage: IngestStage, part_bytes: int | None) -> list[tuple[str, list[str]]]:
    records = []
    for part, _ in split_by_bytes(_pushes(stage), part_bytes):  # type: ignore[arg-type]
        for out in stage.handle(part, set()).outputs:
            if out.topic != stage.topics.correlator_input:
                continue
            assert out.value is not None
            record = wire.decode(out.value)
            if record["t"] == wire.ALERTS:
                assert out.key == record["h"], "keyed by its group, so it lands on the group's partition"
                records.append((record["h"], [alert[0] for alert in record["al"]]))
    return records


def _by_group(records: list[tuple[str, list[str]]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for gkhash, fingerprints in records:
        groups.setdefault(gkhash, []).extend(fingerprints)
    return groups


def test_ingest_and_the_correlator_handle_in_parts() -> None:
    from stormwatch.streams.correlator import CorrelatorStage

    assert CorrelatorStage.handle_bytes == HANDLE_BYTES
    assert IngestStage.handle_bytes == INGEST_HANDLE_BYTES < HANDLE_BYTES


def test_one_record_per_group_and_part() -> None:
    records = _alert_records(_stage(), None)
    assert len(records) == 3
    assert sum(len(fps) for _, fps in records) == 60


def test_parts_carry_the_same_alerts_in_the_same_order() -> None:
    whole = _by_group(_alert_records(_stage(), None))
    push_bytes = len(_pushes(_stage())[0])
    parts = _alert_records(_stage(), 3 * push_bytes)  # three pushes per part
    assert len(parts) == 3 * 4, "three groups in each of four parts (3 + 3 + 3 + 1 pushes)"
    assert _by_group(parts) == whole
