"""Loopback ports for listeners a test starts (or for an address where nothing listens)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it, so parallel tests and
    other sessions on the machine do not collide as they would on a fixed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_index() -> int:
    """0, or N for pytest-xdist's worker ``gwN``: the fixed ports and data directories of the test
    brokers move by it (``worker_port``, ``worker_dir``), so two workers that each start one never
    share it (``make test`` runs broker tests on two workers: tests/conftest.py)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0


def worker_port(port: int) -> int:
    """``port`` moved by 10 per xdist worker after the first (brokers use port and port+1, a
    3-node instance port..port+2 and port+100..port+102): up to 10 workers stay apart."""
    return port + 10 * worker_index()


def worker_dir(path: Path) -> Path:
    """``path`` with ``-gwN`` appended for xdist worker N > 0."""
    index = worker_index()
    return path if index == 0 else path.with_name(f"{path.name}-gw{index}")
