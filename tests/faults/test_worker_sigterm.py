"""SIGTERM to an ingest worker whose only broker has crashed (issue #15, item 8).

The worker is caught mid-stream: it commits a transaction every few milliseconds (clock ticks),
so when the broker is SIGKILLed it is inside a transaction that cannot commit, then in the abort
that cannot reach the coordinator. Before the fix it took 17-32 s to exit (50-100 s in the
report, where it was rewinding) and said nothing at the default log level; Kubernetes sends
SIGKILL 30 s after SIGTERM. Now it stops waiting at once, logs why, and exits well within
``shutdown_timeout_ms`` (10 s).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from stormwatch.config import TopicSettings, load_settings
from stormwatch.kafka.topics import create_topics
from tests.kit.kafka import ScriptKafka
from tests.kit.paths import ROOT
from tests.kit.waits import wait_for
from tests.kit.workers import worker_env

pytestmark = [pytest.mark.kafka, pytest.mark.faults]

DOWN_BEFORE_SIGTERM_S = 12.0
"""Long enough for the worker to be waiting on an abort that cannot finish (a 30 s call)."""
BOUND_S = 10.0


def _lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_sigterm_with_the_broker_down_ends_the_worker_within_the_bound(
    outage_broker: ScriptKafka, tmp_path: Path
) -> None:
    topics = {**TopicSettings.with_prefix(f"t.sigterm.{uuid.uuid4().hex[:8]}"), "partitions": 2}
    config = {"kafka": {"bootstrap_servers": outage_broker.bootstrap}, "topics": topics}
    create_topics(load_settings(**config), timeout_s=30)
    config_file = tmp_path / "stormwatch.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log = tmp_path / "ingest.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch.cli", "--config", str(config_file), "ingest"],
            stderr=out,
            env=worker_env(),
            cwd=ROOT,
        )
    try:

        def running() -> None:
            assert proc.poll() is None, log.read_text()[-3000:]

        wait_for(
            "the worker's partitions",
            lambda: any(r["msg"] == "partitions assigned" for r in _lines(log)),
            60,
            alive=running,
        )
        outage_broker.kill_node(1)
        time.sleep(DOWN_BEFORE_SIGTERM_S)
        running()
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(BOUND_S + 5)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        # The broker stays down: this is the module's only test, and the module's fixture deletes
        # it next (a restart cost about 15 s here and 15 s more to stop it again). A test added
        # to this module after this one has to start it again first.
    lines = _lines(log)  # every line is JSON, librdkafka's complaints included
    assert code == 0, lines[-5:]
    assert took < BOUND_S, f"{took:.1f}s"
    stopped = lines[-1]
    assert stopped["msg"] == "stopped on SIGTERM" and stopped["reason"] == "signal", stopped
    # "detail" names the Kafka wait it cut short; a stop that landed between waits has none.
    assert stopped.get("detail", "stopped while waiting for Kafka").startswith("stopped while waiting"), (
        stopped
    )
