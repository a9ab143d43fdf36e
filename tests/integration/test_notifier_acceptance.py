"""Issue #13's acceptance, through the `stormwatch notify` stage on the real broker, with real
receivers on loopback and nothing of ours mocked:

- aiosmtpd receives the email of an opened and of a resolved incident;
- a webhook receiver gets Alertmanager v4 payloads that a schema check accepts;
- a second `stormwatch gateway` (a subprocess), standing in for PagerDuty's Events v2 endpoint,
  writes trigger then resolve with the same dedup_key to its raw topic;
- an Apprise ``ntfy://`` URL pointed at an ntfy-compatible endpoint on 127.0.0.1 delivers;
- a receiver down then back (bench/notify_outage.py with a short outage): every message
  delivered afterwards, in event order per incident, none lost or doubled;
- SIGKILL of the notifier three times during a storm: every notification delivered, duplicates
  only of messages in flight at a kill (same notification id), counted;
- a delivered notification is a ``notified`` event on the incident's own audit log (ingest and
  correlator running), with the receiver and the latency.
"""

from __future__ import annotations

import json
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from stormwatch.agents.core.notify_config import parse_notifier_config
from stormwatch.agents.core.notify_policy import notification_id
from stormwatch.agents.notifier import NotifierStage, build_notifier_loop
from stormwatch.agents.receivers import integrations_for
from stormwatch.bench.notify_outage import run_outage
from stormwatch.config import Settings
from stormwatch.kafka.client import make_producer, read_topic
from stormwatch.kafka.topics import delete_topics
from stormwatch.schemas.fingerprint import key_fingerprint
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.schemas.incident import IncidentEventType as E
from stormwatch.streams.core.wire import AlertNote
from tests.kit.http import QuietHandler, serve_http
from tests.kit.loops import running
from tests.kit.notify import (
    IncidentWriter,
    alertmanager_v4_problems,
    recording_webhook,
    webhook_notifier_file,
)
from tests.kit.pipeline import PipelineRun
from tests.kit.ports import free_port
from tests.kit.records import produce_records, reparse
from tests.kit.topics import all_topics
from tests.kit.waits import wait_for
from tests.kit.workers import Workers

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(90)]


def publish(settings: Settings, events: list[IncidentEvent]) -> None:
    producer = make_producer(settings)
    for event in events:
        producer.produce(settings.topics.incidents, event.to_bytes(), event.incident_id)
    assert producer.flush(15) == 0


def stage_for(settings: Settings, text: str, environ: Mapping[str, str] | None = None) -> NotifierStage:
    config = parse_notifier_config(textwrap.dedent(text), "notify.yaml")
    integrations = {name: integrations_for(r, environ=environ) for name, r in config.receivers.items()}
    return NotifierStage(settings, config, integrations)


def one_receiver(name: str, integration: str) -> str:
    return (
        f"route: {{receiver: {name}, group_interval: 0s, repeat_interval: 0s}}\n"
        "receivers:\n"
        f"  - name: {name}\n"
        f"    {integration}\n"
    )


def opened_and_resolved(incident_id: str, **kwargs: Any) -> list[IncidentEvent]:
    inc = IncidentWriter(incident_id, **kwargs)
    now = int(time.time() * 1000)
    return [inc.event(E.OPENED, now), inc.event(E.RESOLVED, now + 100)]


# -- (a) email over SMTP


class Mailbox:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def test_an_smtp_server_receives_the_email_of_an_opened_and_a_resolved_incident(settings: Settings) -> None:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        email = (
            "email_configs: [{to: oncall@example.com, from: 'stormwatch <alerts@example.com>', "
            f"smarthost: '127.0.0.1:{port}', require_tls: false, html: '<p>{{{{ incident.title }}}}</p>'}}]"
        )
        stage = stage_for(settings, one_receiver("mail", email))
        publish(settings, opened_and_resolved("inc-mail"))
        with running(build_notifier_loop(settings, stage, "mail")):
            wait_for("two emails", lambda: len(box.envelopes) >= 2, timeout_s=60)
        stage.close()
    finally:
        controller.stop()
    messages = [message_from_bytes(e.original_content or b"", policy=policy.default) for e in box.envelopes]
    assert [m["Subject"] for m in messages] == [
        "[CRITICAL] HighLatency on api (opened)",
        "[CRITICAL] HighLatency on api (resolved)",
    ]
    assert [e.rcpt_tos for e in box.envelopes] == [["oncall@example.com"]] * 2
    assert messages[0]["Message-ID"] == f"<{notification_id('inc-mail', 1, 'mail')}@example.com>"
    assert messages[0].get_content_type() == "multipart/alternative"


# -- (b) the Alertmanager webhook v4 payload


def test_a_webhook_receiver_gets_payloads_an_alertmanager_v4_schema_check_accepts(
    settings: Settings,
) -> None:
    with recording_webhook() as (url, hook):
        stage = stage_for(settings, webhook_notifier_file(url))
        publish(settings, opened_and_resolved("inc-am", service="checkout"))
        with running(build_notifier_loop(settings, stage, "am")):
            wait_for("two payloads", lambda: len(hook.ids()) >= 2, timeout_s=60)
        stage.close()
    bodies = [r.body for r in hook.bodies()]
    for body in bodies:
        assert alertmanager_v4_problems(body) == [], body
    assert [b["status"] for b in bodies] == ["firing", "resolved"]
    assert bodies[0]["groupLabels"] == {"service": "checkout"} and bodies[0]["receiver"] == "hook"
    assert bodies[0]["alerts"][0]["labels"] == {"alertname": "HighLatency", "service": "checkout"}
    # the check itself refuses what is not a v4 payload
    assert alertmanager_v4_problems({**bodies[0], "version": "3", "extra": 1}) == [
        "extra: not an Alertmanager field",
        "version: '3', not '4'",
    ]


# -- (c) PagerDuty Events v2, received by a second stormwatch gateway


def test_a_second_gateway_as_the_pagerduty_endpoint_sees_trigger_then_resolve_with_one_dedup_key(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "kafka": {"bootstrap_servers": settings.kafka.bootstrap_servers},
                "topics": settings.topics.model_dump(mode="json"),
            }
        )
    )
    workers = Workers()
    argv = [sys.executable, "-m", "stormwatch.cli", "--config", str(config), "gateway"]
    workers.start("gateway", [*argv, "--port", str(port), "--no-read-api"], tmp_path / "gateway.log")
    try:

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for("the second gateway", ready, timeout_s=45, alive=workers.check_alive)
        pagerduty = (
            f"pagerduty_configs: [{{routing_key_env: PD_KEY, url: 'http://127.0.0.1:{port}/v2/enqueue'}}]"
        )
        stage = stage_for(settings, one_receiver("pd", pagerduty), {"PD_KEY": "k" * 32})
        publish(settings, opened_and_resolved("inc-pd"))

        def raw_events() -> list[AlertNote]:
            """The events as the gateway parsed them (it writes notes, not the request body)."""
            return [note for m in read_topic(settings, settings.topics.raw) for note in reparse(m).alerts]

        with running(build_notifier_loop(settings, stage, "pd")):
            wait_for("trigger and resolve", lambda: len(raw_events()) >= 2, timeout_s=60)
        stage.close()
    finally:
        workers.stop()
    events = raw_events()
    key = key_fingerprint("pagerduty", "inc-pd")  # the dedup_key is the alert's identity
    assert [(e.firing, e.fingerprint, e.keyed) for e in events] == [(True, key, True), (False, key, True)]
    assert events[0].severity == "critical"


# -- (d) Apprise: ntfy:// at an ntfy-compatible endpoint on loopback


def test_an_apprise_ntfy_url_delivers_to_an_ntfy_compatible_endpoint(settings: Settings) -> None:
    got: list[tuple[str, dict[str, Any]]] = []

    class Ntfy(QuietHandler):
        def do_POST(self) -> None:  # ntfy's publish-as-JSON: POST / {"topic", "title", "message"}
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            got.append((self.path, body))
            answer = json.dumps(
                {"id": f"m{len(got)}", "event": "message", "topic": body.get("topic")}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

    with serve_http(Ntfy) as base:
        url = base.replace("http://", "ntfy://") + "/stormwatch-alerts"
        stage = stage_for(settings, one_receiver("push", f"apprise_configs: [{{urls: ['{url}']}}]"))
        publish(settings, opened_and_resolved("inc-ntfy"))
        with running(build_notifier_loop(settings, stage, "ntfy")):
            wait_for("two pushes", lambda: len(got) >= 2, timeout_s=60)
        stage.close()
    assert [body["topic"] for _, body in got] == ["stormwatch-alerts"] * 2
    assert [body["title"] for _, body in got] == [
        "[CRITICAL] HighLatency on api (opened)",
        "[CRITICAL] HighLatency on api (resolved)",
    ]
    assert "inc-ntfy" in got[0][1]["message"]


# -- (e) a receiver down, then back


def test_a_receiver_down_then_back_gets_everything_in_order_once(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    result = run_outage(kafka_bootstrap, outage_s=20, incidents=10, workdir=tmp_path)
    print(result)
    assert result["notifications_expected"] == 60
    assert result["lost"] == 0 and result["received_twice"] == 0 and result["unexpected"] == 0
    assert result["incidents_out_of_order"] == 0 and result["given_up"] == 0
    assert result["delivered_while_down"] == 0 and result["failed_attempts"] > 0
    assert result["sent_records"] == 60


# -- (f) SIGKILL three times during a storm


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_three_sigkills_during_a_storm_lose_nothing_and_double_only_what_was_in_flight(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = PipelineRun(kafka_bootstrap, tmp_path, partitions=3)
    settings = run.settings
    kills: list[tuple[int, set[str]]] = []
    with recording_webhook() as (url, hook):
        hook.delay_s = 0.03  # sends take a while: some are in flight at each kill
        notify_file = tmp_path / "notify.yaml"
        notify_file.write_text(webhook_notifier_file(url))

        def start() -> None:
            argv = [sys.executable, "-m", "stormwatch.cli", "--config", str(run.config_path), "notify"]
            argv += ["--notify-file", str(notify_file), "--instance-id", "n1"]
            run.workers.start("notify", argv, tmp_path / "notify.log")

        def sent_log() -> set[str]:
            return {
                r["notification_id"]
                for r in (
                    orjson.loads(m.value() or b"{}")
                    for m in read_topic(settings, settings.topics.notifications)
                )
                if r["outcome"] == "sent"
            }

        now = int(time.time() * 1000)
        writers = [IncidentWriter(f"inc-{n:03d}", service=f"svc-{n}") for n in range(80)]
        events = [w.event(E.OPENED, now + n) for n, w in enumerate(writers)]
        events += [w.event(E.RESOLVED, now + 1000 + n) for n, w in enumerate(writers)]
        expected = {notification_id(e.incident_id, e.seq, "hook") for e in events}
        try:
            start()
            publish(settings, events[:80])
            for n, threshold in enumerate((15, 60, 110)):
                if n == 1:
                    publish(settings, events[80:])
                wait_for(
                    f"{threshold} deliveries",
                    lambda threshold=threshold: len(hook.ids()) >= threshold,
                    timeout_s=60,
                    interval_s=0.02,
                    alive=run.workers.check_alive,
                )
                run.workers.kill("notify")
                kills.append((len(hook.ids()), sent_log()))  # received, and recorded as sent, at the kill
                start()  # the same instance id: its predecessor's open transaction is fenced
            wait_for(
                "every notification",
                lambda: expected <= set(hook.ids()),
                timeout_s=90,
                alive=run.workers.check_alive,
            )
            time.sleep(2)
            final = [
                orjson.loads(m.value() or b"{}") for m in read_topic(settings, settings.topics.notifications)
            ]
        finally:
            run.stop_all()
            delete_topics(settings, all_topics(settings), timeout_s=15)
        received = hook.ids()
    assert set(received) == expected  # none lost
    for n, (at_kill, recorded) in enumerate(kills, 1):  # nothing recorded as sent is sent again
        resent = recorded & set(received[at_kill:])
        assert not resent, f"kill {n}: {len(resent)} notification(s) recorded as sent were sent again"
    doubled = {nid: n for nid, n in Counter(received).items() if n > 1}
    extra = sum(n - 1 for n in doubled.values())
    print(
        f"{len(expected)} notifications, {len(received)} received, {len(doubled)} received twice "
        f"({extra} extra copies, each with its notification id); at the kills: "
        + ", ".join(f"{at} received/{len(rec)} recorded as sent" for at, rec in kills)
    )
    # a copy can only be of a message in flight at a kill: at most one transaction's worth per kill
    assert extra <= 3 * settings.notify.max_parallel
    sent = Counter(r["notification_id"] for r in final if r["outcome"] == "sent")
    assert set(sent) == expected and max(sent.values()) == 1  # each recorded as sent exactly once


# -- the audit log: a delivery is a `notified` event on the incident


RULES = """
defaults: {group_wait: 1s, group_interval: 2s, resolve_timeout: 60s, reopen_window: 5s, close_after: 5s}
allowed_lateness: 100ms
state_time_resolution: 1s
"""


@pytest.fixture
def live(kafka_bootstrap: str, tmp_path: Path) -> Iterator[PipelineRun]:
    run = PipelineRun(kafka_bootstrap, tmp_path, rules=RULES, partitions=2)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        yield run
    finally:
        run.stop_all()
        delete_topics(run.settings, all_topics(run.settings), timeout_s=15)


def test_a_delivered_webhook_notification_is_a_notified_event_on_the_audit_log(live: PipelineRun) -> None:
    settings = live.settings
    with recording_webhook() as (url, hook):
        stage = stage_for(settings, webhook_notifier_file(url))
        with running(build_notifier_loop(settings, stage, "audit")):
            now = int(time.time() * 1000)
            alert = [{"labels": {"alertname": "ApiDown", "service": "api", "instance": "i1"}}]
            produce_records(live.bootstrap, settings.topics.raw, [(now, json.dumps(alert).encode())])
            events = live.wait_until(lambda evs: any(e.type is E.NOTIFIED for e in evs), timeout_s=75)
            time.sleep(2)  # room for a notification about the notification, if one were (wrongly) coming
        stage.close()
        received = hook.bodies()
    opened = next(e for e in events if e.type is E.OPENED)
    notified = next(e for e in events if e.type is E.NOTIFIED)
    assert notified.incident_id == opened.incident_id and notified.actor == "notifier"
    assert notified.to_state is opened.to_state and notified.seq == opened.seq + 1
    details = notified.details
    assert details["receiver"] == "hook" and details["integration"] == "webhook"
    assert details["outcome"] == "delivered" and details["attempt"] == 1 and details["first"] is True
    assert details["notification_id"] == notification_id(opened.incident_id, opened.seq, "hook")
    assert isinstance(details["latency_ms"], float) and details["latency_ms"] >= 0
    assert isinstance(details["delivery_latency_ms"], int)
    assert [r.notification_id for r in received] == [details["notification_id"]]  # one message only
