"""``email_configs``: one message over SMTP, plain text with an optional HTML alternative.

STARTTLS is used whenever the server offers it; with ``require_tls`` (the default) a server that
does not offer it gets nothing, because a password or an incident sent in clear text to a
server that stripped STARTTLS cannot be taken back. AUTH (``auth_username``) is refused the same
way when the server does not offer it.

Header safety: the subject is a one-line render (``render_header``: a label value's CR/LF becomes
a space) and the message is built with the ``email`` package's SMTP policy, which refuses a
header value with a line break; addresses come from the checked config only.

``Message-ID`` is derived from the notification id, so a message re-sent after a crash can be
recognised as the same one; ``References`` names the incident so mail clients thread its
messages together.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, getaddresses, parseaddr
from typing import ClassVar

from stormwatch.agents.core.notify_config import (
    EmailConfig,
    notification_context,
    render_header,
    render_html,
    render_text,
)
from stormwatch.agents.core.templating import TemplateError
from stormwatch.agents.receivers.base import DETAIL_LIMIT, DeliveryPayload, SendResult, template_failed

__all__ = ["EmailReceiver", "build_message"]


def _domain(address: str) -> str:
    return parseaddr(address)[1].rpartition("@")[2] or "stormwatch"


def build_message(config: EmailConfig, payload: DeliveryPayload) -> EmailMessage:
    """The message for ``payload`` as ``config`` renders it (no I/O; the tests read it too)."""
    context = notification_context(payload.event)
    message = EmailMessage(policy=SMTP)
    message["Subject"] = render_header(config.subject, context)
    message["From"] = config.from_
    message["To"] = ", ".join(config.to)
    message["Date"] = formatdate(usegmt=True)
    domain = _domain(config.from_)
    message["Message-ID"] = f"<{payload.notification_id}@{domain}>"
    message["References"] = f"<incident-{payload.event.incident_id}@{domain}>"
    message["X-Stormwatch-Incident-Id"] = payload.event.incident_id
    message.set_content(render_text(config.text, context))
    if config.html is not None:
        message.add_alternative(render_html(config.html, context), subtype="html")
    return message


def _smtp_result(code: int, what: str, latency_s: float) -> SendResult:
    """4xx is SMTP's "try again later"; 5xx is final."""
    return SendResult(False, 400 <= code < 500, code, what[:DETAIL_LIMIT], latency_s)


class EmailReceiver:
    kind: ClassVar[str] = "email"

    def __init__(
        self,
        config: EmailConfig,
        password: str | None = None,
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """``tls_context``: how the server's certificate is checked (default: the system's CAs)."""
        self.config = config
        self.send_resolved = config.send_resolved
        host, _, port = config.smarthost.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._password = password
        self._tls = tls_context

    def __repr__(self) -> str:
        return f"EmailReceiver({self.config.smarthost})"  # never the password

    def send(self, payload: DeliveryPayload, *, timeout_s: float) -> SendResult:
        started = time.monotonic()

        def took() -> float:
            return time.monotonic() - started

        try:
            message = build_message(self.config, payload)
        except TemplateError as exc:
            return template_failed(exc)
        except ValueError as exc:  # the SMTP policy refused a header value (a line break in it)
            return SendResult(False, False, None, f"message: {exc}"[:DETAIL_LIMIT], took())
        sender = parseaddr(self.config.from_)[1]
        recipients = [addr for _name, addr in getaddresses(self.config.to)]
        try:
            with smtplib.SMTP(self.host, self.port, timeout=timeout_s) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=self._tls or ssl.create_default_context())
                    smtp.ehlo()
                elif self.config.require_tls:
                    return SendResult(
                        False,
                        False,
                        None,
                        f"{self.config.smarthost} does not offer STARTTLS "
                        "(require_tls is set; nothing was sent)",
                        took(),
                    )
                if self.config.auth_username:
                    if not smtp.has_extn("auth"):
                        return SendResult(
                            False, False, None, f"{self.config.smarthost} does not offer AUTH", took()
                        )
                    smtp.login(self.config.auth_username, self._password or "")
                refused = smtp.send_message(message, from_addr=sender, to_addrs=recipients)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _text in exc.recipients.values()]
            retryable = all(400 <= code < 500 for code in codes)
            return SendResult(
                False,
                retryable,
                codes[0] if codes else None,
                f"recipients refused: {exc.recipients}"[:DETAIL_LIMIT],
                took(),
            )
        except smtplib.SMTPResponseException as exc:
            text = (
                exc.smtp_error.decode("utf-8", "replace")
                if isinstance(exc.smtp_error, bytes)
                else str(exc.smtp_error)
            )
            return _smtp_result(exc.smtp_code, f"SMTP {exc.smtp_code}: {text}", took())
        except smtplib.SMTPNotSupportedError as exc:
            return SendResult(False, False, None, f"not supported by the server: {exc}", took())
        except ssl.SSLCertVerificationError as exc:
            return SendResult(
                False, False, None, f"TLS certificate not accepted: {exc.verify_message}", took()
            )
        except (smtplib.SMTPException, OSError) as exc:  # disconnects, timeouts, refused connections
            return SendResult(
                False, True, None, f"SMTP failed: {exc or type(exc).__name__}"[:DETAIL_LIMIT], took()
            )
        detail = f"accepted for {len(recipients) - len(refused)} of {len(recipients)} recipients"
        if refused:  # the others got it: a retry would send them a second copy
            detail += f"; refused: {sorted(refused)}"
        return SendResult(True, False, 250, detail[:DETAIL_LIMIT], took())
