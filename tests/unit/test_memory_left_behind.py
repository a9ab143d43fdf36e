"""What an engine leaves behind once it is dropped (a partition revoked or rebuilt), and what
parsing contracts leaves behind: nothing.

One long-lived object made amid the state keeps the allocator's memory arena around it for as long
as it lives, so a correlator that handed partitions back kept their memory (issue #17). Traced with
tracemalloc: every allocation made while an engine worked and still alive after it went is listed.
"""

from __future__ import annotations

import gc
import tracemalloc

from stormwatch.schemas.incident import IncidentEvent, IncidentState
from stormwatch.schemas.incident_id import IncidentId
from stormwatch.streams.core.groups import forget_shared
from stormwatch.streams.core.ids import incident_id_for
from stormwatch.streams.core.incidents import IncidentRuntime
from tests.kit.engine import Driver, at, config, note

RULES = """
defaults:
  group_wait: 30s
  group_interval: 1m
  resolve_timeout: 5m
allowed_lateness: 1s
state_time_resolution: 1s
"""

OURS = ("/stormwatch/", "/streams/", "/schemas/", "/pydantic", "/orjson", "/msgspec")


def _work(start_s: int) -> int:
    """Incidents opened, updated, resolved and written, as the correlator runner writes them.

    Each call from its own ``start_s``: its ids and times are new to every cache on the way."""
    d = Driver(config(RULES))
    for second in range(start_s, start_s + 200, 20):
        d.alerts(
            [
                note(
                    {"alertname": f"A{g}", "service": f"s{g}", "instance": f"i{i}"},
                    at(second),
                    firing=second < start_s + 160,
                )
                for g in range(40)
                for i in range(3)
            ]
        )
        d.tick(at(second + 1))
        d.commit()
    written = [event.to_bytes() for event in d.events]
    return len(written)


def _left_behind() -> list[tracemalloc.Trace]:
    tracemalloc.start(32)
    try:
        events = _work(start_s=100_000)
        forget_shared()
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert events > 50
    # By where the allocation was made (its most recent frame): a tracer or collector callback of
    # another library can run inside the engine's frames.
    return [t for t in snapshot.traces if any(part in t.traceback[-1].filename for part in OURS)]


def test_a_dropped_engine_leaves_no_allocation_behind() -> None:
    _work(start_s=0)  # first: what is made once per process (caches, interned names) is made here
    forget_shared()
    gc.collect()
    left = _left_behind()
    where = sorted(
        {
            " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in list(t.traceback)[-4:])
            for t in left
        }
    )
    assert not left, f"{len(left)} allocations outlived the engine:\n" + "\n".join(where[:10])


def test_incident_ids_the_engine_makes_are_plain_strings() -> None:
    """pydantic-core keeps its copy of a str subclass given for a ``str`` field in a cache of up to
    16,384 strings for good: with ``IncidentId`` objects, one string per incident (issue #17)."""
    made = incident_id_for("0123456789abcdef", 1_800_000_000_000)
    assert type(made) is str and made == IncidentId.of("0123456789abcdef", 1_800_000_000_000)
    runtime = IncidentRuntime(made, IncidentState.OPEN, 1_800_000_000_000)
    assert type(runtime.incident_id) is str


def test_parsed_contracts_leave_no_strings_behind() -> None:
    """pydantic-core caches up to 16,384 parsed strings (values too) for the life of the process by
    default; Contract turns that off. A catch-up's burst of records otherwise left strings that
    each kept a memory arena around them (issue #17)."""
    d = Driver(config(RULES))
    d.alerts([note({"alertname": "A", "instance": f"i{i}"}, at(0)) for i in range(3)])
    d.tick(at(40))
    d.commit()
    (opened,) = d.events
    raw = opened.to_bytes()
    distinct = [raw.replace(opened.incident_id.encode(), f"inc-{n:016x}-1".encode()) for n in range(2_000)]
    IncidentEvent.from_bytes(raw)  # what the first parse makes once
    gc.collect()
    tracemalloc.start(8)
    try:
        parsed = [IncidentEvent.from_bytes(value).incident_id for value in distinct]
        del parsed
        gc.collect()
        left = [t for t in tracemalloc.take_snapshot().traces if "pydantic" in t.traceback[-1].filename]
    finally:
        tracemalloc.stop()
    assert not left, f"{len(left)} strings kept by pydantic"
