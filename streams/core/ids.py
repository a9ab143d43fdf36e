"""Incident and event ids: derived from the group and time, so a replay makes the same ids.

The incident id's format has one owner, ``stormwatch.schemas.incident_id.IncidentId``; these are
the engine's names for its two operations.
"""

from __future__ import annotations

import xxhash

from stormwatch.schemas.incident_id import IncidentId

__all__ = ["event_id_for", "gkhash_of_incident", "incident_id_for"]


def incident_id_for(gkhash: str, opened_ms: int) -> str:
    return IncidentId.of(gkhash, opened_ms)


def gkhash_of_incident(incident_id: str) -> str | None:
    return IncidentId.gkhash_of(incident_id)


def event_id_for(incident_id: str, seq: int) -> str:
    return xxhash.xxh3_128_hexdigest(f"{incident_id}:{seq}".encode())
