"""The state codec: the changelog records a transaction writes, and the state rebuilt from them.

Three kinds of record per partition: ``g/GKHASH`` (a group and its incident), ``a/GKHASH/FP``
(one alert) and ``p`` (the partition: watermarks, clock, release bound, processed offset,
silences, inhibitors). A record's value is the latest; None deletes it (compaction drops it).
"""

from __future__ import annotations

from typing import Any

import orjson

from stormwatch.schemas.silence import Silence
from stormwatch.streams.core import wire
from stormwatch.streams.core.groups import AlertState, GroupState
from stormwatch.streams.core.inhibition import Inhibitions, Inhibitor
from stormwatch.streams.core.linkgate import LinkGate
from stormwatch.streams.core.mutetally import MuteTally
from stormwatch.streams.core.reorder import ReorderBuffer, Watermarks
from stormwatch.streams.core.silencing import Silences
from stormwatch.streams.core.state import PartitionState
from stormwatch.streams.core.timed import TimedCommands

__all__ = ["PARTITION_KEY", "changed_records", "encode_meta", "restore_groups", "restore_meta"]

PARTITION_KEY = "p"


def changed_records(state: PartitionState) -> dict[str, bytes | None]:
    """The group and alert records changed since the last transaction (None: deleted)."""
    records: dict[str, bytes | None] = {}
    for gkhash in state.dirty_groups:
        group = state.groups.get(gkhash)
        if group is not None:
            records[f"g/{gkhash}"] = group.encode_meta()
    for gkhash in state.deleted:
        if gkhash not in state.groups:
            records[f"g/{gkhash}"] = None
    for gkhash, fp in state.dirty_alerts:
        group = state.groups.get(gkhash)
        alert = group.alerts.get(fp) if group is not None else None
        if group is None or alert is None:
            records[f"a/{gkhash}/{fp}"] = None
        else:
            records[f"a/{gkhash}/{fp}"] = alert.encode(group.reports)
    return records


def encode_meta(
    *,
    watermarks: Watermarks,
    buffer: ReorderBuffer,
    processed: int,
    silences: Silences,
    inhibitions: Inhibitions,
    links: LinkGate | None = None,
    timed: TimedCommands | None = None,
    muted: MuteTally | None = None,
) -> bytes:
    """The partition record (``link`` only with a topology, ``timed`` only while a command
    waits: the record is as before without them)."""
    bound = None if buffer.bound is None else [_plain(b) for b in buffer.bound]
    extra: dict[str, Any] = {"link": links.to_obj()} if links is not None else {}
    if timed is not None and len(timed):
        extra["timed"] = timed.to_obj()
    if muted is not None and len(muted):
        extra["muted"] = muted.to_obj()
    return orjson.dumps(
        {
            **extra,
            "wm": watermarks.marks,
            "n": watermarks.expected_sources,
            "clock": buffer.clock,
            "bound": bound,
            "processed": processed,
            "silences": {k: s.model_dump(mode="json") for k, s in silences.by_id.items()},
            "inh": {
                rule: {
                    fp: [i.labels, i.firing, i.expiry_ms, *([i.gkhash] if i.gkhash else [])]
                    for fp, i in sources.items()
                }
                for rule, sources in inhibitions.sources.items()
            },
        }
    )


def restore_meta(
    data: bytes,
    *,
    watermarks: Watermarks,
    buffer: ReorderBuffer,
    silences: Silences,
    inhibitions: Inhibitions,
    links: LinkGate | None = None,
    timed: TimedCommands | None = None,
    muted: MuteTally | None = None,
) -> int:
    """Load the partition record into the given parts; returns the processed offset it holds."""
    obj = orjson.loads(data)
    if links is not None:
        links.restore(obj.get("link", {}))
    if timed is not None:
        timed.restore(TimedCommands.rows_in(obj))
    if muted is not None:
        muted.restore(MuteTally.rows_in(obj))
    watermarks.marks = {str(k): int(v) for k, v in obj["wm"].items()}
    watermarks.expected_sources = int(obj.get("n", 1))
    buffer.clock = obj["clock"]
    raw_bound = obj["bound"]
    if raw_bound is not None:  # (event_ms, fingerprint, firing, severity, tiebreak bytes, kind)
        buffer.bound = (*raw_bound[:4], raw_bound[4].encode(), raw_bound[5])
    silences.replace_all({k: Silence.model_validate(v) for k, v in obj["silences"].items()})
    inhibitions.sources = {
        rule: {fp: Inhibitor(*v) for fp, v in sources.items()} for rule, sources in obj["inh"].items()
    }
    processed: int = obj["processed"]
    return processed


def restore_groups(items: dict[str, bytes], state: PartitionState) -> None:
    """Load the group and alert records (an alert whose group record is gone is dropped)."""
    for key, value in items.items():
        if key.startswith("g/"):
            gkhash = key[2:]
            state.groups[gkhash] = GroupState.decode_meta(gkhash, value)
    for key, value in items.items():
        if key.startswith("a/"):
            _, gkhash, _fp = key.split("/", 2)
            group = state.groups.get(gkhash)
            if group is not None:
                alert = AlertState.decode(value, group.reports)
                group.alerts[alert.fingerprint] = alert
                if alert.keyed:
                    state.keyed_index[alert.fingerprint] = gkhash
    for group in state.groups.values():  # derived, not written: some member change is unreported
        group.has_pending = any(a.pending for a in group.alerts.values() if a.member)


def _plain(part: Any) -> Any:
    """A release-bound element as JSON: the tiebreak is a Tiebreak while running, bytes once restored."""
    if isinstance(part, wire.Tiebreak):
        return part.value.decode()
    if isinstance(part, bytes):
        return part.decode()
    return part
