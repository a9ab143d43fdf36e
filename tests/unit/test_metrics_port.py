"""A /metrics port that cannot be bound ends a worker with one line, not a traceback (issue #15,
item 7), and before the worker waits for Kafka: these runs point at a port where no broker
listens, and still get the metrics error."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.errors import UserError
from stormwatch.metrics import serve_metrics
from tests.kit.paths import ROOT
from tests.kit.ports import free_port
from tests.kit.workers import worker_env

WORKFLOW = """\
workflows:
  - name: w
    trigger: {events: [opened]}
    steps:
      - {name: a, action: log, params: {message: hi}}
"""


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_serve_metrics_on_a_busy_port_is_a_user_error(busy_port: int) -> None:
    with pytest.raises(UserError) as err:
        serve_metrics(busy_port)
    text = str(err.value)
    assert f"cannot serve /metrics on 127.0.0.1:{busy_port}: Address already in use" in text
    assert "--metrics-port" in text and "STORMWATCH_METRICS_PORT" in text


@pytest.mark.parametrize("command", ["ingest", "correlate", "agent", "executor"])
def test_a_worker_on_a_busy_metrics_port_exits_with_one_line(
    command: str, busy_port: int, tmp_path: Path
) -> None:
    extra = ["--workflows", str(tmp_path / "w.yaml")] if command == "agent" else []
    (tmp_path / "w.yaml").write_text(WORKFLOW)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "stormwatch.cli",
            "--bootstrap-servers",
            f"127.0.0.1:{free_port()}",
            command,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=worker_env(STORMWATCH_METRICS_PORT=str(busy_port)),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"stormwatch {command}: error: cannot serve /metrics on 127.0.0.1:{busy_port}: Address already in "
        "use; choose another port with --metrics-port PORT (metrics_port, $STORMWATCH_METRICS_PORT; 0 turns "
        "/metrics off) or another address with metrics_host ($STORMWATCH_METRICS_HOST)"
    ]
