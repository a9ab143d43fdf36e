"""Log lines are what a log pipeline can parse (issue #15, item 5): with ``--log-format json``
(the default) every stderr line is one JSON object, whatever the message holds; ``text`` is for
a person. Worker start and stop lines are shown at the default level."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from stormwatch import logs
from stormwatch.logs import LIFECYCLE_LOGGER, configure_logging, lifecycle_log
from tests.kit.paths import ROOT

TRICKY = 'it\'s "quoted" {not: json}\nsecond line\ttab \\ backslash, non-ASCII: é 漢 🚨, NUL \x00'

# A CLI with one command, "say", that logs TRICKY: cli.main's own logging setup, end to end, in a
# process of its own (the root logger of this one belongs to pytest).
SAY = f"""
import logging, sys, types
from stormwatch import cli

def say(args, settings):
    log = logging.getLogger("stormwatch.say")
    log.warning({TRICKY!r}, extra={{"partition": 3, "topics": ["a", "b"]}})
    log.info("only with -v")
    logging.getLogger("stormwatch.lifecycle").info("started", extra={{"stage": "say"}})
    try:
        raise ValueError("bad 'value'\\nwith a newline")
    except ValueError:
        log.exception("failed with %s", "an exception")
    return 0

def register(sub):
    sub.add_parser("say").set_defaults(handler=say)

module = types.ModuleType("say_command")
module.register = register
sys.modules["say_command"] = module
cli.COMMAND_MODULES = ["say_command"]
sys.exit(cli.main(sys.argv[1:]))
"""


def _say(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SAY, *args, "say"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PYTHONIOENCODING": "utf-8", **env},
    )


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    lines = stderr.splitlines()
    assert lines, "no log output"
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise AssertionError(f"not one JSON object per line: {line!r}") from exc
    return parsed


def test_every_stderr_line_is_one_json_object() -> None:
    done = _say()
    assert done.returncode == 0, done.stderr
    lines = _json_lines(done.stderr)
    assert [r["msg"] for r in lines] == [TRICKY, "started", "failed with an exception"]
    warning, started, failed = lines
    assert warning["level"] == "WARNING" and warning["logger"] == "stormwatch.say"
    assert warning["partition"] == 3 and warning["topics"] == ["a", "b"]
    assert warning["ts"].endswith("Z") and "T" in warning["ts"]
    assert started == {**started, "level": "INFO", "logger": LIFECYCLE_LOGGER, "stage": "say"}
    assert failed["level"] == "ERROR"
    assert "ValueError: bad 'value'" in failed["exception"] and "Traceback" in failed["exception"]


def test_more_verbosity_still_gives_json() -> None:
    done = _say("-v")
    assert [r["msg"] for r in _json_lines(done.stderr)][:2] == [TRICKY, "only with -v"]


@pytest.mark.parametrize(
    ("args", "env"),
    [(["--log-format", "text"], {}), ([], {"STORMWATCH_LOG_FORMAT": "text"})],
    ids=["flag", "env"],
)
def test_text_format_for_a_terminal(args: list[str], env: dict[str, str]) -> None:
    done = _say(*args, **env)
    assert done.returncode == 0, done.stderr
    first = done.stderr.splitlines()[0]
    assert ' WARNING stormwatch.say: it\'s "quoted"' in first
    assert "stormwatch.lifecycle: started stage=say" in done.stderr
    assert "Traceback (most recent call last):" in done.stderr


def test_the_flag_wins_over_the_setting() -> None:
    done = _say("--log-format", "json", STORMWATCH_LOG_FORMAT="text")
    assert len(_json_lines(done.stderr)) == 3


def test_an_unknown_format_is_refused() -> None:
    done = _say("--log-format", "xml")
    assert done.returncode == 2 and "invalid choice: 'xml'" in done.stderr


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(logging.WARNING, "json", stream)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for handler in logs._installed:
            root.removeHandler(handler)
        logs._installed.clear()
        root.setLevel(logging.WARNING)
        lifecycle_log.setLevel(logging.NOTSET)


def test_lifecycle_lines_show_at_the_default_level(captured: io.StringIO) -> None:
    logging.getLogger("stormwatch.txloop").info("status line: hidden by default")
    lifecycle_log.info("stopped", extra={"stage": "ingest", "reason": "clean"})
    (line,) = captured.getvalue().splitlines()
    assert json.loads(line)["reason"] == "clean"


def test_a_second_configuration_replaces_the_first(captured: io.StringIO) -> None:
    other = io.StringIO()
    configure_logging(logging.WARNING, "text", other)
    logging.getLogger("stormwatch.x").warning("once")
    assert captured.getvalue() == "" and other.getvalue().count("once") == 1
