"""The userspace network switch (deploy/faults/netswitch.py) with tiny echo servers, no Kafka.

Each echo server binds 127.0.0.1 inside a network namespace of its own; clients connect from the
root namespace or from another namespace, so every byte crosses the switch. Timing assertions are
lower bounds only: the machine may be slow, never fast. Needs root and network namespaces
(skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kit.netfaults import NETSWITCH, NetSwitch, NetSwitchError, skip_reason, socket_in

pytestmark = [pytest.mark.netns]

ECHO_A = 25811
"""The echo server of host a."""
ECHO_B = 25812
"""The echo server of host b."""
HIDDEN = 25813
"""An echo server in host a the switch does not know: unreachable from anywhere else."""
ECHO_ROOT = 25814
"""The echo server of the root namespace, which is a host too."""


@pytest.fixture(autouse=True, scope="module")
def _needs_netns() -> None:
    if (reason := skip_reason()) is not None:
        pytest.skip(reason)


class Echo:
    """An echo server on 127.0.0.1:port in a namespace, served by threads of this process."""

    def __init__(self, namespace: str | None, port: int) -> None:
        self.sock = socket_in(namespace)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.accepted = 0
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.clients.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()
        for conn in self.clients:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture(scope="module")
def switch() -> Iterator[NetSwitch]:
    with NetSwitch(["a", "b", "c"], {"a": [ECHO_A], "b": [ECHO_B], "root": [ECHO_ROOT]}) as net:
        echoes = [Echo(net.namespace("a"), ECHO_A), Echo(net.namespace("b"), ECHO_B)]
        echoes += [Echo(net.namespace("a"), HIDDEN), Echo(None, ECHO_ROOT)]
        net.echoes = echoes  # type: ignore[attr-defined]
        yield net
        for echo in echoes:
            echo.close()


@pytest.fixture
def net(switch: NetSwitch) -> Iterator[NetSwitch]:
    """The module's switch, every fault healed after the test."""
    yield switch
    switch.heal()


def connect(net: NetSwitch, host: str, port: int, timeout_s: float = 5) -> socket.socket:
    sock = net.socket(host)
    sock.settimeout(timeout_s)
    sock.connect(("127.0.0.1", port))
    return sock


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        more = sock.recv(65536)
        if not more:
            break
        got += more
    return got


def test_reachable_through_the_switch_from_root_and_from_another_host(net: NetSwitch) -> None:
    before = net.link("root", "a")
    with connect(net, "root", ECHO_A) as sock:
        assert roundtrip(sock, b"from root") == b"from root"
    with connect(net, "b", ECHO_A) as sock:
        assert roundtrip(sock, b"from b") == b"from b"
    with connect(net, "a", ECHO_B) as sock:  # and the other way round
        assert roundtrip(sock, b"from a") == b"from a"
    with connect(net, "c", ECHO_ROOT) as sock:  # a server in root, from a namespace
        assert roundtrip(sock, b"from c") == b"from c"
    after = net.link("root", "a")
    assert after["connections_total"] == before["connections_total"] + 1
    assert after["bytes_root_to_a"] - before["bytes_root_to_a"] == len(b"from root")
    assert after["bytes_a_to_root"] - before["bytes_a_to_root"] == len(b"from root")
    assert net.link("a", "b")["bytes_b_to_a"] >= len(b"from b")


def test_nothing_reachable_without_the_switch(net: NetSwitch) -> None:
    # A port the switch does not know: from root and from b nothing listens at it.
    for host in ("root", "b"):
        with pytest.raises(ConnectionRefusedError), connect(net, host, HIDDEN):
            pass
    # A server in root is not visible in a namespace either.
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with pytest.raises(ConnectionRefusedError), connect(net, "c", server.getsockname()[1]):
            pass


def test_partition_reset_cuts_open_connections_and_refuses_new_ones_until_healed(net: NetSwitch) -> None:
    sock = connect(net, "root", ECHO_A)
    other = connect(net, "b", ECHO_A)
    assert roundtrip(sock) == b"ping"
    net.partition("root", "a")
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        sock.sendall(b"x")
        if not sock.recv(10):  # a RST may show as an empty read on a half-read socket
            raise ConnectionResetError
    sock.close()
    with pytest.raises(ConnectionRefusedError), connect(net, "root", ECHO_A):
        pass
    assert roundtrip(other, b"b is not cut") == b"b is not cut"  # only root-a is down
    assert net.link("root", "a")["state"] == "down"
    net.heal("root", "a")
    with connect(net, "root", ECHO_A) as sock:
        assert roundtrip(sock) == b"ping"
    other.close()


def test_partition_blackhole_hangs_and_resumes_after_heal(net: NetSwitch) -> None:
    sock = connect(net, "b", ECHO_A)
    assert roundtrip(sock) == b"ping"
    net.partition("a", "b", mode="blackhole")
    sock.settimeout(0.5)
    sock.sendall(b"held")
    with pytest.raises(TimeoutError):
        sock.recv(10)  # nothing arrives, and nothing tells us
    fresh = connect(net, "b", ECHO_A)  # the kernel completes the handshake; nothing flows
    fresh.settimeout(0.5)
    fresh.sendall(b"new")
    with pytest.raises(TimeoutError):
        fresh.recv(10)
    net.heal("a", "b")
    sock.settimeout(5)
    fresh.settimeout(5)
    assert sock.recv(10) == b"held"  # held bytes are delivered, like TCP retransmissions after a partition
    assert fresh.recv(10) == b"new"
    assert roundtrip(fresh) == b"ping"
    sock.close()
    fresh.close()


def test_latency_delays_every_chunk_both_ways(net: NetSwitch) -> None:
    net.latency(150, "root", "a")
    with connect(net, "root", ECHO_A) as sock:
        started = time.monotonic()
        assert roundtrip(sock) == b"ping"
        assert time.monotonic() - started >= 0.29  # 150 ms there and 150 ms back
        started = time.monotonic()
        assert roundtrip(sock, b"again") == b"again"  # an open connection too
        assert time.monotonic() - started >= 0.29
    with connect(net, "b", ECHO_A) as sock:  # other links are not slowed (no upper bound asserted)
        assert roundtrip(sock) == b"ping"


def test_latency_applies_to_connections_already_open(net: NetSwitch) -> None:
    with connect(net, "root", ECHO_A) as sock:
        assert roundtrip(sock) == b"ping"
        net.latency(100, "a", "root")
        started = time.monotonic()
        assert roundtrip(sock) == b"ping"
        assert time.monotonic() - started >= 0.19


def test_loss_delays_chunks_but_every_byte_arrives_in_order(net: NetSwitch) -> None:
    net.loss(30, "root", "a", retransmit_ms=30)
    payload = os.urandom(3 * 1024 * 1024)
    received = bytearray()
    with connect(net, "root", ECHO_A, timeout_s=30) as sock:
        reader = threading.Thread(target=lambda: _read_exactly(sock, len(payload), received))
        reader.start()
        for offset in range(0, len(payload), 16384):
            sock.sendall(payload[offset : offset + 16384])
        reader.join(60)
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
    assert net.link("root", "a")["chunks_retransmitted"] > 0


def _read_exactly(sock: socket.socket, size: int, into: bytearray) -> None:
    while len(into) < size:
        more = sock.recv(65536)
        if not more:
            return
        into += more


def test_halfopen_swallows_everything_then_heal_resets(net: NetSwitch, switch: NetSwitch) -> None:
    echo_a = switch.echoes[0]  # type: ignore[attr-defined]
    old = connect(net, "c", ECHO_A)
    assert roundtrip(old) == b"ping"
    net.halfopen("a", "c")
    old.settimeout(0.5)
    old.sendall(b"lost")
    with pytest.raises(TimeoutError):
        old.recv(10)  # no answer, and no EOF or RST either
    accepted = echo_a.accepted
    fresh = connect(net, "c", ECHO_A)  # accepted, and the server gets a connection, but no bytes
    fresh.settimeout(0.5)
    fresh.sendall(b"void")
    with pytest.raises(TimeoutError):
        fresh.recv(10)
    assert echo_a.accepted == accepted + 1
    assert net.link("a", "c")["bytes_dropped"] >= len(b"lostvoid")
    net.heal("a", "c")
    for sock in (old, fresh):  # their streams lost bytes: the peer resets them, like a forgotten connection
        sock.settimeout(5)
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            sock.sendall(b"x")
            if not sock.recv(10):
                raise ConnectionResetError
        sock.close()
    with connect(net, "c", ECHO_A) as sock:
        assert roundtrip(sock) == b"ping"


def test_flap_alternates_then_stays_up(net: NetSwitch) -> None:
    net.flap(100, 1.2, "root", "a")
    assert net.link("root", "a")["flapping"] is True
    outcomes: set[str] = set()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        try:
            with connect(net, "root", ECHO_A, timeout_s=1) as sock:
                outcomes.add("ok" if roundtrip(sock) == b"ping" else "cut")
        except OSError:
            outcomes.add("cut")
        time.sleep(0.02)
    assert outcomes == {"ok", "cut"}
    time.sleep(0.6)
    row = net.link("root", "a")
    assert row["flapping"] is False
    assert row["state"] == "up"
    with connect(net, "root", ECHO_A) as sock:
        assert roundtrip(sock) == b"ping"


def test_isolate_cuts_every_link_of_a_host(net: NetSwitch) -> None:
    answer = net.isolate("a")
    assert sorted(answer["links"]) == ["a-b", "a-c", "a-root"]
    for host in ("root", "b", "c"):
        with pytest.raises(ConnectionRefusedError), connect(net, host, ECHO_A):
            pass
    with connect(net, "root", ECHO_B) as sock:  # b still serves root
        assert roundtrip(sock) == b"ping"


def test_bad_commands_say_what_is_wrong(net: NetSwitch) -> None:
    with pytest.raises(NetSwitchError, match="unknown host 'zz'"):
        net.partition("a", "zz")
    with pytest.raises(NetSwitchError, match="at least two sides"):
        net.latency(10, "a")
    with pytest.raises(NetSwitchError, match="percentage"):
        net.loss(150, "a", "b")


def test_cli_status_and_port_taken(switch: NetSwitch) -> None:
    status = subprocess.run(
        [sys.executable, str(NETSWITCH), "--control", str(switch.control), "status"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"prefix"' in status.stdout
    # Another switch for the same port: in root the port is the first switch's, and it says so.
    with pytest.raises(NetSwitchError, match=r"port 127.0.0.1:25811 is already taken in host root"):
        NetSwitch(["x"], {"x": [ECHO_A]}).start()
    # Hosts whose namespaces exist already (the first switch's): refused, with the fix.
    with pytest.raises(NetSwitchError, match=r"already exists .*ip netns del"):
        NetSwitch(["a"], {"a": [25822]}, prefix=switch.ns_prefix).start()
    assert Path("/run/netns", f"{switch.ns_prefix}a").exists()  # not deleted by the refused switch


def test_prefix_and_cli_exec_run_in_the_host(switch: NetSwitch) -> None:
    client = f"import socket; s = socket.create_connection(('127.0.0.1', {ECHO_A})); s.sendall(b'x'); print(s.recv(1))"
    run = subprocess.run([*switch.prefix("b"), sys.executable, "-c", client], capture_output=True, text=True)
    assert run.stdout.strip() == "b'x'", run.stderr
    inode = os.stat(f"/run/netns/{switch.namespace('b')}").st_ino
    run = subprocess.run(
        [
            sys.executable,
            str(NETSWITCH),
            "--control",
            str(switch.control),
            "exec",
            "b",
            "--",
            "readlink",
            "/proc/self/ns/net",
        ],
        capture_output=True,
        text=True,
    )
    assert run.stdout.strip() == f"net:[{inode}]", run.stderr


def test_server_ports_are_never_ephemeral_ports_in_a_host(switch: NetSwitch) -> None:
    """Else a connect to a server that is down (a broker restarting) may get the server's port as
    its source port and connect to itself, and the server cannot bind it again."""
    run = subprocess.run(
        [*switch.prefix("c"), "sysctl", "-n", "net.ipv4.ip_local_reserved_ports"],
        capture_output=True,
        text=True,
    )
    reserved: set[int] = set()
    for item in filter(None, run.stdout.strip().split(",")):  # "25811-25812,25822": ranges and ports
        low, _, high = item.partition("-")
        reserved.update(range(int(low), int(high or low) + 1))
    assert {ECHO_A, ECHO_B, ECHO_ROOT} <= reserved, run.stdout + run.stderr


def test_cli_daemon_up_and_down(tmp_path: Path) -> None:
    control, pid_file, prefix = tmp_path / "c.sock", tmp_path / "switch.pid", f"swtd{os.getpid() % 10000}-"
    cli = [sys.executable, str(NETSWITCH), "--control", str(control)]
    try:
        up = [
            *cli,
            "up",
            "--prefix",
            prefix,
            "--host",
            "d1",
            "--server",
            "d1=25823",
            "--daemon",
            "--pid-file",
        ]
        subprocess.run([*up, str(pid_file)], check=True, capture_output=True, timeout=60)
        assert Path("/run/netns", f"{prefix}d1").exists()
        pid = int(pid_file.read_text())
        subprocess.run([*cli, "down"], check=True, capture_output=True, timeout=60)
        assert not Path("/run/netns", f"{prefix}d1").exists()
        assert not pid_file.exists() and not control.exists()
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # reaped by nobody here: gone once its /proc entry is
                os.kill(pid, 0)
                time.sleep(0.05)
    finally:
        subprocess.run(["ip", "netns", "del", f"{prefix}d1"], capture_output=True)


def test_teardown_removes_namespaces_and_control_socket() -> None:
    net = NetSwitch(["t1", "t2"], {"t1": [25821]}).start()
    names = [f"{net.ns_prefix}t1", f"{net.ns_prefix}t2"]
    assert all(Path("/run/netns", n).exists() for n in names)
    control, process = net.control, net.process
    net.stop()
    assert process is not None and process.returncode == 0
    assert not any(Path("/run/netns", n).exists() for n in names)
    assert not control.exists()
