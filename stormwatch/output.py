"""Rendering for the CLI: aligned tables and human times for people, stable JSON for scripts.

Everything here is pure (no Kafka) so it can be unit-tested; the stream arguments exist so
tests and commands can choose stdout/stderr.
"""

from __future__ import annotations

import shlex
import shutil
import sys
import time
import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

# Moved to the contracts (the pure core uses it); re-exported for the commands that format with it.
from stormwatch.schemas.common import rfc3339 as rfc3339


def human_duration(seconds: float) -> str:
    """Two most significant units: ``45s``, ``3m12s``, ``2h05m``, ``3d04h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def human_time(dt: datetime | None, now: datetime) -> str:
    """``2025-01-31 12:00:05 (3m12s ago)`` in UTC; ``-`` when unset; ``in ...`` for future times."""
    if dt is None:
        return "-"
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    stamp = dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    delta = (now - dt).total_seconds()
    rel = f"{human_duration(delta)} ago" if delta >= 0 else f"in {human_duration(-delta)}"
    return f"{stamp} ({rel})"


def clean(text: object) -> str:
    """One printable line: control characters (newlines, ANSI escapes) become visible escapes.

    Titles and notes come from alert labels and operators; printing them raw would let a label
    rewrite the operator's terminal or break the table's rows.
    """
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\n\t\r":
            out.append(" ")
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return "".join(out)


def display_width(text: str) -> int:
    """Terminal columns taken by ``text`` (wide East Asian characters take two, combining none)."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def truncate(text: str, width: int) -> str:
    """Cut ``text`` to at most ``width`` columns, marking the cut with an ellipsis."""
    if display_width(text) <= width:
        return text
    if width <= 0:
        return ""
    out: list[str] = []
    used = 0
    for ch in text:
        w = 0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, max_width: int | None = None
) -> str:
    """Columns aligned with two spaces; the last column is cut to fit ``max_width`` when given.

    Cells are cleaned (see ``clean``); ``None`` renders as ``-``. Returns the text without a
    trailing newline; an empty string for no headers.
    """
    if not headers:
        return ""
    cells = [[clean(h) for h in headers]]
    cells += [[("-" if c is None else clean(c)) for c in row] for row in rows]
    ncols = len(headers)
    for row in cells:
        if len(row) != ncols:
            raise ValueError(f"table row has {len(row)} cells, expected {ncols}: {row!r}")
    widths = [max(display_width(row[i]) for row in cells) for i in range(ncols - 1)]
    lines = []
    for row in cells:
        parts = [row[i] + " " * (widths[i] - display_width(row[i])) for i in range(ncols - 1)]
        last = row[-1]
        if max_width is not None:
            used = sum(widths) + 2 * (ncols - 1)
            last = truncate(last, max(max_width - used, 8))
        lines.append("  ".join([*parts, last]).rstrip())
    return "\n".join(lines)


def dump_json(obj: Any) -> str:
    """Indented JSON for ``--json`` output; keys keep their documented order."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode()


def terminal_width(stream: TextIO) -> int | None:
    """Columns of the terminal behind ``stream``; None when it is not a terminal (pipes get full text)."""
    try:
        if not stream.isatty():
            return None
        return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        return None


def warn(command: str, message: str, stream: TextIO | None = None) -> None:
    """A warning line in the same shape as the CLI's error lines."""
    print(f"stormwatch {command}: warning: {clean(message)}", file=stream or sys.stderr)


class ProgressLine:
    """A one-line counter on a terminal for reads that take a while.

    Stays silent for the first ``delay_s`` seconds (quick reads print nothing) and when the
    stream is not a terminal (logs and pipes never see carriage returns).
    """

    def __init__(
        self, label: str, *, stream: TextIO | None = None, delay_s: float = 1.0, enabled: bool | None = None
    ):
        self.label = label
        self.stream = stream or sys.stderr
        self.delay_s = delay_s
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.started < self.delay_s or now - self._last_draw < 0.1:
            return
        self._last_draw = now
        text = (
            f"{self.label}: {done:,}/{total:,} records"
            if total >= done
            else f"{self.label}: {done:,} records"
        )
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the counter so the next output starts on a clean line."""
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False


def command_prefix(config: str | None, *, executable: str | None = None, cwd: Path | None = None) -> str:
    """How to run stormwatch the way this process runs, for hints a user pastes into a shell.

    ``stormwatch`` when that name on PATH is this installation's script; otherwise the script's
    path (relative when under the working directory, as ``.venv/bin/stormwatch`` after ``make
    up``), or ``python -m stormwatch.cli``. ``--config`` is repeated when one was given.
    """
    python = Path(executable or sys.executable)
    here = cwd or Path.cwd()
    script = python.parent / "stormwatch"
    on_path = shutil.which("stormwatch")
    if on_path is not None and script.exists() and Path(on_path).resolve() == script.resolve():
        command = "stormwatch"
    elif script.exists():
        command = _shortest_path(script, here)
    else:
        command = f"{shlex.quote(_shortest_path(python, here))} -m stormwatch.cli"
    if config:
        command += f" --config {shlex.quote(config)}"
    return command


def _shortest_path(path: Path, cwd: Path) -> str:
    """Relative to ``cwd`` when inside it (and ``cwd`` is not ``/``), else absolute."""
    absolute, base = path.absolute(), cwd.absolute()
    if base.parent != base and absolute.is_relative_to(base):
        return str(absolute.relative_to(base))
    return str(absolute)
