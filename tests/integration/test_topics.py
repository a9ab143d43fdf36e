"""Topic provisioning: the specs (pure), and `stormwatch topics create|check|list` on a real broker."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from stormwatch.cli import main
from stormwatch.config import Settings, load_settings
from stormwatch.errors import UserError
from stormwatch.kafka.topics import Difference, check_topics, create_topics, topic_specs

# --- the specs (no broker) ----------------------------------------------------------------------


def _specs(**topics: Any) -> dict[str, Any]:
    return {s.role: s for s in topic_specs(load_settings(topics=topics))}


def test_every_topic_has_explicit_partitions_replication_and_retention() -> None:
    specs = _specs()
    assert set(specs) == {
        "raw",
        "dlq",
        "incidents",
        "commands",
        "mitigation_commands",
        "mitigation_results",
        "approvals",
        "correlator_input",
        "correlator_state",
        "silences",
        "agent_state",
        "topology",
        "linker_input",
        "linker_state",
        "correlator_clock",
        "notifications",
        "notifications_dlq",
        "notify_state",
    }
    for spec in specs.values():
        assert spec.partitions >= 1 and spec.replication == 1
        assert spec.config["cleanup.policy"] in ("delete", "compact")
        if spec.config["cleanup.policy"] == "delete":
            assert "retention.ms" in spec.config
        assert "min.insync.replicas" not in spec.config  # meaningless with one replica


def test_incident_audit_topic_is_kept_forever() -> None:
    incidents = _specs(max_message_bytes=8 * 1024 * 1024)["incidents"]
    assert incidents.config == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "max.message.bytes": str(8 * 1024 * 1024),
    }


def test_state_topics_are_compacted_and_sized_like_their_input() -> None:
    specs = _specs(partitions=12, dlq_retention_ms=1234)
    for role in ("correlator_state", "silences", "agent_state", "topology", "notify_state", "linker_state"):
        assert specs[role].config["cleanup.policy"] == "compact"
    assert specs["linker_state"].partitions == specs["linker_input"].partitions == 12
    assert specs["notify_state"].partitions == specs["incidents"].partitions == 12
    assert (
        specs["silences"].partitions
        == specs["topology"].partitions
        == specs["correlator_clock"].partitions
        == 1
    )
    assert specs["correlator_clock"].config["cleanup.policy"] == "compact"
    assert specs["correlator_state"].partitions == specs["correlator_input"].partitions == 12
    assert specs["dlq"].config["retention.ms"] == "1234"
    # a raw record over ingest.max_record_bytes is dead-lettered whole, so raw takes a little more
    assert int(specs["raw"].config["max.message.bytes"]) > load_settings().ingest.max_record_bytes


def test_compacted_topics_close_their_segments_so_compaction_runs() -> None:
    """Kafka compacts only closed segments; a slowly written state topic never fills one, and each
    restore read every record written since the start (hour run 4, docs/reliability.md)."""
    compacted = [s for s in _specs().values() if s.config["cleanup.policy"] == "compact"]
    assert len(compacted) == 7
    assert {s.config["segment.ms"] for s in compacted} == {str(10 * 60 * 1000)}


def test_replicated_topics_get_min_insync_replicas() -> None:
    specs = _specs(replication_factor=3, min_insync_replicas=2)
    for spec in specs.values():
        assert spec.replication == 3
        assert spec.config["min.insync.replicas"] == "2"


@pytest.mark.parametrize(
    ("topics", "message"),
    [
        ({"replication_factor": 2, "min_insync_replicas": 3}, "min_insync_replicas"),
        ({"dlq": "same", "incidents": "same"}, "same is configured more than once"),
        ({"max_message_bytes": 1024 * 1024}, "cannot hold the dead letter"),
    ],
)
def test_inconsistent_topic_settings_are_refused(topics: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message):
        topic_specs(load_settings(topics=topics))


def test_list_without_kafka_shows_the_specs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--bootstrap-servers", "127.0.0.1:1", "topics", "list", "--no-check", "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert [r["role"] for r in rows][:3] == ["raw", "dlq", "incidents"]
    assert "status" not in rows[0]


def test_unreachable_kafka_is_one_actionable_line(capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    rc = main(["--bootstrap-servers", "127.0.0.1:1", "topics", "check", "--timeout", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert time.monotonic() - started < 10
    (line,) = err.splitlines()
    assert line.startswith("stormwatch topics: error: cannot reach Kafka at 127.0.0.1:1 (")
    assert "within 1s); start it with `make kafka-up` or set KAFKA_BOOTSTRAP_SERVERS" in line


# --- against the broker -------------------------------------------------------------------------


def _cli(settings: Settings, tmp_path: Path, *args: str) -> int:
    """Run the real entry point with a config file naming this test's topics."""
    config = tmp_path / "stormwatch.yaml"
    config.write_text(yaml.safe_dump({"topics": settings.topics.model_dump()}))
    return main(["--config", str(config), "--bootstrap-servers", settings.kafka.bootstrap_servers, *args])


def _eventually(check: Callable[[], list[Difference]], want: set[Difference], timeout_s: float = 15) -> None:
    """Metadata and config changes reach every broker shortly after the controller accepts them."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = set(check())
        if got == want or time.monotonic() > deadline:
            assert got == want
            return
        time.sleep(0.3)


@pytest.mark.kafka
def test_create_then_check_pass_on_fresh_topics(
    fresh_settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [s.name for s in topic_specs(fresh_settings)]
    assert _cli(fresh_settings, tmp_path, "topics", "create") == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [f"created: {n}" for n in names]

    _eventually(lambda: check_topics(fresh_settings), set())
    assert _cli(fresh_settings, tmp_path, "topics", "check") == 0
    assert f"all {len(names)} topics match" in capsys.readouterr().out

    assert _cli(fresh_settings, tmp_path, "topics", "list", "--json") == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert {r["name"]: r["status"] for r in rows} == dict.fromkeys(names, "ok")


@pytest.mark.kafka
def test_create_is_idempotent(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [s.name for s in topic_specs(settings)]
    report = create_topics(settings)
    assert report.created == [] and report.existing == names and report.differences == []
    assert _cli(settings, tmp_path, "topics", "create") == 0
    assert capsys.readouterr().out.splitlines() == [f"exists:  {n}" for n in names]


@pytest.mark.kafka
def test_check_reports_every_difference(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = settings.topics
    admin = AdminClient(settings.kafka.client_config())
    changed = ConfigResource(
        "topic",
        t.incidents,
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for future in admin.incremental_alter_configs([changed]).values():
        future.result(timeout=15)
    for future in admin.create_partitions([NewPartitions(t.raw, 8)]).values():
        future.result(timeout=15)
    for future in admin.delete_topics([t.silences], operation_timeout=15).values():
        future.result(timeout=20)

    expected = {
        Difference(t.incidents, "retention.ms", "-1", "3600000"),
        Difference(t.raw, "partitions", "6", "8"),
        Difference(t.silences, "topic", "present", "missing"),
    }
    _eventually(lambda: check_topics(settings), expected)

    assert _cli(settings, tmp_path, "topics", "check") == 1
    out = capsys.readouterr().out
    assert f"differs: {t.incidents}: retention.ms is 3600000, expected -1" in out
    assert f"differs: {t.raw}: partitions is 8, expected 6" in out
    assert f"differs: {t.silences}: topic is missing, expected it to exist" in out

    # create recreates the missing topic, but never touches the existing ones: still exit 1
    assert _cli(settings, tmp_path, "topics", "create") == 1
    out = capsys.readouterr().out
    assert f"created: {t.silences}" in out
    assert f"differs: {t.incidents}: retention.ms is 3600000, expected -1" in out
    _eventually(
        lambda: check_topics(settings), expected - {Difference(t.silences, "topic", "present", "missing")}
    )


@pytest.mark.kafka
def test_replication_beyond_the_brokers_is_a_user_error(kafka_bootstrap: str, settings_factory: Any) -> None:
    brokers = len(AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).brokers)
    settings = settings_factory(kafka_bootstrap, replication_factor=brokers + 1)
    with pytest.raises(UserError, match=r"lower topics\.replication_factor"):
        create_topics(settings)
