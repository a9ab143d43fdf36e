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
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, MutableMapping, Sequence

from prometheus_client import Gauge

from stormwatch.errors import UserError

__all__ = [
    "CHOICE_ENV",
    "CHOICE_HELP",
    "JEMALLOC_CONF",
    "JEMALLOC_PATHS",
    "active_allocator",
    "reexec_environment",
    "restore_environment",
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
