"""Alerts the gateway already parsed, written so that ingest does not parse them again (issue #16).

The gateway validates every request with the adapters ingest uses. When every alert of a request
passed, it writes their compact notes (``encode_notes``) instead of the request body, with the
header ``stormwatch-encoding: notes-v1``; ingest then skips the adapters (the JSON walk, the
timestamp parsing, the label checks of each input format), which were half of its CPU time per
alert. A request with an invalid alert is written as it came, so ingest dead-letters that alert
with its original JSON, as before.

Anyone may write to the raw topic, so the header buys no trust: ``decode_notes`` checks every row's
types and the ``ingest.*`` limits, and recomputes the fingerprint from the labels (or the source
key), so a forged record gets no further than the same alerts sent in any input format. A bad row
is one dead letter (the row's JSON), a bad record one dead letter holding the record.

Those re-checks were most of what ingest still spent per alert, so with ``ingest.notes_key_file``
the gateway signs each notes record (``NotesKeys.sign``: HMAC-SHA256 over the encoding, the record
timestamp and the value, in the ``stormwatch-signature`` header). A record whose signature verifies
was written by a holder of the key after the adapters' checks, and is read without re-checking its
rows (``trusted``); an unsigned or wrongly signed one is fully checked, as before.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from stormwatch.schemas.adapters import ENCODING_HEADER, NOTES_V1
from stormwatch.schemas.adapters.base import AdapterError, ParseContext, RecordError, encode_item, type_name
from stormwatch.schemas.alert import AlertStatus, InputFormat
from stormwatch.schemas.common import Severity, ms_from_dt
from stormwatch.schemas.dlq import DeadLetterReason as R
from stormwatch.schemas.fingerprint import key_fingerprint, label_fingerprint_trusted
from stormwatch.streams.core.wire import KEYED_FORMATS, NO_EXPIRY_MS, AlertNote, alert_end_ms

__all__ = [
    "NotesKeys",
    "NotesSignature",
    "decode_notes",
    "encode_notes",
    "is_notes",
    "notes_key",
    "notes_value",
]


_SEVERITIES = frozenset(s.value for s in Severity)
_FORMATS = {f.value: f for f in InputFormat}
_KEYED = tuple(f.value for f in KEYED_FORMATS)
_ROW = 10  # fingerprint, firing, severity, labels, annotations, starts, ends, source, key, format
_SIGNATURE_V1 = b"v1="


class NotesSignature(StrEnum):
    """What a notes record's signature says (the ``result`` of stormwatch_notes_signature_total)."""

    VALID = "valid"  # signed with a configured key: read without re-checking the rows
    INVALID = "invalid"  # signed, but not by a configured key, or the value or timestamp changed
    ABSENT = "absent"  # not signed


class NotesKeys:
    """The shared secrets of signed notes: the first signs, any of them verifies (so a new key can
    be added to every reader before the gateways sign with it). Never shown in a repr or a log."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("NotesKeys needs at least one key")
        self._keys = tuple(keys)

    def __repr__(self) -> str:
        return f"NotesKeys(<{len(self._keys)} hidden>)"

    def sign(self, value: bytes, timestamp_ms: int) -> bytes:
        """The ``stormwatch-signature`` header of a notes record with this value and timestamp."""
        return _SIGNATURE_V1 + _mac(self._keys[0], value, timestamp_ms)

    def check(self, signature: bytes | None, value: bytes, timestamp_ms: int) -> NotesSignature:
        """Whether ``signature`` (the header, None when absent) signs this value and timestamp."""
        if signature is None:
            return NotesSignature.ABSENT
        if signature.startswith(_SIGNATURE_V1):
            given = signature[len(_SIGNATURE_V1) :]
            if any(hmac.compare_digest(given, _mac(key, value, timestamp_ms)) for key in self._keys):
                return NotesSignature.VALID
        return NotesSignature.INVALID


def _mac(key: bytes, value: bytes, timestamp_ms: int) -> bytes:
    """HMAC-SHA256 (hex) of ``notes-v1 LF timestamp LF value``: the encoding, because it decides how
    the value is read, and the timestamp, because it is every alert's event time."""
    return hmac.digest(key, b"%s\n%d\n%s" % (NOTES_V1, timestamp_ms, value), "sha256").hex().encode()


def encode_notes(
    alerts: list[dict[str, Any]], event_ms: int, to_ms: Callable[[datetime], int] = ms_from_dt
) -> bytes:
    """The record for alerts' checked fields (``parse_record_checked``) received at ``event_ms``."""
    rows = []
    firing = AlertStatus.FIRING
    for fields in alerts:  # AlertNote.from_checked's conversions, without the note (the gateway's hot path)
        status, fmt, ends_at = fields["status"], fields["format"], fields.get("ends_at")
        rows.append(
            [
                fields["fingerprint"],
                1 if status is firing else 0,
                fields["severity"].value,
                fields["labels"],
                fields["annotations"],
                to_ms(fields["starts_at"]),
                alert_end_ms(to_ms(ends_at) if ends_at is not None else None, fmt, status),
                fields["source"],
                fields.get("source_key"),
                fmt.value,
            ]
        )
    return notes_value(rows)


def notes_value(rows: list[list[Any]]) -> bytes:
    """A notes-v1 record value of rows laid out as ``_ROW`` says (``encode_notes``, and the
    gateway's fast path for Prometheus pushes, ``pushnotes``)."""
    return orjson.dumps({"v": 1, "al": rows})


def notes_key(fingerprints: Collection[str]) -> bytes | None:
    """A raw record's key: the alerts' fingerprint when they are one alert identity, else none.
    A batch of different alerts has no better key (spread over the partitions); the pipeline
    orders by event time, not by partition."""
    if len(fingerprints) != 1:
        return None
    (only,) = fingerprints
    return only.encode()


def is_notes(headers: Mapping[str, bytes] | None) -> bool:
    return headers is not None and headers.get(ENCODING_HEADER) == NOTES_V1


def decode_notes(
    value: bytes, event_ms: int, ctx: ParseContext, *, trusted: bool = False
) -> list[tuple[AlertNote, bool]]:
    """Each valid row's note and whether it has a source key; a bad row goes to ``ctx``'s dead
    letters. Raises RecordError when the record itself is bad (not JSON, wrong shape, too large).

    ``trusted`` (the record's signature verified): the rows are the gateway's, already checked, so
    they become notes without the per-row checks; the record's size and count limits still apply.
    """
    ctx.check_record_size(len(value))
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise RecordError(R.NOT_JSON, "", f"notes-v1 record is not JSON: {exc}") from None
    rows = doc.get("al") if type(doc) is dict and doc.get("v") == 1 else None
    if type(rows) is not list or not rows:
        raise RecordError(R.INVALID_ALERT, "", 'notes-v1 record must be {"v": 1, "al": [row, ...]} with rows')
    ctx.check_batch(len(rows), "al")
    if trusted:
        try:
            return _trusted_notes(rows, event_ms)
        except (TypeError, ValueError, KeyError, AttributeError):
            pass  # signed, yet not rows this version writes (another gateway version?): check them
    out: list[tuple[AlertNote, bool]] = []
    for i, row in enumerate(rows):
        index = ctx.take_index()
        try:
            out.append(_note(row, event_ms, ctx))
        except AdapterError as exc:
            ctx.reject(row, exc.under(f"al[{i}]"), index)
    return out


def _trusted_notes(rows: list[Any], event_ms: int) -> list[tuple[AlertNote, bool]]:
    """The notes ``_note`` gives valid rows, built without its limits, fingerprint and range checks
    (the gateway made them). The types are still checked, cheaply: the signature vouches for the
    writer, not for its version, and a label value that is not a string raised in the routing,
    outside ingest's error handling, where one record would have stopped ingest for good. A
    TypeError here sends the record through the checked path, which dead-letters such rows."""
    formats, keyed_formats, severities = _FORMATS, KEYED_FORMATS, _SEVERITIES
    out: list[tuple[AlertNote, bool]] = []
    for fingerprint, firing, severity, labels, annots, starts, ends, source, key, fmt_name in rows:
        # Types, at C speed where it can be: join raises TypeError unless given strings only.
        "".join((fingerprint, severity, source, *labels.values()))
        if annots is not None:
            "".join(annots.values())
        if severity not in severities or type(starts) is not int or not (ends is None or type(ends) is int):
            raise TypeError("a signed notes row of unexpected types")
        fmt = formats[fmt_name]
        has_key = key is not None
        note = AlertNote(
            fingerprint,
            firing == 1,
            severity,
            labels,
            {} if annots is None else annots,
            starts,
            ends,
            event_ms,
            source,
            has_key and fmt in keyed_formats,
            fmt,
        )
        out.append((note, has_key))
    return out


def _note(row: Any, event_ms: int, ctx: ParseContext) -> tuple[AlertNote, bool]:
    if type(row) is not list or len(row) != _ROW:
        raise AdapterError(R.INVALID_ALERT, "", f"expected an array of {_ROW}, got {type_name(row)}")
    fingerprint, firing, severity, labels, annotations, starts, ends, source, key, fmt_name = row
    fmt = _FORMATS.get(fmt_name) if type(fmt_name) is str else None
    if fmt is None:
        raise AdapterError(R.UNKNOWN_FORMAT, "[9]", f"no input format {encode_item(fmt_name).decode()}")
    if firing not in (0, 1) or type(firing) is not int:
        raise AdapterError(R.INVALID_ALERT, "[1]", "firing must be 0 or 1")
    if severity not in _SEVERITIES or type(severity) is not str:
        raise AdapterError(R.INVALID_ALERT, "[2]", f"severity must be one of {sorted(_SEVERITIES)}")
    labels = ctx.labels(labels, "[3]")
    annotations = ctx.string_map(annotations, "[4]")
    if type(starts) is not int or not 0 <= starts <= NO_EXPIRY_MS:
        raise AdapterError(R.BAD_TIMESTAMP, "[5]", "starts must be epoch milliseconds")
    if ends is not None and (type(ends) is not int or not 0 <= ends <= NO_EXPIRY_MS):
        raise AdapterError(R.BAD_TIMESTAMP, "[6]", "ends must be epoch milliseconds or null")
    if type(source) is not str or not source:
        raise AdapterError(R.INVALID_ALERT, "[7]", "source must be a non-empty string")
    if key is not None and type(key) is not str:
        raise AdapterError(R.INVALID_ALERT, "[8]", "key must be a string or null")
    keyed = key is not None and fmt in KEYED_FORMATS
    if type(fingerprint) is not str or fingerprint not in _fingerprints(labels, key, keyed):
        raise AdapterError(R.INVALID_ALERT, "[0]", "fingerprint does not match the labels or the key")
    return AlertNote(
        fingerprint, firing == 1, severity, labels, annotations, starts, ends, event_ms, source, keyed, fmt
    ), (key is not None)


def _fingerprints(labels: dict[str, str], key: str | None, keyed: bool) -> tuple[str, ...]:
    """The fingerprints an adapter can give these labels and key. A keyed alert's is its key's
    (resolved by key alone, it must never name another alert); an envelope such as CloudEvents
    may carry a native alert with a key, so any keyed format's name counts."""
    by_key = () if key is None else tuple(key_fingerprint(name, key) for name in _KEYED)
    return by_key if keyed else (label_fingerprint_trusted(labels), *by_key)
