"""``pagerduty_configs``: PagerDuty Events API v2, ``dedup_key`` = incident id.

PagerDuty's own idempotency is the dedup key: a trigger re-sent after a notifier crash lands on
the alert it already opened instead of paging again, and acknowledge/resolve find it. PagerDuty
answers 202 when it took the event, 400 when it never will, 429 when the service is over its
rate (retry later).
"""

from __future__ import annotations

from typing import ClassVar

from stormwatch.agents.core.notify_config import PagerDutyConfig
from stormwatch.agents.core.notify_payloads import pagerduty_event
from stormwatch.agents.core.templating import TemplateError
from stormwatch.agents.receivers.base import DeliveryPayload, SendResult, post_json, template_failed

__all__ = ["PagerDutyReceiver"]


class PagerDutyReceiver:
    kind: ClassVar[str] = "pagerduty"

    def __init__(self, config: PagerDutyConfig, routing_key: str, *, client_url: str = "") -> None:
        self.config = config
        self.url = config.url
        self.send_resolved = config.send_resolved
        self._routing_key = routing_key
        self.client_url = client_url

    def __repr__(self) -> str:
        return f"PagerDutyReceiver({self.url})"  # never the routing key

    def send(self, payload: DeliveryPayload, *, timeout_s: float) -> SendResult:
        try:
            body = pagerduty_event(
                payload.event, self.config, routing_key=self._routing_key, client_url=self.client_url
            )
        except TemplateError as exc:
            return template_failed(exc)
        return post_json(self.url, body, headers={}, timeout_s=timeout_s)
