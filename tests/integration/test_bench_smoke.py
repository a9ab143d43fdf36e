"""A tiny storm through the benchmark harness against the real broker: every figure is produced."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from stormwatch.commands import bench as bench_command
from stormwatch.config import load_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def test_storm_batched_smoke_run(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers())
    output = tmp_path / "result.json"
    args = parser.parse_args(
        [
            "bench",
            "storm-batched",
            "--alerts",
            "4000",
            "--fingerprints",
            "400",
            "--groups",
            "4",
            "--per-record",
            "100",
            "--partitions",
            "2",
            "--no-alertmanager",
            "--timeout",
            "60",
            "--workdir",
            str(tmp_path / "work"),
            "--output",
            str(output),
        ]
    )
    settings = load_settings(None, kafka={"bootstrap_servers": kafka_bootstrap})
    assert args.handler(args, settings) == 0
    table = capsys.readouterr().out
    assert "stormwatch bench storm-batched" in table and "target:" in table

    result = json.loads(output.read_text())
    assert result["sent"]["alerts"] == 4000 and result["sent"]["groups"] == 4
    assert result["floor"]["alerts"] == 4000 and result["floor"]["alerts_per_cpu_s"] > 0
    pipeline = result["pipeline"]
    for stage in ("ingest", "correlator"):
        assert pipeline[stage]["alerts_per_cpu_s"] > 0
        assert pipeline[stage]["peak_rss"] > 0
    assert pipeline["one_core_alerts_per_s"] == min(
        pipeline["ingest"]["alerts_per_cpu_s"], pipeline["correlator"]["alerts_per_cpu_s"]
    )
    assert result["ingest_metrics"]["stormwatch_alerts_received_total"] == 4000
    assert result["incidents"]["by_type"]["opened"] == 4
    assert result["incidents"]["suppression_ratio"] == round(4000 / result["incidents"]["events"], 1)
    assert 0 < result["memory"]["active_fingerprints"] <= 400
    assert result["recovery"]["restart_to_ready_s"] >= result["recovery"]["restore_s"] >= 0
    assert result["floor_ratios"]["ingest_cpu"] is not None
    assert [t["path"] for t in result["targets"]] == ["pipeline.one_core_alerts_per_s"]
