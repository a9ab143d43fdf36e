#!/usr/bin/env python3
"""A userspace network switch between Linux network namespaces, for network-fault rehearsals.

Why: this kernel has network namespaces but no ``tc netem``, and every stormwatch process and
Kafka broker binds 127.0.0.1. Each "host" is a namespace; every server keeps binding
127.0.0.1:PORT inside its own host, and this switch (in the root namespace, which is the host
``root``) listens on 127.0.0.1:PORT in every *other* host and forwards each connection to the real
server. A process in a namespace reaches nothing except through the switch, so cutting, slowing or
flapping a link between two hosts is a decision the switch takes per connection, and advertised
addresses (Kafka's ``advertised.listeners``) stay valid in every host.

Links are undirected: a fault between hosts A and B applies to connections from A to B's servers
and from B to A's servers, including connections already open. deploy/faults/README.md has the
design, every command with an example and rehearsals an operator can run by hand.

Stdlib only, Python 3.11+, needs root (network namespaces, setns).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

CLONE_NEWNET = 0x40000000
ROOT = "root"
"""The root network namespace as a host: where the switch and usually the test harness run."""
DEFAULT_CONTROL = os.environ.get("STORMWATCH_NETSWITCH_CONTROL", "/run/stormwatch-netswitch.sock")
CHUNK = 65536
"""Bytes read per forwarded chunk: the unit that latency and loss apply to."""
QUEUE_CHUNKS = 64
"""Chunks held per direction of a connection before the switch stops reading (TCP backpressure)."""
MAX_RETRANSMITS = 6
STATES = ("up", "down", "halfopen")
MODES = ("reset", "blackhole")

T = TypeVar("T")


class SwitchError(Exception):
    """A problem the operator can fix: the message says what was wrong and how to fix it."""


# --- namespaces ---------------------------------------------------------------------------------


def check_environment() -> None:
    """Fail early, with the fix, where namespaces cannot work at all."""
    if sys.platform != "linux":
        raise SwitchError("netswitch needs Linux network namespaces; this is " + sys.platform)
    if os.geteuid() != 0:
        raise SwitchError(
            "netswitch needs root (CAP_SYS_ADMIN) to create network namespaces and enter them; "
            "run it as root, e.g. `sudo deploy/faults/netswitch.py ...`"
        )
    if shutil.which("ip") is None:
        raise SwitchError("netswitch needs the `ip` command (iproute2); install it: apt-get install iproute2")


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SwitchError(f"`ip {' '.join(args)}` failed: {result.stderr.strip() or result.returncode}")


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def create_netns(name: str) -> None:
    """A new namespace with its loopback up (a new namespace's lo is down: 127.0.0.1 would not work)."""
    if netns_exists(name):
        raise SwitchError(
            f"network namespace {name} already exists (left by an earlier run, or used by someone "
            f"else); delete it with `ip netns del {name}` if it is yours, or pick another --prefix"
        )
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
    except SwitchError:
        delete_netns(name)
        raise


def reserve_ports(ports: list[int]) -> None:
    """Keep the servers' ports out of this thread's namespace's ephemeral range. A connect from
    inside it to 127.0.0.1:PORT while nothing listens there (a broker restarting) may otherwise be
    given PORT as its own source port and connect to itself (TCP simultaneous open), and then the
    server cannot bind PORT again: seen when a broker restarted in an hour-long run. Run in the
    namespace (``NetnsSockets.run``): /proc/sys/net is the opening thread's namespace."""
    Path("/proc/sys/net/ipv4/ip_local_reserved_ports").write_text(",".join(str(p) for p in ports))


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


class NetnsSockets:
    """Creates sockets inside other network namespaces.

    A socket belongs to the namespace of the thread that created it and keeps it for life, so one
    dedicated thread enters the target namespace with setns(2), creates the socket and returns to
    the root namespace; the event loop's thread never leaves the root namespace.
    """

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._root_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        self._fds: dict[str, int] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netns")

    def _setns(self, fd: int, what: str) -> None:
        if self._libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"setns into {what}: {os.strerror(code)}")

    def _in_netns(self, namespace: str | None, make: Callable[[], T]) -> T:
        if namespace is None:
            return make()
        fd = self._fds.get(namespace)
        if fd is None:
            fd = self._fds[namespace] = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
        self._setns(fd, f"network namespace {namespace}")
        try:
            return make()
        finally:
            try:
                self._setns(self._root_fd, "the root network namespace")
            except OSError:  # this thread would create every later socket in the wrong place
                os._exit(70)

    async def run(self, namespace: str | None, make: Callable[[], T]) -> T:
        """``make()`` run with the calling thread in ``namespace`` (None: the root namespace)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._in_netns, namespace, make)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for fd in [*self._fds.values(), self._root_fd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


# --- links and connections ----------------------------------------------------------------------


def _link_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass(eq=False)
class Link:
    """The state of one unordered host pair, shared by every connection between the two hosts."""

    a: str
    b: str
    state: str = "up"
    mode: str = "reset"
    latency_ms: float = 0.0
    loss_pct: float = 0.0
    retransmit_ms: float = 200.0
    flap: asyncio.Task[None] | None = None
    conns: set[Conn] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    counters: dict[str, int] = field(default_factory=dict)

    def clean(self) -> bool:
        """No fault at all: chunks go straight through (the fast path)."""
        return self.state == "up" and self.latency_ms <= 0 and self.loss_pct <= 0

    def notify(self) -> None:
        """Wake every chunk and connection waiting for this link to change."""
        self.changed.set()
        self.changed = asyncio.Event()

    def count(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def extra_delay(self) -> float:
        """Seconds a chunk is held beyond the latency: what a lost TCP segment costs.

        TCP never loses bytes, it retransmits them after a retransmission timeout (at least
        200 ms on Linux) that doubles on each further loss, and the stream stalls meanwhile. So a
        "lost" chunk is held for ``retransmit_ms``, each further retransmission lost again with
        the same probability doubles the wait; later chunks queue behind it (order preserved).
        """
        if self.loss_pct <= 0:
            return 0.0
        delay, rto = 0.0, self.retransmit_ms / 1000
        for _ in range(MAX_RETRANSMITS):
            if random.random() * 100 >= self.loss_pct:
                break
            delay += rto
            rto *= 2
        if delay:
            self.count("chunks_retransmitted")
        return delay

    def describe(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "state": self.state,
            "mode": self.mode if self.state == "down" else None,
            "latency_ms": self.latency_ms,
            "loss_pct": self.loss_pct,
            "retransmit_ms": self.retransmit_ms,
            "flapping": self.flap is not None and not self.flap.done(),
            "connections_open": len(self.conns),
            **{name: self.counters.get(name, 0) for name in COUNTERS},
            f"bytes_{self.a}_to_{self.b}": self.counters.get(f"bytes:{self.a}", 0),
            f"bytes_{self.b}_to_{self.a}": self.counters.get(f"bytes:{self.b}", 0),
        }


COUNTERS = (
    "connections_total",
    "connections_refused",
    "connections_reset",
    "upstream_failed",
    "chunks_retransmitted",
    "bytes_dropped",
)


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a peer's kernel does for a connection it forgot."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class Conn:
    """One forwarded connection: from a client in ``client_host`` to the server on ``port``."""

    link: Link
    client_host: str
    server_host: str
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    tainted: bool = False
    """Bytes of it were swallowed while half-open: it cannot resume, heal resets it."""
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    closed: bool = False

    def reset(self) -> None:
        """RST both ends now and stop forwarding."""
        if self.closed:
            return
        self.closed = True
        self.link.count("connections_reset")
        _rst(self.client)
        _rst(self.server)
        for task in self.tasks:
            if task is not asyncio.current_task():
                task.cancel()


class Pipe:
    """One direction of a connection: reads chunks, holds each until its delivery time, writes it.

    Delivery time = arrival + latency (+ a retransmission delay for a "lost" chunk), never before
    the previous chunk's (order preserved). While the link is black-holed chunks wait; while it
    is half-open they are swallowed.
    """

    def __init__(
        self, conn: Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.source = source
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUE_CHUNKS)
        self.pending = 0
        self.last_due = 0.0

    async def read_loop(self) -> None:
        link = self.conn.link
        loop = asyncio.get_running_loop()
        while True:
            data = await self.reader.read(CHUNK)
            if data and link.clean() and self.pending == 0:
                await self._deliver(data)
                continue
            due = max(loop.time() + link.latency_ms / 1000 + link.extra_delay(), self.last_due)
            self.last_due = due
            self.pending += 1
            await self.queue.put((due, data))
            if not data:
                return

    async def deliver_loop(self) -> None:
        link = self.conn.link
        loop = asyncio.get_running_loop()
        while True:
            due, data = await self.queue.get()
            try:
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                while link.state == "down":
                    await link.changed.wait()
                if link.state == "halfopen":
                    link.count("bytes_dropped", len(data))
                    continue
                if not await self._deliver(data):
                    return
            finally:
                self.pending -= 1

    async def _deliver(self, data: bytes) -> bool:
        """Write ``data`` on (an empty chunk is the end of the stream); False when that was the end."""
        if not data:
            if self.writer.can_write_eof():
                self.writer.write_eof()
            return False
        self.writer.write(data)
        self.conn.link.count(f"bytes:{self.source}", len(data))
        await self.writer.drain()
        return True


# --- the switch ---------------------------------------------------------------------------------


@dataclass
class Server:
    host: str
    port: int


class Switch:
    """Listeners in every host for every other host's servers, links, and the control socket."""

    def __init__(self, prefix: str, hosts: list[str], servers: list[Server], control: Path) -> None:
        self.prefix = prefix
        self.hosts = [ROOT, *[h for h in hosts if h != ROOT]]
        self.servers = servers
        self.control = control
        self.port_host = {s.port: s.host for s in servers}
        self.links: dict[tuple[str, str], Link] = {}
        self.listeners: dict[tuple[str, int], asyncio.Server | None] = {}
        self.created: list[str] = []
        self.netns = NetnsSockets()
        self.stopping = asyncio.Event()
        self.control_server: asyncio.Server | None = None

    def namespace(self, host: str) -> str | None:
        return None if host == ROOT else self.prefix + host

    def link(self, a: str, b: str) -> Link:
        key = _link_key(a, b)
        if key not in self.links:
            self.links[key] = Link(*key)
        return self.links[key]

    # --- start and stop

    async def start(self) -> None:
        ports = sorted({server.port for server in self.servers})
        for host in self.hosts:
            if host != ROOT:
                create_netns(self.prefix + host)
                self.created.append(self.prefix + host)
                await self.netns.run(self.prefix + host, lambda: reserve_ports(ports))
        for server in self.servers:
            for host in self.hosts:
                if host != server.host:
                    self.link(host, server.host)
                    self.listeners[(host, server.port)] = await self._listen(host, server.port)
        await self._serve_control()

    async def _listen(self, host: str, port: int) -> asyncio.Server:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(("127.0.0.1", port))
                sock.listen(1024)
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            return sock

        try:
            sock = await self.netns.run(self.namespace(host), make)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                where = "the root namespace" if host == ROOT else f"namespace {self.namespace(host)}"
                raise SwitchError(
                    f"port 127.0.0.1:{port} is already taken in host {host} ({where}), so the switch "
                    f"cannot stand in for the server of host {self.port_host[port]} there; see who "
                    f"holds it (`ss -ltnp 'sport = :{port}'`, in a namespace with `ip netns exec`) "
                    "and stop it, or give the server another port"
                ) from exc
            raise

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._accept(host, port, reader, writer)

        return await asyncio.start_server(accept, sock=sock)

    async def _serve_control(self) -> None:
        if self.control.exists():
            try:
                request(self.control, {"cmd": "status"}, timeout_s=2)
            except (OSError, SwitchError):
                self.control.unlink()  # stale: nobody answers on it
            else:
                raise SwitchError(
                    f"a switch already answers on {self.control}; stop it (`netswitch.py --control "
                    f"{self.control} down`) or use another --control path"
                )
        self.control.parent.mkdir(parents=True, exist_ok=True)
        self.control_server = await asyncio.start_unix_server(self._control, path=str(self.control))
        os.chmod(self.control, 0o600)

    async def stop(self) -> None:
        """Cut every connection, close every listener, delete the namespaces this switch created."""
        if self.control_server is not None:
            self.control_server.close()
        for link in self.links.values():
            if link.flap is not None:
                link.flap.cancel()
            for conn in list(link.conns):
                conn.reset()
        for server in self.listeners.values():
            if server is not None:
                server.close()
        await asyncio.sleep(0.05)
        self.netns.close()
        for name in self.created:
            delete_netns(name)
        with contextlib.suppress(FileNotFoundError):
            self.control.unlink()

    # --- forwarding

    async def _accept(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        server_host = self.port_host[port]
        link = self.link(host, server_host)
        conn = Conn(link, host, server_host, writer, tainted=link.state == "halfopen")
        task = asyncio.current_task()
        assert task is not None
        conn.tasks.append(task)
        link.conns.add(conn)
        link.count("connections_total")
        try:
            await self._forward(conn, port, reader)
        except asyncio.CancelledError:
            conn.reset()
        except OSError:
            conn.reset()
        finally:
            link.conns.discard(conn)
            if not conn.closed:
                conn.closed = True
                writer.close()
                if conn.server is not None:
                    conn.server.close()

    async def _forward(self, conn: Conn, port: int, reader: asyncio.StreamReader) -> None:
        link = conn.link
        while link.state == "down" and link.mode == "blackhole":
            await link.changed.wait()  # a black-holed connect hangs: no upstream until healed
        if link.state == "down":  # reset mode: refused (accepted just before the listener closed)
            link.count("connections_refused")
            conn.reset()
            return
        _nodelay(conn.client)
        sock = await self.netns.run(
            self.namespace(conn.server_host), lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        )
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            if sock.getsockname() == sock.getpeername():
                # Connected to itself (source port == PORT, nothing listening): holding it would
                # keep the real server from binding PORT when it comes back. A refusal, really.
                raise ConnectionRefusedError(f"self-connect on 127.0.0.1:{port}")
        except OSError:
            sock.close()
            link.count("upstream_failed")
            conn.reset()  # the real server refused: so does the switch, as a RST
            return
        upstream_reader, conn.server = await asyncio.open_connection(sock=sock)
        _nodelay(conn.server)
        pipes = [
            Pipe(conn, reader, conn.server, conn.client_host),
            Pipe(conn, upstream_reader, conn.client, conn.server_host),
        ]
        workers = [asyncio.create_task(step()) for p in pipes for step in (p.read_loop, p.deliver_loop)]
        conn.tasks.extend(workers)
        done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        if any(not t.cancelled() and t.exception() is not None for t in done):
            conn.reset()  # a side reset or broke: so is the other side
            return
        await asyncio.gather(*workers, return_exceptions=True)

    # --- faults

    def select(self, sides: list[list[str]]) -> list[Link]:
        """Every link between two hosts on different sides (a side is a list of host names)."""
        known = set(self.hosts)
        for side in sides:
            for host in side:
                if host not in known:
                    raise SwitchError(f"unknown host {host!r}; the hosts are {', '.join(self.hosts)}")
        if len(sides) < 2:
            raise SwitchError("name at least two sides, e.g. `b1 b2` or `w1 b1,b2,b3`")
        links: dict[tuple[str, str], Link] = {}
        for i, left in enumerate(sides):
            for right in sides[i + 1 :]:
                for a in left:
                    for b in right:
                        if a != b:
                            links[_link_key(a, b)] = self.link(a, b)
        return list(links.values())

    async def set_state(self, links: Iterable[Link], state: str, mode: str | None = None) -> None:
        for link in links:
            link.state = state
            if mode is not None:
                link.mode = mode
            if state == "down" and link.mode == "reset":
                for conn in list(link.conns):
                    conn.reset()
            elif state == "halfopen":
                for conn in link.conns:
                    conn.tainted = True
            elif state == "up":
                for conn in [c for c in link.conns if c.tainted]:
                    conn.reset()  # like a peer that forgot the connection: the next segment gets a RST
            link.notify()
            await self._sync_listeners(link)

    async def _sync_listeners(self, link: Link) -> None:
        """A link down in reset mode refuses new connects: its listeners are closed until it heals."""
        want = not (link.state == "down" and link.mode == "reset")
        async with link.lock:
            for server in self.servers:
                if server.host not in (link.a, link.b):
                    continue
                host = link.b if server.host == link.a else link.a
                key = (host, server.port)
                current = self.listeners.get(key)
                if want and current is None:
                    self.listeners[key] = await self._listen(host, server.port)
                elif not want and current is not None:
                    current.close()
                    self.listeners[key] = None

    def stop_flaps(self, links: Iterable[Link]) -> None:
        for link in links:
            if link.flap is not None:
                link.flap.cancel()
                link.flap = None

    async def _flap(self, link: Link, every_ms: float, duration_s: float, mode: str) -> None:
        deadline = time.monotonic() + duration_s
        try:
            while time.monotonic() < deadline:
                await self.set_state([link], "down", mode)
                await asyncio.sleep(every_ms / 1000)
                await self.set_state([link], "up")
                await asyncio.sleep(every_ms / 1000)
        finally:
            if link.state != "up" and link.flap is asyncio.current_task():
                await self.set_state([link], "up")

    # --- control

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    answer = {"ok": True, **await self.command(json.loads(line))}
                except SwitchError as exc:
                    answer = {"ok": False, "error": str(exc)}
                except (ValueError, KeyError, TypeError) as exc:
                    answer = {"ok": False, "error": f"bad request {line!r}: {exc!r}"}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def command(self, req: dict[str, Any]) -> dict[str, Any]:
        """One control command (the JSON form of the CLI's sub-commands); returns the answer."""
        cmd = req["cmd"]
        if cmd == "status":
            return self.status()
        if cmd == "shutdown":
            self.stopping.set()
            return {}
        if cmd == "isolate":
            host = req["host"]
            if host not in self.hosts:
                raise SwitchError(f"unknown host {host!r}; the hosts are {', '.join(self.hosts)}")
            links = self.select([[host], [h for h in self.hosts if h != host]])
        elif cmd == "heal" and not req.get("sides"):
            links = list(self.links.values())
        else:
            links = self.select([list(side) for side in req["sides"]])
        self.stop_flaps(links)
        if cmd in ("partition", "isolate"):
            mode = req.get("mode", "reset")
            if mode not in MODES:
                raise SwitchError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
            await self.set_state(links, "down", mode)
        elif cmd == "heal":
            for link in links:
                link.latency_ms = link.loss_pct = 0.0
            await self.set_state(links, "up")
        elif cmd == "latency":
            ms = _non_negative(req["ms"], "latency ms")
            for link in links:
                link.latency_ms = ms
                link.notify()
        elif cmd == "loss":
            pct = _non_negative(req["pct"], "loss percent")
            if pct > 100:
                raise SwitchError(f"loss is a percentage (0-100), not {pct}")
            for link in links:
                link.loss_pct = pct
                link.retransmit_ms = _non_negative(req.get("retransmit_ms", 200), "retransmit ms")
        elif cmd == "halfopen":
            await self.set_state(links, "halfopen")
        elif cmd == "flap":
            every = _non_negative(req["every_ms"], "flap interval ms")
            duration = _non_negative(req["for_s"], "flap duration s")
            mode = req.get("mode", "reset")
            if every <= 0 or mode not in MODES:
                raise SwitchError("flap needs --every MS > 0 and --mode reset|blackhole")
            for link in links:
                link.flap = asyncio.create_task(self._flap(link, every, duration, mode))
        else:
            raise SwitchError(f"unknown command {cmd!r}")
        return {"links": [f"{link.a}-{link.b}" for link in links]}

    def status(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "hosts": {host: self.namespace(host) for host in self.hosts},
            "servers": [{"host": s.host, "port": s.port} for s in self.servers],
            "links": [self.links[key].describe() for key in sorted(self.links)],
        }


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _non_negative(value: Any, what: str) -> float:
    number = float(value)
    if number < 0:
        raise SwitchError(f"{what} must not be negative, not {number}")
    return number


# --- client side --------------------------------------------------------------------------------


def request(control: Path, req: dict[str, Any], timeout_s: float = 10) -> dict[str, Any]:
    """Send one command to the switch at ``control``; its answer, or SwitchError with its reason."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(control))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise SwitchError(
                f"no switch answers on {control} ({exc.strerror}); start one with `netswitch.py "
                f"--control {control} up ...`, or pass the --control path it was started with"
            ) from exc
        sock.sendall(json.dumps(req).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            more = sock.recv(65536)
            if not more:
                raise SwitchError(f"the switch on {control} closed the connection without answering")
            data += more
    answer: dict[str, Any] = json.loads(data)
    if not answer.pop("ok", False):
        raise SwitchError(str(answer.get("error", answer)))
    return answer


def parse_servers(values: list[str]) -> list[Server]:
    servers: list[Server] = []
    for value in values:
        for item in filter(None, value.split(",")):
            host, sep, port = item.partition("=")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise SwitchError(f"a server is HOST=PORT (e.g. b1=36092), not {item!r}")
            servers.append(Server(host.strip(), int(port)))
    ports = [s.port for s in servers]
    if dup := sorted({p for p in ports if ports.count(p) > 1}):
        raise SwitchError(f"port(s) {dup} given more than once: each host sees every server at its port")
    return servers


def parse_hosts(values: list[str]) -> list[str]:
    hosts = [h.strip() for value in values for h in value.split(",") if h.strip()]
    for host in hosts:
        if not host.replace("-", "").replace("_", "").isalnum():
            raise SwitchError(f"host names are letters, digits, - and _, not {host!r}")
    return list(dict.fromkeys(hosts))


async def serve(args: argparse.Namespace) -> int:
    hosts = parse_hosts(args.host)
    servers = parse_servers(args.server)
    for server in servers:
        if server.host != ROOT and server.host not in hosts:
            hosts.append(server.host)
    switch = Switch(args.prefix, hosts, servers, Path(args.control))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, switch.stopping.set)
    try:
        await switch.start()
        if args.pid_file:
            Path(args.pid_file).write_text(f"{os.getpid()}\n")
        print(
            f"netswitch: ready, hosts {', '.join(switch.hosts)}, "
            f"{len(servers)} server port(s), control {args.control}",
            flush=True,
        )
        await switch.stopping.wait()
    finally:
        await switch.stop()
        if args.pid_file:
            with contextlib.suppress(FileNotFoundError):
                Path(args.pid_file).unlink()
    return 0


def daemonize(args: argparse.Namespace, argv: list[str]) -> int:
    """Start the switch in the background (its own session) and return once it answers."""
    log = Path(args.log_file or (str(args.pid_file or args.control) + ".log"))
    child_argv = [sys.executable, os.path.abspath(__file__), *[a for a in argv if a != "--daemon"]]
    with log.open("ab") as out:
        child = subprocess.Popen(
            child_argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if child.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-10:]
            raise SwitchError("the switch exited at startup:\n" + "\n".join(tail))
        with contextlib.suppress(SwitchError, OSError):
            request(Path(args.control), {"cmd": "status"}, timeout_s=2)
            print(f"netswitch: running as PID {child.pid}, log {log}, control {args.control}")
            return 0
        time.sleep(0.1)
    child.terminate()
    raise SwitchError(f"the switch did not answer on {args.control} within 30 s; see {log}")


# --- command line -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="netswitch.py",
        description="A userspace network switch between network namespaces, for network faults "
        "(deploy/faults/README.md).",
    )
    parser.add_argument(
        "--control",
        default=DEFAULT_CONTROL,
        help="the switch's UNIX control socket (default $STORMWATCH_NETSWITCH_CONTROL or %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the switch: create the hosts' namespaces and listeners")
    up.add_argument("--prefix", default="swt-", help="namespace name = PREFIX + host (default %(default)s)")
    up.add_argument("--host", action="append", default=[], help="host name(s), comma separated, repeatable")
    up.add_argument(
        "--server", action="append", default=[], help="HOST=PORT[,HOST=PORT...]: a server port, repeatable"
    )
    up.add_argument("--daemon", action="store_true", help="run in the background, return once it answers")
    up.add_argument("--pid-file", help="write the switch's PID here while it runs")
    up.add_argument("--log-file", help="with --daemon: its output (default PIDFILE.log or CONTROL.log)")

    def sides(p: argparse.ArgumentParser, optional: bool = False) -> None:
        p.add_argument(
            "sides",
            nargs="*" if optional else "+",
            help="hosts on each side, comma separated (`w1 b1,b2,b3`): every link across sides",
        )

    p = sub.add_parser("partition", help="take links down between sides")
    sides(p)
    p.add_argument("--mode", choices=MODES, default="reset", help="reset: RST + refuse; blackhole: hang")
    p = sub.add_parser("isolate", help="take down every link of one host (root included)")
    p.add_argument("host")
    p.add_argument("--mode", choices=MODES, default="reset")
    p = sub.add_parser("heal", help="clear every fault on the links between sides (no sides: all links)")
    sides(p, optional=True)
    p = sub.add_parser("latency", help="delay every chunk on the links by MS")
    sides(p)
    p.add_argument("--ms", type=float, required=True)
    p = sub.add_parser("loss", help="hold PCT%% of chunks for a TCP retransmission delay")
    sides(p)
    p.add_argument("--pct", type=float, required=True)
    p.add_argument("--retransmit-ms", type=float, default=200.0, help="first retransmission delay")
    p = sub.add_parser("halfopen", help="accept and swallow everything, tell nobody")
    sides(p)
    p = sub.add_parser("flap", help="down/up every MS for S seconds, then up")
    sides(p)
    p.add_argument("--every", type=float, required=True, metavar="MS")
    p.add_argument("--for", dest="for_s", type=float, required=True, metavar="S")
    p.add_argument("--mode", choices=MODES, default="reset")
    sub.add_parser("status", help="the link table and counters, as JSON")
    sub.add_parser("down", help="stop the switch and delete the namespaces it created")
    p = sub.add_parser("exec", help="run a command in a host (ip netns exec)")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER, help="-- command args...")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    control = Path(args.control)
    try:
        if args.command == "up":
            check_environment()
            if not args.server:
                raise SwitchError("name at least one server, e.g. --server b1=36092")
            if args.daemon:
                return daemonize(args, argv)
            return asyncio.run(serve(args))
        if args.command == "exec":
            cmd = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
            if not cmd:
                raise SwitchError("exec needs a command: exec HOST -- cmd args...")
            namespace = request(control, {"cmd": "status"})["hosts"].get(args.host, "")
            if namespace == "":
                raise SwitchError(f"the switch on {control} has no host {args.host!r}")
            os.execvp(
                cmd[0] if namespace is None else "ip",
                cmd if namespace is None else ["ip", "netns", "exec", namespace, *cmd],
            )
        if args.command == "down":
            try:
                request(control, {"cmd": "shutdown"})
            except SwitchError as exc:
                raise SwitchError(
                    f"{exc}. If a switch was killed, delete the namespaces it left: `ip netns list`, "
                    "then `ip netns del NAME` for each of its prefix"
                ) from exc
            deadline = time.monotonic() + 15
            while control.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            print(f"netswitch: stopped (control {control})")
            return 0
        req: dict[str, Any] = {"cmd": args.command}
        if hasattr(args, "sides"):
            req["sides"] = [parse_hosts([side]) for side in args.sides]
        for name in ("host", "mode", "ms", "pct", "retransmit_ms", "for_s"):
            if hasattr(args, name):
                req[name] = getattr(args, name)
        if args.command == "flap":
            req["every_ms"] = args.every
        answer = request(control, req)
        print(json.dumps(answer, indent=2))
        return 0
    except SwitchError as exc:
        print(f"netswitch: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
