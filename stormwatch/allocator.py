"""The long-running processes' memory allocator: jemalloc for the correlator, CPython's elsewhere.

CPython's own small-object allocator (pymalloc) gets memory from the OS in 1 MiB arenas and can
give an arena back only once every object in it is gone. A correlator's state moves: it takes over
its partner's partitions, restores them, catches up after a broker crash, and gives them back.
Each time it fills hundreds of arenas, and a few long-lived objects made meanwhile keep most of them
resident: it stays at its high-water mark. jemalloc (with ``PYTHONMALLOC=malloc``) hands free pages
back, 4 KiB at a time, from a background thread. Measured (docs/performance.md, "Memory after
faults"): offline, the correlator stage fed two minutes of the chaos load, then revoked, kept 249
MiB resident with pymalloc and 197 with jemalloc (198 before the load); in the hour under faults
the correlators ended at 157 MB each against 205-218, at the same CPU at 1M active alerts. The
other processes hold little state that moves; there jemalloc's per-thread arenas cost more than
they return (the gateway ended 20 MB higher), so ``auto`` leaves them on pymalloc.

The allocator is chosen before the interpreter starts (``LD_PRELOAD``, ``PYTHONMALLOC``), so the
process re-executes itself once at start-up, same pid, same arguments, and then restores the
environment it was given: programs it starts inherit nothing.

``STORMWATCH_ALLOCATOR``: ``auto`` (default: jemalloc for ``stormwatch correlate`` if
``libjemalloc.so.2`` is installed, e.g. Debian's ``libjemalloc2``; pymalloc for the rest),
``jemalloc`` (every long-running command; start-up fails without the library), ``pymalloc``.

The processes on glibc's malloc (the C side of every process on pymalloc: librdkafka, bytes
objects over 512 bytes) get two settings at start (``tune_malloc``) and hand free pages back
from time to time (``release_free_memory``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence

from prometheus_client import Gauge

from stormwatch.errors import UserError

__all__ = [
    "CHOICE_ENV",
    "CHOICE_HELP",
    "GLIBC_ARENAS",
    "JEMALLOC_CONF",
    "JEMALLOC_PATHS",
    "MMAP_THRESHOLD_BYTES",
    "active_allocator",
    "reexec_environment",
    "release_free_memory",
    "restore_environment",
    "tune_malloc",
    "use_preferred_allocator",
]

CHOICE_ENV = "STORMWATCH_ALLOCATOR"
CHOICES = ("auto", "jemalloc", "pymalloc")
CHOICE_HELP = (
    "Memory allocator of the long-running commands: `auto` runs the correlator on jemalloc when "
    "libjemalloc.so.2 is installed (Debian: libjemalloc2) and the others on pymalloc; `jemalloc` "
    "runs every worker and the gateway on it and requires it; `pymalloc` (CPython's own) runs none "
    "on it. jemalloc gives the memory a takeover or catch-up needed back to the OS; a process "
    "re-executes itself once at start (same pid) to load it. Metric: stormwatch_memory_allocator"
)
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)
"""Where distributions install jemalloc 5's shared library, searched in this order."""

JEMALLOC_CONF = "background_thread:true"
"""A background thread returns dirty pages after jemalloc's decay time (10 s) even when the process
is idle; without it, pages are only returned on later allocator calls."""

_SAVED_ENV = "_STORMWATCH_ALLOCATOR_SAVED"
"""Set for the re-executed process: the values the variables below had before, as JSON."""
_SET_VARS = ("LD_PRELOAD", "PYTHONMALLOC", "MALLOC_CONF")

ALLOCATOR = Gauge(
    "stormwatch_memory_allocator",
    "1 for the memory allocator this process runs with (jemalloc, pymalloc, malloc)",
    ["allocator"],
)


def _find_jemalloc(exists: Callable[[str], bool]) -> str | None:
    return next((path for path in JEMALLOC_PATHS if exists(path)), None)


def reexec_environment(
    environ: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.exists,
    *,
    auto_jemalloc: bool = True,
) -> dict[str, str] | None:
    """The environment to re-execute with for jemalloc, or None to go on as started.

    ``auto_jemalloc``: what ``auto`` means for this command (True for the correlator). None when
    pymalloc is chosen, when this is already the re-executed process, when jemalloc is already
    preloaded by whoever started us, or (``auto``) when it is not installed."""
    choice = environ.get(CHOICE_ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise UserError(
            f"{CHOICE_ENV}={environ[CHOICE_ENV]!r} is not an allocator; use one of {', '.join(CHOICES)}"
        )
    if choice == "pymalloc" or (choice == "auto" and not auto_jemalloc) or _SAVED_ENV in environ:
        return None
    preloaded = environ.get("LD_PRELOAD", "")
    if "libjemalloc" in preloaded and environ.get("PYTHONMALLOC") == "malloc":
        return None
    library = _find_jemalloc(exists)
    if library is None:
        if choice == "jemalloc":
            raise UserError(
                f"{CHOICE_ENV}=jemalloc but libjemalloc.so.2 is not in {', '.join(JEMALLOC_PATHS)}; "
                f"install it (Debian: apt-get install libjemalloc2) or set {CHOICE_ENV}=auto"
            )
        return None
    env = dict(environ)
    env[_SAVED_ENV] = json.dumps({name: environ.get(name) for name in _SET_VARS})
    env["LD_PRELOAD"] = f"{library} {preloaded}".strip()
    env["PYTHONMALLOC"] = "malloc"
    conf = environ.get("MALLOC_CONF")
    env["MALLOC_CONF"] = f"{JEMALLOC_CONF},{conf}" if conf else JEMALLOC_CONF
    return env


def restore_environment(environ: MutableMapping[str, str]) -> None:
    """Put back the variables as the re-executed process's starter had them (no-op otherwise)."""
    saved = environ.pop(_SAVED_ENV, None)
    if saved is None:
        return
    for name, value in json.loads(saved).items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value


_STARTED_WITH = os.environ.get("PYTHONMALLOC", "")
"""PYTHONMALLOC as this interpreter saw it at start, before ``restore_environment`` takes it away."""


def active_allocator(pythonmalloc: str = _STARTED_WITH, maps: str | None = None) -> str:
    """``jemalloc`` when it is mapped into this process and Python allocates with malloc;
    ``malloc`` for malloc without it (glibc's); else ``pymalloc``."""
    if pythonmalloc not in ("malloc", "malloc_debug"):
        return "pymalloc"
    if maps is None:
        try:
            with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
                maps = f.read()
        except OSError:
            maps = ""
    return "jemalloc" if "libjemalloc" in maps else "malloc"


def use_preferred_allocator(
    *, auto_jemalloc: bool, reexec: bool = True, argv: Sequence[str] | None = None
) -> None:
    """Re-execute this process with jemalloc when it should have it; returns only when not.

    ``auto_jemalloc``: whether ``auto`` means jemalloc for this command. ``reexec`` False only
    checks the choice (a command run from inside another Python program). ``argv``: the
    interpreter's own command line (default ``sys.orig_argv``)."""
    env = reexec_environment(os.environ, auto_jemalloc=auto_jemalloc)
    if env is not None and reexec:
        args = list(sys.orig_argv if argv is None else argv)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, *args[1:]], env)
    restore_environment(os.environ)
    ALLOCATOR.labels(active_allocator()).set(1)
    tune_malloc()  # before any Kafka client starts its threads


# ------------------------------------------------------------------------------- glibc's malloc


def _libc_function(name: str) -> Callable[..., int] | None:
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    function: Callable[..., int] | None = getattr(ctypes.CDLL(library), name, None)
    return function


_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_M_ARENA_MAX = -8

MMAP_THRESHOLD_BYTES = 256 * 1024
"""Allocations from this size get their own mapping, returned to the OS as soon as they are freed.

glibc's default threshold starts at 128 KiB but rises (up to 32 MiB) each time such a block is
freed, after which the fetch buffers of librdkafka's threads (around 1 MiB) come from per-thread
heaps that ``malloc_trim`` does not shrink: at 1M alerts they kept 127 MB resident and all of it
free, and the correlator peaked at 1,518 MiB instead of 1,286 (docs/performance.md, "Memory")."""

GLIBC_ARENAS = 2
"""Heaps ("arenas") the process's threads share, instead of glibc's default of up to eight per core.

Every librdkafka instance a worker starts after a broker failure (a producer replacing a hung one,
a client probing the group coordinator) brings threads, and each new thread got a heap of its own
while the limit allowed: what one freed, the others could not reuse. In three broker crashes in
a row (docs/reliability.md, "Memory at broker crashes") the agent's, notifier's and linker's glibc
heaps grew 19 -> 29, 20 -> 42 and 19 -> 50 MB with 17-20 MB in use; with two arenas 17 -> 22,
19 -> 30 and 17 -> 33, and their resident memory rose 1.2, 2.7 and 4.0 MB instead of 4.0, 6.2 and
5.6."""


def _arenas_set_by_operator(environ: Mapping[str, str]) -> bool:
    return "MALLOC_ARENA_MAX" in environ or "glibc.malloc.arena_max" in environ.get("GLIBC_TUNABLES", "")


def tune_malloc(environ: Mapping[str, str] = os.environ) -> None:
    """A fixed mmap threshold (``MMAP_THRESHOLD_BYTES``) and ``GLIBC_ARENAS`` heaps for this process
    (glibc's own ``MALLOC_ARENA_MAX`` or ``GLIBC_TUNABLES`` win if set); glibc only, and harmless
    under jemalloc. Effective for threads started after it: call it before the Kafka clients start
    theirs (``use_preferred_allocator`` does, for the long-running commands)."""
    if _MALLOPT is not None:
        _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
        if not _arenas_set_by_operator(environ):
            _MALLOPT(_M_ARENA_MAX, GLIBC_ARENAS)


def release_free_memory() -> None:
    """Return the C heap's free pages to the OS (glibc's ``malloc_trim``; elsewhere nothing).

    A state restore or a burst of large batches frees hundreds of MB that glibc would otherwise
    keep resident: with it the correlator's RSS follows its state (docs/performance.md, "Memory").
    """
    if _TRIM is not None:
        _TRIM(0)
