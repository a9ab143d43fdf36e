"""``stormwatch_linker_state``: a linker partition's state size, gone with the partition."""

from __future__ import annotations

from prometheus_client import REGISTRY

from stormwatch.metrics import pipeline_metrics


def _value(partition: str, kind: str) -> float | None:
    return REGISTRY.get_sample_value("stormwatch_linker_state", {"partition": partition, "kind": kind})


def test_the_gauge_follows_a_partition_and_is_removed_when_it_is_revoked() -> None:
    metrics = pipeline_metrics()
    metrics.record_linker_state(97, 3, 7, 2)
    assert (_value("97", "incidents"), _value("97", "groups"), _value("97", "pending_notes")) == (3, 7, 2)
    metrics.record_linker_state(97, None)
    assert _value("97", "incidents") is None and _value("97", "groups") is None
    metrics.record_linker_state(97, None)  # a second revoke is nothing
