"""The canonical alert: the one shape every input format is normalized into."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import Field

from stormwatch.schemas.common import Contract, Severity


class AlertStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class InputFormat(StrEnum):
    """Wire formats accepted on the raw topic (and by the gateway)."""

    PROMETHEUS = "prometheus"  # JSON array POSTed by Prometheus to Alertmanager's /api/v2/alerts
    ALERTMANAGER = "alertmanager"  # Alertmanager webhook payload, version 4
    PAGERDUTY = "pagerduty"  # PagerDuty Events API v2
    CLOUDEVENTS = "cloudevents"  # CloudEvents 1.0 structured JSON
    NATIVE = "native"  # stormwatch's own JSON form


class Origin(Contract):
    """Where an alert was read from, so every decision can be traced back to raw bytes."""

    topic: str
    partition: int
    offset: int
    index: int = 0  # position of the alert inside a batch record


class Alert(Contract):
    """One alert notification in canonical form.

    ``fingerprint`` identifies the alert across notifications (see schemas.fingerprint);
    ``received_at`` is the event time used by the correlator's windows.
    """

    source: str = Field(description="Monitoring system or integration that produced the alert")
    format: InputFormat
    fingerprint: str = Field(min_length=1, max_length=128)
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    severity: Severity = Severity.WARNING
    starts_at: datetime
    ends_at: datetime | None = None
    generator_url: str | None = None
    received_at: datetime
    source_key: str | None = Field(
        default=None, description="The source's own identity (PagerDuty dedup_key, Alertmanager fingerprint)"
    )
    origin: Origin | None = None

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")
