"""Log output of every stormwatch process, on stderr: one JSON object per line, or plain text.

JSON is the default because workers run under a supervisor whose log pipeline (Loki, Vector,
``kubectl logs | jq``) parses each line; it is encoded by python-json-logger, not by a format
string, so quotes, newlines and non-ASCII text in a message never break a line (issue #15).
``text`` is for a person at a terminal. Both carry the same fields: ``ts`` (RFC 3339, UTC),
``level``, ``logger``, ``msg``, every ``extra={...}`` field, and ``exception`` (the traceback).

Worker start and stop lines (``stormwatch.lifecycle``) are shown at every log level: a process
that is quiet by default must still say when it started, when it stopped, and why.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, get_args

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

__all__ = [
    "LIFECYCLE_LOGGER",
    "LOG_FORMATS",
    "LogFormat",
    "configure_logging",
    "lifecycle_log",
]

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)

LIFECYCLE_LOGGER = "stormwatch.lifecycle"
"""Start, stop and assignment lines of the workers; INFO, but shown at any configured level."""

lifecycle_log = logging.getLogger(LIFECYCLE_LOGGER)

_FIELDS = {"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg", "exc_info": "exception"}
_RESERVED = frozenset(RESERVED_ATTRS) | {"taskName"}  # LogRecord's own attributes (3.12 adds taskName)

_installed: list[logging.Handler] = []  # the handler configure_logging added, replaced on a new call


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339 in UTC with milliseconds: sortable, and unambiguous across hosts and time zones."""
    return (
        datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


class _Json(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(list(_FIELDS)[:4], rename_fields=dict(_FIELDS))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)


class _Text(logging.Formatter):
    """``TS LEVEL LOGGER: MESSAGE key=value ...``, the traceback on the lines below."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _timestamp(record)

    def formatMessage(self, record: logging.LogRecord) -> str:
        extra = " ".join(f"{k}={_text_value(v)}" for k, v in _extra(record).items())
        line = super().formatMessage(record)
        return f"{line} {extra}" if extra else line


def _extra(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


def _text_value(value: Any) -> str:
    text = str(value)
    return repr(text) if not text or any(c.isspace() or c in "\"'=" for c in text) else text


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each line (a test's capture, a redirect)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def configure_logging(level: int, fmt: LogFormat = "json", stream: TextIO | None = None) -> None:
    """Send every stormwatch log line to ``stream`` (stderr) in ``fmt``, at ``level`` and above.

    Replaces the handler of an earlier call only (a process configured twice, tests), never
    handlers that others installed on the root logger (pytest's capture)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format {fmt!r}: choose one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
    _installed.clear()
    handler: logging.Handler = _Stderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    root.addHandler(handler)
    _installed.append(handler)
    root.setLevel(level)
    lifecycle_log.setLevel(min(level, logging.INFO))
