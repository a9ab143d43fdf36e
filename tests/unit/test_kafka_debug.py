"""kafka.debug: librdkafka's debug contexts for diagnosing a stalled group or transaction.

No broker: librdkafka checks the ``debug`` property when a client is created.
"""

from __future__ import annotations

import pytest
from confluent_kafka import Producer

from stormwatch.config import LIBRDKAFKA_DEBUG_CONTEXTS, ConfigError, load_settings
from stormwatch.kafka.client import base_config


def test_off_by_default_and_librdkafka_logs_through_python() -> None:
    settings = load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"})
    conf = base_config(settings)
    assert "debug" not in conf
    assert "logger" in conf


def test_from_the_environment_its_lines_go_to_stderr_with_their_own_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STORMWATCH_KAFKA__DEBUG", " cgrp, eos ")
    conf = base_config(load_settings(kafka={"bootstrap_servers": "127.0.0.1:1"}))
    assert conf["debug"] == "cgrp,eos"
    assert "logger" not in conf  # through the logger a line would wait for the client's next poll


def test_an_unknown_context_is_refused_with_the_ones_allowed() -> None:
    with pytest.raises(ConfigError, match=r"debug.*unknown librdkafka debug context\(s\) group.*cgrp"):
        load_settings(kafka={"debug": "cgrp,group"})
    with pytest.raises(ConfigError, match="none given"):
        load_settings(kafka={"debug": " , "})


@pytest.mark.parametrize("context", LIBRDKAFKA_DEBUG_CONTEXTS)
def test_librdkafka_takes_every_context_allowed(context: str, capfd: pytest.CaptureFixture[str]) -> None:
    conf = base_config(load_settings(kafka={"bootstrap_servers": "127.0.0.1:1", "debug": context}))
    Producer({**conf, "socket.connection.setup.timeout.ms": 1000}).flush(0)
    capfd.readouterr()  # librdkafka's own lines
