"""The read model's pure part: records in, current state and filtered, paginated answers out.

Three inputs, each applied one record at a time in log order:

- the correlator's compacted state changelog (``topics.correlator_state``, streams.core.codec):
  ``g/GKHASH`` group records and ``a/GKHASH/FP`` alert records, per partition, the latest value of
  a key winning and None deleting it. The ``p`` partition record is not needed here;
- the audit log (``topics.incidents``), folded by streams.core.projection exactly as
  `stormwatch incidents` folds it (without timelines, to keep memory per incident bounded);
- the compacted silences topic (``topics.silences``): the latest Silence per id.

Nothing here reads a clock: every query that depends on the time takes ``now_ms``. Records that
cannot be decoded are counted and remembered (the first one), never raised, so one bad record
cannot hide everything else from an operator.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

import orjson
from pydantic import ValidationError

from stormwatch.readmodel.mitigations import MitigationLog, MitigationView
from stormwatch.readmodel.overview import Overview, overview
from stormwatch.readmodel.packed import PackedRecords
from stormwatch.schemas.common import ms_from_dt
from stormwatch.schemas.incident import Incident, IncidentEvent, IncidentState
from stormwatch.schemas.matchers import Matcher, MatchOp
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.codec import PARTITION_KEY
from stormwatch.streams.core.groups import AlertState, GroupState
from stormwatch.streams.core.muting import SuppressionKind
from stormwatch.streams.core.projection import IncidentProjection

__all__ = [
    "DEFAULT_MAX_CLOSED_INCIDENTS",
    "DEFAULT_RESOLVE_TIMEOUT_MS",
    "FORGOTTEN_PER_KEPT",
    "AlertQuery",
    "AlertView",
    "GroupView",
    "IncidentQuery",
    "Page",
    "ReadModel",
    "SilenceView",
    "compile_matcher",
    "silence_state",
]

DEFAULT_RESOLVE_TIMEOUT_MS = 5 * 60 * 1000
"""The resolve_timeout assumed for a rule the model was not told about (the rules' default)."""
DEFAULT_MAX_CLOSED_INCIDENTS = 20_000
FORGOTTEN_PER_KEPT = 5
"""Ids of forgotten closed incidents remembered, per closed incident kept."""

T = TypeVar("T")

SILENCE_STATES = ("active", "pending", "expired")


def silence_state(silence: Silence, now_ms: int) -> str:
    """active, pending (starts later) or expired (ended, or expired early by an operator).

    Whether it is active is the Silence's own answer, the one the correlator mutes alerts by.
    """
    if silence.is_active_ms(now_ms):
        return "active"
    starts_ms = ms_from_dt(silence.starts_at)
    if now_ms < starts_ms and silence.is_active_ms(starts_ms):
        return "pending"  # not started yet, and still going to (not expired early)
    return "expired"


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a filtered, sorted answer: ``total`` counts every match, not just this page."""

    items: list[T]
    total: int
    offset: int = 0
    limit: int | None = None


def _page(items: list[T], offset: int, limit: int | None) -> Page[T]:
    end = None if limit is None else offset + limit
    return Page(items[offset:end], len(items), offset, limit)


@dataclass(slots=True)
class AlertView:
    """One active alert as the API shows it (not frozen: a frozen dataclass takes several times
    longer to make, and a query makes one per alert)."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    severity: str
    starts_ms: int
    updated_ms: int
    ends_ms: int  # the source's endsAt, else the last notification + the rule's resolve_timeout
    receivers: tuple[str, ...]  # the correlation rules whose groups hold it
    silenced_by: tuple[str, ...]  # ids of the active silences that match it now
    inhibited_by: tuple[str, ...]  # the inhibition rule muting it, as the correlator decided
    muted_by: tuple[str, ...]  # "flapping" while its flips are held back
    incident_id: str | None  # the incident it is a member of
    group_key: str

    @property
    def state(self) -> str:
        """Alertmanager's ``active`` or ``suppressed`` (silenced, inhibited or flapping)."""
        return "suppressed" if self.silenced_by or self.inhibited_by or self.muted_by else "active"


@dataclass(frozen=True, slots=True)
class GroupView:
    """One correlation group (a rule and a group key) with the alerts of a query."""

    rule: str
    group_key: str
    labels: dict[str, str]
    incident_id: str | None
    alerts: list[AlertView]


@dataclass(frozen=True, slots=True)
class SilenceView:
    silence: Silence
    state: str
    updated_ms: int  # when the silences topic last got it (its record's timestamp)


@dataclass(frozen=True)
class AlertQuery:
    """Alertmanager's alert filters: every matcher must hold; the booleans include (True) or
    exclude (False) alerts in that state; ``receiver`` is a regex a rule name must match whole."""

    matchers: tuple[Matcher, ...] = ()
    active: bool = True
    silenced: bool = True
    inhibited: bool = True
    unprocessed: bool = True  # every alert the model shows was processed by the correlator
    receiver: re.Pattern[str] | None = None
    offset: int = 0
    limit: int | None = None


@dataclass(frozen=True)
class IncidentQuery:
    """Incidents in ``states`` (all when empty) whose id, title, group key, rule or assignee
    contains ``search`` (case ignored), newest first."""

    states: frozenset[IncidentState] = frozenset()
    search: str = ""
    offset: int = 0
    limit: int | None = None


@dataclass
class _Problems:
    count: int = 0
    first: str | None = None

    def add(self, what: str) -> None:
        self.count += 1
        if self.first is None:
            self.first = what


@dataclass
class _Silence:
    silence: Silence
    updated_ms: int


@dataclass
class ReadModel:
    """Current state of incidents, alerts and silences; not thread-safe (the follower locks)."""

    resolve_timeouts_ms: Mapping[str, int] = field(default_factory=dict)
    default_resolve_timeout_ms: int = DEFAULT_RESOLVE_TIMEOUT_MS
    groups: dict[tuple[int, str], GroupState] = field(default_factory=dict, repr=False)
    alert_states: dict[tuple[int, str], PackedRecords] = field(default_factory=dict, repr=False)
    """Each group's alert records as the changelog has them, by fingerprint; decoded by the
    queries that read them (stormwatch.readmodel.packed says why they are not kept decoded)."""
    incident_log: IncidentProjection = field(
        default_factory=lambda: IncidentProjection(keep_events=False, keep_fingerprints=False), repr=False
    )
    silence_records: dict[str, _Silence] = field(default_factory=dict, repr=False)
    mitigations: MitigationLog = field(default_factory=MitigationLog, repr=False)
    # incident id -> (partition, offset) of its first event: where its timeline starts in the log
    origins: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)
    problems: _Problems = field(default_factory=_Problems)
    applied: int = 0
    max_closed_incidents: int = DEFAULT_MAX_CLOSED_INCIDENTS
    """Closed incidents kept, the oldest closed forgotten first: the console's history, bounded
    (an incident costs about 7 KiB here, whatever its alert count)."""
    closed_order: dict[str, None] = field(default_factory=dict, repr=False)
    forgotten_ids: dict[str, None] = field(default_factory=dict, repr=False)
    """Only the ids (about 100 bytes each), so a later event of one is not taken for a new
    incident with a gap before it; the latest ``FORGOTTEN_PER_KEPT * max_closed_incidents``,
    so a gateway that runs for months does not keep one per incident it ever saw. A late event
    comes within the notifier's retry budget (minutes), long before its id is let go."""

    # ------------------------------------------------------------------ applying records

    def apply_state(self, partition: int, key: str, value: bytes | None) -> None:
        """One record of the correlator's state changelog (``g/``, ``a/`` or ``p``)."""
        self.applied += 1
        if key == PARTITION_KEY:
            return
        try:
            if key.startswith("g/"):
                gkhash = key[2:]
                if value is None:
                    self.groups.pop((partition, gkhash), None)
                else:
                    self.groups[(partition, gkhash)] = GroupState.decode_meta(gkhash, value)
            elif key.startswith("a/"):
                _, gkhash, fp = key.split("/", 2)
                where = (partition, gkhash)
                alerts = self.alert_states.get(where)
                if value is None:
                    if alerts is not None:
                        alerts.pop(fp)
                        if not alerts:
                            del self.alert_states[where]
                else:
                    AlertState.decode(value)  # refused here, counted as a problem, if it is not one
                    if alerts is None:
                        alerts = self.alert_states[where] = PackedRecords()
                    alerts.put(fp, value)
            else:
                self.problems.add(f"state partition {partition}: unknown key {key!r}")
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            self.problems.add(f"state partition {partition} key {key!r}: {exc}")

    def apply_incident(self, value: bytes | None, partition: int = -1, offset: int = -1) -> None:
        """One record of the audit log (``partition`` and ``offset``: where it is, when known)."""
        self.applied += 1
        if not value:
            self.problems.add("incidents: an empty record")
            return
        try:
            event = IncidentEvent.from_bytes_without_alerts(value)  # nothing here reads them
        except ValidationError as exc:
            self.problems.add(f"incidents: not an incident event ({exc.error_count()} errors)")
            return
        if event.incident_id in self.forgotten_ids:
            return  # a late event (a notification's record) of a closed incident already let go
        self.incident_log.apply(event)
        self.mitigations.apply(event)
        if offset >= 0 and event.incident_id not in self.origins:
            self.origins[event.incident_id] = (partition, offset)
        if event.to_state is IncidentState.CLOSED and event.incident_id not in self.closed_order:
            self.closed_order[event.incident_id] = None
            while len(self.closed_order) > self.max_closed_incidents:
                self._forget(next(iter(self.closed_order)))

    def _forget(self, incident_id: str) -> None:
        """Drop a closed incident from the console's view (its events stay in the audit log)."""
        del self.closed_order[incident_id]
        self.incident_log.forget(incident_id)
        self.mitigations.forget(incident_id)
        self.origins.pop(incident_id, None)
        self.forgotten_ids[incident_id] = None
        while len(self.forgotten_ids) > FORGOTTEN_PER_KEPT * self.max_closed_incidents:
            del self.forgotten_ids[next(iter(self.forgotten_ids))]

    def apply_silence(self, key: str | None, value: bytes | None, timestamp_ms: int) -> None:
        """One record of the silences topic (keyed by silence id; None deletes)."""
        self.applied += 1
        if value is None:
            if key is not None:
                self.silence_records.pop(key, None)
            return
        try:
            silence = Silence.from_bytes(value)
        except ValidationError as exc:
            self.problems.add(f"silences key {key!r}: not a silence ({exc.error_count()} errors)")
            return
        self.silence_records[silence.silence_id] = _Silence(silence, timestamp_ms)

    # ------------------------------------------------------------------ alerts

    def alert_count(self) -> int:
        """Alerts held (firing or not, muted or not)."""
        return sum(len(alerts) for alerts in self.alert_states.values())

    def _ends_ms(self, rule: str, alert: AlertState) -> int:
        if alert.ends_ms is not None:
            return alert.ends_ms
        return alert.seen_ms + self.resolve_timeouts_ms.get(rule, self.default_resolve_timeout_ms)

    def _views(self, query: AlertQuery, now_ms: int) -> Iterable[tuple[GroupState, AlertView]]:
        """Every firing alert that passes ``query``, with its group (unsorted; an alert in two
        groups comes twice)."""
        silenced = _SilenceIndex(
            s.silence for s in self.silence_records.values() if s.silence.is_active_ms(now_ms)
        )
        tests = [compile_matcher(m) for m in query.matchers]
        needles = _needles(query.matchers)
        for where, alerts in self.alert_states.items():
            group = self.groups.get(where)
            if group is None:
                continue  # its group record is gone: the alert is dropped, as a restore drops it
            if query.receiver is not None and query.receiver.fullmatch(group.rule) is None:
                continue
            incident = group.incident
            # The records that cannot match (their encoded labels lack a matcher's "name":"value")
            # are left out unread.
            for record in alerts.records(needles):
                alert = AlertState.decode(record)
                if not alert.firing:
                    continue
                labels = alert.labels
                if tests and not _all(tests, labels):
                    continue
                silenced_by = silenced.matching(labels)
                reason = alert.suppressed
                inhibited_by = (
                    (reason.id,) if reason is not None and reason.kind is SuppressionKind.INHIBIT else ()
                )
                muted_by = ("flapping",) if alert.flapping else ()
                suppressed = bool(silenced_by or inhibited_by or muted_by)
                if not query.active and not suppressed:
                    continue
                if not query.silenced and silenced_by:
                    continue
                if not query.inhibited and inhibited_by:
                    continue
                yield (
                    group,
                    AlertView(
                        fingerprint=alert.fingerprint,
                        labels=labels,
                        annotations=alert.annotations,
                        severity=alert.severity,
                        starts_ms=alert.starts_ms,
                        updated_ms=alert.seen_ms,
                        ends_ms=self._ends_ms(group.rule, alert),
                        receivers=(group.rule,),
                        silenced_by=silenced_by,
                        inhibited_by=inhibited_by,
                        muted_by=muted_by,
                        incident_id=incident.incident_id if incident is not None and alert.member else None,
                        group_key=group.group_key,
                    ),
                )

    def alerts(self, query: AlertQuery, now_ms: int) -> Page[AlertView]:
        """The firing alerts that pass ``query``, one per fingerprint, sorted by fingerprint."""
        by_fp: dict[str, AlertView] = {}
        for _, view in self._views(query, now_ms):
            seen = by_fp.get(view.fingerprint)
            if seen is None:
                by_fp[view.fingerprint] = view
            elif view.receivers[0] not in seen.receivers:
                by_fp[view.fingerprint] = _with_receivers(seen, (*seen.receivers, *view.receivers))
        ordered = [by_fp[fp] for fp in sorted(by_fp)]
        return _page(ordered, query.offset, query.limit)

    def alert_groups(self, query: AlertQuery, now_ms: int, *, muted: bool = True) -> list[GroupView]:
        """Groups with at least one alert that passes ``query``; ``muted=False`` leaves out the
        groups whose alerts are all muted. Sorted by rule, then group key."""
        found: dict[tuple[str, str], GroupView] = {}
        for group, view in self._views(query, now_ms):
            key = (group.rule, group.group_key)
            entry = found.get(key)
            if entry is None:
                incident = group.incident
                entry = found[key] = GroupView(
                    rule=group.rule,
                    group_key=group.group_key,
                    labels=dict(group.group_labels),
                    incident_id=incident.incident_id if incident is not None else None,
                    alerts=[],
                )
            entry.alerts.append(view)
        out = []
        for key in sorted(found):
            entry = found[key]
            if not muted and all(a.state == "suppressed" for a in entry.alerts):
                continue
            entry.alerts.sort(key=lambda a: a.fingerprint)
            out.append(entry)
        return out

    def receivers(self) -> list[str]:
        """The correlation rules that have a group now (what the API calls receivers)."""
        return sorted({group.rule for group in self.groups.values()})

    # ------------------------------------------------------------------ silences

    def silence(self, silence_id: str, now_ms: int) -> SilenceView | None:
        entry = self.silence_records.get(silence_id)
        if entry is None:
            return None
        return SilenceView(entry.silence, silence_state(entry.silence, now_ms), entry.updated_ms)

    def silences(
        self,
        now_ms: int,
        *,
        matchers: Sequence[Matcher] = (),
        states: Iterable[str] = SILENCE_STATES,
    ) -> list[SilenceView]:
        """Silences in ``states`` that ``matchers`` select (see ``silence_selected``), in
        Alertmanager's order: active by end time, then pending by start time, then expired by
        end time, the latest first."""
        wanted = set(states)
        views = []
        for entry in self.silence_records.values():
            state = silence_state(entry.silence, now_ms)
            if state in wanted and silence_selected(entry.silence, matchers):
                views.append(SilenceView(entry.silence, state, entry.updated_ms))
        order = {state: i for i, state in enumerate(SILENCE_STATES)}

        def key(view: SilenceView) -> tuple[int, int]:
            s = view.silence
            if view.state == "active":
                return (order["active"], ms_from_dt(s.ends_at))
            if view.state == "pending":
                return (order["pending"], ms_from_dt(s.starts_at))
            return (order["expired"], -_ended_ms(s))

        views.sort(key=key)
        return views

    # ------------------------------------------------------------------ incidents

    def incidents(self, query: IncidentQuery) -> Page[Incident]:
        needle = query.search.strip().lower()
        selected = []
        for incident in self.incident_log.incidents():
            if query.states and incident.state not in query.states:
                continue
            if needle and not _incident_has(incident, needle):
                continue
            selected.append(incident)
        selected.sort(key=lambda i: (i.opened_at, i.incident_id), reverse=True)
        return _page(selected, query.offset, query.limit)

    def incident(self, incident_id: str) -> Incident | None:
        return self.incident_log.get(incident_id)

    def steps(self, incident_ids: list[str]) -> list[MitigationView]:
        """The mitigation steps of these incidents (a primary and its members)."""
        return self.mitigations.of(incident_ids)

    def approvals(self, now_ms: int) -> list[MitigationView]:
        """Mitigation steps waiting for an operator's answer, the soonest to expire first."""
        return self.mitigations.awaiting(now_ms)

    def overview(self, now_ms: int, window_ms: int) -> Overview:
        """Storm suppression, MTTA and MTTR over the incidents opened in the last ``window_ms``."""
        return overview(self.incident_log.incidents(), now_ms, window_ms)

    # ------------------------------------------------------------------ totals

    def counts(self) -> dict[str, int]:
        incidents = self.incident_log.incidents()
        return {
            "groups": len(self.groups),
            "alerts": self.alert_count(),
            "incidents": len(incidents),
            "open_incidents": sum(
                1 for i in incidents if i.state not in (IncidentState.RESOLVED, IncidentState.CLOSED)
            ),
            "silences": len(self.silence_records),
            "bad_records": self.problems.count,
        }


LabelTest = Callable[[dict[str, str]], bool]


def compile_matcher(matcher: Matcher) -> LabelTest:
    """``matcher.matches`` as a plain function: a query tests every alert against its matchers
    and every active silence, and a closure is several times faster than the model's method."""
    name, value = matcher.name, matcher.value
    if matcher.op is MatchOp.EQ:
        return lambda labels: labels.get(name, "") == value
    if matcher.op is MatchOp.NE:
        return lambda labels: labels.get(name, "") != value
    pattern = re.compile(f"(?:{value})\\Z")
    if matcher.op is MatchOp.RE:
        return lambda labels: pattern.match(labels.get(name, "")) is not None
    return lambda labels: pattern.match(labels.get(name, "")) is None


def _needles(matchers: Iterable[Matcher]) -> list[bytes]:
    """For each ``name="value"`` matcher with a non-empty value, the bytes ``"name":"value"`` that
    an alert's label encoding (orjson: no spaces, one escaping) must contain to match it.

    A prefilter: most alerts a filtered query leaves out are left out without copying or decoding
    their records. A record holds the annotations and the alert's other fields too, so a hit is
    still tested on the labels."""
    return [
        orjson.dumps(m.name) + b":" + orjson.dumps(m.value)
        for m in matchers
        if m.op is MatchOp.EQ and m.value
    ]


def _all(tests: Sequence[LabelTest], labels: dict[str, str]) -> bool:
    """``all(test(labels) for test in tests)`` without the generator (per alert and silence)."""
    for test in tests:  # noqa: SIM110
        if not test(labels):
            return False
    return True


class _SilenceIndex:
    """The active silences, indexed by one equality matcher each: an alert is checked only
    against the silences whose indexed label it has with that value (and those without one)."""

    def __init__(self, silences: Iterable[Silence]) -> None:
        self.by_label: dict[str, dict[str, list[tuple[int, str, list[LabelTest]]]]] = {}
        self.unindexed: list[tuple[int, str, list[LabelTest]]] = []
        for order, silence in enumerate(silences):
            entry = (order, silence.silence_id, [compile_matcher(m) for m in silence.matchers])
            eq = next((m for m in silence.matchers if m.op is MatchOp.EQ and m.value), None)
            if eq is None:
                self.unindexed.append(entry)
            else:
                self.by_label.setdefault(eq.name, {}).setdefault(eq.value, []).append(entry)
        self.empty = not self.by_label and not self.unindexed

    def matching(self, labels: dict[str, str]) -> tuple[str, ...]:
        """Ids of the silences that match ``labels``, in the order they were added."""
        if self.empty:
            return ()
        found = [entry for entry in self.unindexed if _all(entry[2], labels)]
        for name, by_value in self.by_label.items():
            candidates = by_value.get(labels.get(name, ""))
            if candidates:
                found.extend(entry for entry in candidates if _all(entry[2], labels))
        if not found:
            return ()
        if len(found) > 1:
            found.sort()
        return tuple(entry[1] for entry in found)


def silence_selected(silence: Silence, matchers: Sequence[Matcher]) -> bool:
    """Alertmanager's silence filter: each matcher must hold for the value that one of the
    silence's equality matchers of the same label name sets (a silence that does not set the
    label is left out)."""
    for wanted in matchers:
        values = [m.value for m in silence.matchers if m.name == wanted.name and m.op.value == "="]
        if not any(wanted.matches({wanted.name: value}) for value in values):
            return False
    return True


def _ended_ms(silence: Silence) -> int:
    ends = ms_from_dt(silence.ends_at)
    if silence.expired_at is not None:
        ends = min(ends, ms_from_dt(silence.expired_at))
    return ends


def _incident_has(incident: Incident, needle: str) -> bool:
    fields: list[str | None] = [
        incident.incident_id,
        incident.title,
        incident.group_key,
        incident.rule,
        incident.assignee,
    ]
    return any(needle in f.lower() for f in fields if f)


def _with_receivers(view: AlertView, receivers: tuple[str, ...]) -> AlertView:
    return replace(view, receivers=receivers)
