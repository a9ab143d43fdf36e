"""The survivor freeze: what a commit leaves is frozen; a sweep every interval collects cycles."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from stormwatch.gctune import SurvivorFreeze


class _Node:
    def __init__(self) -> None:
        self.peer: _Node | None = None


@pytest.fixture(autouse=True)
def _thaw() -> Iterator[None]:
    yield
    gc.unfreeze()


def test_a_commit_freezes_what_survived_it() -> None:
    clock = [0.0]
    freeze = SurvivorFreeze(600, clock=lambda: clock[0])
    before = gc.get_freeze_count()
    kept = [_Node() for _ in range(1000)]
    freeze.committed()
    assert gc.get_freeze_count() >= before + len(kept)
    assert freeze.sweeps == 0


def test_frozen_objects_are_still_freed_when_nothing_uses_them() -> None:
    freeze = SurvivorFreeze(600, clock=lambda: 0.0)
    node = _Node()
    ref = weakref.ref(node)
    freeze.committed()
    del node
    assert ref() is None  # reference counting, not the collector


def test_a_frozen_cycle_waits_for_the_sweep_and_is_collected_then() -> None:
    clock = [0.0]
    freeze = SurvivorFreeze(600, clock=lambda: clock[0])
    a, b = _Node(), _Node()
    a.peer, b.peer = b, a
    ref = weakref.ref(a)
    freeze.committed()
    del a, b
    gc.collect()
    assert ref() is not None  # frozen: out of the collector's reach
    clock[0] = 599.0
    freeze.committed()
    assert ref() is not None and freeze.sweeps == 0
    clock[0] = 600.0
    freeze.committed()
    assert ref() is None and freeze.sweeps == 1
    assert gc.get_freeze_count() > 0  # and what is left is frozen again
