"""The notifier's receivers: the I/O half that sends one rendered notification (issue #13).

Each integration of a configured receiver (``webhook_configs``, ``pagerduty_configs``,
``email_configs``, ``apprise_configs``) becomes one ``Integration`` with ``send(payload,
timeout_s=...) -> SendResult``. What is sent is built in the pure core
(``agents.core.notify_payloads``, ``notify_config``'s renderers); retries, backoff and rate
limits are the stage's (``Retry``, ``TokenBucket``), so a send is one bounded attempt.

``integrations_for`` resolves the secrets (files, environment) once, when the stage starts: a
missing key or an Apprise URL no plugin takes stops the stage with the reason, instead of
failing every notification later.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

from stormwatch.agents.core.notify_config import Receiver
from stormwatch.agents.receivers.apprise_urls import AppriseReceiver, AppriseUrlError
from stormwatch.agents.receivers.base import (
    DeliveryPayload,
    Integration,
    SecretError,
    SendResult,
    read_secret,
)
from stormwatch.agents.receivers.pagerduty import PagerDutyReceiver
from stormwatch.agents.receivers.smtp import EmailReceiver
from stormwatch.agents.receivers.webhook import WebhookReceiver

__all__ = [
    "AppriseReceiver",
    "AppriseUrlError",
    "DeliveryPayload",
    "EmailReceiver",
    "Integration",
    "PagerDutyReceiver",
    "SecretError",
    "SendResult",
    "WebhookReceiver",
    "integrations_for",
    "read_secret",
]


def integrations_for(
    receiver: Receiver,
    *,
    environ: Mapping[str, str] | None = None,
    external_url: str = "",
    tls_context: ssl.SSLContext | None = None,
) -> list[Integration]:
    """Every integration of ``receiver``, its secrets read; raises SecretError or AppriseUrlError.

    ``urls_file`` holds one Apprise URL per line and ``urls_env`` URLs separated by spaces;
    each URL becomes its own integration.
    """
    found: list[Integration] = []
    for w in receiver.webhook:
        found.append(WebhookReceiver(w, read_secret(w.url_ref, environ), external_url=external_url))
    for p in receiver.pagerduty:
        found.append(PagerDutyReceiver(p, read_secret(p.routing_key_ref, environ), client_url=external_url))
    for e in receiver.email:
        password = read_secret(e.password_ref, environ) if e.password_ref is not None else None
        found.append(EmailReceiver(e, password, tls_context=tls_context))
    for a in receiver.apprise:
        for ref in a.url_refs:
            for url in read_secret(ref, environ).split():
                found.append(AppriseReceiver(a, url))
    return found
