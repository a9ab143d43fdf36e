"""The one bounded poll of the tests: things on a broker or in another process happen "soon"."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from stormwatch.errors import KafkaUnavailable

T = TypeVar("T")

_SHOWN = 300  # characters of the last value a timeout message shows


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout_s: float = 40.0,
    *,
    interval_s: float = 0.5,
    alive: Callable[[], object] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    ``what`` completes "timed out after 30s waiting for ...", the AssertionError raised once
    ``timeout_s`` has passed (with the last value ``probe`` returned, unless None). ``alive`` is
    called before each probe to fail at once, rather than at the timeout, when what is awaited can
    no longer happen (a worker process or a stage thread died): it raises to say so. A probe that
    raises KafkaUnavailable (a read Kafka did not answer in time) counts as "not yet".
    """
    deadline = time.monotonic() + timeout_s
    unavailable: KafkaUnavailable | None = None
    while True:
        if alive is not None:
            alive()
        try:
            last = probe()
        except KafkaUnavailable as exc:  # Kafka slow to answer a read (a busy machine): try again
            last, unavailable = None, exc
        if last:
            return last
        if time.monotonic() >= deadline:
            shown = "" if last is None else f"; last: {_short(last)}"
            if last is None and unavailable is not None:
                shown = f"; last: {unavailable}"
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}{shown}")
        time.sleep(interval_s)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"
