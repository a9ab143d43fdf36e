"""Incident and event ids: derived from the group and time, so a replay makes the same ids.

The incident id's format has one owner, ``stormwatch.schemas.incident_id.IncidentId``; these are
the engine's names for its two operations.
"""

from __future__ import annotations

import xxhash

from stormwatch.schemas.incident_id import IncidentId

__all__ = ["event_id_for", "gkhash_of_incident", "incident_id_for"]


def incident_id_for(gkhash: str, opened_ms: int) -> str:
    """A plain ``str``, not the ``IncidentId`` subclass: given a str subclass for a ``str`` field,
    pydantic-core copies it, and by default keeps the copy in its process-wide string cache for good
    (one 83-byte string per incident, each pinning the memory arena around it; issue #17). The
    contracts now turn that cache off (``schemas.common.Contract``); a plain id also spares the copy.
    ``tests/unit/test_memory_left_behind.py``."""
    return str(IncidentId.of(gkhash, opened_ms))


def gkhash_of_incident(incident_id: str) -> str | None:
    return IncidentId.gkhash_of(incident_id)


def event_id_for(incident_id: str, seq: int) -> str:
    return xxhash.xxh3_128_hexdigest(f"{incident_id}:{seq}".encode())
