"""Records on the correlator input topic: the deterministic log the correlator is a function of.

The ingest stage writes four kinds, each orjson-encoded with a ``t`` tag:

- ``a``: a batch of routed alerts of one group (``h`` gkhash, ``gk`` group key, ``r`` rule name,
  ``gl`` group labels, ``al`` alerts in compact form, see ``AlertNote``);
- ``tick``: the watermark of one raw partition (``src``, ``wm`` epoch ms); the only clock input;
- ``ticks``: the watermarks of several raw partitions at once (``wm``: source -> epoch ms), what
  an ingest worker sends for all the partitions it owns; the same as one ``tick`` per source;
- ``cmd``: an operator command (``cmd``: OperatorCommand JSON) for an incident of this partition,
  or a silence change broadcast to every partition;
- ``res``: a mitigation CommandResult (``res``) for an incident of this partition;
- ``key``: a keyed notification without its labels (PagerDuty resolve/acknowledge), broadcast;
- ``inh``: an alert that matches an inhibition rule's source matchers, broadcast to every
  partition so inhibition works across groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from stormwatch.schemas.alert import Alert, AlertStatus, InputFormat
from stormwatch.schemas.common import Severity, ms_from_dt

# Formats whose source key (not the labels) is the alert's identity.
KEYED_FORMATS = frozenset({InputFormat.PAGERDUTY, InputFormat.NATIVE})

# Alertmanager (and Grafana) webhooks send firing alerts without endsAt and re-notify only on a
# change or every repeat_interval (4 h by default), so resolve_timeout must not expire them: they
# stay firing until the resolved notification (or the incident's max_lifetime).
NO_EXPIRY_MS = 253_402_300_799_000  # 9999-12-31T23:59:59Z

ALERTS = "a"
BY_KEY = "key"
TICK = "tick"
TICKS = "ticks"
COMMAND = "cmd"
RESULT = "res"
INHIBITOR = "inh"

_K = TypeVar("_K")
_V = TypeVar("_V")


class BoundedMemo(dict[_K, _V]):
    """``fn``, memoized in at most ``size`` entries (cleared when full). The alerts of one push
    mostly share startsAt and endsAt (``ms_from_dt``), the changes of one event a few instants
    (``utc_from_ms``). Call it like ``fn``; only for pure functions of immutable values."""

    __slots__ = ("_fn", "_size")

    def __init__(self, fn: Callable[[_K], _V], size: int = 4096) -> None:
        super().__init__()
        self._fn = fn
        self._size = size

    def __missing__(self, key: _K) -> _V:
        if len(self) >= self._size:
            self.clear()
        value = self[key] = self._fn(key)
        return value

    def __call__(self, key: _K) -> _V:
        return self[key]


@dataclass(slots=True)
class AlertNote:
    """The correlator's compact view of one alert notification (times in epoch ms)."""

    fingerprint: str
    firing: bool
    severity: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_ms: int
    ends_ms: int | None
    event_ms: int  # when it was received: the event time windows use
    source: str
    keyed: bool = False  # fingerprint is the source's own key (PagerDuty dedup_key), not the labels
    format: InputFormat | None = None  # the input format; not on the wire (ingest metrics only)

    def to_wire(self) -> list[Any]:
        return [
            self.fingerprint,
            1 if self.firing else 0,
            self.severity,
            self.labels,
            self.annotations,
            self.starts_ms,
            self.ends_ms,
            self.event_ms,
            self.source,
            1 if self.keyed else 0,
        ]

    @classmethod
    def from_wire(cls, row: list[Any]) -> AlertNote:
        fp, firing, sev, labels, ann, starts, ends, event, source, keyed = row
        return cls(fp, bool(firing), sev, labels, ann, starts, ends, event, source, bool(keyed))

    @classmethod
    def from_alert(cls, alert: Alert) -> AlertNote:
        return cls.of(
            fingerprint=alert.fingerprint,
            status=alert.status,
            severity=alert.severity,
            labels=alert.labels,
            annotations=alert.annotations,
            starts_ms=ms_from_dt(alert.starts_at),
            ends_ms=ms_from_dt(alert.ends_at) if alert.ends_at is not None else None,
            event_ms=ms_from_dt(alert.received_at),
            source=alert.source,
            source_key=alert.source_key,
            format=alert.format,
        )

    @classmethod
    def from_checked(
        cls, fields: dict[str, Any], event_ms: int, to_ms: Callable[[datetime], int] = ms_from_dt
    ) -> AlertNote:
        """From an alert's checked fields (schemas.adapters.CheckedResult): the same note
        ``from_alert`` makes of the Alert they describe. ``to_ms`` converts times (a caller may
        memoize it: the alerts of one push share their times)."""
        ends_at = fields.get("ends_at")
        return cls.of(
            fingerprint=fields["fingerprint"],
            status=fields["status"],
            severity=fields["severity"],
            labels=fields["labels"],
            annotations=fields["annotations"],
            starts_ms=to_ms(fields["starts_at"]),
            ends_ms=to_ms(ends_at) if ends_at is not None else None,
            event_ms=event_ms,
            source=fields["source"],
            source_key=fields.get("source_key"),
            format=fields["format"],
        )

    @classmethod
    def of(
        cls,
        *,
        fingerprint: str,
        status: AlertStatus,
        severity: Severity,
        labels: dict[str, str],
        annotations: dict[str, str],
        starts_ms: int,
        ends_ms: int | None,
        event_ms: int,
        source: str,
        source_key: str | None,
        format: InputFormat,
    ) -> AlertNote:
        return cls(
            fingerprint,
            status is AlertStatus.FIRING,
            severity.value,
            labels,
            annotations,
            starts_ms,
            alert_end_ms(ends_ms, format, status),
            event_ms,
            source,
            source_key is not None and format in KEYED_FORMATS,
            format,
        )

    def sort_key(self, kind: str) -> tuple[Any, ...]:
        """Total order used to release buffered alerts: arrival order never matters.

        Ties on (time, fingerprint, status, severity) are rare, so the content tiebreak is lazy.
        """
        return (self.event_ms, self.fingerprint, 1 if self.firing else 0, self.severity, Tiebreak(self), kind)


class Tiebreak:
    """Orders two notes by content (annotations, labels) only when everything before it ties."""

    __slots__ = ("_note", "_value")

    def __init__(self, note: AlertNote) -> None:
        self._note = note
        self._value: bytes | None = None

    @property
    def value(self) -> bytes:
        if self._value is None:
            self._value = orjson.dumps(
                [self._note.annotations, self._note.labels], option=orjson.OPT_SORT_KEYS
            )
        return self._value

    @staticmethod
    def _of(other: object) -> bytes:
        if isinstance(other, Tiebreak):
            return other.value
        if isinstance(other, bytes):
            return other
        raise TypeError(f"cannot order a Tiebreak against {type(other).__name__}")

    def __eq__(self, other: object) -> bool:
        return self.value == self._of(other)

    def __lt__(self, other: object) -> bool:
        return self.value < self._of(other)

    def __le__(self, other: object) -> bool:
        return self.value <= self._of(other)

    def __gt__(self, other: object) -> bool:
        return self.value > self._of(other)

    def __ge__(self, other: object) -> bool:
        return self.value >= self._of(other)

    __hash__ = None  # type: ignore[assignment]


def alert_end_ms(ends_ms: int | None, format: InputFormat, status: AlertStatus) -> int | None:
    """An alert's end: Alertmanager's firing alerts without one never expire (``NO_EXPIRY_MS``)."""
    if ends_ms is not None:
        return ends_ms
    if format is InputFormat.ALERTMANAGER and status is AlertStatus.FIRING:
        return NO_EXPIRY_MS
    return None


def encode_alert_batch(
    gkhash: str, group_key: str, rule: str, group_labels: dict[str, str], alerts: list[AlertNote]
) -> bytes:
    return orjson.dumps(
        {
            "t": ALERTS,
            "h": gkhash,
            "gk": group_key,
            "r": rule,
            "gl": group_labels,
            "al": [a.to_wire() for a in alerts],
        }
    )


def encode_tick(source: str, watermark_ms: int, sources: int) -> bytes:
    """``sources``: how many raw partitions exist; the correlator waits for a tick from each."""
    return orjson.dumps({"t": TICK, "src": source, "wm": watermark_ms, "n": sources})


def encode_ticks(watermarks: dict[str, int], sources: int) -> bytes:
    """One record for the ticks of several raw partitions (``sources``: as for ``encode_tick``)."""
    return orjson.dumps({"t": TICKS, "wm": watermarks, "n": sources})


def encode_command(command_json: bytes, forwarded_ms: int | None = None) -> bytes:
    """An operator command for the correlator. ``forwarded_ms``: the ingest worker's wall clock
    when it forwarded it; the correlator applies it no earlier than that event time (less the
    allowed lateness), so an idle partition's stale clock never dates an acknowledgement."""
    return b'{"t":"cmd",' + _forwarded(forwarded_ms) + b'"cmd":' + command_json + b"}"


def encode_result(result_json: bytes, forwarded_ms: int | None = None) -> bytes:
    """A mitigation result for the correlator (``forwarded_ms`` as for ``encode_command``)."""
    return b'{"t":"res",' + _forwarded(forwarded_ms) + b'"res":' + result_json + b"}"


def _forwarded(forwarded_ms: int | None) -> bytes:
    return b"" if forwarded_ms is None else b'"fw":%d,' % forwarded_ms


def encode_by_key(note: AlertNote) -> bytes:
    """A notification that names its alert only by key (PagerDuty resolve/acknowledge): broadcast,
    and applied by whichever partition holds that fingerprint."""
    return orjson.dumps({"t": BY_KEY, "al": note.to_wire()})


def encode_inhibitor(rule: str, note: AlertNote, gkhash: str = "") -> bytes:
    """``gkhash``: the source alert's own group, where what it mutes is reported."""
    return orjson.dumps({"t": INHIBITOR, "rule": rule, "al": note.to_wire(), "h": gkhash})


def decode(value: bytes) -> dict[str, Any]:
    record = orjson.loads(value)
    if not isinstance(record, dict) or "t" not in record:
        raise ValueError("not a correlator input record")
    return record


# ---------------------------------------------------------------------- clock demand (issue #16)


@dataclass(frozen=True, slots=True)
class ClockDemand:
    """What one correlator partition asks of the ingest stage's ticks: the watermark at which it
    next has something to do (None: nothing until new input), and whether it links (then every
    partition must move with it: the linker needs every partition's promise)."""

    partition: int
    wanted: int | None
    linked: bool


def encode_demand(demand: ClockDemand) -> bytes:
    """A record of the compacted clock topic, keyed by the partition number."""
    return orjson.dumps({"p": demand.partition, "wm": demand.wanted, "linked": demand.linked})


def decode_demand(value: bytes) -> ClockDemand:
    """ValueError for anything that is not a demand record."""
    try:
        record = orjson.loads(value)
        wanted = record["wm"]
        return ClockDemand(int(record["p"]), None if wanted is None else int(wanted), bool(record["linked"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a clock demand record: {exc}") from None
