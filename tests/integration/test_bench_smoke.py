"""A tiny storm through the benchmark harness against the real broker: every figure is produced."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from stormwatch.commands import bench as bench_command
from stormwatch.config import load_settings

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


def _bench(kafka_bootstrap: str, tmp_path: Path, workload: str, *argv: str) -> tuple[str, dict[str, Any]]:
    """``stormwatch bench WORKLOAD ARGV`` on the test broker: its table and its JSON result."""
    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers())
    output = tmp_path / "result.json"
    args = parser.parse_args(
        ["bench", workload, *argv, "--workdir", str(tmp_path / "work"), "--output", str(output)]
    )
    settings = load_settings(None, kafka={"bootstrap_servers": kafka_bootstrap})
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert args.handler(args, settings) == 0
    result: dict[str, Any] = json.loads(output.read_text())
    return stdout.getvalue(), result


def test_storm_batched_smoke_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    table, result = _bench(
        kafka_bootstrap,
        tmp_path,
        "storm-batched",
        *("--alerts", "4000", "--fingerprints", "400", "--groups", "4", "--per-record", "100"),
        *("--partitions", "2", "--no-alertmanager", "--timeout", "60"),
    )
    assert "stormwatch bench storm-batched" in table and "target:" in table
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


def test_storm_http_smoke_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    """storm-http: the storm POSTed to a gateway process in front of the pipeline (no Alertmanager
    here: its half of the run waits group_wait + 10 s of its own)."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("defaults: {group_wait: 1s, group_interval: 2s}\n")
    table, result = _bench(
        kafka_bootstrap,
        tmp_path,
        "storm-http",
        *("--alerts", "2000", "--fingerprints", "200", "--groups", "4", "--per-record", "100"),
        *("--partitions", "2", "--rules", str(rules), "--no-floor", "--no-alertmanager"),
        *("--timeout", "60"),
    )
    assert "stormwatch bench storm-http" in table
    assert (
        result["sent"]["alerts"] == 2000 and result["client"]["requests"] == result["sent"]["records"] == 20
    )
    assert result["gateway_metrics"]["stormwatch_gateway_alerts_accepted_total"] == 2000
    assert result["ingest_metrics"]["stormwatch_alerts_received_total"] == 2000
    pipeline = result["pipeline"]
    for stage in ("gateway", "ingest", "correlator"):
        assert pipeline[stage]["cpu_s"] > 0 and pipeline[stage]["peak_rss"] > 0
    total = sum(pipeline[stage]["cpu_s"] for stage in ("gateway", "ingest", "correlator"))
    assert pipeline["cpu_us_per_alert"] == pytest.approx(total / 2000 * 1e6, rel=0.01)
    assert result["incidents"]["by_type"]["opened"] == 4
    assert [t["met"] for t in result["targets"]] == [None, None]  # Alertmanager skipped: no ratio


def test_idle_smoke_run(kafka_bootstrap: str, tmp_path: Path) -> None:
    """idle: no alerts, two partitions, a few seconds; ingest's ticks are measured and read back."""
    table, result = _bench(
        kafka_bootstrap,
        tmp_path,
        "idle",
        *("--partitions", "2", "--warmup", "2", "--seconds", "3", "--timeout", "60"),
    )
    assert "stormwatch bench idle" in table and "fit: records/min" in table
    (run,) = result["runs"]
    assert run["partitions"] == 2 and not run["linker"] and run["seconds"] >= 3
    # Idle, what is written depends on the tick policy: every figure that is there adds up.
    for figures in [*run["topics"].values(), run["total"]]:
        assert figures["offsets_per_min"] == pytest.approx(
            figures["records_per_min"] + figures["markers_per_min"], abs=0.1 * (len(run["topics"]) + 2)
        )  # each rounded to 0.1
        assert figures["log_bytes_per_min_est"] >= figures["payload_bytes_per_min"] >= 0
    assert set(run["stages"]) == {"ingest", "correlator"}
    for stage in run["stages"].values():
        assert stage["workers"] == 1 and stage["transactions_per_s"] >= 0 and stage["cpu_pct"] >= 0
    for internal in run["internal"].values():  # Kafka's internal topics, when they exist
        assert internal["offsets_per_min"] >= internal["ours_offsets_per_min"] >= 0
    assert result["fit"]["records_per_min"] is None  # one partition count: nothing to fit
