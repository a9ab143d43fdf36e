"""The notifier's receivers against real servers on 127.0.0.1, nothing of ours mocked.

- webhook: a plain HTTP server records what arrives, and a stormwatch gateway (its Alertmanager
  webhook endpoint) is the schema check: the project's own Alertmanager adapter must accept it;
- PagerDuty: a second stormwatch gateway is the Events v2 endpoint (``/v2/enqueue``), so trigger
  and resolve are checked by the code that takes PagerDuty events from real senders. Its Kafka
  sink is replaced by one that keeps the records in a list (a test double of ours, not of the
  code under test);
- email: aiosmtpd, a real SMTP server, with AUTH and with STARTTLS (a throwaway certificate);
- Apprise: its ``json://`` service pointed at the plain HTTP server.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from stormwatch.agents.core.notify_config import (
    AppriseConfig,
    EmailConfig,
    NotifierConfig,
    PagerDutyConfig,
    SecretRef,
    WebhookConfig,
    parse_notifier_config,
)
from stormwatch.agents.core.notify_payloads import PayloadAlert, fold_alerts, webhook_payload
from stormwatch.agents.core.notify_policy import notification_id
from stormwatch.agents.receivers import (
    AppriseReceiver,
    AppriseUrlError,
    DeliveryPayload,
    EmailReceiver,
    PagerDutyReceiver,
    SecretError,
    WebhookReceiver,
    integrations_for,
    read_secret,
)
from stormwatch.config import Settings
from stormwatch.gateway import GatewayServer
from stormwatch.kafkasink import KafkaSink
from stormwatch.schemas.alert import AlertStatus
from stormwatch.schemas.common import Severity, utc_from_ms
from stormwatch.schemas.incident import (
    AlertChange,
    AlertChangeKind,
    IncidentEvent,
    IncidentEventType,
    IncidentSnapshot,
    IncidentState,
)
from tests.kit.http import QuietHandler, serve_http
from tests.kit.ports import free_port

pytestmark = [
    pytest.mark.timeout(30),
    pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning"),  # inside apprise
]

INC = "inc-7f3a"
T0 = 1_764_700_000_000
TIMEOUT_S = 2.0


def event(
    kind: IncidentEventType,
    state: IncidentState,
    *,
    seq: int = 1,
    title: str = "HighLatency on api",
    changes: list[AlertChange] | None = None,
    severity: Severity = Severity.CRITICAL,
) -> IncidentEvent:
    return IncidentEvent(
        event_id=f"{INC}:{seq}",
        incident_id=INC,
        seq=seq,
        type=kind,
        from_state=None if seq == 1 else IncidentState.OPEN,
        to_state=state,
        at=utc_from_ms(T0 + seq * 60_000),
        actor="correlator",
        cause=kind.value,
        alerts=changes or [],
        snapshot=IncidentSnapshot(
            state=state,
            severity=severity,
            title=title,
            group_key='{service="api"}',
            group_labels={"service": "api"},
            rule="by-service",
            alert_count=2,
            firing_count=2 if state is IncidentState.OPEN else 0,
            opened_at=utc_from_ms(T0),
        ),
    )


def joined(fp: str, instance: str) -> AlertChange:
    return AlertChange(
        fingerprint=fp,
        change=AlertChangeKind.JOINED,
        status=AlertStatus.FIRING,
        severity=Severity.CRITICAL,
        at=utc_from_ms(T0),
        labels={"alertname": "HighLatency", "service": "api", "instance": instance},
        annotations={"summary": "p99 over 2s", "runbook": f"https://runbooks/{instance}"},
    )


def resolved_change(fp: str, seq: int) -> AlertChange:
    return AlertChange(
        fingerprint=fp,
        change=AlertChangeKind.RESOLVED,
        status=AlertStatus.RESOLVED,
        severity=Severity.CRITICAL,
        at=utc_from_ms(T0 + seq * 60_000),
    )


OPENED = event(
    IncidentEventType.OPENED, IncidentState.OPEN, changes=[joined("a1", "a:1"), joined("b2", "b:1")]
)
RESOLVED = event(
    IncidentEventType.RESOLVED,
    IncidentState.RESOLVED,
    seq=2,
    changes=[resolved_change("a1", 2), resolved_change("b2", 2)],
)
ALERTS_OPEN = fold_alerts({}, OPENED)
ALERTS_RESOLVED = fold_alerts(ALERTS_OPEN, RESOLVED)


def payload(
    ev: IncidentEvent, alerts: dict[str, PayloadAlert] | None = None, receiver: str = "ops"
) -> DeliveryPayload:
    return DeliveryPayload(
        notification_id=notification_id(ev.incident_id, ev.seq, receiver),
        event=ev,
        alerts=tuple((alerts or {}).values()),
        receiver=receiver,
    )


# --------------------------------------------------------------------------------------------------
# Plain HTTP receiver


class Recorder(QuietHandler):
    """Answers ``status`` (class attribute set per test) and keeps every request."""

    status = 200
    received: list[tuple[str, dict[str, str], bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received.append((self.path, dict(self.headers.items()), body))
        self.send_response(type(self).status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture(scope="module")
def http_server() -> Iterator[tuple[type[Recorder], str]]:
    handler = type("R", (Recorder,), {"status": 200, "received": []})
    with serve_http(handler) as base:
        yield handler, base


@pytest.fixture
def recorder(http_server: tuple[type[Recorder], str]) -> tuple[type[Recorder], str]:
    """The module's HTTP server, answering 200 with nothing received yet."""
    handler, base = http_server
    handler.status = 200
    handler.received = []
    return handler, base


def webhook_config(**extra: Any) -> WebhookConfig:
    return WebhookConfig.model_validate({"url": "http://127.0.0.1:1/hook", **extra})


def test_webhook_posts_the_alertmanager_v4_payload(recorder: tuple[type[Recorder], str]) -> None:
    handler, base = recorder
    receiver = WebhookReceiver(webhook_config(), f"{base}/hook", external_url="https://sw.example/ui")
    result = receiver.send(payload(OPENED, ALERTS_OPEN), timeout_s=TIMEOUT_S)
    assert result.ok and result.status == 200 and not result.retryable and result.latency_s > 0
    path, headers, body = handler.received[0]
    doc = orjson.loads(body)
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    assert headers["X-Stormwatch-Notification-Id"] == notification_id(INC, 1, "ops")
    assert headers["X-Stormwatch-Incident-Id"] == INC
    assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "ops"
    assert doc["groupKey"] == '{service="api"}' and doc["truncatedAlerts"] == 0
    assert doc["groupLabels"] == {"service": "api"}
    assert doc["commonLabels"] == {"alertname": "HighLatency", "service": "api"}
    assert doc["commonAnnotations"] == {"summary": "p99 over 2s"}
    assert doc["externalURL"] == "https://sw.example/ui"
    first = doc["alerts"][0]
    assert set(first) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert first["status"] == "firing" and first["endsAt"] == "0001-01-01T00:00:00Z"
    assert [a["fingerprint"] for a in doc["alerts"]] == ["a1", "b2"]


def test_webhook_resolved_and_max_alerts(recorder: tuple[type[Recorder], str]) -> None:
    handler, base = recorder
    receiver = WebhookReceiver(webhook_config(max_alerts=1), f"{base}/hook")
    assert receiver.send(payload(RESOLVED, ALERTS_RESOLVED), timeout_s=TIMEOUT_S).ok
    doc = orjson.loads(handler.received[0][2])
    assert doc["status"] == "resolved" and doc["truncatedAlerts"] == 1 and len(doc["alerts"]) == 1
    assert doc["alerts"][0]["status"] == "resolved" and doc["alerts"][0]["endsAt"].startswith("2025-")


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (429, True), (408, True), (400, False), (404, False)]
)
def test_webhook_status_handling(recorder: tuple[type[Recorder], str], status: int, retryable: bool) -> None:
    handler, base = recorder
    handler.status = status
    result = WebhookReceiver(webhook_config(), f"{base}/hook").send(
        payload(OPENED, ALERTS_OPEN), timeout_s=TIMEOUT_S
    )
    assert (result.ok, result.retryable, result.status) == (False, retryable, status)
    assert result.detail.startswith(f"HTTP {status}")


def test_a_redirect_is_not_followed(recorder: tuple[type[Recorder], str]) -> None:
    handler, base = recorder
    handler.status = 307
    result = WebhookReceiver(webhook_config(), f"{base}/hook").send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable, result.status) == (False, False, 307)
    assert len(handler.received) == 1


def test_a_receiver_that_is_down_is_retryable() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens there
    result = WebhookReceiver(webhook_config(), url).send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable, result.status) == (False, True, None)
    assert "request failed" in result.detail


def test_a_receiver_that_does_not_answer_in_time_is_retryable() -> None:
    release = threading.Event()

    class Slow(QuietHandler):
        def do_POST(self) -> None:
            release.wait(5)

    with serve_http(Slow) as base:
        try:
            result = WebhookReceiver(webhook_config(), base).send(payload(OPENED), timeout_s=0.3)
        finally:
            release.set()
    assert (result.ok, result.retryable) == (False, True) and "0.3s" in result.detail


# --------------------------------------------------------------------------------------------------
# A stormwatch gateway as the receiving end (Alertmanager webhook and PagerDuty Events v2)


class RecordingSink(KafkaSink):
    """The gateway's sink with its broker replaced by a list: every record the gateway accepted
    (``records``), and the request body each came from (``bodies``: the gateway writes parsed
    notes, so the event a receiver sent is read from there)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.records: list[bytes] = []
        self.bodies: list[bytes] = []

    def start(self) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass

    @property
    def ready(self) -> bool:
        return True

    async def send(
        self,
        value: bytes,
        *,
        key: bytes | None,
        headers: list[tuple[str, str | bytes | None]],
        timestamp_ms: int,
    ) -> None:
        self.records.append(value)


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[str, RecordingSink]]:
    """A stormwatch gateway on 127.0.0.1 (port 0), on an event loop in a thread."""
    settings = Settings.model_validate(
        {
            "kafka": {"bootstrap_servers": f"127.0.0.1:{free_port()}"},
            "topics": {"raw": "receivers.unit.raw"},
            "gateway": {"host": "127.0.0.1", "port": 0},
        }
    )
    sink = RecordingSink(settings)
    server = GatewayServer(settings, sink=sink)
    forward = server.gateway._forward

    async def recorded(endpoint: Any, prepared: Any, received_ms: int) -> Any:
        answer = await forward(endpoint, prepared, received_ms)
        if answer.status < 300:
            sink.bodies.append(prepared.body)
        return answer

    server.gateway._forward = recorded  # type: ignore[method-assign]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
    try:
        yield server.url, sink
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        KafkaSink.close(sink, 0)


def test_the_gateway_alertmanager_adapter_accepts_the_webhook_payload(
    gateway: tuple[str, RecordingSink],
) -> None:
    url, sink = gateway
    before = len(sink.records)
    receiver = WebhookReceiver(webhook_config(), f"{url}/api/v1/webhook/alertmanager")
    for ev, alerts in ((OPENED, ALERTS_OPEN), (RESOLVED, ALERTS_RESOLVED)):
        result = receiver.send(payload(ev, alerts), timeout_s=TIMEOUT_S)
        assert result.ok, result.detail
        answer = orjson.loads(result.detail.split(": ", 1)[1])
        assert (answer["accepted"], answer["rejected"]) == (2, 0), answer
    assert len(sink.records) == before + 2


def pd_config(url: str, **extra: Any) -> PagerDutyConfig:
    return PagerDutyConfig.model_validate({"routing_key_env": "PD_KEY", "url": url, **extra})


def test_pagerduty_trigger_then_resolve_share_the_dedup_key(gateway: tuple[str, RecordingSink]) -> None:
    url, sink = gateway
    before = len(sink.records)
    config = pd_config(f"{url}/v2/enqueue", severity={"critical": "error"})
    receiver = PagerDutyReceiver(config, "R" * 32, client_url="https://sw.example/ui")
    answers = []
    for ev in (OPENED, RESOLVED):
        result = receiver.send(payload(ev), timeout_s=TIMEOUT_S)
        assert (result.ok, result.status) == (True, 202), result.detail
        answers.append(orjson.loads(result.detail.split(": ", 1)[1]))
    assert [a["dedup_key"] for a in answers] == [INC, INC]
    trigger, resolve = (orjson.loads(r) for r in sink.bodies[before:])
    assert (trigger["event_action"], resolve["event_action"]) == ("trigger", "resolve")
    assert trigger["dedup_key"] == resolve["dedup_key"] == INC
    assert trigger["payload"]["summary"] == "HighLatency on api"
    assert trigger["payload"]["severity"] == "error" and trigger["payload"]["source"] == "stormwatch"
    assert trigger["payload"]["custom_details"]["incident_id"] == INC
    assert trigger["client_url"] == "https://sw.example/ui"
    assert "payload" not in resolve


def test_pagerduty_acknowledge_and_a_refused_event(gateway: tuple[str, RecordingSink]) -> None:
    url, sink = gateway
    acked = event(IncidentEventType.ACKNOWLEDGED, IncidentState.ACKNOWLEDGED, seq=2)
    receiver = PagerDutyReceiver(pd_config(f"{url}/v2/enqueue"), "R" * 32)
    assert receiver.send(payload(acked), timeout_s=TIMEOUT_S).ok
    assert orjson.loads(sink.bodies[-1])["event_action"] == "acknowledge"
    bad = PagerDutyReceiver(pd_config(f"{url}/v2/enqueue"), "R" * 32)
    bad.config = bad.config.model_copy(update={"severity": {Severity.CRITICAL: "fatal"}})  # not PagerDuty's
    result = bad.send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable, result.status) == (False, False, 400)
    unset = PagerDutyReceiver(pd_config(f"{url}/v2/enqueue", source="{{ labels.missing }}"), "R" * 32)
    result = unset.send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable) == (False, False) and result.detail.startswith(
        "template: labels.missing"
    )
    assert "PagerDutyReceiver(" in repr(receiver) and "R" * 32 not in repr(receiver)


# --------------------------------------------------------------------------------------------------
# Email over SMTP


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"

    def message(self, i: int = -1) -> EmailMessage:
        content = self.envelopes[i].original_content or b""
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def accept_ops(server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"ops", b"pa55")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int, dict[str, Any]]]:
    """aiosmtpd on 127.0.0.1 with AUTH (allowed without TLS here: the TLS test has its own)."""
    box = Mailbox()
    port = free_port()
    options: dict[str, Any] = {"authenticator": accept_ops, "auth_require_tls": False}
    controller = Controller(box, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield box, port, options
    finally:
        controller.stop()


def email_config(port: int, **extra: Any) -> EmailConfig:
    return EmailConfig.model_validate(
        {
            "to": "oncall@example.com, lead@example.com",
            "from": "stormwatch <alerts@example.com>",
            "smarthost": f"127.0.0.1:{port}",
            "require_tls": False,
            "html": "<p>{{ incident.title }}</p>",
            **extra,
        }
    )


def test_email_of_an_opened_and_a_resolved_incident(smtp: tuple[Mailbox, int, dict[str, Any]]) -> None:
    box, port, _ = smtp
    receiver = EmailReceiver(email_config(port, auth_username="ops", auth_password_env="X"), "pa55")
    for ev in (OPENED, RESOLVED):
        result = receiver.send(payload(ev), timeout_s=TIMEOUT_S)
        assert result.ok and result.status == 250, result.detail
    assert [e.mail_from for e in box.envelopes] == ["alerts@example.com"] * 2
    assert box.envelopes[0].rcpt_tos == ["oncall@example.com", "lead@example.com"]
    opened, resolved = box.message(0), box.message(1)
    assert opened["Subject"] == "[CRITICAL] HighLatency on api (opened)"
    assert resolved["Subject"] == "[CRITICAL] HighLatency on api (resolved)"
    assert opened["Message-ID"] == f"<{notification_id(INC, 1, 'ops')}@example.com>"
    assert opened["References"] == resolved["References"] == f"<incident-{INC}@example.com>"
    assert opened.get_content_type() == "multipart/alternative"
    text = opened.get_body(("plain",))
    html = opened.get_body(("html",))
    assert text is not None and html is not None
    assert f"Incident:  {INC}" in text.get_content()
    assert html.get_content().strip() == "<p>HighLatency on api</p>"


def test_a_title_with_a_line_break_adds_no_header(smtp: tuple[Mailbox, int, dict[str, Any]]) -> None:
    box, port, _ = smtp
    evil = event(
        IncidentEventType.OPENED, IncidentState.OPEN, title="Down\r\nBcc: thief@evil.example\r\n\r\n<b>x</b>"
    )
    result = EmailReceiver(email_config(port)).send(payload(evil), timeout_s=TIMEOUT_S)
    assert result.ok, result.detail
    message = box.message()
    assert message["Bcc"] is None
    assert box.envelopes[-1].rcpt_tos == ["oncall@example.com", "lead@example.com"]
    assert message["Subject"] == "[CRITICAL] Down Bcc: thief@evil.example <b>x</b> (opened)"
    html = message.get_body(("html",))
    assert html is not None and "&lt;b&gt;x&lt;/b&gt;" in html.get_content()


def test_email_refusals(smtp: tuple[Mailbox, int, dict[str, Any]]) -> None:
    box, port, _ = smtp
    wrong = EmailReceiver(email_config(port, auth_username="ops", auth_password_env="X"), "nope")
    result = wrong.send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable, result.status) == (False, False, 535)
    plain = EmailReceiver(email_config(port, require_tls=True))  # the server offers no STARTTLS
    result = plain.send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable) == (False, False) and "STARTTLS" in result.detail
    down = EmailReceiver(email_config(free_port()))
    result = down.send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable, result.status) == (False, True, None)
    assert box.envelopes == []
    assert "pa55" not in repr(wrong) and "nope" not in repr(wrong)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a throwaway certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
        timeout=20,
    )  # fmt: skip
    return cert, key


def test_email_over_starttls_with_auth(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    box = Mailbox()
    port = free_port()
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        authenticator=accept_ops,
    )
    controller.start()
    try:
        config = email_config(port, require_tls=True, auth_username="ops", auth_password_env="X")
        trusting = ssl.create_default_context(cafile=str(cert))
        result = EmailReceiver(config, "pa55", tls_context=trusting).send(
            payload(OPENED), timeout_s=TIMEOUT_S
        )
        assert result.ok, result.detail
        assert len(box.envelopes) == 1
        # The same server, its certificate not trusted: nothing is sent, and retrying will not help.
        result = EmailReceiver(config, "pa55").send(payload(RESOLVED), timeout_s=TIMEOUT_S)
        assert (result.ok, result.retryable) == (False, False) and "certificate" in result.detail
        assert len(box.envelopes) == 1
    finally:
        controller.stop()


# --------------------------------------------------------------------------------------------------
# Apprise


def apprise_config(**extra: Any) -> AppriseConfig:
    return AppriseConfig.model_validate({"urls": ["json://127.0.0.1:1/x"], **extra})


def test_an_apprise_json_url_receives_the_message(recorder: tuple[type[Recorder], str]) -> None:
    handler, base = recorder
    url = base.replace("http://", "json://") + "/notify"
    result = AppriseReceiver(apprise_config(), url).send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert result.ok, result.detail
    path, _headers, body = handler.received[0]
    doc = orjson.loads(body)
    assert path == "/notify"
    assert doc["title"] == "[CRITICAL] HighLatency on api (opened)"
    assert f"[{INC}]" in doc["message"] and doc["type"] == "failure"
    assert AppriseReceiver(apprise_config(), url).send(payload(RESOLVED), timeout_s=TIMEOUT_S).ok
    assert orjson.loads(handler.received[1][2])["type"] == "success"


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (429, True), (403, False)])
def test_apprise_failures(recorder: tuple[type[Recorder], str], status: int, retryable: bool) -> None:
    handler, base = recorder
    handler.status = status
    url = base.replace("http://", "json://") + "/notify"
    result = AppriseReceiver(apprise_config(), url).send(payload(OPENED), timeout_s=TIMEOUT_S)
    assert (result.ok, result.retryable, result.status) == (False, retryable, status), result.detail


def test_an_apprise_url_no_service_takes_is_refused_up_front() -> None:
    with pytest.raises(AppriseUrlError):
        AppriseReceiver(apprise_config(), "nosuchservice://host/x")
    receiver = AppriseReceiver(apprise_config(), "json://127.0.0.1:1/secret-token")
    assert "secret-token" not in repr(receiver)


# --------------------------------------------------------------------------------------------------
# Building the integrations from the notifier file


NOTIFIER = """
route: {receiver: ops}
receivers:
  - name: ops
    webhook_configs: [{url_env: HOOK_URL, max_alerts: 5}]
    pagerduty_configs: [{routing_key_file: %(key)s}]
    email_configs: [{to: a@example.com, from: b@example.com, smarthost: "127.0.0.1:2525"}]
    apprise_configs: [{urls_env: APPRISE_URLS}]
"""


def test_integrations_for_reads_secrets_once(tmp_path: Path) -> None:
    key = tmp_path / "pd.key"
    key.write_text("K" * 32 + "\n")
    config: NotifierConfig = parse_notifier_config(NOTIFIER % {"key": key})
    env = {"HOOK_URL": "http://127.0.0.1:9/h", "APPRISE_URLS": "json://127.0.0.1:9/a ntfy://127.0.0.1:9/t"}
    found = integrations_for(config.receivers["ops"], environ=env)
    assert [i.kind for i in found] == ["webhook", "pagerduty", "email", "apprise", "apprise"]
    webhook = found[0]
    assert isinstance(webhook, WebhookReceiver) and webhook.url == "http://127.0.0.1:9/h"
    with pytest.raises(SecretError, match="HOOK_URL"):
        integrations_for(config.receivers["ops"], environ={})
    with pytest.raises(SecretError, match="cannot read"):
        read_secret(SecretRef("file", str(tmp_path / "missing")))


def test_the_payload_builder_is_pure_and_counts_truncation() -> None:
    doc = webhook_payload(OPENED, ALERTS_OPEN.values(), receiver="r", max_alerts=0)
    assert doc == webhook_payload(OPENED, ALERTS_OPEN.values(), receiver="r")
    assert doc["truncatedAlerts"] == 0 and len(doc["alerts"]) == 2
    empty = webhook_payload(OPENED, [], receiver="r")
    assert empty["alerts"] == [] and empty["commonLabels"] == {"service": "api"}
