"""Loopback ports for listeners a test starts (or for an address where nothing listens)."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago: the OS picks it, so parallel tests and
    other sessions on the machine do not collide as they would on a fixed port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
