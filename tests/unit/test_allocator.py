"""The long-running processes' allocator choice: jemalloc when installed, the starter's environment
given back after the re-exec, and clear errors for a bad or unmet choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import stormwatch.allocator as allocator
from stormwatch.allocator import (
    GLIBC_ARENAS,
    JEMALLOC_CONF,
    JEMALLOC_PATHS,
    MMAP_THRESHOLD_BYTES,
    active_allocator,
    reexec_environment,
    restore_environment,
)
from stormwatch.cli import build_parser, main
from stormwatch.errors import UserError

LIBRARY = JEMALLOC_PATHS[0]


def installed(path: str) -> bool:
    return path == LIBRARY


def missing(path: str) -> bool:
    return False


def test_auto_picks_jemalloc_when_installed_and_keeps_what_was_preloaded() -> None:
    env = reexec_environment(
        {"PATH": "/bin", "LD_PRELOAD": "/opt/x.so", "MALLOC_CONF": "narenas:2"}, installed
    )
    assert env is not None
    assert env["LD_PRELOAD"] == f"{LIBRARY} /opt/x.so"
    assert env["PYTHONMALLOC"] == "malloc"
    assert env["MALLOC_CONF"] == f"{JEMALLOC_CONF},narenas:2"
    assert env["PATH"] == "/bin"
    saved = json.loads(env["_STORMWATCH_ALLOCATOR_SAVED"])
    assert saved == {"LD_PRELOAD": "/opt/x.so", "PYTHONMALLOC": None, "MALLOC_CONF": "narenas:2"}


@pytest.mark.parametrize(
    "environ",
    [
        {"STORMWATCH_ALLOCATOR": "pymalloc"},
        {"_STORMWATCH_ALLOCATOR_SAVED": "{}"},  # already the re-executed process
        {"LD_PRELOAD": "/usr/lib/libjemalloc.so.2", "PYTHONMALLOC": "malloc"},  # the starter chose it
    ],
)
def test_no_reexec_when_chosen_otherwise_or_done_already(environ: dict[str, str]) -> None:
    assert reexec_environment(environ, installed) is None


def test_auto_means_jemalloc_only_for_the_commands_that_ask_for_it() -> None:
    assert reexec_environment({}, installed, auto_jemalloc=False) is None
    forced = reexec_environment({"STORMWATCH_ALLOCATOR": "jemalloc"}, installed, auto_jemalloc=False)
    assert forced is not None and forced["PYTHONMALLOC"] == "malloc"


def test_auto_without_jemalloc_goes_on_with_pymalloc() -> None:
    assert reexec_environment({}, missing) is None
    assert reexec_environment({"STORMWATCH_ALLOCATOR": " AUTO "}, missing) is None


def test_a_required_jemalloc_that_is_missing_says_how_to_install_it() -> None:
    with pytest.raises(UserError, match=r"apt-get install libjemalloc2.*STORMWATCH_ALLOCATOR=auto"):
        reexec_environment({"STORMWATCH_ALLOCATOR": "jemalloc"}, missing)


def test_an_unknown_choice_lists_the_valid_ones() -> None:
    with pytest.raises(
        UserError, match=r"'tcmalloc' is not an allocator; use one of auto, jemalloc, pymalloc"
    ):
        reexec_environment({"STORMWATCH_ALLOCATOR": "tcmalloc"}, installed)


def test_restore_gives_back_the_starters_variables() -> None:
    env = reexec_environment({"LD_PRELOAD": "/opt/x.so", "KEEP": "1"}, installed)
    assert env is not None
    restore_environment(env)
    assert env == {"LD_PRELOAD": "/opt/x.so", "KEEP": "1"}
    restore_environment(env)  # nothing saved: nothing changes
    assert env == {"LD_PRELOAD": "/opt/x.so", "KEEP": "1"}


def test_active_allocator_reads_pythonmalloc_and_the_mapped_libraries() -> None:
    jemalloc_maps = f"7f00-7f01 r-xp 0 08:01 1 {LIBRARY}\n"
    assert active_allocator("", jemalloc_maps) == "pymalloc"
    assert active_allocator("pymalloc", jemalloc_maps) == "pymalloc"
    assert active_allocator("malloc", jemalloc_maps) == "jemalloc"
    assert active_allocator("malloc", "7f00-7f01 r-xp 0 08:01 1 /usr/lib/libc.so.6\n") == "malloc"


def test_only_the_long_running_commands_switch_allocator() -> None:
    parser = build_parser()
    workers = [["ingest"], ["correlate"], ["link"], ["agent"], ["executor"], ["notify"], ["gateway"]]
    one_shots = [["notify", "convert", "x.yml"], ["topics", "list"], ["demo"], ["demo-receiver"]]
    assert all(getattr(parser.parse_args(a), "long_running", False) for a in workers)
    assert not any(getattr(parser.parse_args(a), "long_running", False) for a in one_shots)
    # auto: jemalloc for the correlator only, whose state moves with its partitions
    assert [a for a in workers if getattr(parser.parse_args(a), "auto_jemalloc", False)] == [["correlate"]]


def test_a_worker_with_a_bad_choice_exits_2_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STORMWATCH_ALLOCATOR", "bogus")
    assert main(["ingest"]) == 2
    assert "STORMWATCH_ALLOCATOR='bogus' is not an allocator" in capsys.readouterr().err


@pytest.mark.skipif(
    not any(os.path.exists(p) for p in JEMALLOC_PATHS), reason="jemalloc not installed (Debian: libjemalloc2)"
)
def test_the_process_reexecutes_itself_with_jemalloc_and_its_children_inherit_nothing() -> None:
    script = (
        "import os, subprocess, sys\n"
        "print('started', os.getpid(), flush=True)\n"
        "from stormwatch.allocator import use_preferred_allocator, active_allocator\n"
        "use_preferred_allocator(auto_jemalloc=True)\n"
        "child = subprocess.run(['sh', '-c', 'echo \"$LD_PRELOAD|$PYTHONMALLOC|$MALLOC_CONF\"'],"
        " capture_output=True, text=True).stdout.strip()\n"
        "print(os.getpid(), active_allocator(), child)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PYTHONMALLOC", "MALLOC_CONF")}
    env.pop("STORMWATCH_ALLOCATOR", None)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    *started, last = run.stdout.splitlines()
    pid, active, child = last.split(" ", 2)
    assert started == [f"started {pid}"] * 2, "one re-exec, same pid"
    assert active == "jemalloc"
    assert child == "||", "the starter's environment was not given back"


def test_glibc_gets_a_fixed_mmap_threshold_and_few_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(allocator, "_MALLOPT", lambda option, value: calls.append((option, value)) or 1)
    allocator.tune_malloc({})
    # M_MMAP_THRESHOLD: no dynamic rise; M_ARENA_MAX: threads share heaps
    assert calls == [(-3, MMAP_THRESHOLD_BYTES), (-8, GLIBC_ARENAS)]
    calls.clear()
    allocator.tune_malloc({"MALLOC_ARENA_MAX": "8"})  # glibc's own setting wins
    allocator.tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.arena_max=8"})
    assert calls == [(-3, MMAP_THRESHOLD_BYTES)] * 2
    monkeypatch.setattr(allocator, "_MALLOPT", None)
    allocator.tune_malloc({})  # no glibc: nothing to tune, and no error
    assert len(calls) == 2


THREADS_ALLOCATE = """
import ctypes, ctypes.util, os, sys, threading
from stormwatch.allocator import use_preferred_allocator
if sys.argv[1] == "tuned":
    use_preferred_allocator(auto_jemalloc=False)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
hold = threading.Barrier(7)
def allocate():
    libc.malloc(4096)  # this thread's first malloc: glibc picks (or makes) its arena
    hold.wait()
threads = [threading.Thread(target=allocate) for _ in range(6)]
for t in threads:
    t.start()
hold.wait()
libc.malloc_stats()  # "Arena N:" per arena, on stderr
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_stats: Linux only")
def test_threads_started_after_the_tuning_share_two_heaps() -> None:
    """Six threads alive at once: glibc gives them heaps of their own by default, two in all once tuned."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LD_PRELOAD", "PYTHONMALLOC", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
    }
    env["STORMWATCH_ALLOCATOR"] = "pymalloc"

    def arenas(mode: str) -> int:
        run = subprocess.run(
            [sys.executable, "-c", THREADS_ALLOCATE, mode],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert run.returncode == 0, run.stderr
        return sum(line.startswith("Arena ") for line in run.stderr.splitlines())

    assert arenas("default") > GLIBC_ARENAS
    assert arenas("tuned") == GLIBC_ARENAS
