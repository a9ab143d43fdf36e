"""The hour-long chaos run's memory verdict: a catch-up's transient peak is told apart from what a
process keeps once it settled."""

from __future__ import annotations

from stormwatch.bench.chaos import FaultRecord, Sample, memory_verdict


def _samples(rss_at: dict[int, float], minutes: int = 40) -> list[Sample]:
    """One sample a minute of one process, c1: 100 MB but at the minutes ``rss_at`` gives."""
    out = []
    for minute in range(minutes + 1):
        out.append(
            Sample(
                t_s=minute * 60.0,
                rss={"c1": rss_at.get(minute, 100.0)},
                lag={},
                accepted_per_s=0.0,
                refused_per_s=0.0,
                backlog=0,
                load=0.0,
            )
        )
    return out


FAULT = FaultRecord("broker crash", "kafka", "", start_s=34 * 60.0, healed_s=35 * 60.0, recovered_s=60.0)


def test_a_transient_peak_during_a_fault_is_not_settled_growth() -> None:
    samples = _samples({35: 700.0, 36: 500.0})  # back to 100 MB by minute 37
    verdict = memory_verdict(samples, {}, 10 * 60.0, [FAULT])["c1"]
    assert verdict["judged"]
    assert verdict["slope_mb_per_min"] > 1.0  # the peak tilts a fit over every sample
    assert verdict["settled_slope_mb_per_min"] == 0.0


def test_memory_kept_after_a_fault_settled_still_counts() -> None:
    samples = _samples({m: 130.0 for m in range(35, 41)})  # a 30 MB step that stays
    verdict = memory_verdict(samples, {}, 10 * 60.0, [FAULT])["c1"]
    assert verdict["settled_slope_mb_per_min"] > 0.5  # over 0.1 MB/min: the run fails it


def test_a_fault_that_never_recovered_leaves_the_rest_of_the_run_out() -> None:
    unrecovered = FaultRecord("broker crash", "kafka", "", start_s=30 * 60.0, healed_s=31 * 60.0)
    samples = _samples({m: 100.0 + 50 * (m - 30) for m in range(30, 41)})
    verdict = memory_verdict(samples, {}, 10 * 60.0, [unrecovered])["c1"]
    assert verdict["settled_slope_mb_per_min"] == 0.0
