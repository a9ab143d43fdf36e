"""`stormwatch demo-receiver` (the webhook `make up` notifies) and the demo's notification summary."""

from __future__ import annotations

import argparse
import io
import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.cli import build_parser
from stormwatch.commands import demo
from stormwatch.config import Settings
from stormwatch.demoreceiver import DemoReceiver, read_received


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[DemoReceiver]:
    server = DemoReceiver("127.0.0.1", 0, tmp_path / "out" / "notifications.jsonl", quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.close()
    thread.join(5)


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


PAYLOAD = {
    "version": "4",
    "status": "firing",
    "receiver": "team-webhook",
    "groupLabels": {"alertname": "PostgresqlDown", "service": "catalog-db"},
    "commonLabels": {"alertname": "PostgresqlDown"},
    "truncatedAlerts": 0,
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "PostgresqlDown", "pod": "catalog-db-0"},
            "startsAt": "2026-12-03T08:32:57.027Z",
        }
    ],
}


def test_the_receiver_appends_each_notification_with_its_ids(receiver: DemoReceiver) -> None:
    base = f"http://127.0.0.1:{receiver.port}"
    headers = {"X-Stormwatch-Notification-Id": "n1", "X-Stormwatch-Incident-Id": "inc-1"}
    assert _post(base + "/alerts", json.dumps(PAYLOAD).encode(), headers) == 200
    assert _post(base + "/alerts", b"not json") == 400
    with urllib.request.urlopen(base + "/-/ready", timeout=5) as response:
        assert json.loads(response.read()) == {"status": "ready", "received": 1}
    (entry,) = read_received(receiver.out)
    assert entry["notification_id"] == "n1" and entry["incident_id"] == "inc-1"
    assert entry["path"] == "/alerts" and entry["payload"] == PAYLOAD


def test_read_received_skips_what_is_not_an_entry(tmp_path: Path) -> None:
    path = tmp_path / "n.jsonl"
    assert read_received(path) == []
    path.write_text('{"a": 1}\nnot json\n[1]\n')
    assert read_received(path) == [{"a": 1}]


def test_the_cli_runs_it_on_the_loopback_by_default() -> None:
    args = build_parser().parse_args(["demo-receiver"])
    assert (args.host, args.port, args.out) == ("127.0.0.1", 9102, "var/stack/notifications.jsonl")
    assert args.handler is demo.run_receiver


def test_the_demo_summary_counts_notifications_and_shows_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.unit.test_command_hints import _opened

    out = io.StringIO()
    monkeypatch.setattr(demo.sys, "stdout", out)
    monkeypatch.setattr(demo, "command_prefix", lambda config: f".venv/bin/stormwatch --config {config}")
    opened = _opened()
    received = tmp_path / "notifications.jsonl"
    entries = [
        {"incident_id": "inc-other", "notification_id": "n0", "payload": {**PAYLOAD, "receiver": "x"}},
        {"incident_id": opened.incident_id, "notification_id": "n1", "received_at": "T", "path": "/alerts"}
        | {"payload": PAYLOAD},
    ]
    received.write_text("".join(json.dumps(e) + "\n" for e in entries))
    records = [
        {"incident_id": "inc-other", "notification_id": "n0", "receiver": "team-webhook", "outcome": "sent"},
        {
            "incident_id": opened.incident_id,
            "notification_id": "n1",
            "receiver": "team-webhook",
            "outcome": "sent",
        },
        {
            "incident_id": opened.incident_id,
            "notification_id": "n2",
            "receiver": "team-webhook",
            "outcome": "failed",
        },
    ]
    for record in records:
        record["integration"] = "webhook"
    args = argparse.Namespace(config="var/stack/stormwatch.yaml", notifications_file=str(received))
    demo._summarize(args, Settings(), "http://127.0.0.1:9095", Counter({200: 1}), 10, [opened], records)
    text = out.getvalue()
    assert (
        f"notifications:    2 delivered to team-webhook (webhook), see {received}; other attempts: 1 failed"
        in text
    )
    # the one shown is about the incident in the table, as the webhook got it
    assert (
        f"e.g. about {opened.incident_id}, received T (POST /alerts, X-Stormwatch-Notification-Id n1)" in text
    )
    assert "status firing, receiver team-webhook, 1 alert(s)" in text
    assert "groupLabels alertname=PostgresqlDown, service=catalog-db" in text
    assert (
        "alerts[0] firing since 2026-12-03T08:32:57.027Z: alertname=PostgresqlDown, pod=catalog-db-0" in text
    )
    assert f"tail -n 1 {received} " in text
    assert "before the linker linked" not in text  # no member among them


def test_the_summary_says_which_notifications_went_out_before_linking() -> None:
    out = io.StringIO()
    records = [
        {
            "incident_id": i,
            "notification_id": f"n{i}",
            "receiver": "r",
            "integration": "webhook",
            "outcome": "sent",
        }
        for i in ("primary", "member-1", "member-2")
    ]
    demo._summarize_notifications(out, records, None, ["primary"], {"member-1", "member-2"})
    assert out.getvalue().splitlines()[1:] == [
        "notifications:    3 delivered to r (webhook)",
        "                  2 of them about label groups that opened before the linker linked them into "
        "their root cause's incident",
    ]


def test_without_a_notifier_the_summary_says_nothing_about_notifications(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.unit.test_command_hints import _opened

    out = io.StringIO()
    monkeypatch.setattr(demo.sys, "stdout", out)
    args = argparse.Namespace(config=None)
    demo._summarize(args, Settings(), "http://127.0.0.1:9095", Counter({200: 1}), 10, [_opened()], None)
    assert "notifications:" not in out.getvalue()
