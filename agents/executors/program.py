"""``exec``: run an allowlisted program with an argv list. Never through a shell.

Safety rests on three rules, each enforced here on the rendered command (not just when the
workflow file is checked): the program (``argv[0]``) must be an absolute path on the allowlist,
compared after resolving symlinks; the argv list goes to ``execve`` as it is (``shell=False``), so
each templated element stays exactly one argument whatever characters a label value holds; and
shells and program launchers (``sh``, ``bash``, ``env``, ``xargs``, ``sudo`` ...) can never be
allowlisted, because they would turn an argument back into a command line. The child gets a
minimal environment (not the worker's, which may hold Kafka credentials), no stdin, its own
process group (killed as a whole on timeout), and its output is kept to the last 2 KiB.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from stormwatch.agents.core.templating import is_template
from stormwatch.agents.executors.base import (
    ExecutorPolicy,
    Outcome,
    ParamProblems,
    clip,
    refused,
    unknown_keys,
)
from stormwatch.schemas.commands import MitigationCommand

__all__ = ["FORBIDDEN_PROGRAMS", "ProgramAllowlist", "ProgramExecutor"]

_KEYS = ("argv", "env")

FORBIDDEN_PROGRAMS = frozenset(
    {
        "sh", "bash", "dash", "zsh", "ksh", "mksh", "pdksh", "ash", "csh", "tcsh", "fish", "rbash",
        "busybox", "toybox", "env", "xargs", "sudo", "doas", "su", "runuser", "pkexec", "nohup",
        "setsid", "timeout", "nice", "ionice", "chrt", "taskset", "stdbuf", "time", "watch", "script",
        "flock", "chroot", "unshare", "nsenter", "strace", "ltrace", "gdb", "expect", "parallel",
    }
)  # fmt: skip
"""Shells and programs whose job is to run another command line: never allowed as argv[0]."""

_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
_FORBIDDEN_ENV = frozenset(
    {
        "PATH", "IFS", "ENV", "BASH_ENV", "SHELLOPTS", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME",
        "PERL5LIB", "PERL5OPT", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS",
    }
)  # fmt: skip
_FORBIDDEN_ENV_PREFIXES = ("LD_", "DYLD_", "GCONV_", "MALLOC_")
_BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_TAIL_BYTES = 8192


def _forbidden(path: str) -> bool:
    name = os.path.basename(path)
    return (
        name in FORBIDDEN_PROGRAMS
        or re.fullmatch(r"(?:python|perl|ruby|node|php|lua)[0-9.]*", name) is not None
    )


class ProgramAllowlist:
    """Absolute program paths, or directories (ending in '/') whose files are all allowed.

    A program must be named exactly as allowlisted (a normalized absolute path, no ``..``), and
    what it resolves to must not be a shell: a symlink cannot smuggle one in.
    """

    def __init__(self, entries: tuple[str, ...]) -> None:
        self.files: set[str] = set()
        self.dirs: list[tuple[str, str]] = []
        for entry in entries:
            if not entry.startswith("/"):
                raise ValueError(f"allowed program {entry!r} must be an absolute path")
            if entry.endswith("/"):
                norm = os.path.normpath(entry)
                self.dirs.append((norm.rstrip("/") + "/", os.path.realpath(norm).rstrip("/") + "/"))
                continue
            if _forbidden(entry) or _forbidden(os.path.realpath(entry)):
                raise ValueError(
                    f"{entry!r} cannot be allowlisted: shells, interpreters and command launchers would "
                    "let a templated argument become a command line; allowlist a script that does the job"
                )
            self.files.add(os.path.normpath(entry))
        self.raw = entries

    def allows(self, program: str) -> tuple[bool, str]:
        if not self.raw:
            return False, "no program is allowed (set agent.allow_programs or pass --allow-program)"
        if not program.startswith("/"):
            return False, f"program {program!r} must be an absolute path"
        if os.path.normpath(program) != program:
            return False, f"program {program!r} must be a normalized path (no '.', '..' or '//')"
        real = os.path.realpath(program)
        if _forbidden(program) or _forbidden(real):
            return False, f"program {program!r} is a shell, interpreter or command launcher"
        if program in self.files:
            return True, ""
        if any(program.startswith(d) and real.startswith(d_real) for d, d_real in self.dirs):
            return True, ""
        return False, f"program {program!r} is not on the allowlist ({', '.join(self.raw)})"


class ProgramExecutor:
    name: ClassVar[str] = "exec"
    side_effects: ClassVar[bool] = True

    def __init__(self, policy: ExecutorPolicy) -> None:
        self.policy = policy
        self.allowlist = ProgramAllowlist(policy.allow_programs)

    @staticmethod
    def check_params(params: dict[str, Any]) -> ParamProblems:
        problems = unknown_keys(params, _KEYS)
        argv = params.get("argv")
        if argv is None:
            problems.append(("", "missing parameter 'argv' (the program and its arguments, as a list)"))
        elif not isinstance(argv, list) or not argv:
            problems.append(("argv", "must be a non-empty list: [program, arg1, arg2, ...]"))
        else:
            for i, arg in enumerate(argv):
                if not isinstance(arg, str):
                    problems.append((f"argv[{i}]", f"must be a string (quote numbers); got {arg!r}"))
                elif "\x00" in arg:
                    problems.append((f"argv[{i}]", "must not contain NUL characters"))
            program = argv[0]
            if isinstance(program, str):
                if is_template(program):
                    problems.append(
                        ("argv[0]", "the program must be a literal absolute path, not a template")
                    )
                elif not program.startswith("/"):
                    problems.append(("argv[0]", f"the program must be an absolute path; got {program!r}"))
                elif _forbidden(program):
                    problems.append(
                        ("argv[0]", f"{program!r} is a shell, interpreter or command launcher; never allowed")
                    )
        env = params.get("env", {})
        if not isinstance(env, dict):
            problems.append(("env", "must be a mapping of NAME: value"))
        else:
            for k, v in env.items():
                if not isinstance(k, str) or not _ENV_NAME.fullmatch(k):
                    problems.append((f"env.{k}", "names must be upper case letters, digits and '_'"))
                elif k in _FORBIDDEN_ENV or k.startswith(_FORBIDDEN_ENV_PREFIXES):
                    problems.append((f"env.{k}", f"{k} changes how programs load code; not allowed"))
                if not isinstance(v, str):
                    problems.append((f"env.{k}", "values must be strings"))
        return problems

    def execute(self, command: MitigationCommand, *, timeout_s: float, dry_run: bool) -> Outcome:
        problems = self.check_params(command.params)
        if problems:
            path, message = problems[0]
            return refused(f"invalid parameters: {path + ': ' if path else ''}{message}")
        argv = [str(a) for a in command.params["argv"]]
        ok, why = self.allowlist.allows(argv[0])
        if not ok:
            return refused(why)
        if not Path(argv[0]).is_file() or not os.access(argv[0], os.X_OK):
            return Outcome(ok=False, reason=f"program {argv[0]!r} does not exist or is not executable")
        if dry_run:
            return Outcome(ok=True, output=f"would run {argv!r}")
        env = {
            **_BASE_ENV,
            **{str(k): str(v) for k, v in dict(command.params.get("env", {})).items()},
            "STORMWATCH_COMMAND_ID": command.command_id,
            "STORMWATCH_INCIDENT_ID": command.incident_id,
        }
        return _run(argv, env, timeout_s)


def _run(argv: list[str], env: dict[str, str], timeout_s: float) -> Outcome:
    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd="/",
                shell=False,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            return Outcome(ok=False, reason=f"cannot start {argv[0]!r}: {exc.strerror or exc}")
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return Outcome(
                ok=False, output=_tail(out), reason=f"timed out after {timeout_s:g}s; process group killed"
            )
        output = _tail(out)
    seconds = time.monotonic() - started
    if code == 0:
        return Outcome(ok=True, output=output)
    reason = f"exited with status {code}" if code > 0 else f"killed by signal {-code}"
    return Outcome(ok=False, output=output, reason=f"{reason} after {seconds:.1f}s")


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _tail(out: Any) -> str:
    size = out.seek(0, os.SEEK_END)
    out.seek(max(size - _TAIL_BYTES, 0))
    return clip(out.read().decode("utf-8", "replace"))
