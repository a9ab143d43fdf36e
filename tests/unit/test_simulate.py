"""Storm simulation (stormwatch.simulate) and the pure parts of `simulate`/`publish`.

The central check: every scenario in every format goes through the real adapters without a single
dead letter, carries exactly ``--size`` distinct alerts, ends with all of them resolved, and falls
into exactly the number of correlation groups the summary promises.
"""

from __future__ import annotations

import argparse
import io
import itertools
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.commands import simulate as command
from stormwatch.errors import UserError
from stormwatch.simulate import (
    AM_GROUP_WAIT_MS,
    DEFAULT_BATCH,
    ENDS_AT_INTERVALS,
    FORMATS,
    MIN_SIZE,
    SCENARIOS,
    SIM_EPOCH_MS,
    FileFormatError,
    SimRecord,
    Simulation,
    SimulationError,
    _fnv64a_fingerprint,
    count_alerts,
    decode_line,
    encode_line,
    generate,
    shift_times,
)
from stormwatch.streams.core.routing import Router
from stormwatch.streams.core.rules import RulesConfig, parse_rules

adapters = pytest.importorskip("stormwatch.schemas.adapters", reason="the input adapters are not available")

SMALL = {"duration_ms": 100_000, "eval_interval_ms": 10_000}  # ten evaluations: fast and complete


def parse_all(sim: Simulation, start_ms: int = SIM_EPOCH_MS) -> list[tuple[SimRecord, Any]]:
    """Each record with its ParseResult, parsed at its Kafka timestamp (start + t)."""
    out = []
    for offset, record in enumerate(sim):
        result = adapters.parse_record(
            record.value,
            topic="alerts.raw",
            partition=0,
            offset=offset,
            timestamp_ms=start_ms + record.t_ms,
            headers=record.headers,
        )
        out.append((record, result))
    return out


# ------------------------------------------------------------------------- through the adapters


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_scenario_parses_cleanly_in_every_format(scenario: str, fmt: str) -> None:
    size = 12
    sim = generate(scenario, size=size, seed=7, fmt=fmt, **SMALL)
    parsed = parse_all(sim)
    assert parsed, "no records"
    last_status: dict[str, str] = {}
    router = Router(RulesConfig())
    groups: set[str] = set()
    total = 0
    previous_t = -1
    for record, result in parsed:
        assert result.dead_letters == [], result.dead_letters[0].detail
        assert result.format is not None and result.format.value == fmt
        assert record.headers["stormwatch-format"] == fmt
        assert len(result.alerts) == record.alerts == count_alerts(orjson.loads(record.value), fmt)
        assert record.t_ms >= previous_t, "records must be in time order"
        previous_t = record.t_ms
        total += len(result.alerts)
        for alert in result.alerts:
            last_status[alert.fingerprint] = alert.status.value
            if fmt != "pagerduty" or alert.status.value == "firing":  # resolves: only the dedup_key
                groups.add(router.route(alert.labels).group_key)
    summary = sim.summary
    assert total == summary.notifications
    assert summary.records == len(parsed)
    assert summary.bytes == sum(len(r.value) for r, _ in parsed)
    assert len(last_status) == size == summary.distinct_alerts
    assert set(last_status.values()) == {"resolved"}, "every scenario resolves all its alerts"
    assert len(groups) == sim.expected_groups()


@pytest.mark.parametrize("fmt", FORMATS)
def test_record_times_and_statuses_agree_with_the_payload(fmt: str) -> None:
    """Status derived from endsAt vs the record time (Prometheus) matches the sender's intent."""
    sim = generate("flapping", size=4, seed=3, fmt=fmt, **SMALL)
    flips: Counter[str] = Counter()
    status: dict[str, str] = {}
    for record, result in parse_all(sim, start_ms=SIM_EPOCH_MS):
        for alert in result.alerts:
            if status.get(alert.fingerprint) not in (None, alert.status.value):
                flips[alert.fingerprint] += 1
            status[alert.fingerprint] = alert.status.value
            assert alert.received_at.timestamp() * 1000 == SIM_EPOCH_MS + record.t_ms
    if fmt != "alertmanager":  # Alertmanager only reports the state at each group_interval
        assert max(flips.values()) >= 4, "a flapping alert flips many times in 100s"


# ---------------------------------------------------------------------- Prometheus semantics


def test_prometheus_resends_every_evaluation_with_endsat_four_intervals_ahead() -> None:
    sim = generate("node-failure", size=50, seed=1, fmt="prometheus")  # 10m, 30s evaluations
    episode_start: dict[str, str] = {}
    for record in sim:
        now = SIM_EPOCH_MS + record.t_ms
        for item in orjson.loads(record.value):
            ends = _ms(item["endsAt"])
            key = orjson.dumps(item["labels"], option=orjson.OPT_SORT_KEYS).decode()
            if ends > now:  # firing
                assert ends == now + ENDS_AT_INTERVALS * 30_000
                episode_start.setdefault(key, item["startsAt"])
                assert item["startsAt"] == episode_start[key], "startsAt is stable across re-sends"
            else:  # resolved: endsAt is the evaluation that saw it end
                assert ends <= now
                assert _ms(item["startsAt"]) < ends
            assert item["generatorURL"].startswith("http://prometheus-k8s.")
    summary = sim.summary
    assert 0.85 <= summary.resend_ratio <= 0.95, summary.resend_ratio
    assert summary.resolutions == 50


def test_records_hold_at_most_batch_alerts_and_prometheus_defaults_to_256() -> None:
    assert DEFAULT_BATCH["prometheus"] == 256
    big = generate("node-failure", size=600, seed=1, fmt="prometheus", **SMALL)
    sizes = [r.alerts for r in big]
    assert max(sizes) == 256
    small = generate("node-failure", size=60, seed=1, fmt="prometheus", batch=7, **SMALL)
    assert max(r.alerts for r in small) == 7


def test_time_strings_look_like_each_senders() -> None:
    prom = next(iter(generate("steady", size=1, seed=1, fmt="prometheus", start_ms=SIM_EPOCH_MS + 1500)))
    item = orjson.loads(prom.value)[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z", item["startsAt"])  # Go trims zeros
    pd = next(iter(generate("steady", size=1, seed=1, fmt="pagerduty")))
    assert re.fullmatch(r".+T\d\d:\d\d:\d\d\.\d{3}\+0000", orjson.loads(pd.value)["payload"]["timestamp"])


# -------------------------------------------------------------------------- other formats


def test_alertmanager_webhooks_follow_its_grouping_and_timing() -> None:
    sim = generate("node-failure", size=30, seed=2, fmt="alertmanager", **SMALL)
    first_alert_t = min(a.episodes[0][0] for a in sim.alerts)
    records = list(sim)
    assert records[0].t_ms >= first_alert_t + AM_GROUP_WAIT_MS
    for record in records:
        hook = orjson.loads(record.value)
        assert hook["version"] == "4" and hook["receiver"] == "stormwatch"
        assert hook["groupKey"].startswith("{}:{alertname=")
        assert set(hook["groupLabels"]) <= {"alertname", "cluster", "service"}
        for alert in hook["alerts"]:
            assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
            assert alert["fingerprint"] == _fnv64a_fingerprint(alert["labels"])
            if alert["status"] == "firing":
                assert alert["endsAt"] == "0001-01-01T00:00:00Z"
            assert all(alert["labels"].get(k) == v for k, v in hook["commonLabels"].items())
        statuses = {a["status"] for a in hook["alerts"]}
        assert hook["status"] == ("firing" if "firing" in statuses else "resolved")
    # Alertmanager notifies changes, not evaluations: almost no re-sends in a node failure.
    assert sim.summary.resend_ratio < 0.2


def test_alertmanager_fingerprint_is_prometheus_label_fingerprint() -> None:
    # Test vectors of prometheus/common model.labelSetToFingerprint (FNV-1a 64).
    assert int(_fnv64a_fingerprint({}), 16) == 14695981039346656037
    labels = {"name": "garland, briggs", "fear": "love is not enough"}
    assert int(_fnv64a_fingerprint(labels), 16) == 5799056148416392346


def test_pagerduty_triggers_then_resolves_by_dedup_key() -> None:
    sim = generate("bad-deploy", size=6, seed=4, fmt="pagerduty", **SMALL)
    actions: dict[str, list[str]] = defaultdict(list)
    for record in sim:
        event = orjson.loads(record.value)
        assert isinstance(event, dict), "one event per record by default"
        assert re.fullmatch(r"[0-9a-f]{32}", event["routing_key"])
        actions[event["dedup_key"]].append(event["event_action"])
        if event["event_action"] == "trigger":
            assert event["payload"]["severity"] in ("critical", "error", "warning", "info")
        else:
            assert set(event) == {"routing_key", "event_action", "dedup_key"}
    assert len(actions) == 6
    for sequence in actions.values():
        assert sequence[0] == "trigger" and "resolve" in sequence
    batched = generate("bad-deploy", size=6, seed=4, fmt="pagerduty", batch=5, **SMALL)
    assert all(isinstance(orjson.loads(r.value), list) for r in batched)


def test_cloudevents_and_native_single_and_batched_shapes() -> None:
    single = next(iter(generate("steady", size=3, seed=1, fmt="cloudevents", **SMALL)))
    event = orjson.loads(single.value)
    assert event["specversion"] == "1.0" and event["datacontenttype"] == "application/json"
    assert single.headers["content-type"] == "application/cloudevents+json"
    assert event["data"]["status"] in ("firing", "resolved")
    ids = [
        orjson.loads(r.value)["id"] for r in generate("steady", size=3, seed=1, fmt="cloudevents", **SMALL)
    ]
    assert len(ids) == len(set(ids)), "CloudEvents ids are unique per event"
    batch = next(iter(generate("node-failure", size=20, seed=1, fmt="cloudevents", batch=10, **SMALL)))
    assert isinstance(orjson.loads(batch.value), list)
    assert batch.headers["content-type"] == "application/cloudevents-batch+json"

    native_one = orjson.loads(
        next(iter(generate("steady", size=2, seed=1, fmt="native", batch=1, **SMALL))).value
    )
    assert native_one["stormwatch"] == 1 and "labels" in native_one
    native_many = orjson.loads(
        next(iter(generate("node-failure", size=9, seed=1, fmt="native", **SMALL))).value
    )
    assert native_many["stormwatch"] == 1 and isinstance(native_many["alerts"], list)


# ------------------------------------------------------------------------------- scenarios


def _firings(sim: Simulation) -> tuple[dict[str, int], dict[str, int], dict[str, dict[str, str]]]:
    """Per fingerprint: first firing t, last resolution t, labels (Prometheus format)."""
    onset: dict[str, int] = {}
    resolved: dict[str, int] = {}
    labels: dict[str, dict[str, str]] = {}
    for record, result in parse_all(sim):
        for alert in result.alerts:
            labels[alert.fingerprint] = alert.labels
            if alert.status.value == "firing":
                onset.setdefault(alert.fingerprint, record.t_ms)
            else:
                resolved.setdefault(alert.fingerprint, record.t_ms)
    return onset, resolved, labels


def test_node_failure_starts_with_nodedown_and_every_pod_is_on_that_node() -> None:
    sim = generate("node-failure", size=40, seed=5, fmt="prometheus")
    onset, resolved, labels = _firings(sim)
    (down,) = [fp for fp, ls in labels.items() if ls["alertname"] == "NodeDown"]
    node = labels[down]["node"]
    assert onset[down] == min(onset.values())
    for fp, ls in labels.items():
        assert ls["node"] == node and ls["severity"]
        if fp != down:
            assert {"pod", "namespace", "service"} <= set(ls)
    assert max(resolved.values()) < 600_000


def test_db_cascade_fires_in_dependency_order_and_recovers_in_reverse() -> None:
    for seed in range(5):
        sim = generate("db-cascade", size=60, seed=seed, fmt="prometheus")
        onset, resolved, labels = _firings(sim)
        by_service: dict[str, tuple[int, int]] = {}
        for fp, ls in labels.items():
            first, last = by_service.get(ls["service"], (onset[fp], resolved[fp]))
            by_service[ls["service"]] = (min(first, onset[fp]), max(last, resolved[fp]))
        db = next(ls["service"] for ls in labels.values() if ls.get("team") == "db")
        assert by_service[db][0] == min(onset.values()), "the database alerts first"
        assert by_service[db][1] == max(resolved.values()), "the database resolves last"
        upstream_of = {}
        for alert in sim.alerts:
            found = re.search(r"Calls from (\S+) to (\S+) time out", alert.annotations.get("description", ""))
            if found:
                upstream_of[found.group(1)] = found.group(2)
        assert upstream_of
        for service, upstream in upstream_of.items():
            assert by_service[upstream][0] < by_service[service][0], (service, upstream)
            assert by_service[upstream][1] > by_service[service][1], (service, upstream)
        severities = {ls["severity"] for ls in labels.values()}
        assert len(severities) >= 2, "severities are mixed"


def test_flapping_next_to_a_steady_alert() -> None:
    sim = generate("flapping", size=2, seed=1, fmt="prometheus")  # 10m, flapper every 5s
    flips: Counter[str] = Counter()
    state: dict[str, str] = {}
    names: dict[str, str] = {}
    for _, result in parse_all(sim):
        for alert in result.alerts:
            names[alert.fingerprint] = alert.labels["alertname"]
            if state.get(alert.fingerprint, alert.status.value) != alert.status.value:
                flips[alert.fingerprint] += 1
            state[alert.fingerprint] = alert.status.value
    by_name = {names[fp]: flips[fp] for fp in names}
    assert by_name["SearchLatencyHigh"] >= 20, "flips every few seconds for minutes"
    assert by_name["RedisMemoryHigh"] == 1, "the steady alert only resolves at the end"
    assert sim.expected_groups() == 2


def test_bad_deploy_is_one_service_version_and_three_groups() -> None:
    sim = generate("bad-deploy", size=41, seed=9, fmt="prometheus")
    versions = {(a.labels["service"], a.labels["version"]) for a in sim.alerts}
    assert len(versions) == 1
    names = Counter(a.name for a in sim.alerts)
    assert names["KubeDeploymentRolloutStuck"] == 1
    assert names["HighErrorRate"] == names["KubePodCrashLooping"] == 20
    assert sim.expected_groups() == 3
    assert sim.expected_groups(parse_rules("rules: [{name: deploy, group_by: [service, version]}]")) == 1


def test_steady_alerts_are_unrelated_and_spread_over_time() -> None:
    sim = generate("steady", size=200, seed=1, fmt="prometheus")
    assert sim.expected_groups() == 200
    starts = sorted(a.episodes[0][0] for a in sim.alerts)
    assert starts[0] < 60_000 and starts[-1] > 300_000, "new alerts keep arriving"
    records = list(sim)
    gaps = [b.t_ms - a.t_ms for a, b in itertools.pairwise(records)]
    assert max(gaps) <= 30_000, "no silent evaluation interval"


def test_mixed_holds_every_scenario_in_its_own_cluster() -> None:
    sim = generate("mixed", size=100, seed=1)
    clusters = {a.labels["cluster"] for a in sim.alerts}
    assert len(clusters) == 5
    names = {a.name for a in sim.alerts}
    assert {"NodeDown", "PostgresqlDown", "SearchLatencyHigh", "KubeDeploymentRolloutStuck"} <= names
    assert len(sim.alerts) == 100


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("size", [1, 2, 9, 37, 500])
def test_size_is_the_number_of_distinct_alerts(scenario: str, size: int) -> None:
    if size < MIN_SIZE[scenario]:
        with pytest.raises(SimulationError, match="--size must be at least"):
            generate(scenario, size=size, seed=1)
        return
    sim = generate(scenario, size=size, seed=1, **SMALL)
    assert len({frozenset(a.labels.items()) for a in sim.alerts}) == size
    assert sim.summary.distinct_alerts == size


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_same_seed_gives_the_same_bytes(fmt: str) -> None:
    def run(seed: int) -> list[bytes]:
        return [encode_line(r, SIM_EPOCH_MS) for r in generate("mixed", size=40, seed=seed, fmt=fmt, **SMALL)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_other_durations_and_intervals_keep_every_promise() -> None:
    for duration_ms, eval_ms in (
        (600_000, 30_000),
        (300_000, 30_000),
        (60_000, 5_000),
        (10_000, 1_000),
        (3_600_000, 60_000),
    ):
        for scenario in SCENARIOS:
            sim = generate(scenario, size=20, seed=2, duration_ms=duration_ms, eval_interval_ms=eval_ms)
            for alert in sim.alerts:
                assert alert.episodes[-1][1] < duration_ms
            assert all(not result.dead_letters for _, result in parse_all(sim))


def test_invalid_parameters_are_refused_with_the_fix() -> None:
    with pytest.raises(SimulationError, match="unknown scenario"):
        generate("meteor", size=5, seed=1)
    with pytest.raises(SimulationError, match="unknown format"):
        generate("steady", size=5, seed=1, fmt="syslog")
    with pytest.raises(SimulationError, match="at least 10 evaluation intervals"):
        generate("steady", size=5, seed=1, duration_ms=60_000)
    with pytest.raises(SimulationError, match="--batch"):
        generate("steady", size=5, seed=1, batch=0)


def test_a_million_alert_storm_is_generated_quickly() -> None:
    started = time.perf_counter()
    sim = generate("node-failure", size=5_000, seed=1)  # ~90k notifications
    for _ in sim:
        pass
    elapsed = time.perf_counter() - started
    assert sim.summary.notifications > 80_000
    # About 2 s per million on the development machine; generous for noisy CI hosts.
    assert elapsed < 5.0, f"{sim.summary.notifications / elapsed:,.0f} alerts/s"


# ----------------------------------------------------------------------------- file format


def test_lines_round_trip() -> None:
    record = SimRecord(
        1500, {"stormwatch-format": "native"}, b'{"stormwatch":1,"labels":{"a":"b"}}', 1, b"k1"
    )
    line = encode_line(record, SIM_EPOCH_MS)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    decoded = decode_line(line, 1)
    assert decoded is not None
    assert decoded.t_ms == 1500 and decoded.t0_ms == SIM_EPOCH_MS and decoded.key == "k1"
    assert decoded.headers == {"stormwatch-format": "native"}
    assert orjson.dumps(decoded.value) == record.value
    assert decode_line(b"   \n", 2) is None


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"{not json", "line 3: not JSON"),
        (b"[1]", "expected a JSON object"),
        (b'{"t": -1, "value": 1}', '"t" must be a non-negative integer'),
        (b'{"t": "5", "value": 1}', '"t" must be a non-negative integer'),
        (b'{"t": 5}', '"value" is missing'),
        (b'{"t": 5, "value": 1, "headers": {"a": 1}}', '"headers" must be an object of strings'),
        (b'{"t": 5, "value": 1, "t0": "x"}', '"t0" must be an integer'),
        (b'{"t": 5, "value": 1, "key": 3}', '"key" must be a string or null'),
        (b'{"t": 5, "value": 1, "time": 3}', "unknown field 'time'"),
    ],
)
def test_bad_lines_name_the_line_and_the_problem(line: bytes, message: str) -> None:
    with pytest.raises(FileFormatError, match=re.escape(message)):
        decode_line(line, 3)


def test_shift_times_moves_times_and_nothing_else() -> None:
    doc = {
        "time": "2025-01-01T00:00:00Z",
        "labels": {"time": "2025-01-01T00:00:00Z"},
        "annotations": {"startsAt": "2025-01-01T00:00:00Z"},
        "data": [
            {"startsAt": "2025-01-01T00:00:01.5Z", "endsAt": "0001-01-01T00:00:00Z"},
            {"starts_at": 1735689600, "ends_at": 1735689600500, "status": "firing"},
            {"payload": {"timestamp": "2025-01-01T00:00:00.250+0000", "custom_details": {"time": "x"}}},
        ],
        "id": "2025-01-01T00:00:00Z",
    }
    shift_times(doc, 90_000)
    assert doc["time"] == "2025-01-01T00:01:30.000Z"
    assert doc["labels"] == {"time": "2025-01-01T00:00:00Z"}
    assert doc["annotations"] == {"startsAt": "2025-01-01T00:00:00Z"}
    assert doc["data"][0] == {"startsAt": "2025-01-01T00:01:31.500Z", "endsAt": "0001-01-01T00:00:00Z"}
    assert doc["data"][1]["starts_at"] == 1735689690 and doc["data"][1]["ends_at"] == 1735689690500
    assert doc["data"][2]["payload"]["timestamp"] == "2025-01-01T00:01:30.250Z"
    assert doc["id"] == "2025-01-01T00:00:00Z"
    same = {"time": "2025-01-01T00:00:00Z"}
    assert shift_times(same, 0) == {"time": "2025-01-01T00:00:00Z"}


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_shifted_replay_parses_to_the_same_alerts_at_the_new_time(fmt: str) -> None:
    delta = 400 * 24 * 3600 * 1000 + 123
    for offset, record in enumerate(generate("db-cascade", size=10, seed=1, fmt=fmt, **SMALL)):
        original = adapters.parse_record(
            record.value, topic="r", partition=0, offset=offset,
            timestamp_ms=SIM_EPOCH_MS + record.t_ms, headers=record.headers,
        )  # fmt: skip
        moved = orjson.dumps(shift_times(orjson.loads(record.value), delta))
        replayed = adapters.parse_record(
            moved, topic="r", partition=0, offset=offset,
            timestamp_ms=SIM_EPOCH_MS + delta + record.t_ms, headers=record.headers,
        )  # fmt: skip
        assert not replayed.dead_letters
        assert [(a.fingerprint, a.status, a.labels) for a in replayed.alerts] == [
            (a.fingerprint, a.status, a.labels) for a in original.alerts
        ]
        for old, new in zip(original.alerts, replayed.alerts, strict=True):
            assert (new.starts_at - old.starts_at).total_seconds() * 1000 == delta


def test_count_alerts_per_format() -> None:
    assert count_alerts([{"labels": {}}] * 3, "prometheus") == 3
    assert count_alerts({"labels": {"a": "b"}}, None) == 1
    assert count_alerts({"version": "4", "alerts": [{}, {}]}, "alertmanager") == 2
    assert count_alerts({"event_action": "trigger"}, "pagerduty") == 1
    assert count_alerts([{"event_action": "trigger"}] * 4, None) == 4
    assert (
        count_alerts([{"specversion": "1.0", "data": [{}, {}]}, {"specversion": "1.0", "data": {}}], None)
        == 3
    )
    assert count_alerts({"specversion": "1.0", "data": {"stormwatch": 1, "alerts": [{}] * 5}}, None) == 5
    assert count_alerts({"stormwatch": 1, "alerts": [{}] * 2}, "native") == 2
    assert count_alerts(None, "native") == 0


# ----------------------------------------------------------------------------- the commands


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stormwatch")
    sub = p.add_subparsers(dest="command")
    command.register(sub)
    return p


def run(argv: list[str]) -> int:
    from stormwatch.config import Settings

    args = parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args, Settings())
    return result


def test_simulate_writes_a_file_and_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "storm.jsonl"
    assert run(["simulate", "node-failure", "--size", "25", "--duration", "2m", "--eval-interval", "10s",
                "--out", str(out)]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert re.search(r"node-failure \(prometheus, seed 1\): 25 distinct alerts, [\d,]+ notifications", err)
    assert "correlation groups with the built-in rules" in err
    lines = out.read_bytes().splitlines()
    records = [decode_line(line, i) for i, line in enumerate(lines, 1)]
    assert all(r is not None and r.t0_ms == SIM_EPOCH_MS for r in records)
    again = tmp_path / "again.jsonl"
    run(["simulate", "node-failure", "--size", "25", "--duration", "2m", "--eval-interval", "10s",
         "--out", str(again), "-q"])  # fmt: skip
    assert again.read_bytes() == out.read_bytes()
    assert capsys.readouterr().err == ""


def test_simulate_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(["simulate", "bad-deploy", "--size", "9", "--format", "native", "--duration", "100s",
         "--eval-interval", "10s", "--out", str(tmp_path / "x.jsonl"), "--json", "-q"])  # fmt: skip
    summary = orjson.loads(capsys.readouterr().out)["simulation"]
    assert summary["distinct_alerts"] == 9 and summary["expected_groups"] == 3
    assert summary["format"] == "native" and summary["rules"] == "the built-in rules"


def test_simulate_refuses_flags_that_cannot_apply(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--json prints to stdout"):
        run(["simulate", "steady", "--json"])
    with pytest.raises(UserError, match="add --to-kafka"):
        run(["simulate", "steady", "--rate", "100", "--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="at least 10 evaluation intervals"):
        run(["simulate", "steady", "--duration", "1m", "--out", str(tmp_path / "x")])
    with pytest.raises(UserError, match="invalid --start"):
        run(["simulate", "steady", "--start", "yesterday", "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit):
        run(["simulate", "steady", "--duration", "10x"])


def test_parse_start() -> None:
    now = 1_800_000_000_000
    assert command.parse_start("now", "--start", now_ms=now) == now
    assert command.parse_start("now-15m", "--start", now_ms=now) == now - 900_000
    assert command.parse_start("-1h", "--start", now_ms=now) == now - 3_600_000
    assert command.parse_start("now+30s", "--start", now_ms=now) == now + 30_000
    assert command.parse_start("2025-01-01T00:00:00Z", "--start", now_ms=now) == SIM_EPOCH_MS
    assert command.parse_start("2025-01-01T01:00:00+01:00", "--start", now_ms=now) == SIM_EPOCH_MS
    assert command.parse_start("2025-01-01 00:00:00", "--start", now_ms=now) == SIM_EPOCH_MS
    assert command.parse_start(str(SIM_EPOCH_MS), "--start", now_ms=now) == SIM_EPOCH_MS
    assert command.parse_start("file", "--start", now_ms=now, allow_file=True) == "file"
    with pytest.raises(UserError, match="invalid --start 'file'"):
        command.parse_start("file", "--start", now_ms=now)
    with pytest.raises(UserError, match="invalid duration"):
        command.parse_start("now-5x", "--start", now_ms=now)


def test_file_records_move_times_to_the_start_and_count_alerts() -> None:
    sim = generate("node-failure", size=12, seed=1, **SMALL)
    data = b"".join(encode_line(r, SIM_EPOCH_MS) for r in sim)
    start = SIM_EPOCH_MS + 86_400_000
    out = list(command.file_records(io.BytesIO(b"\n" + data), start))
    assert len(out) == sim.summary.records
    assert sum(r.alerts for r in out) == sim.summary.notifications
    for offset, record in enumerate(out):
        assert record.timestamp_ms == start + record.t_ms
        assert record.headers == [("stormwatch-format", b"prometheus")]
        result = adapters.parse_record(
            record.value, topic="r", partition=0, offset=offset, timestamp_ms=record.timestamp_ms,
            headers=dict(record.headers),
        )  # fmt: skip
        assert not result.dead_letters and len(result.alerts) == record.alerts
    kept = list(command.file_records(io.BytesIO(data), "file"))
    assert [r.value for r in kept] == [r.value for r in generate("node-failure", size=12, seed=1, **SMALL)]
    with pytest.raises(FileFormatError, match='line 1: --start file needs "t0"'):
        list(command.file_records(io.BytesIO(b'{"t": 0, "value": [{"labels": {"a": "b"}}]}\n'), "file"))


def test_publish_refuses_a_missing_file() -> None:
    with pytest.raises(UserError, match=re.escape("cannot read /nonexistent/storm.jsonl")):
        run(["publish", "/nonexistent/storm.jsonl"])


def test_report_rendering() -> None:
    report = command.PublishReport("alerts.raw", records=10, alerts=2560, bytes=3 * 1024 * 1024,
                                   delivered=9, failed=1, elapsed_s=2.0,
                                   first_timestamp_ms=SIM_EPOCH_MS, last_timestamp_ms=SIM_EPOCH_MS + 5000,
                                   error="Broker: Message size too large", error_record=4)  # fmt: skip
    text = command.render_report(report)
    assert "published 10 records (2,560 alerts, 3.0 MiB) to alerts.raw in 2.00s" in text
    assert "9 delivered, 1 failed; 5.0 records/s, 1,280 alerts/s" in text
    assert "2025-01-01T00:00:00.000Z .. 2025-01-01T00:00:05.000Z" in text
    d = report.to_dict()
    assert d["unconfirmed"] == 0 and d["error_record"] == 4


def _ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text).timestamp() * 1000)


# ---------------------------------------------------------------------------- topology-cascade


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_topology_cascade_follows_the_service_catalog(seed: int) -> None:
    """What `make up`'s demo sends: a database outage whose dependents are the services that call
    it within 3 hops in the catalog deploy/topology.yaml describes, each calling the level above."""
    from stormwatch.storms import TOPOLOGY, dependents

    sim = generate("topology-cascade", size=300, seed=seed, **SMALL)
    (db,) = {a.labels["service"] for a in sim.alerts if a.name == "PostgresqlDown"}
    levels = [set(level) for level in dependents(db, 3)]
    services = {a.labels["service"] for a in sim.alerts} - {db}
    assert services == set().union(*levels)
    for alert in sim.alerts:
        found = re.search(r"Calls from (\S+) to (\S+) time out", alert.annotations.get("description", ""))
        if found:
            assert found.group(2) in TOPOLOGY[found.group(1)].depends_on
    # fewer alerts, fewer services: the nearest first, each with at least one alert
    small = {a.labels["service"] for a in generate("topology-cascade", size=6, seed=seed, **SMALL).alerts}
    small -= {db}
    assert len(small) == 3 and small <= levels[0] | levels[1]
    assert levels[0] <= small or small <= levels[0]
