"""Session fixtures shared by every level: a real Kafka, started only when a test asks for one.

Where ``kafka_bootstrap`` comes from, first match wins:

1. ``KAFKA_BOOTSTRAP_SERVERS``: an existing broker, never started or stopped here;
2. a Docker engine that answers within a few seconds: a throwaway ``apache/kafka`` container
   (testcontainers), removed at the end of the session;
3. ``deploy/kafka/local-kafka.sh``: a broker of its own on 127.0.0.1:18092 with its data in
   ``var/kafka/test``, stopped at the end of the session if this session started it.

``STORMWATCH_TEST_KAFKA=local`` or ``=docker`` skips the choice between 2 and 3. The 3-node
cluster for ``cluster`` tests (``cluster_bootstrap``) comes from ``KAFKA_CLUSTER_BOOTSTRAP_SERVERS``
or the script (brokers on 127.0.0.1:28092-28094, data in ``var/kafka/test-cluster``; stopped
after the module that asked for it).
Tests that use these fixtures get the ``kafka`` / ``cluster`` marker automatically, so
``pytest -m "not kafka"`` selects the tests that need no broker.

The helpers behind them are in tests/kit; each level's own fixtures are in its conftest.py.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from tests.kit.kafka import ScriptKafka, docker_answers, docker_broker
from tests.kit.paths import ROOT
from tests.kit.ports import free_port, worker_dir, worker_port
from tests.kit.workers import STARTED_LOGS, log_tails

KAFKA_IMAGE = "apache/kafka:4.1.1"  # the version pinned in deploy/kafka/pom.xml
# Moved by 10 per pytest-xdist worker after gw0 (tests.kit.ports.worker_port), data dirs too.
TEST_PORT = worker_port(int(os.environ.get("STORMWATCH_TEST_KAFKA_PORT", "18092")))
TEST_CLUSTER_PORT = worker_port(int(os.environ.get("STORMWATCH_TEST_CLUSTER_PORT", "28092")))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark tests by the broker they need, so ``-m`` can select or skip them; run the fault tests
    last (a stable sort: every other order is kept). With ``make test``'s two workers the unit
    tests are over by then, so the faults, whose storms must outlast broker restarts, have the
    second core to themselves rather than racing the unit tests for it."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "kafka_bootstrap" in names:
            item.add_marker(pytest.mark.kafka)
        if "cluster_bootstrap" in names:
            item.add_marker(pytest.mark.cluster)
    items.sort(key=lambda item: item.nodeid.startswith("tests/faults/"))


_FIRST_LOG = pytest.StashKey[int]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FIRST_LOG] = len(STARTED_LOGS)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A failed test's report ends with the tails of the worker logs it (or its fixtures) started."""
    report = yield
    if report.failed and (logs := STARTED_LOGS[item.stash.get(_FIRST_LOG, len(STARTED_LOGS)) :]):
        report.sections.append(("worker logs", log_tails(logs)))
    return report


BROKER_TESTS = "brokers"
"""The pytest-xdist work unit of the tests outside tests/unit (see pytest_xdist_make_scheduler)."""
LIGHT_BROKER_TESTS = "brokers-light"
"""The work unit of the broker tests below: no broker stopped, nothing asserted against the wall
clock beyond generous bounds, nor on a kill landing at a given moment (a killed notifier is judged
by counts). Most use the session broker; the SASL and 3-node cluster modules start their own,
which nothing stops. They run beside the fault tests instead of after them: with them in the other
unit the suite took 25:00 on 2 cores while this worker idled for 20 minutes, and with the SASL,
bad-input, cluster, notifier and agent-process modules still there, 28:05 (2026-12-07: 1,669 s of
tests in the other unit, 921 s here). The TLS module stays there: beside the fault tests its
refused-certificate case once took 25 s to give up, over its 20 s bound."""
LIGHT_BROKER_MODULES = frozenset(
    f"tests/integration/{name}.py"
    for name in (
        "test_adapters_kafka",
        "test_agent",
        "test_agent_processes",
        "test_alertmanager_api_kafka",
        "test_bench_smoke",
        "test_cluster",
        "test_console_browser",
        "test_gateway_kafka",
        "test_incidents_cli",
        "test_kafka_io_changelog",
        "test_lag_metric",
        "test_notifier",
        "test_notifier_acceptance",
        "test_operator_flow",
        "test_prometheus_e2e",
        "test_publish",
        "test_topics",
        "test_topology_topic",
        "test_txloop_budget",
        "test_txloop_cutoff",
        "test_txloop_poll_gap",
    )
) | {
    f"tests/faults/{name}.py"
    for name in (
        "test_bad_input",  # the session broker, one pipeline, a 240 s catch-up bound
        "test_sasl_scram",  # a broker of its own; a wrong password must fail within 20 s
        "test_skewed_senders",  # the session broker, one small pipeline, bounds of 60 s
    )
}


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, unknown without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` (``make test``: ``-n 2``): the tests outside tests/unit make two work
    units, each run in collection order on one worker: the light broker tests
    (``LIGHT_BROKER_MODULES``) and all the others (faults, crashes, storms, the 3-node cluster,
    browsers). Each unit test is a unit of its own, run on whichever worker is free.

    So the heavy broker tests run one after the other as without xdist, beside unit tests or
    light broker tests rather than beside each other; the worker with the light ones starts a
    session broker of its own (ports and data directory moved, tests.kit.ports.worker_port).
    Done here rather than with ``xdist_group`` marks, which pytest-xdist 3.8 applies by renaming
    ``item._nodeid``, an attribute pytest 9.2 no longer reads.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class BrokerTestsTogether(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.startswith("tests/unit/"):
                return str(super()._split_scope(nodeid))
            if nodeid.split("::", 1)[0] in LIGHT_BROKER_MODULES:
                return LIGHT_BROKER_TESTS
            return BROKER_TESTS

    return BrokerTestsTogether(config, log)


def _session_broker(kafka: ScriptKafka, request: pytest.FixtureRequest) -> str:
    """Start ``kafka`` unless it already runs; stop it at session end only if we started it.

    A broker this session starts begins empty: topics left by an interrupted run cannot leak in.
    Generous: the first start on a new machine also installs Java/Maven and fetches the jars.
    """
    try:
        if kafka.running():
            return kafka.start(timeout_s=900)  # idempotent: waits until it answers
        shutil.rmtree(kafka.data_dir, ignore_errors=True)
        bootstrap = kafka.start(timeout_s=900)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)

    def stop() -> None:
        try:
            kafka.stop()
        except RuntimeError as exc:
            print(f"stopping Kafka in {kafka.data_dir} failed:\n{exc}")

    request.addfinalizer(stop)
    return bootstrap


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a running Kafka (see the module docstring for where it comes from)."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        return env
    mode = os.environ.get("STORMWATCH_TEST_KAFKA", "auto")
    if mode == "docker" or (mode == "auto" and docker_answers()):
        return docker_broker(KAFKA_IMAGE, free_port(), request)
    return _session_broker(ScriptKafka(1, TEST_PORT, worker_dir(ROOT / "var" / "kafka" / "test")), request)


@pytest.fixture(scope="module")
def cluster_bootstrap(request: pytest.FixtureRequest) -> str:
    """Bootstrap servers of a 3-broker KRaft cluster on loopback, for tests marked ``cluster``.

    Per module, not per session: its three idle JVMs took about a fifth of a core for the rest of
    the session after its only module (tests/integration/test_cluster.py) had finished."""
    env = os.environ.get("KAFKA_CLUSTER_BOOTSTRAP_SERVERS")
    if env:
        return env
    return _session_broker(
        ScriptKafka(3, TEST_CLUSTER_PORT, worker_dir(ROOT / "var" / "kafka" / "test-cluster")), request
    )
