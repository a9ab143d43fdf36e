"""Tell the input format of a decoded record from its shape (docs/input-formats.md, "Detection").

Each format has keys no other format uses at the same place, so detection is a few dict lookups.
A producer that wants certainty sets the ``stormwatch-format`` record header instead.
"""

from __future__ import annotations

from typing import Any

from stormwatch.schemas.alert import InputFormat

__all__ = [
    "ENCODING_HEADER",
    "FORMAT_HEADER",
    "NOTES_V1",
    "SIGNATURE_HEADER",
    "detect_format",
    "looks_like_alertmanager",
]

FORMAT_HEADER = "stormwatch-format"
ENCODING_HEADER = "stormwatch-encoding"
"""With the value ``NOTES_V1``: the gateway's already parsed alerts (streams.core.canonical), which
ingest reads without the adapters; ``stormwatch-format`` then names the format the gateway got."""
NOTES_V1 = b"notes-v1"
SIGNATURE_HEADER = "stormwatch-signature"
"""On a notes record, with ``ingest.notes_key_file``: ``v1=`` and the hex HMAC-SHA256 the gateway
computed with the shared key (streams.core.canonical.NotesKeys); a record it verifies is read
without re-checking its rows."""

_PROMETHEUS_KEYS = ("labels", "startsAt", "endsAt", "generatorURL")


def looks_like_alertmanager(doc: dict[str, Any]) -> bool:
    return "alerts" in doc and ("groupKey" in doc or "version" in doc or "receiver" in doc)


def detect_format(doc: Any) -> InputFormat | None:
    """The format of a decoded JSON document, or None when no adapter recognises it.

    Objects: ``stormwatch`` -> native; ``specversion`` -> CloudEvents; ``event_action`` or
    ``routing_key`` -> PagerDuty; ``alerts`` with ``groupKey``/``version``/``receiver`` ->
    Alertmanager webhook; ``labels`` -> one Prometheus alert. Arrays: the first object element that
    has a telling key decides (CloudEvents batch, PagerDuty batch, Prometheus push).
    """
    if type(doc) is dict:
        if "stormwatch" in doc:
            return InputFormat.NATIVE
        if "specversion" in doc:
            return InputFormat.CLOUDEVENTS
        if "event_action" in doc or "routing_key" in doc:
            return InputFormat.PAGERDUTY
        if looks_like_alertmanager(doc):
            return InputFormat.ALERTMANAGER
        if "labels" in doc:
            return InputFormat.PROMETHEUS
        return None
    if type(doc) is list:
        for item in doc:
            if type(item) is not dict:
                continue
            if "specversion" in item:
                return InputFormat.CLOUDEVENTS
            if "event_action" in item or "routing_key" in item:
                return InputFormat.PAGERDUTY
            for key in _PROMETHEUS_KEYS:
                if key in item:
                    return InputFormat.PROMETHEUS
    return None
