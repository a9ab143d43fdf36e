"""The gateway's Alertmanager API v2 against a real broker and a real pipeline.

A `stormwatch gateway` process (with a bearer token) in front of `stormwatch ingest` and
`stormwatch correlate`: alerts posted to it are correlated and come back from GET /api/v2/alerts
(its read model follows the correlator's state changelog); silences created with POST go the way
`stormwatch silence add` goes (a command the correlator applies) and show in GET /api/v2/silences
and in `stormwatch silence list`. With Debian's amtool installed, amtool does the same unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from stormwatch.cli import main
from stormwatch.config import Settings
from stormwatch.kafka.client import make_producer, produce_sync
from stormwatch.kafka.topics import create_topics
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.silence import Silence
from tests.kit.pipeline import PipelineRun
from tests.kit.ports import free_port
from tests.kit.waits import wait_for

pytestmark = [pytest.mark.kafka]

TOKEN = "am-api-token-0123456789"
RULES = """
defaults: {group_wait: 1s, group_interval: 2s, resolve_timeout: 10m, reopen_window: 5s, close_after: 5s}
allowed_lateness: 100ms
state_time_resolution: 1s
"""


class Stack:
    """The pipeline and a gateway process on it, and an HTTP client with the token."""

    def __init__(self, run: PipelineRun, workdir: Path) -> None:
        self.run = run
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        token_file = workdir / "token"
        token_file.write_text(TOKEN)
        run.start_gateway(token_file, self.port)

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            return exc.code, json.loads(raw) if raw else None

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return body

    def cli(self, capsys: pytest.CaptureFixture[str], *args: str) -> str:
        capsys.readouterr()
        assert main(["--config", str(self.run.config_path), *args]) == 0
        return capsys.readouterr().out


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("am-api")
    run = PipelineRun(kafka_bootstrap, workdir, rules=RULES, partitions=2)
    run.start("ingest", "i1")
    run.start("correlate", "c1")
    try:
        stack = Stack(run, workdir)

        def ready() -> bool | None:
            run.assert_alive()
            try:
                status, body = stack.request("GET", "/api/v2/status")
                # The read model can be ready before the sink's first Kafka check (a fresh broker):
                # until then a POST is refused with 503, as it should be.
                with urllib.request.urlopen(stack.url + "/-/ready", timeout=5) as answer:
                    writable = answer.status == 200
            except OSError:  # not listening yet, or 503 from /-/ready
                return None
            return (writable and status == 200 and body["cluster"]["status"] == "ready") or None

        wait_for("the gateway's read model to catch up and its sink to be ready", ready, 60, interval_s=0.5)
        yield stack
    finally:
        run.stop_all()


def post_alerts(stack: Stack, run_id: str, names: list[str]) -> None:
    alerts = [
        {
            "labels": {"alertname": name, "run": run_id, "instance": f"i{i}"},
            "annotations": {"summary": f"{name} on i{i}"},
        }
        for i, name in enumerate(names)
    ]
    status, _ = stack.request("POST", "/api/v2/alerts", alerts)
    assert status == 200


def alerts_named(stack: Stack, run_id: str, name: str, extra: str = "") -> list[dict[str, Any]]:
    query = urllib.parse.urlencode([("filter", f'alertname="{name}"'), ("filter", f'run="{run_id}"')])
    body: list[dict[str, Any]] = stack.get(f"/api/v2/alerts?{query}{extra}")
    return body


def test_posted_alerts_are_listed_and_silences_go_through_the_correlator(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = uuid.uuid4().hex[:8]
    assert stack.request("GET", "/api/v2/alerts", token=None)[0] == 401  # reads need the token too
    post_alerts(stack, run_id, ["ApiDown", "ApiDown", "DiskFull"])
    api_down = wait_for(
        "the correlated alerts in GET /api/v2/alerts",
        lambda: (found := alerts_named(stack, run_id, "ApiDown")) and len(found) == 2 and found,
        60,
    )
    assert {a["labels"]["instance"] for a in api_down} == {"i0", "i1"}
    assert all(a["status"]["state"] == "active" for a in api_down)
    # Another group, maybe another correlator partition: it can be listed a little later.
    disk_full = wait_for(
        "the DiskFull alert in GET /api/v2/alerts", lambda: alerts_named(stack, run_id, "DiskFull"), 60
    )
    assert [a["labels"]["instance"] for a in disk_full] == ["i2"]

    # A silence through the API: the same command `stormwatch silence add` sends
    now = time.time()
    silence = {
        "matchers": [
            {"name": "alertname", "value": "DiskFull", "isRegex": False, "isEqual": True},
            {"name": "run", "value": run_id, "isRegex": False, "isEqual": True},
        ],
        "startsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "endsAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 3600)),
        "createdBy": "alice",
        "comment": "disk being replaced",
    }
    status, body = stack.request("POST", "/api/v2/silences", silence)
    assert status == 200, body
    silence_id = body["silenceID"]
    got = stack.get(f"/api/v2/silence/{silence_id}")
    assert got["status"]["state"] == "active" and got["createdBy"] == "alice"
    assert silence_id in [s["id"] for s in stack.get("/api/v2/silences")]
    listed = json.loads(stack.cli(capsys, "silence", "list", "--json"))
    mine = [s for s in listed if s["silence_id"] == silence_id]
    assert mine and mine[0]["state"] == "active" and mine[0]["created_by"] == "alice"
    assert mine[0]["comment"] == "disk being replaced"
    # The silenced alert is suppressed at once, as Alertmanager answers
    assert alerts_named(stack, run_id, "DiskFull", "&silenced=false") == []
    [muted] = alerts_named(stack, run_id, "DiskFull")
    assert muted["status"]["silencedBy"] == [silence_id] and muted["status"]["state"] == "suppressed"

    # Expire it
    status, _ = stack.request("DELETE", f"/api/v2/silence/{silence_id}")
    assert status == 200
    assert stack.get(f"/api/v2/silence/{silence_id}")["status"]["state"] == "expired"
    listed = json.loads(stack.cli(capsys, "silence", "list", "--all", "--json"))
    assert [s["state"] for s in listed if s["silence_id"] == silence_id] == ["expired"]
    assert len(alerts_named(stack, run_id, "DiskFull", "&silenced=false")) == 1

    # The alerts' incident is the one `stormwatch incidents` shows
    groups = stack.get("/api/v2/alerts/groups?" + urllib.parse.urlencode([("filter", f'run="{run_id}"')]))
    assert sum(len(g["alerts"]) for g in groups) == 3
    incidents = json.loads(stack.cli(capsys, "incidents", "--json"))
    assert incidents, "no incident opened"


AMTOOL = shutil.which("amtool")


@pytest.mark.skipif(
    AMTOOL is None,
    reason="amtool is not installed (Debian's prometheus-alertmanager package: "
    "`apt-get install prometheus-alertmanager`; .ci/run installs it)",
)
def test_amtool_against_the_gateway(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert AMTOOL is not None
    http_config = tmp_path / "http.yml"
    http_config.write_text(f"authorization:\n  type: Bearer\n  credentials: {TOKEN}\n")

    def amtool(*args: str) -> str:
        argv = [AMTOOL, f"--alertmanager.url={stack.url}", f"--http.config.file={http_config}", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"{' '.join(args)}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        return done.stdout

    run_id = uuid.uuid4().hex[:8]
    name = f"AmtoolCheck{run_id}"
    post_alerts(stack, run_id, [name, name, "Other"])
    wait_for("the alerts in the read model", lambda: len(alerts_named(stack, run_id, name)) == 2, 60)

    everything = amtool("alert", "query")
    assert name in everything and "Other" in everything
    found = json.loads(amtool("-o", "json", "alert", "query", f"alertname={name}"))
    assert sorted(a["labels"]["instance"] for a in found) == ["i0", "i1"]
    assert all(a["labels"]["alertname"] == name for a in found)

    silence_id = amtool(
        "silence", "add", f"alertname={name}", "--comment=amtool check", "--author=bob", "--duration=1h"
    ).strip()
    assert silence_id
    queried = json.loads(amtool("-o", "json", "silence", "query", f"alertname={name}"))
    assert [s["id"] for s in queried] == [silence_id]
    assert silence_id in amtool("silence", "query", "-q")
    listed = json.loads(stack.cli(capsys, "silence", "list", "--json"))
    assert [s["created_by"] for s in listed if s["silence_id"] == silence_id] == ["bob"]
    # amtool's default query leaves silenced alerts out; --silenced shows them
    assert name not in amtool("alert", "query", f"alertname={name}")
    assert name in amtool("alert", "query", "--silenced", f"alertname={name}")

    amtool("silence", "expire", silence_id)
    assert json.loads(amtool("-o", "json", "silence", "query", f"alertname={name}")) == []
    expired = json.loads(amtool("-o", "json", "silence", "query", "--expired", f"alertname={name}"))
    assert [s["id"] for s in expired] == [silence_id]
    listed = json.loads(stack.cli(capsys, "silence", "list", "--all", "--json"))
    assert [s["state"] for s in listed if s["silence_id"] == silence_id] == ["expired"]


def test_follower_waits_for_missing_topics_then_catches_up_and_follows(fresh_settings: Settings) -> None:
    """Before `stormwatch topics create` the read model says why it is not ready; once the topics
    exist it catches up with what is there, then applies what is written later."""
    follower = ReadModelFollower(fresh_settings, retry_interval_s=0.2)
    follower.start()
    try:
        wait_for("the missing topic reason", lambda: "does not exist" in follower.reason, 30)
        assert not follower.ready
        create_topics(fresh_settings, timeout_s=30)
        first = Silence(
            silence_id="s-1",
            matchers=[Matcher.parse("alertname=A")],
            starts_at=datetime.now(UTC),
            ends_at=datetime.now(UTC) + timedelta(hours=1),
            created_by="test",
        )
        producer = make_producer(fresh_settings)
        produce_sync(producer, fresh_settings.topics.silences, "s-1", first.to_bytes())
        assert follower.wait_ready(60), follower.reason
        wait_for("the first silence", lambda: follower.read(lambda m: m.silence("s-1", 0)) is not None, 30)
        second = first.model_copy(update={"silence_id": "s-2"})
        produce_sync(producer, fresh_settings.topics.silences, "s-2", second.to_bytes())
        wait_for("the live silence", lambda: follower.read(lambda m: m.silence("s-2", 0)) is not None, 30)
    finally:
        follower.stop()
