"""What every receiver shares: the payload it is handed, the result it returns, secrets, HTTP.

A receiver sends one rendered notification and says how it went; it never retries, sleeps or
rate-limits (the stage does, with ``Retry`` and ``TokenBucket``), so a slow receiver costs one
bounded call and its outcome is data the stage records on the incident's audit log. ``retryable``
says whether the same message could succeed later (a 5xx, a 429, a refused connection) or never
will as configured (a 4xx, a rejected recipient, a bad key): the latter goes to the DLQ at once.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import orjson

from stormwatch.agents.core.notify_config import SecretRef
from stormwatch.agents.core.notify_payloads import PayloadAlert, incident_active
from stormwatch.agents.core.templating import TemplateError
from stormwatch.schemas.incident import IncidentEvent

__all__ = [
    "DETAIL_LIMIT",
    "DeliveryPayload",
    "Integration",
    "SecretError",
    "SendResult",
    "http_status_result",
    "post_json",
    "read_secret",
    "template_failed",
]

DETAIL_LIMIT = 500
"""Characters of a receiver's answer kept in ``detail`` (it goes to logs and the audit log)."""

_RESPONSE_LIMIT = 4096


@dataclass(frozen=True, slots=True)
class DeliveryPayload:
    """One notification to send: the incident as of ``event`` and, for the webhook, its alerts."""

    notification_id: str
    event: IncidentEvent
    alerts: tuple[PayloadAlert, ...] = ()
    receiver: str = ""

    @property
    def resolved(self) -> bool:
        """The incident is over: integrations with ``send_resolved: false`` skip this one."""
        return not incident_active(self.event)


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    retryable: bool
    status: int | None  # HTTP or SMTP code when the receiver answered, else None
    detail: str
    latency_s: float = field(default=0.0)


class Integration(Protocol):
    """One integration of a configured receiver (a webhook URL, a PagerDuty service ...)."""

    kind: ClassVar[str]
    send_resolved: bool

    def send(self, payload: DeliveryPayload, *, timeout_s: float) -> SendResult: ...


class SecretError(Exception):
    """A ``*_file`` or ``*_env`` secret cannot be read (the stage refuses to start)."""


def read_secret(ref: SecretRef, environ: Mapping[str, str] | None = None) -> str:
    """The value ``ref`` points at; a file's trailing newline is not part of it."""
    if ref.source == "inline":
        return ref.value
    if ref.source == "env":
        value = (os.environ if environ is None else environ).get(ref.value)
        if not value:
            raise SecretError(f"environment variable {ref.value} is not set or empty")
        return value.strip()
    try:
        text = Path(ref.value).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretError(f"cannot read {ref.value}: {exc.strerror or exc}") from None
    if not text:
        raise SecretError(f"{ref.value} is empty")
    return text


def template_failed(exc: TemplateError) -> SendResult:
    """A template that cannot render this incident (a field without a value and no ``default``):
    final, the file must change; the stage sends it to the DLQ with this reason."""
    return SendResult(False, False, None, _clip(f"template: {exc}"), 0.0)


def _clip(text: str) -> str:
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 3] + "..."


def http_status_result(status: int, text: str, latency_s: float) -> SendResult:
    """2xx delivered; 408, 429 and 5xx may pass later; any other code will not as configured
    (3xx included: redirects are not followed, a receiver's URL must be its final one)."""
    ok = 200 <= status < 300
    retryable = not ok and (status >= 500 or status in (408, 429))
    return SendResult(ok, retryable, status, _clip(f"HTTP {status}: {text}".strip()), latency_s)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx response


_OPENER = urllib.request.build_opener(_NoRedirects())


def post_json(url: str, body: Any, *, headers: Mapping[str, str], timeout_s: float) -> SendResult:
    """POST ``body`` as JSON; the answer classified by ``http_status_result``; no redirects."""
    data = orjson.dumps(body)
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("User-Agent", "stormwatch-notify")
    for name, value in headers.items():
        request.add_header(name, value)
    started = time.monotonic()
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            text = response.read(_RESPONSE_LIMIT).decode("utf-8", "replace")
            return http_status_result(response.status, text, time.monotonic() - started)
    except urllib.error.HTTPError as exc:
        text = exc.read(_RESPONSE_LIMIT).decode("utf-8", "replace") if exc.fp is not None else ""
        return http_status_result(exc.code, text, time.monotonic() - started)
    except TimeoutError:
        return SendResult(False, True, None, f"no response within {timeout_s:g}s", time.monotonic() - started)
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            detail = f"no response within {timeout_s:g}s"
        else:
            detail = f"request failed: {reason}"
        return SendResult(False, True, None, _clip(detail), time.monotonic() - started)
    except OSError as exc:
        return SendResult(False, True, None, _clip(f"request failed: {exc}"), time.monotonic() - started)
