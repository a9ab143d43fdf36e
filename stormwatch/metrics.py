"""Prometheus metrics of the pipeline stages (names follow Prometheus conventions).

One process-wide instance (``pipeline_metrics()``), because prometheus-client registers metric
names globally; stages running side by side in one process (tests, `make up`) share it.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter as PyCounter
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server

from stormwatch.errors import UserError

_DURATION_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

_T = TypeVar("_T")

MAX_SOURCE_LABELS = 50  # distinct `source` label values before they are folded into "other"

_ENGINE_COUNTERS = {
    "deduplicated": ("alerts_deduplicated", None),
    "suppressed_silence": ("alerts_suppressed", "silence"),
    "suppressed_inhibit": ("alerts_suppressed", "inhibition"),
    "suppressed_flapping": ("alerts_suppressed", "flapping"),
    "late_alerts": ("alerts_late", None),
    "resolved_unknown": ("alerts_resolved_unknown", None),
    "alerts_applied": ("alerts_grouped", None),
    "commands_refused": ("commands_refused", None),
    "flapping_detected": ("flapping_detected", None),
    "link_late_commands": ("link_commands_late", None),
    "link_notes": ("link_notes", None),
}


class PipelineMetrics:
    def __init__(self) -> None:
        self.alerts_received = Counter(
            "stormwatch_alerts_received_total", "Alerts parsed from raw records", ["source", "format"]
        )
        self.raw_records = Counter("stormwatch_raw_records_total", "Raw records consumed by ingest")
        self.notes_signatures = Counter(
            "stormwatch_notes_signature_total",
            "The gateway's notes records read with ingest.notes_key_file, by their signature: valid "
            "(alerts not checked again), invalid or absent (every alert checked, as without a key)",
            ["result"],
        )
        self.dead_letters = Counter(
            "stormwatch_dead_letters_total", "Records and alerts sent to the dead-letter topic", ["reason"]
        )
        self.alerts_deduplicated = Counter(
            "stormwatch_alerts_deduplicated_total", "Re-sent notifications folded into known alerts"
        )
        self.alerts_suppressed = Counter(
            "stormwatch_alerts_suppressed_total", "Notifications held back", ["reason"]
        )
        self.raw_records_ahead = Counter(
            "stormwatch_raw_records_ahead_total",
            "Raw records stamped further ahead of ingest's wall clock than ingest.max_future_ms: their "
            "alerts wait until their time instead of moving the clock",
        )
        self.alerts_late = Counter(
            "stormwatch_alerts_late_total",
            "Alerts later than the allowed lateness (applied or dead-lettered)",
        )
        self.alerts_grouped = Counter(
            "stormwatch_alerts_grouped_total", "Alerts applied to a correlation group"
        )
        self.alerts_resolved_unknown = Counter(
            "stormwatch_alerts_resolved_unknown_total",
            "Resolved notifications of alerts the correlator did not know (nothing to resolve), "
            "e.g. an endsAt already past on arrival: a sender's clock behind",
        )
        self.commands_refused = Counter(
            "stormwatch_commands_refused_total", "Operator or agent requests refused by the state machine"
        )
        self.flapping_detected = Counter("stormwatch_flapping_detected_total", "Alerts marked as flapping")
        self.incident_events = Counter(
            "stormwatch_incident_events_total",
            "Incident events written to the audit log",
            ["type", "severity", "rule"],
        )
        self.incidents_opened = Counter(
            "stormwatch_incidents_opened_total", "Incidents opened", ["severity", "rule"]
        )
        self.incidents_resolved = Counter(
            "stormwatch_incidents_resolved_total", "Incidents resolved", ["severity", "rule"]
        )
        self.incidents_reopened = Counter(
            "stormwatch_incidents_reopened_total", "Incidents reopened", ["severity", "rule"]
        )
        self.open_incidents = Gauge(
            "stormwatch_open_incidents", "Incidents open, acknowledged or mitigating", ["partition"]
        )
        self.active_alerts = Gauge(
            "stormwatch_active_alerts", "Alerts held in correlator state", ["partition"]
        )
        self.linker_state = Gauge(
            "stormwatch_linker_state",
            "What a linker partition holds: linked incidents, groups, notes waiting for their time",
            ["partition", "kind"],
        )
        self.mtta = Histogram(
            "stormwatch_time_to_acknowledge_seconds",
            "Incident open to acknowledge",
            ["severity", "rule"],
            buckets=_DURATION_BUCKETS,
        )
        self.mttr = Histogram(
            "stormwatch_time_to_resolve_seconds",
            "Incident open to resolve",
            ["severity", "rule"],
            buckets=_DURATION_BUCKETS,
        )
        self.mtta_notified = Histogram(
            "stormwatch_mtta_notified_seconds",
            "Incident open to its first notification accepted by a receiver (a person told)",
            ["severity", "rule"],
            buckets=_DURATION_BUCKETS,
        )
        self.processing_latency = Histogram(
            "stormwatch_processing_latency_seconds",
            "Wall time from an alert's event time to the incident event that reports it",
            buckets=_LATENCY_BUCKETS,
        )
        self.transactions = Counter("stormwatch_transactions_total", "Committed transactions", ["stage"])
        self.transaction_seconds = Histogram(
            "stormwatch_transaction_seconds",
            "Time to process and commit one batch",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
        )
        self.consumer_lag = Gauge(
            "stormwatch_consumer_lag", "Records behind the log end", ["topic", "partition"]
        )
        self.hung_producers = Gauge(
            "stormwatch_hung_producers",
            "Transactional producers replaced while inside a librdkafka call that has not returned "
            "yet; each holds its memory until the call returns",
        )
        self.oldest_open_incident = Gauge(
            "stormwatch_oldest_open_incident_timestamp_seconds",
            "Event time the oldest still-active incident opened at (no series while none is active)",
            ["partition"],
        )
        # Linking (issue #12, docs/correlation-rules.md "Topology")
        self.link_notes = Counter(
            "stormwatch_link_notes_total", "Group notes the correlator wrote for the linker"
        )
        self.link_commands_late = Counter(
            "stormwatch_link_commands_late_total",
            "Linker decisions applied late (the linker was behind by more than link.max_wait)",
        )
        self.link_decisions = Counter(
            "stormwatch_link_decisions_total",
            "The linker's decisions: linked, merged, root_changed, unlinked, refused, by relation",
            ["decision", "relation"],
        )
        self.linker_late_notes = Counter(
            "stormwatch_linker_late_notes_total",
            "Group notes that reached the linker after their time was decided",
        )
        self.root_causes = Counter(
            "stormwatch_root_causes_total",
            "Root causes named (root_cause_changed events on primaries), by component kind",
            ["kind"],
        )
        self._sources: set[str] = set()

    def _source_label(self, source: str) -> str:
        """Sources come from the input (CloudEvents source, PagerDuty client): cap the label values."""
        if source in self._sources:
            return source
        if len(self._sources) < MAX_SOURCE_LABELS:
            self._sources.add(source)
            return source
        return "other"

    def record_ingest(self, result: Any) -> None:
        self.raw_records.inc()
        if result.signature is not None:  # a notes record, read with keys
            self.notes_signatures.labels(result=result.signature.value).inc()
        # Counted by (source, format) as they come, labels resolved once per pair: a Counter over a
        # generator cost ingest about 1 µs per alert.
        counts: dict[tuple[str, Any], int] = {}
        for alert in result.alerts:
            pair = (alert.source, alert.format)
            counts[pair] = counts.get(pair, 0) + 1
        for (source, fmt), n in counts.items():
            self.alerts_received.labels(source=self._source_label(source), format=fmt.value).inc(n)
        for dead in result.dead_letters:
            self.dead_letters.labels(reason=dead.reason.value).inc()

    def record_engine_stats(self, delta: PyCounter[str]) -> None:
        for key, count in delta.items():
            target = _ENGINE_COUNTERS.get(key)
            if target is None or count <= 0:
                continue
            name, reason = target
            metric = getattr(self, name)
            (metric.labels(reason=reason) if reason else metric).inc(count)

    def record_event(self, event_type: str, severity: str, rule: str) -> None:
        self.incident_events.labels(type=event_type, severity=severity, rule=rule).inc()
        if event_type == "opened":
            self.incidents_opened.labels(severity=severity, rule=rule).inc()
        elif event_type == "resolved":
            self.incidents_resolved.labels(severity=severity, rule=rule).inc()
        elif event_type == "reopened":
            self.incidents_reopened.labels(severity=severity, rule=rule).inc()

    def record_linker(self, totals: dict[str, int], before: dict[str, int]) -> None:
        """The linker partitions' counters (``decision:KIND:RELATION``, ``late_notes``) since ``before``."""
        for key, total in totals.items():
            delta = total - before.get(key, 0)
            if delta <= 0:
                continue
            if key.startswith("decision:"):
                _, decision, relation = key.split(":", 2)
                self.link_decisions.labels(decision=decision, relation=relation).inc(delta)
            elif key == "late_notes":
                self.linker_late_notes.inc(delta)

    def record_linker_state(
        self, partition: int, incidents: int | None, groups: int = 0, pending_notes: int = 0
    ) -> None:
        """The size of one linker partition's state; ``incidents`` None removes its series (revoked)."""
        if incidents is None:
            for kind in ("incidents", "groups", "pending_notes"):
                with contextlib.suppress(KeyError):
                    self.linker_state.remove(str(partition), kind)
            return
        for kind, value in (("incidents", incidents), ("groups", groups), ("pending_notes", pending_notes)):
            self.linker_state.labels(partition=str(partition), kind=kind).set(value)

    def record_oldest_open(self, partition: int, opened_ms: int | None) -> None:
        """Age alerts need the oldest active incident per partition; None removes the series."""
        if opened_ms is None:
            with contextlib.suppress(KeyError):
                self.oldest_open_incident.remove(str(partition))
        else:
            self.oldest_open_incident.labels(partition=str(partition)).set(opened_ms / 1000)


def process_wide(factory: Callable[[], _T]) -> Callable[[], _T]:
    """A getter of one instance per process, made on first use (thread-safe).

    Every metrics holder needs it: prometheus-client registers metric names in one global
    registry, so a second instance would fail with "Duplicated timeseries".
    """
    lock = threading.Lock()
    made: list[_T] = []

    def instance() -> _T:
        with lock:
            if not made:
                made.append(factory())
            return made[0]

    return instance


pipeline_metrics = process_wide(PipelineMetrics)
"""The pipeline stages' metrics, shared by every stage in the process."""

_servers: set[int] = set()


def serve_metrics(port: int, addr: str = "127.0.0.1") -> None:
    """Serve /metrics once per port for the process (0 = disabled).

    A port that cannot be bound (in use, no permission, unknown address) is a ``UserError``: the
    worker exits with one line that names the port and the setting, not a traceback."""
    if port and port not in _servers:
        try:
            start_http_server(port, addr=addr, registry=REGISTRY)
        except OSError as exc:
            raise UserError(
                f"cannot serve /metrics on {addr}:{port}: {exc.strerror or exc}; choose another port "
                "with --metrics-port PORT (metrics_port, $STORMWATCH_METRICS_PORT; 0 turns /metrics off)"
                " or another address with metrics_host ($STORMWATCH_METRICS_HOST)"
            ) from None
        _servers.add(port)
