"""``apprise_configs``: chat and push services through the Apprise library, one URL each.

Apprise (https://github.com/caronc/apprise) speaks 100+ services (Slack, Microsoft Teams,
Mattermost, Matrix, Discord, Telegram, Opsgenie, ntfy, Gotify ...) behind one URL syntax
(``slack://``, ``msteams://``, ``ntfy://host/topic``, ``json://host/path``); writing and keeping
each client by hand would be most of the notifier's code, and each service's API drift its
maintenance.

One receiver per URL, so a retry re-sends only to the service that failed. Apprise answers
yes or no; the HTTP code in its log (``error=NNN``) makes a 4xx other than 408/429 final, and
anything else (a refused connection, a timeout, a 5xx) retryable. A fresh Apprise object per
send: its plugins pace themselves per object (up to seconds between calls), and pacing is the
stage's rate limit's job.
"""

from __future__ import annotations

import re
import time
from typing import ClassVar

import apprise

from stormwatch.agents.core.notify_config import (
    AppriseConfig,
    notification_context,
    render_header,
    render_text,
)
from stormwatch.agents.core.templating import TemplateError
from stormwatch.agents.receivers.base import DETAIL_LIMIT, DeliveryPayload, SendResult, template_failed
from stormwatch.schemas.common import Severity

__all__ = ["AppriseReceiver", "AppriseUrlError"]

_STATUS = re.compile(r"error=(\d{3})")
_TYPES = {
    Severity.CRITICAL: apprise.NotifyType.FAILURE,
    Severity.ERROR: apprise.NotifyType.FAILURE,
    Severity.WARNING: apprise.NotifyType.WARNING,
    Severity.INFO: apprise.NotifyType.INFO,
}


class AppriseUrlError(ValueError):
    """Apprise knows no service for the URL (the stage refuses to start)."""


class AppriseReceiver:
    kind: ClassVar[str] = "apprise"

    def __init__(self, config: AppriseConfig, url: str) -> None:
        if apprise.Apprise.instantiate(url) is None:
            raise AppriseUrlError(f"Apprise cannot use {url.split('://', 1)[0]}:// URL (see its wiki)")
        self.config = config
        self.send_resolved = config.send_resolved
        self._url = url

    def __repr__(self) -> str:
        return f"AppriseReceiver({self._url.split('://', 1)[0]}://***)"  # the URL may hold a token

    def send(self, payload: DeliveryPayload, *, timeout_s: float) -> SendResult:
        started = time.monotonic()
        context = notification_context(payload.event)
        try:
            title = render_header(self.config.title, context)
            body = render_text(self.config.body, context)
        except TemplateError as exc:
            return template_failed(exc)
        plugin = apprise.Apprise.instantiate(self._url)
        if plugin is None:  # checked in __init__; Apprise's registry could still change
            return SendResult(False, False, None, "Apprise cannot use the URL", 0.0)
        plugin.socket_connect_timeout = timeout_s
        plugin.socket_read_timeout = timeout_s
        sender = apprise.Apprise()
        sender.add(plugin)
        kind = (
            apprise.NotifyType.SUCCESS
            if payload.resolved
            else _TYPES.get(payload.event.snapshot.severity, apprise.NotifyType.INFO)
        )
        result = sender.notify(
            body=body,
            title=title,
            notify_type=kind,
            body_format=apprise.NotifyFormat.TEXT,
            timeout=timeout_s,
        )
        took = time.monotonic() - started
        if result:
            return SendResult(True, False, None, "accepted", took)
        problems = [e.message for e in result.logs() if e.level in ("WARNING", "ERROR")]
        detail = "; ".join(problems) or "not delivered (Apprise gave no reason)"
        found = _STATUS.search(detail)
        status = int(found.group(1)) if found else None
        final = status is not None and 400 <= status < 500 and status not in (408, 429)
        return SendResult(False, not final, status, detail[:DETAIL_LIMIT], took)
