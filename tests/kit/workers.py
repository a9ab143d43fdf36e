"""`stormwatch` as a user runs it: worker subprocesses with their logs, and one-shot CLI runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.kit.paths import ROOT

LOG_TAIL = 3000  # characters of a dead worker's log an assertion shows
FAILURE_TAIL_LINES = 15
"""Last lines of each worker's log that a failed test's report shows (tests/conftest.py)."""
STARTED_LOGS: list[Path] = []
"""Every worker log of this pytest process, in start order: a failed test's report shows the tails
of those its test started, so a CI failure explains itself after the workspace is gone."""


def worker_env(**extra: str) -> dict[str, str]:
    """This environment for a worker: unbuffered output, and without KAFKA_BOOTSTRAP_SERVERS (the
    session broker's address) that would redirect a worker configured for another cluster."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class Workers:
    """Named worker processes, each writing to its log file: start, SIGKILL, check, stop them all."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, name: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        """Start ``argv`` from the repository root; its output is appended to ``log`` (a restarted
        worker keeps one log)."""
        with open(log, "ab") as out:  # the child has its own copy of the descriptor
            proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, env=worker_env(), cwd=ROOT
            )
        self.procs[name] = proc
        self.logs[name] = log
        STARTED_LOGS.append(log)
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL: a crash, with no chance to commit or leave the group."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def assigned(self, name: str) -> bool:
        """The worker has logged (JSON logs) that its consumer got its partitions: from then on it
        reads what is produced. A restarted worker's log still holds the line of its last run."""
        return self.assignments(name) > 0

    def assignments(self, name: str) -> int:
        """How many times the worker logged that it got its partitions, over all its runs (its log
        is kept across restarts)."""
        count = 0
        for line in self.logs[name].read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):  # not a JSON object: a traceback...
                count += json.loads(line).get("msg") == "partitions assigned"
        return count

    def check_alive(self) -> None:
        """AssertionError with its exit status and log when a worker has exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                log = self.logs[name].read_text(errors="replace")[-LOG_TAIL:]
                raise AssertionError(f"worker {name} exited with {proc.returncode}:\n{log}")

    def stop(self) -> None:
        """SIGTERM to every worker (a clean stop), SIGKILL to those still running after 20 s."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


def log_tails(logs: Sequence[Path]) -> str:
    """The last FAILURE_TAIL_LINES lines of each log (each named once, in order)."""
    parts = []
    for log in dict.fromkeys(logs):
        try:
            lines = log.read_text(errors="replace").splitlines()[-FAILURE_TAIL_LINES:]
        except OSError as exc:
            lines = [f"(unreadable: {exc})"]
        parts.append(f"--- {log.name} (last {len(lines)} lines)\n" + "\n".join(line[:400] for line in lines))
    return "\n".join(parts)


def run_cli(*args: str, env: dict[str, str], timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """The ``stormwatch`` CLI as a user runs it: from the project root, no stdin, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "stormwatch.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
