"""Network faults between processes on this machine, for tests (deploy/faults/netswitch.py).

``NetSwitch`` starts the userspace switch as a subprocess with its own control socket and its own
namespace prefix, so parallel sessions never share one, and drives it: partition, isolate, heal,
latency, loss, half-open, flap, status. Processes run in a host through ``prefix(host)`` (an argv
prefix for subprocess) or connect from one with ``socket(host)``. It needs root and network
namespaces: ``skip_reason()`` says why not, for ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tests.kit.paths import ROOT

if TYPE_CHECKING:
    from tests.kit.kafka import ScriptKafka

NETSWITCH = ROOT / "deploy" / "faults" / "netswitch.py"
CLONE_NEWNET = 0x40000000
Side = str | Iterable[str]
"""One side of a link selection: a host, "a,b", or a list of hosts."""


@functools.cache
def skip_reason() -> str | None:
    """None where network-namespace tests can run here, otherwise why not (for ``pytest.skip``)."""
    if sys.platform != "linux":
        return f"network faults need Linux network namespaces (this is {sys.platform})"
    if os.geteuid() != 0:
        return "network faults need root to create network namespaces (run the tests as root, as CI does)"
    if shutil.which("ip") is None:
        return "network faults need the `ip` command (iproute2: apt-get install iproute2)"
    probe = f"swt-probe-{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return f"network namespaces are unavailable here (`ip netns add` failed: {result.stderr.strip()})"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, check=False)
    return None


def socket_in(namespace: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket of ``namespace`` (None: this process's own): created by a short-lived thread that
    entered it, because a socket belongs to its creating thread's namespace for life."""
    if namespace is None:
        return socket.socket(family, socket.SOCK_STREAM)
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        try:
            fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise OSError(code, f"setns into {namespace}: {os.strerror(code)}")
            finally:
                os.close(fd)
            made.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=make, name=f"netns-{namespace}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


class NetSwitchError(RuntimeError):
    """The switch refused a command or could not start; the message is its reason."""


class NetSwitch:
    """One switch: ``hosts`` (namespaces ``<prefix><host>``; ``root`` is this namespace) and
    ``servers`` (host -> ports its servers bind on 127.0.0.1). Use as a context manager, or
    ``start()``/``stop()``. Links are undirected host pairs."""

    def __init__(
        self,
        hosts: Iterable[str],
        servers: Mapping[str, Iterable[int]],
        prefix: str | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.hosts = list(hosts)
        self.servers = {host: list(ports) for host, ports in servers.items()}
        self.ns_prefix = prefix or f"swt{uuid.uuid4().hex[:6]}-"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="netswitch-")
            workdir = Path(self._tmp.name)
        self.workdir = workdir
        self.control = workdir / "control.sock"
        self.log = workdir / "netswitch.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = False

    # --- lifecycle

    def start(self, timeout_s: float = 20) -> NetSwitch:
        argv = [sys.executable, str(NETSWITCH), "--control", str(self.control), "up"]
        argv += ["--prefix", self.ns_prefix, "--host", ",".join(self.hosts)]
        for host, ports in self.servers.items():
            argv += ["--server", ",".join(f"{host}={port}" for port in ports)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")
                self.stop()
                raise NetSwitchError(f"the switch exited at startup:\n{output}")
            with contextlib.suppress(OSError, NetSwitchError):
                self.status()
                self._ready = True
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise NetSwitchError(f"the switch did not answer within {timeout_s}s; log: {self.log}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the switch (it deletes its namespaces); kill it if stuck, then delete what it left."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(OSError, NetSwitchError):
                self._request({"cmd": "shutdown"})
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        clean = self.process is not None and self.process.returncode == 0
        for host in self.hosts if self._ready and not clean else []:
            if host != "root" and Path("/run/netns", self.ns_prefix + host).exists():
                subprocess.run(
                    ["ip", "netns", "del", self.ns_prefix + host], capture_output=True, check=False
                )
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NetSwitch:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- hosts

    def namespace(self, host: str) -> str | None:
        """The namespace of ``host`` (None for ``root``)."""
        return None if host == "root" else self.ns_prefix + host

    def prefix(self, host: str) -> list[str]:
        """The argv prefix that runs a command in ``host`` (empty for ``root``)."""
        namespace = self.namespace(host)
        return [] if namespace is None else ["ip", "netns", "exec", namespace]

    def socket(self, host: str) -> socket.socket:
        """A TCP socket that lives in ``host``: connect it to 127.0.0.1:PORT to go through the switch."""
        return socket_in(self.namespace(host))

    # --- faults

    def partition(self, *sides: Side, mode: str = "reset") -> dict[str, Any]:
        """Every link between hosts on different sides goes down; ``mode`` reset (RST, refuse) or
        blackhole (hang, resume on heal)."""
        return self._request({"cmd": "partition", "sides": _sides(sides), "mode": mode})

    def isolate(self, host: str, mode: str = "reset") -> dict[str, Any]:
        """``host`` loses every link, the one to ``root`` included."""
        return self._request({"cmd": "isolate", "host": host, "mode": mode})

    def heal(self, *sides: Side) -> dict[str, Any]:
        """Clear every fault between the sides (none given: on every link)."""
        return self._request({"cmd": "heal", "sides": _sides(sides)})

    def latency(self, ms: float, *sides: Side) -> dict[str, Any]:
        return self._request({"cmd": "latency", "sides": _sides(sides), "ms": ms})

    def loss(self, pct: float, *sides: Side, retransmit_ms: float = 200) -> dict[str, Any]:
        """``pct`` % of chunks are held for a TCP retransmission delay (bytes are never lost)."""
        req = {"cmd": "loss", "sides": _sides(sides), "pct": pct, "retransmit_ms": retransmit_ms}
        return self._request(req)

    def halfopen(self, *sides: Side) -> dict[str, Any]:
        return self._request({"cmd": "halfopen", "sides": _sides(sides)})

    def flap(self, every_ms: float, for_s: float, *sides: Side, mode: str = "reset") -> dict[str, Any]:
        req = {"cmd": "flap", "sides": _sides(sides), "every_ms": every_ms, "for_s": for_s, "mode": mode}
        return self._request(req)

    def status(self) -> dict[str, Any]:
        return self._request({"cmd": "status"})

    def link(self, a: str, b: str) -> dict[str, Any]:
        """The status row of the link between ``a`` and ``b`` (its byte counters are named by host)."""
        for row in self.status()["links"]:
            if {row["a"], row["b"]} == {a, b}:
                return dict(row)
        raise KeyError(f"no link {a}-{b}")

    def _request(self, req: dict[str, Any], timeout_s: float = 10) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(self.control))
            sock.sendall(json.dumps(req).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                more = sock.recv(65536)
                if not more:
                    raise NetSwitchError("the switch closed the control connection without answering")
                data += more
        answer: dict[str, Any] = json.loads(data)
        if not answer.pop("ok", False):
            raise NetSwitchError(str(answer.get("error")))
        return answer


def _sides(sides: Iterable[Side]) -> list[list[str]]:
    out: list[list[str]] = []
    for side in sides:
        hosts = side.split(",") if isinstance(side, str) else list(side)
        out.append([h.strip() for h in hosts if h.strip()])
    return out


# --- helpers of the partition tests -------------------------------------------------------------


@contextlib.contextmanager
def kafka_in_hosts(net: NetSwitch, kafka: ScriptKafka, host_prefix: str) -> Iterator[ScriptKafka]:
    """``kafka`` started empty with node N in the switch's host ``<host_prefix>N`` (declare each
    node's broker and controller port as servers of that host), stopped and deleted on exit.

    deploy/kafka/local-kafka.sh runs node N under ``ip netns exec`` when
    ``STORMWATCH_KAFKA_NETNS_PREFIX`` is set; it is set around the start and the stop only, so
    processes started meanwhile do not inherit it."""
    with _environment(STORMWATCH_KAFKA_NETNS_PREFIX=f"{net.ns_prefix}{host_prefix}"):
        kafka.fresh_start()
    try:
        yield kafka
    finally:
        with _environment(STORMWATCH_KAFKA_NETNS_PREFIX=f"{net.ns_prefix}{host_prefix}"):
            kafka.destroy()


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def assignment_log(log: Path, since: int = 0) -> list[tuple[str, list[str]]]:
    """The ``partitions assigned`` / ``partitions revoked`` lines of a pipeline worker's JSON log
    (stormwatch.kafka.txloop), from byte offset ``since``: ``[("assigned", ["topic[0]", ...]), ...]``.
    A revocation is also what a worker logs when its consumer finds its partitions lost (its
    session timed out: a zombie that noticed)."""
    with log.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            entry = json.loads(line)
            msg = entry.get("msg")
            if msg in ("partitions assigned", "partitions revoked"):
                out.append((msg.split()[1], [str(p) for p in entry.get("partitions") or []]))
    return out


def owned_partitions(log: Path, since: int = 0) -> set[str]:
    """The partitions a worker owns according to its log (assigned minus revoked since ``since``)."""
    owned: set[str] = set()
    for kind, partitions in assignment_log(log, since):
        if kind == "assigned":
            owned.update(partitions)
        else:
            owned.difference_update(partitions)
    return owned
