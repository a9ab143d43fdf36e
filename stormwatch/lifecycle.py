"""A worker process's life: its start and stop lines, and a bounded shutdown on SIGTERM/SIGINT.

Every long-running command (ingest, correlate, agent, executor, gateway) logs ``started`` when it
runs and ``stopped`` with the reason (``signal``, ``error`` or ``clean``) when it ends, on the
``stormwatch.lifecycle`` logger, which is shown at every log level (``stormwatch.logs``).

Why a bound: Kubernetes sends SIGKILL 30 s after SIGTERM, and a worker whose brokers are down can
sit far longer than that inside one Kafka call (a rewind's offset fetch, an abort, the consumer's
close), where a Python signal handler does not even run. So a signal is also noticed by a thread
(``signal.set_wakeup_fd``), which asks the worker to stop at once and, if the worker has not ended
``shutdown_timeout_s`` later, logs why and ends the process (exit status 128 + the signal number;
a C-level timer ends it with status 1 ``BACKSTOP_S`` later should even that thread not run).
Leaving without a commit is safe: the open transaction is aborted by its timeout or fenced by the
next owner of the partitions, and the input is read again from the committed offsets.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from stormwatch import __version__
from stormwatch.logs import lifecycle_log

__all__ = ["Lifecycle", "worker_lifecycle"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

BACKSTOP_S = 2.0
"""After the bound, a C-level timer (faulthandler) ends the process this much later if the thread
that should have done it could not run: a native call holding the interpreter lock, or a hang
while the interpreter shuts down (destroying Kafka clients)."""


class Lifecycle:
    """One worker's start and stop lines; ``received`` is what a stop signal does.

    ``worker_lifecycle`` drives it; a worker with its own signal handling (the gateway's asyncio
    loop) calls ``started``, ``received`` and ``stopped`` itself."""

    def __init__(self, stage: str, stop: Callable[[], None] | None, shutdown_timeout_s: float) -> None:
        self.stage = stage
        self.signal: int | None = None
        self.detail: str | None = None  # how the stop went, when it was not a plain one
        self.shutdown_timeout_s = shutdown_timeout_s
        self._stop = stop
        self._lock = threading.RLock()  # the main thread's signal handler may re-enter
        self._finished = threading.Event()
        self._backstop: IO[str] | None = None
        self._started = time.monotonic()

    def started(self, **fields: Any) -> None:
        self._started = time.monotonic()
        lifecycle_log.info(
            "started", extra={"stage": self.stage, "version": __version__, "pid": os.getpid(), **fields}
        )

    def stopped(self, error: BaseException | None = None) -> None:
        """The ``stopped`` line: ``error`` if one ended the worker, else the signal, else clean."""
        self._finished.set()
        ran = {"ran_s": round(time.monotonic() - self._started, 3)}
        if error is not None:
            text = _describe(error)
            lifecycle_log.error(
                "stopped: %s", text, extra={"stage": self.stage, "reason": "error", "error": text, **ran}
            )
        elif self.signal is None:
            lifecycle_log.info("stopped", extra={"stage": self.stage, "reason": "clean", **ran})
        else:
            name = signal.Signals(self.signal).name
            detail = {"detail": self.detail} if self.detail else {}
            lifecycle_log.info(
                "stopped on %s",
                name,
                extra={"stage": self.stage, "reason": "signal", "signal": name, **detail, **ran},
            )

    def received(self, signum: int) -> None:
        """The first stop signal: log it, ask the worker to stop, and start the shutdown clock."""
        with self._lock:
            if self.signal is not None:
                return
            self.signal = signum
        name = signal.Signals(signum).name
        lifecycle_log.info(
            "stopping on %s (the process ends within %gs)",
            name,
            self.shutdown_timeout_s,
            extra={"stage": self.stage, "signal": name},
        )
        if self._stop is not None:
            self._stop()
        self._arm_deadline(signum)

    def _arm_deadline(self, signum: int) -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            self._backstop = open(os.devnull, "w")  # noqa: SIM115 - faulthandler keeps writing to it
            faulthandler.dump_traceback_later(
                self.shutdown_timeout_s + BACKSTOP_S, file=self._backstop, exit=True
            )
        threading.Thread(target=self._deadline, args=(signum,), name="shutdown-deadline", daemon=True).start()

    def _deadline(self, signum: int) -> None:
        if self._finished.wait(self.shutdown_timeout_s):
            return
        name = signal.Signals(signum).name
        lifecycle_log.error(
            "stopped on %s: shutdown took longer than %gs; exiting without closing the Kafka clients "
            "(the open transaction is aborted by its timeout or fenced by the next owner, and the input "
            "is read again from the committed offsets)",
            name,
            self.shutdown_timeout_s,
            extra={"stage": self.stage, "reason": "signal", "signal": name, "forced": True},
        )
        _flush_logs()
        os._exit(128 + signum)


@contextlib.contextmanager
def worker_lifecycle(
    stage: str,
    *,
    stop: Callable[[], None] | None = None,
    shutdown_timeout_s: float = 10.0,
    handle_signals: bool = True,
    **fields: Any,
) -> Iterator[Lifecycle]:
    """Log ``started`` (with ``fields``) now and ``stopped`` with its reason at the end.

    ``handle_signals``: SIGTERM and SIGINT call ``stop`` and bound the shutdown (needs the main
    thread). A caller with its own signal handling (the gateway's asyncio loop) passes False and
    reports a signal with ``Lifecycle.received`` instead."""
    life = Lifecycle(stage, stop, shutdown_timeout_s)
    life.started(**fields)
    watch = _SignalWatch(life) if handle_signals else None
    try:
        if watch is not None:
            watch.install()
        yield life
    except BaseException as exc:
        life.stopped(exc)
        raise
    else:
        life.stopped()
    finally:
        if watch is not None:
            watch.uninstall()


class _SignalWatch:
    """SIGTERM/SIGINT noticed by a thread, so a main thread blocked in a native call cannot delay
    the stop or its deadline; the Python-level handler only keeps the default action away."""

    def __init__(self, life: Lifecycle) -> None:
        self.life = life
        self._old: dict[int, Any] = {}
        self._old_fd = -1
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may handle signals (a worker run in a test's thread)
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._old_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)
        threading.Thread(target=self._watch, args=(self._reader,), name="stop-signals", daemon=True).start()

    def _handler(self, signum: int, frame: object) -> None:
        self.life.received(signum)  # normally done already by the thread; this is the fallback

    def _watch(self, reader: socket.socket) -> None:
        with reader:
            while True:
                try:
                    data = reader.recv(64)
                except OSError:
                    return
                if not data:
                    return
                for signum in data:  # one byte per signal, written by Python's C-level handler
                    if signum == 0:  # uninstall's "done"
                        return
                    if signum in STOP_SIGNALS:
                        self.life.received(signum)

    def uninstall(self) -> None:
        if self._writer is None:
            return
        for sig, old in self._old.items():
            signal.signal(sig, old)
        signal.set_wakeup_fd(self._old_fd)
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")  # ends the watch thread
        self._writer.close()


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:500]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
