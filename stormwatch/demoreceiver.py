"""A webhook receiver for the demo (`stormwatch demo-receiver`): what `make up` notifies.

`make up` starts it next to `stormwatch notify` (deploy/notify.yaml sends the demo webhook here),
so the notifications of the demo storm can be read without any outside service: each POST is
appended as one JSON line to a file (var/stack/notifications.jsonl), with the time it arrived,
the path, the `X-Stormwatch-Notification-Id` and `X-Stormwatch-Incident-Id` headers and the
payload (Alertmanager's webhook v4 JSON), and summarized on stdout. It answers 200 to every POST
whose body is JSON and 400 otherwise; `GET /-/ready` answers 200.

For demos and tests only: no authentication, no TLS, one file that grows without bound. It binds
127.0.0.1 unless told otherwise (docker-compose.yml binds the container's network).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["MAX_BODY", "DemoReceiver", "read_received"]

MAX_BODY = 10 * 1024 * 1024
"""Larger bodies are refused (413): a demo receiver is no sink for anything."""


class DemoReceiver:
    """The HTTP server; ``serve_forever()`` in the caller's thread, ``close()`` from any other."""

    def __init__(self, host: str, port: int, out: Path, *, quiet: bool = False) -> None:
        self.out = out
        self.quiet = quiet
        self.received = 0
        self._lock = threading.Lock()
        out.parent.mkdir(parents=True, exist_ok=True)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "stormwatch-demo-receiver"

            def log_message(self, format: str, *args: Any) -> None:
                return  # one line per notification is printed by record()

            def do_GET(self) -> None:
                if self.path in ("/-/ready", "/-/healthy"):
                    self._answer(200, {"status": "ready", "received": receiver.received})
                else:
                    self._answer(404, {"error": "POST notifications to any path"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_BODY:
                    self._answer(413, {"error": f"body over {MAX_BODY} bytes"})
                    return
                body = self.rfile.read(length)
                try:
                    payload = json.loads(body or b"null")
                except ValueError:
                    self._answer(400, {"error": "the body is not JSON"})
                    return
                receiver.record(
                    {
                        "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "path": self.path,
                        "notification_id": self.headers.get("X-Stormwatch-Notification-Id"),
                        "incident_id": self.headers.get("X-Stormwatch-Incident-Id"),
                        "payload": payload,
                    }
                )
                self._answer(200, {"status": "ok"})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True)
        with self._lock:
            with self.out.open("a", encoding="utf-8") as f:
                f.write(line + "\n")
            self.received += 1
        if not self.quiet:
            payload = entry["payload"] if isinstance(entry["payload"], dict) else {}
            alerts = payload.get("alerts")
            print(
                f"{entry['received_at']} {entry['incident_id'] or '-'} {payload.get('status', '?')} "
                f"receiver={payload.get('receiver', '?')} alerts={len(alerts) if isinstance(alerts, list) else '?'} "
                f"notification={entry['notification_id'] or '-'}",
                flush=True,
            )

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def read_received(path: Path) -> list[dict[str, Any]]:
    """The entries a receiver appended to ``path`` (none if it does not exist); bad lines skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def serve(host: str, port: int, out: Path) -> int:
    """Run until SIGTERM or Ctrl-C; exit 0."""
    import signal

    receiver = DemoReceiver(host, port, out)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=receiver.close, daemon=True).start())
    print(f"demo receiver on http://{host}:{receiver.port}/, appending to {out}", file=sys.stderr, flush=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        receiver.server.server_close()
    print(f"demo receiver stopped ({receiver.received} notifications received)", file=sys.stderr, flush=True)
    return 0
