"""``webhook_configs``: the Alertmanager webhook v4 payload, POSTed as JSON.

The body is exactly Alertmanager's (``notify_payloads.webhook_payload``) so existing consumers
work unchanged; what stormwatch adds travels in headers a consumer may ignore:
``X-Stormwatch-Notification-Id`` (the same on every retry of one notification, so a consumer can
drop a repeat after a notifier crash) and ``X-Stormwatch-Incident-Id``.
"""

from __future__ import annotations

from typing import ClassVar

from stormwatch.agents.core.notify_config import WebhookConfig
from stormwatch.agents.core.notify_payloads import webhook_payload
from stormwatch.agents.receivers.base import DeliveryPayload, SendResult, post_json

__all__ = ["WebhookReceiver"]


class WebhookReceiver:
    kind: ClassVar[str] = "webhook"

    def __init__(self, config: WebhookConfig, url: str, *, external_url: str = "") -> None:
        self.url = url
        self.max_alerts = config.max_alerts
        self.send_resolved = config.send_resolved
        self.external_url = external_url

    def send(self, payload: DeliveryPayload, *, timeout_s: float) -> SendResult:
        body = webhook_payload(
            payload.event,
            payload.alerts,
            receiver=payload.receiver,
            external_url=self.external_url,
            max_alerts=self.max_alerts,
        )
        headers = {
            "X-Stormwatch-Notification-Id": payload.notification_id,
            "X-Stormwatch-Incident-Id": payload.event.incident_id,
        }
        return post_json(self.url, body, headers=headers, timeout_s=timeout_s)
