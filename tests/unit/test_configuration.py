"""Configuration: precedence, masking, and the generated reference page."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormwatch.config import ConfigError, load_settings
from stormwatch.configdoc import masked, render_markdown, undocumented
from stormwatch.kafka.txloop import stage_consumer_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_option_is_documented() -> None:
    assert undocumented() == []


def test_committed_reference_is_current() -> None:
    assert DOC.read_text() == render_markdown(), (
        "docs/configuration.md is stale: run `stormwatch config docs > docs/configuration.md`"
    )


def test_precedence_file_env_and_kafka_bootstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("topics: {raw: from.file, dlq: file.dlq}\nkafka: {bootstrap_servers: file:9092}\n")
    monkeypatch.setenv("STORMWATCH_TOPICS__RAW", "from.env")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "env:9092")
    s = load_settings(cfg)
    assert s.topics.raw == "from.env" and s.topics.dlq == "file.dlq"
    assert s.kafka.bootstrap_servers == "env:9092"
    assert load_settings(cfg, topics={"raw": "flag"}).topics.raw == "flag"


def test_bad_files_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("topics: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:1: topics: expected a mapping with keys: "):
        load_settings(bad)


def test_secrets_are_masked_and_not_in_repr() -> None:
    s = load_settings(None, kafka={"sasl_password": "hunter2"}, gateway={"bearer_token": "tok"})
    shown = masked(s)
    assert shown["kafka"]["sasl_password"] == "***" and shown["gateway"]["bearer_token"] == "***"
    assert "hunter2" not in repr(s) and "tok'" not in repr(s.gateway)


def test_max_poll_interval_is_the_stages_rebalance_timeout() -> None:
    """The stages announce kafka.max_poll_interval_ms (60 s by default, not librdkafka's 300 s)
    as their rebalance timeout; an agent that runs long commands can still override it."""
    assert stage_consumer_config(load_settings(), "g")["max.poll.interval.ms"] == 60_000
    tuned = load_settings(kafka={"max_poll_interval_ms": 20_000})
    assert stage_consumer_config(tuned, "g")["max.poll.interval.ms"] == 20_000
    overridden = stage_consumer_config(tuned, "g", {"max.poll.interval.ms": 900_000})
    assert overridden["max.poll.interval.ms"] == 900_000


def test_max_poll_interval_below_the_session_timeout_is_refused() -> None:
    with pytest.raises(ConfigError, match="max_poll_interval_ms"):
        load_settings(kafka={"max_poll_interval_ms": 5_000})
