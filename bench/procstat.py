"""CPU time and memory of a process, read from /proc (Linux).

CPU time (user + system, every thread) is what the benchmark divides by: unlike wall time it does
not grow when other processes compete for the cores, so alerts per CPU-second is comparable between
a quiet and a busy machine.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcSample", "loadavg", "machine", "sample"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading: wall clock (monotonic), CPU seconds so far, resident and peak resident bytes."""

    at: float
    cpu_s: float
    rss: int
    peak_rss: int


def sample(pid: int) -> ProcSample:
    """Read ``pid``'s counters; raises ProcessLookupError once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    # fields after the parenthesised command name (which may hold spaces): utime is field 14
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    rss = peak = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
    return ProcSample(time.monotonic(), cpu, rss, peak)


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def machine() -> dict[str, object]:
    """CPU model, core count and memory of this machine (for the report)."""
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
            break
    return {"cpu": model, "cores": os.cpu_count() or 0, "memory_gib": round(mem_kib / 1024 / 1024, 1)}
