"""The unit level runs without a broker: a unit test that asks for one fails with where it belongs.

The session fixtures of tests/conftest.py would start Kafka for any test that requests them;
overridden here, ``pytest tests/unit`` stays broker-free (and fast) by construction.
"""

from __future__ import annotations

import pytest

NO_BROKER = "unit tests run without Kafka: a test that needs {} belongs in tests/integration"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    pytest.fail(NO_BROKER.format("a broker"), pytrace=False)


@pytest.fixture(scope="session")
def cluster_bootstrap() -> str:
    pytest.fail(NO_BROKER.format("the 3-broker cluster"), pytrace=False)
