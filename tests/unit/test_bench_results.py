"""Result arithmetic of the benchmark: percentiles, rates, floor ratios, target verdicts, table."""

from __future__ import annotations

import math

import pytest

from stormwatch.bench.results import check_targets, percentile, percentiles, process_figures, ratio, render


def test_nearest_rank_percentiles() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    stats = percentiles([3.0, 1.0, 2.0])
    assert stats["n"] == 3 and stats["p50"] == 2.0 and stats["max"] == 3.0 and stats["mean"] == 2.0
    assert percentiles([]) == {"n": 0}


def test_ratio_needs_both_sides() -> None:
    assert ratio(50.0, 100.0) == 0.5
    assert ratio(None, 1.0) is None
    assert ratio(1.0, 0.0) is None
    assert ratio(1.0, math.nan) is None


def test_process_figures() -> None:
    fig = process_figures(100_000, cpu_s=2.0, wall_s=4.0, rss=10, peak_rss=20)
    assert fig["alerts_per_s"] == 25_000
    assert fig["alerts_per_cpu_s"] == 50_000
    assert fig["cpu_us_per_alert"] == 20.0
    assert fig["utilization"] == 0.5
    assert process_figures(0, 0.0, 0.0, 0, 0)["alerts_per_s"] == 0


@pytest.mark.parametrize(
    ("value", "met"),
    [(60_000, True), (50_000, True), (49_999, False), (None, None)],
)
def test_storm_batched_target(value: int | None, met: bool | None) -> None:
    result = {"workload": "storm-batched", "pipeline": {"one_core_alerts_per_s": value}}
    (check,) = check_targets(result)
    assert check["met"] is met
    assert ">= 50000" in check["target"]


def test_steady_and_high_cardinality_targets() -> None:
    steady = {"workload": "steady", "latency": {"record_ms": {"p99": 249.0}}}
    assert [c["met"] for c in check_targets(steady)] == [True]
    high = {
        "workload": "high-cardinality",
        "memory": {"bytes_per_fingerprint": 1_500},
        "recovery": {"restart_to_ready_s": 12.0},
    }
    assert [c["met"] for c in check_targets(high)] == [False, True]
    assert check_targets({"workload": "flapping"}) == []


def test_render_shows_the_figures_and_verdicts() -> None:
    result = {
        "workload": "storm-batched",
        "sent": {"alerts": 1000, "records": 4, "fingerprints": 100, "groups": 2, "resend_ratio": 0.9},
        "floor": {"alerts_per_s": 100_000, "alerts_per_cpu_s": 400_000, "peak_rss": 100 << 20},
        "pipeline": {
            "alerts_per_s": 50_000,
            "one_core_alerts_per_s": 60_000,
            "ingest": process_figures(1000, 0.01, 0.02, 1 << 20, 2 << 20),
            "correlator": process_figures(1000, 0.02, 0.02, 1 << 20, 2 << 20),
        },
        "floor_ratios": {"ingest_cpu": 0.25, "pipeline_wall": 0.5},
        "incidents": {"events": 10, "suppression_ratio": 100.0},
        "correlator_metrics": {"stormwatch_alerts_late_total": 12.0},
        "targets": [{"target": "x >= 1", "value": 2.0, "met": True}],
    }
    text = render(result)
    assert "late alerts (correlator)" in text and " 12\n" in text
    assert "stormwatch bench storm-batched" in text
    assert "ingest: alerts per CPU-second" in text and "0.25x" in text
    assert "end to end: alerts/s (wall)" in text and "0.50x" in text
    assert "target: x >= 1: 2.00 -> MET" in text
