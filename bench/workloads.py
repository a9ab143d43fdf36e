"""The named benchmark workloads, as deterministic raw records in Prometheus' alert push format.

A *storm* is a fixed population of distinct alerts (label sets) spread evenly over correlation
groups. It is sent in rounds, one per Prometheus evaluation interval: in every round each alert is
sent once with its current status, the way Prometheus re-sends every firing alert and keeps sending
resolved ones for a while. Between rounds a share of the alerts changes status, which sets the
re-send ratio (what deduplication should drop). Times are kept relative to the start of the storm
and made absolute only when a batch is encoded, so the same notifications can be written to Kafka
with event times in the past and pushed to Alertmanager with times relative to its wall clock.

*steady* is a live load at a constant rate (for latency): new groups keep appearing, each re-sends
its alerts every second for a while, and every group opens one incident after group_wait.

Nothing here does I/O; bench.harness writes the records and runs the pipeline.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import orjson
import xxhash

__all__ = [
    "WORKLOADS",
    "Batch",
    "RawRecord",
    "SteadyLoad",
    "SteadySpec",
    "Storm",
    "StormSpec",
    "StormSummary",
    "default_spec",
    "format_ms",
]

WORKLOADS = ("storm-batched", "storm-http", "storm-single", "steady", "high-cardinality", "flapping")

# Label values. The default correlation rule groups by every label except the per-replica ones
# (instance, pod, ...), so a group here is one (alertname, cluster, namespace, service, job,
# severity) and its alerts differ by instance and pod.
_ALERTNAMES = (
    "HighErrorRate",
    "HighLatency",
    "PodCrashLooping",
    "KubeDeploymentReplicasMismatch",
    "TargetDown",
    "CPUThrottlingHigh",
    "MemoryPressure",
    "DiskWillFillIn4Hours",
    "ProbeFailed",
    "QueueBacklogGrowing",
)
_SERVICES = (
    "checkout",
    "payments",
    "cart",
    "catalog",
    "search",
    "shipping",
    "orders",
    "inventory",
    "accounts",
    "auth",
    "notifications",
    "frontend",
    "api-gateway",
    "pricing",
    "reviews",
    "billing",
    "ledger",
    "fraud",
    "sessions",
    "analytics",
)
_CLUSTERS = ("prod-eu-1", "prod-us-1", "prod-ap-1", "prod-eu-2", "prod-us-2")
_NAMESPACES = ("shop", "payments", "identity", "platform", "growth", "fulfilment")
_POD_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Prometheus sends firing alerts with endsAt this many evaluation intervals ahead.
ENDS_AT_INTERVALS = 4


def format_ms(ms: int) -> bytes:
    """RFC 3339 UTC with milliseconds, as Prometheus writes startsAt/endsAt."""
    when = _EPOCH + timedelta(milliseconds=ms)
    return (when.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z").encode()


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One raw Kafka record: its timestamp (event time), value, and how many alerts it carries."""

    timestamp_ms: int
    value: bytes
    alerts: int


@dataclass(frozen=True, slots=True)
class StormSpec:
    """Shape of a storm; ``alerts`` counts notifications (every re-send is one)."""

    alerts: int
    fingerprints: int
    groups: int
    per_record: int = 256
    change_ratio: float = 0.10  # share of notifications that change their alert's status
    interval_ms: int = 30_000  # between rounds: one Prometheus evaluation interval
    ends_ahead_ms: int | None = None  # endsAt of firing alerts after the record; None: 4 intervals
    seed: int = 1

    def __post_init__(self) -> None:
        if self.alerts < 1 or self.fingerprints < 1:
            raise ValueError("a storm needs at least one alert and one fingerprint")
        if not 1 <= self.groups <= self.fingerprints:
            raise ValueError(
                f"groups must be between 1 and the number of fingerprints ({self.fingerprints}), "
                f"got {self.groups}"
            )
        if self.per_record < 1:
            raise ValueError(f"per_record must be at least 1, got {self.per_record}")
        if not 0.0 <= self.change_ratio <= 1.0:
            raise ValueError(f"change_ratio must be within 0..1, got {self.change_ratio}")
        if self.interval_ms < 2:
            raise ValueError(f"interval_ms must be at least 2, got {self.interval_ms}")

    @property
    def rounds(self) -> int:
        return math.ceil(self.alerts / self.fingerprints)

    @property
    def flip_probability(self) -> float:
        """Chance that an alert changes status between two rounds.

        The first notification of every alert is a change (it starts firing); the remaining changes
        needed to reach ``change_ratio`` are spread over the later notifications.
        """
        later = self.alerts - min(self.alerts, self.fingerprints)
        wanted = self.change_ratio * self.alerts - min(self.alerts, self.fingerprints)
        if later <= 0 or wanted <= 0:
            return 0.0
        return min(1.0, wanted / later)

    @property
    def ends_ahead(self) -> int:
        return self.ends_ahead_ms if self.ends_ahead_ms is not None else ENDS_AT_INTERVALS * self.interval_ms

    @property
    def span_ms(self) -> int:
        """Event time from the first record to the last one."""
        return (self.rounds - 1) * self.interval_ms + self.interval_ms // 2

    def scaled(self, factor: float) -> StormSpec:
        """The same storm with alerts, fingerprints and groups multiplied by ``factor``."""
        if factor <= 0:
            raise ValueError(f"size factor must be positive, got {factor}")
        fingerprints = max(1, round(self.fingerprints * factor))
        return replace(
            self,
            alerts=max(1, round(self.alerts * factor)),
            fingerprints=fingerprints,
            groups=min(fingerprints, max(1, round(self.groups * factor))),
        )


def default_spec(workload: str) -> StormSpec:
    """The storm behind a pre-written workload at its full size (see bench/README.md)."""
    if workload in ("storm-batched", "storm-http"):  # storm-http: the same storm, POSTed over HTTP
        return StormSpec(alerts=1_000_000, fingerprints=20_000, groups=200, per_record=256)
    if workload == "storm-single":
        return StormSpec(alerts=1_000_000, fingerprints=20_000, groups=200, per_record=1)
    if workload == "high-cardinality":
        # Every alert is new and stays active (endsAt an hour ahead, beyond the run). They arrive
        # over ten minutes of event time, as a million active alerts build up, not all in one instant.
        return StormSpec(
            alerts=1_000_000,
            fingerprints=1_000_000,
            groups=10_000,
            per_record=256,
            change_ratio=1.0,
            interval_ms=1_200_000,
            ends_ahead_ms=3_600_000,
        )
    if workload == "flapping":
        # half of the notifications flip their alert's status, every 5 s: flap detection's job
        return StormSpec(
            alerts=1_000_000,
            fingerprints=20_000,
            groups=200,
            per_record=256,
            change_ratio=0.5,
            interval_ms=5_000,
        )
    raise ValueError(f"no storm behind workload {workload!r}; choose one of {', '.join(WORKLOADS)}")


@dataclass(slots=True)
class Batch:
    """The notifications of one record: (alert index, firing, startsAt, endsAt-if-resolved).

    Times are relative to the start of the storm; ``t_rel`` is the record's own time.
    """

    t_rel: int
    notes: list[tuple[int, bool, int, int]]


@dataclass(slots=True)
class StormSummary:
    """What a storm sent; complete once its batches are exhausted."""

    notifications: int = 0
    changes: int = 0  # first firing or a status flip: what deduplication must not drop
    records: int = 0
    bytes: int = 0
    firing_at_end: int = 0

    @property
    def resend_ratio(self) -> float:
        return 1.0 - self.changes / self.notifications if self.notifications else 0.0


@dataclass
class Storm:
    """Generates a storm's batches and encodes them; deterministic for a spec."""

    spec: StormSpec
    summary: StormSummary = field(default_factory=StormSummary)
    _cache: dict[int, tuple[bytes, bytes]] | None = field(default=None, init=False, repr=False)
    _times: dict[int, bytes] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        # Re-sent alerts reuse their encoded labels; a storm that sends each alert once does not cache.
        if self.spec.rounds > 1:
            self._cache = {}

    # ---- identities

    def group_labels(self, group: int) -> dict[str, str]:
        alertname = _ALERTNAMES[group % len(_ALERTNAMES)]
        n = len(_ALERTNAMES) * len(_SERVICES)
        service = _SERVICES[(group // len(_ALERTNAMES)) % len(_SERVICES)]
        if group >= n:
            service = f"{service}-{group // n}"
        return {
            "alertname": alertname,
            "cluster": _CLUSTERS[(group // 7) % len(_CLUSTERS)],
            "namespace": _NAMESPACES[group % len(_NAMESPACES)],
            "service": service,
            "job": service,
            "severity": "critical" if group % 4 == 0 else "warning",
        }

    def labels(self, index: int) -> dict[str, str]:
        """Labels of alert ``index``: its group's labels plus a unique instance and pod."""
        labels = self.group_labels(index % self.spec.groups)
        digest = xxhash.xxh3_64_intdigest(index.to_bytes(8, "big"), seed=self.spec.seed)
        suffix = []
        for _ in range(10):
            digest, digit = divmod(digest, len(_POD_ALPHABET))
            suffix.append(_POD_ALPHABET[digit])
        labels["instance"] = f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}:9100"
        labels["pod"] = f"{labels['service']}-{''.join(suffix[:5])}-{''.join(suffix[5:])}"
        return labels

    def _static(self, index: int) -> tuple[bytes, bytes]:
        """The parts of alert ``index`` that never change: labels + annotations, and generatorURL."""
        cache = self._cache
        if cache is not None:
            hit = cache.get(index)
            if hit is not None:
                return hit
        labels = self.labels(index)
        name, service = labels["alertname"], labels["service"]
        annotations = {
            "summary": f"{name} on {labels['pod']}",
            "description": f"{service}: {name} on {labels['instance']} for 5 minutes",
            "runbook_url": f"https://runbooks.example.com/{name}",
        }
        head = b'{"labels":' + orjson.dumps(labels) + b',"annotations":' + orjson.dumps(annotations)
        url = f"http://prometheus.{labels['cluster']}.example.com:9090/graph?g0.expr={name}".encode()
        parts = (head, url)
        if cache is not None:
            cache[index] = parts
        return parts

    # ---- the notification sequence

    def batches(self) -> Iterator[Batch]:
        """Every record's notifications, in time order."""
        spec = self.spec
        rng = random.Random(spec.seed)
        n = spec.fingerprints
        firing = bytearray(n)  # 0: never sent, 1: firing, 2: resolved
        starts = [0] * n
        ends = [0] * n
        flip = spec.flip_probability
        remaining = spec.alerts
        summary = self.summary
        for r in range(spec.rounds):
            base = r * spec.interval_ms
            count = min(n, remaining)
            remaining -= count
            order = list(range(n))
            rng.shuffle(order)
            order = order[:count]
            nrec = math.ceil(count / spec.per_record)
            for k in range(nrec):
                chunk = order[k * spec.per_record : (k + 1) * spec.per_record]
                notes: list[tuple[int, bool, int, int]] = []
                for i in chunk:
                    state = firing[i]
                    if state == 0:
                        firing[i] = 1
                        starts[i] = base
                        summary.changes += 1
                    elif rng.random() < flip:
                        summary.changes += 1
                        if state == 1:
                            firing[i] = 2
                            ends[i] = base
                        else:
                            firing[i] = 1
                            starts[i] = base
                    notes.append((i, firing[i] == 1, starts[i], ends[i]))
                summary.notifications += len(notes)
                summary.records += 1
                yield Batch(base + (k * (spec.interval_ms // 2)) // nrec, notes)
        summary.firing_at_end = sum(1 for s in firing if s == 1)

    def encode(self, batch: Batch, shift_ms: int) -> bytes:
        """The push body of ``batch`` with every time moved by ``shift_ms`` (epoch of the start)."""
        t_abs = batch.t_rel + shift_ms
        ahead = self.spec.ends_ahead
        parts = []
        for index, is_firing, start, end in batch.notes:
            head, url = self._static(index)
            end_abs = t_abs + ahead if is_firing else end + shift_ms
            parts.append(
                head
                + b',"startsAt":"'
                + self._time(start + shift_ms)
                + b'","endsAt":"'
                + self._time(end_abs)
                + b'","generatorURL":"'
                + url
                + b'"}'
            )
        value = b"[" + b",".join(parts) + b"]"
        self.summary.bytes += len(value)
        return value

    def _time(self, ms: int) -> bytes:
        text = self._times.get(ms)
        if text is None:
            if len(self._times) > 65_536:
                self._times.clear()
            text = self._times[ms] = format_ms(ms)
        return text

    def records(self, t0_ms: int) -> Iterator[RawRecord]:
        """The storm as raw records whose timestamps start at ``t0_ms``."""
        for batch in self.batches():
            yield RawRecord(batch.t_rel + t0_ms, self.encode(batch, t0_ms), len(batch.notes))


@dataclass(frozen=True, slots=True)
class SteadySpec:
    """A constant live load: ``rate`` alerts/s for ``seconds``.

    A new group starts every ``slot_ms``; each group has ``group_alerts`` alerts, re-sent every
    ``resend_ms`` while the group lives, so ``rate * resend_ms / 1000 / group_alerts`` groups are
    live at once. Firing alerts carry endsAt ``ends_ahead_ms`` ahead, beyond the run, so every group
    opens exactly one incident after group_wait.
    """

    rate: int = 5_000
    seconds: float = 90.0
    per_record: int = 50
    group_alerts: int = 25
    resend_ms: int = 1_000
    slot_ms: int = 100
    ends_ahead_ms: int = 300_000
    seed: int = 1

    def __post_init__(self) -> None:
        if self.rate < 1 or self.seconds <= 0:
            raise ValueError("steady needs a positive rate and duration")
        if self.slot_ms < 1 or self.resend_ms % self.slot_ms:
            raise ValueError("resend_ms must be a multiple of slot_ms")
        if self.group_alerts < 1 or self.per_record < 1:
            raise ValueError("group_alerts and per_record must be at least 1")

    @property
    def slots_per_resend(self) -> int:
        return self.resend_ms // self.slot_ms

    @property
    def live_groups(self) -> int:
        """Groups sending at once when the load is at its full rate."""
        return max(1, round(self.rate * self.resend_ms / 1000 / self.group_alerts))

    @property
    def slots(self) -> int:
        return math.ceil(self.seconds * 1000 / self.slot_ms)

    @property
    def ramp_ms(self) -> int:
        """Until then fewer groups are live: the rate climbs to ``rate`` over the first group life."""
        return self.live_groups * self.slot_ms


class SteadyLoad:
    """The notifications of each time slot of a steady load; encoded with the wall clock by the sender."""

    def __init__(self, spec: SteadySpec) -> None:
        self.spec = spec
        groups = spec.slots
        self._storm = Storm(
            StormSpec(
                alerts=groups * spec.group_alerts,
                fingerprints=groups * spec.group_alerts,
                groups=groups,
                per_record=spec.per_record,
                ends_ahead_ms=spec.ends_ahead_ms,
                seed=spec.seed,
            )
        )
        self._storm._cache = {}

    def group_of(self, index: int) -> int:
        return index % self.spec.slots

    def slot(self, s: int) -> list[list[int]]:
        """Alert indexes sent in slot ``s``, split into records; group ``g`` lives in slots g..g+L-1."""
        spec = self.spec
        groups = spec.slots
        phase_count = spec.slots_per_resend
        indexes: list[int] = []
        for g in range(max(0, s - spec.live_groups + 1), min(s + 1, groups)):
            phase = (s - g) % phase_count
            indexes.extend(g + j * groups for j in range(phase, spec.group_alerts, phase_count))
        return [indexes[i : i + spec.per_record] for i in range(0, len(indexes), spec.per_record)]

    def encode(self, indexes: list[int], now_ms: int, first_seen: dict[int, int]) -> bytes:
        """A push of ``indexes`` at ``now_ms``; ``first_seen`` keeps each alert's startsAt."""
        notes = []
        for i in indexes:
            start = first_seen.setdefault(i, now_ms)
            notes.append((i, True, start, 0))
        return self._storm.encode(Batch(now_ms, notes), 0)

    def labels(self, index: int) -> dict[str, str]:
        return self._storm.labels(index)
