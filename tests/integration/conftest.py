"""Fixtures of the integration tests: settings with unique topics on the session broker.

The broker itself (``kafka_bootstrap``, ``cluster_bootstrap``) comes from tests/conftest.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from stormwatch.config import Settings
from stormwatch.errors import UserError
from stormwatch.kafka.topics import check_topics, create_topics, delete_topics
from tests.kit.topics import all_topics, make_settings

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="module")
def bootstrap(request: pytest.FixtureRequest) -> str:
    """The shared broker: the infra fixture when there is one, else $KAFKA_BOOTSTRAP_SERVERS."""
    try:
        return str(request.getfixturevalue("kafka_bootstrap"))
    except pytest.FixtureLookupError:
        servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not servers:
            pytest.skip("set KAFKA_BOOTSTRAP_SERVERS to run the Kafka integration tests")
        return servers


@pytest.fixture
def settings_factory() -> Iterator[SettingsFactory]:
    """``make(bootstrap, **topic_overrides) -> Settings`` with unique topic names (not created);
    the topics are deleted after the test unless STORMWATCH_TEST_KEEP_TOPICS=1."""
    made: list[Settings] = []

    def make(bootstrap: str, **topics: Any) -> Settings:
        made.append(make_settings(bootstrap, **topics))
        return made[-1]

    yield make
    if os.environ.get("STORMWATCH_TEST_KEEP_TOPICS") == "1":
        return
    for settings in made:
        try:
            delete_topics(settings, all_topics(settings), timeout_s=15)
        except UserError as exc:
            print(f"could not delete the test topics: {exc}")


@pytest.fixture
def fresh_settings(kafka_bootstrap: str, settings_factory: SettingsFactory) -> Settings:
    """Settings on the session broker with unique topic names; the topics do not exist yet."""
    return settings_factory(kafka_bootstrap)


@pytest.fixture
def settings(fresh_settings: Settings) -> Settings:
    """Settings on the session broker with unique topic names, every topic already created and
    visible with its full spec (metadata reaches every broker shortly after creation)."""
    create_topics(fresh_settings, timeout_s=30)
    deadline = time.monotonic() + 20
    while diffs := check_topics(fresh_settings, timeout_s=10):
        if time.monotonic() > deadline:
            pytest.fail(f"the test topics do not match their spec: {[str(d) for d in diffs]}", pytrace=False)
        time.sleep(0.2)
    return fresh_settings
