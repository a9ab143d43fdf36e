"""The operator console without a broker: escaping, sign-in and its cookie, CSRF, actions as the
CLI's commands, silences with a preview, and the live event stream.

The read model is filled by hand (no follower thread) and the publishing functions are replaced,
as in test_gateway_alertmanager_api.py; the real path through Kafka, the correlator and a browser
is tests/integration/test_console_browser.py.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from stormwatch.agents.core.approvals import ApprovalDecision, Decision
from stormwatch.config import Settings
from stormwatch.console import render
from stormwatch.console.web import COOKIE, LoginThrottle, SessionStore, csrf_ok
from stormwatch.console.web import Console as WebConsole
from stormwatch.gateway import Gateway
from stormwatch.kafkasink import KafkaSink
from stormwatch.readmodel.model import AlertQuery
from stormwatch.schemas.commands import OperatorAction, OperatorCommand
from stormwatch.schemas.common import Severity
from stormwatch.schemas.incident import IncidentEventType, IncidentState
from stormwatch.schemas.silence import Silence
from stormwatch.streams.core.groups import AlertState, GroupState, IncidentRuntime
from tests.kit.events import build_event
from tests.unit.test_gateway import TOKEN, Harness, make_settings
from tests.unit.test_gateway_alertmanager_api import HandFollower

NOW_MS = int(time.time() * 1000)
INC = "inc-0123456789abcdef-1"
OTHER = "inc-fedcba9876543210-1"
ASKED = "a" * 32  # a step awaiting approval
DONE = "b" * 32  # a step that already ran
EVIL = '<script>window.pwned=1</script>"><img src=x onerror=alert(1)>'


def fill(follower: HandFollower) -> None:
    model = follower.model
    group = GroupState(gkhash="g1", group_key="{job=api}", rule="default", group_labels={"job": "api"})
    group.incident = IncidentRuntime(INC, IncidentState.OPEN, NOW_MS - 120_000)
    model.apply_state(0, "g/g1", group.encode_meta())
    for fp, name in (("fa", "ApiDown"), ("fb", "DiskFull")):
        labels = {"alertname": name, "job": "api", "payload": EVIL}
        alert = AlertState(
            fp, labels, {"summary": EVIL}, "warning", True, NOW_MS - 60_000, NOW_MS - 1000, None, member=True
        )
        model.apply_state(0, f"a/g1/{fp}", alert.encode())
    opened = datetime.fromtimestamp((NOW_MS - 120_000) / 1000, UTC)
    event = build_event(INC, at=opened, title=f"ApiDown {EVIL}", group_labels={"job": "api"})
    model.apply_incident(event.to_bytes())
    step = {"workflow": "restart", "step": "restart", "action": "exec", "target": f"api {EVIL}"}
    # From the wall clock now, not NOW_MS: under xdist this module is imported at collection, and a
    # CI run reached this test 9.5 minutes later ("expires in 23s").
    expires = datetime.fromtimestamp(time.time() + 600, UTC).isoformat()
    for seq, (cid, status, extra) in enumerate(
        [
            (DONE, "requested", {}),
            (DONE, "succeeded", {}),
            (ASKED, "awaiting_approval", {"expires_at": expires}),
        ],
        start=2,
    ):
        mitigation = build_event(
            INC,
            seq,
            IncidentEventType.MITIGATION,
            IncidentState.OPEN,
            at=opened,
            actor="agent:restart",
            details={"command_id": cid, "status": status, **step, **extra},
            title=f"ApiDown {EVIL}",
            group_labels={"job": "api"},
        )
        model.apply_incident(mitigation.to_bytes())


class Console:
    """A gateway (console included) on a hand-filled read model, and what it published."""

    def __init__(self, sink: KafkaSink, settings: Settings) -> None:
        self.follower = HandFollower(settings)
        fill(self.follower)
        self.gateway = Gateway(settings, sink, readmodel=self.follower)
        console = self.gateway.console
        assert console is not None
        self.console = console
        self.commands: list[OperatorCommand] = []
        self.silences: list[tuple[str, str]] = []

        def publish(settings: Settings, command: OperatorCommand, key: str) -> None:
            self.commands.append(command)

        def add(settings: Settings, silence: Silence, *, now: datetime) -> None:
            self.silences.append(("add", silence.silence_id))
            self.follower.model.apply_silence(silence.silence_id, silence.to_bytes(), NOW_MS)

        def expire(settings: Settings, silence_id: str, *, by: str, now: datetime) -> None:
            self.silences.append(("expire", f"{silence_id} by {by}"))
            view = self.follower.model.silence(silence_id, NOW_MS)
            assert view is not None
            done = view.silence.model_copy(update={"expired_at": now})
            self.follower.model.apply_silence(silence_id, done.to_bytes(), NOW_MS)

        console.publish_command = publish  # type: ignore[assignment]
        console.publish_silence_add = add  # type: ignore[assignment]
        console.publish_silence_expire = expire  # type: ignore[assignment]
        self.decisions: list[ApprovalDecision] = []

        def decide(settings: Settings, record: ApprovalDecision) -> None:
            self.decisions.append(record)
            # what the agent and the correlator then write: the step's next status
            status = "approved" if record.decision is Decision.APPROVE else "denied"
            answered = build_event(
                INC,
                5,
                IncidentEventType.MITIGATION,
                IncidentState.OPEN,
                at=datetime.now(UTC),
                actor=f"operator:{record.by}",
                details={
                    "command_id": record.command_id,
                    "status": status,
                    "workflow": "restart",
                    "step": "restart",
                    "action": "exec",
                },
            )
            self.follower.model.apply_incident(answered.to_bytes())

        console.publish_decision = decide  # type: ignore[assignment]
        console._timeline = lambda settings, incident_id, origin: []
        self.http = Harness(self.gateway)

    def login(self, name: str = "alice", token: str | None = TOKEN) -> str:
        """Sign in; the CSRF token of the new session."""
        form = {"name": name, "next": "/console/"}
        if token is not None:
            form["token"] = token
        reply = self.http.request("POST", "/console/login", data=form, allow_redirects=False)
        assert reply.status == 303, reply.body.decode()
        page = self.http.request("GET", "/console/")
        assert page.status == 200
        found = re.search(r'name="csrf" value="([^"]+)"', page.body.decode())
        assert found is not None
        return found.group(1)


@pytest.fixture(scope="module")
def sink() -> Iterator[KafkaSink]:
    s = KafkaSink(make_settings())
    yield s
    s.close(0)


@pytest.fixture
def console(sink: KafkaSink) -> Iterator[Callable[..., Console]]:
    made: list[Console] = []

    def make(**config: Any) -> Console:
        made.append(Console(sink, make_settings(**config)))
        return made[-1]

    yield make
    for c in made:
        c.http.close()


# ---------------------------------------------------------------------------- escaping


def test_render_escapes_every_alert_field() -> None:
    follower = HandFollower(make_settings())
    fill(follower)
    model = follower.model
    alerts = model.alerts(AlertQuery(), NOW_MS).items
    incident = model.incident(INC)
    assert incident is not None and alerts
    event = build_event(
        INC,
        2,
        IncidentEventType.ANNOTATED,
        at=datetime.now(UTC),
        actor=f"operator:{EVIL}",
        cause=EVIL,
        details={"note": EVIL},
    )
    pages = [
        render.incident_page(incident, [event], alerts, NOW_MS, user=EVIL, csrf="c"),
        render.incidents_page(
            model.incidents(render_query()), {}, render.ListQuery(search=EVIL), NOW_MS, user=EVIL, csrf="c"
        ),
        render.preview_fragment(alerts, 2, NOW_MS),
        render.login_page(error=EVIL, need_token=True, next_path=EVIL),
    ]
    for html in pages:
        assert "<script>window" not in html and "<img" not in html
        assert "&lt;script&gt;window.pwned=1&lt;/script&gt;&quot;&gt;&lt;img" in html
        # the only script is the package's own asset, never inline
        assert re.findall(r"<script[^>]*>", html) in ([], ['<script src="/console/static/console.js" defer>'])


def render_query() -> Any:
    from stormwatch.readmodel.model import IncidentQuery

    return IncidentQuery()


def test_pages_forbid_inline_script_by_policy(console: Callable[..., Console]) -> None:
    c = console()
    c.login(token=None)
    reply = c.http.request("GET", "/console/")
    policy = reply.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert reply.headers["X-Frame-Options"] == "DENY"
    assert "&lt;script&gt;" in reply.body.decode() and "<script>window" not in reply.body.decode()


def test_human_age() -> None:
    assert [render.human_age(ms) for ms in (0, 45_000, 192_000, 7_500_000, 360_000_000)] == [
        "0s",
        "45s",
        "3m 12s",
        "2h 5m",
        "4d 4h",
    ]


# ---------------------------------------------------------------------------- sign-in


def test_pages_need_a_session(console: Callable[..., Console]) -> None:
    c = console(bearer_token=TOKEN)
    reply = c.http.request("GET", "/console/", allow_redirects=False)
    assert reply.status == 303 and reply.headers["Location"] == "/console/login?next=/console/"
    for path in ("/console/incidents/" + INC, "/console/silences"):
        assert c.http.request("GET", path, allow_redirects=False).status == 303
    reply = c.http.request("POST", f"/console/incidents/{INC}/ack", data={"csrf": "x"})
    assert reply.status == 401 and not c.commands
    assert c.http.request("GET", "/console/static/console.js").status == 200  # assets are public


def test_login_checks_the_bearer_token(console: Callable[..., Console]) -> None:
    c = console(bearer_token=TOKEN)
    for token in ("", TOKEN + "x", TOKEN[:-1]):
        reply = c.http.request("POST", "/console/login", data={"name": "mallory", "token": token})
        assert reply.status == 401 and "wrong token" in reply.body.decode()
        assert COOKIE not in reply.headers.get("Set-Cookie", "")
    reply = c.http.request("POST", "/console/login", data={"name": " ", "token": TOKEN})
    assert reply.status == 400


def test_wrong_tokens_are_throttled(console: Callable[..., Console]) -> None:
    c = console(bearer_token=TOKEN)
    c.console.throttle = LoginThrottle(limit=3, window_s=60)
    for _ in range(3):
        assert c.http.request("POST", "/console/login", data={"name": "m", "token": "guess"}).status == 401
    # even the right token waits for the window to pass
    reply = c.http.request("POST", "/console/login", data={"name": "m", "token": TOKEN})
    assert reply.status == 429 and "too many wrong tokens" in reply.body.decode()
    c.console.throttle = LoginThrottle(limit=3, window_s=0.01)
    assert c.http.request("POST", "/console/login", data={"name": "m", "token": TOKEN}).status == 200


def test_session_cookie_flags(console: Callable[..., Console]) -> None:
    c = console(bearer_token=TOKEN)
    reply = c.http.request(
        "POST",
        "/console/login",
        data={"name": "alice", "token": TOKEN, "next": "/console/silences"},
        allow_redirects=False,
    )
    assert reply.status == 303 and reply.headers["Location"] == "/console/silences"
    cookie = reply.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # plain HTTP here: a Secure cookie would never come back
    c.console.secure_cookie = True  # what a gateway with tls_cert_file sets
    reply = c.http.request(
        "POST", "/console/login", data={"name": "alice", "token": TOKEN}, allow_redirects=False
    )
    assert "Secure" in reply.headers["Set-Cookie"]


@pytest.mark.parametrize(
    "target", ["//evil.example/", "https://evil.example/", "/api/v2/alerts", "/console/\\x"]
)
def test_login_never_redirects_elsewhere(console: Callable[..., Console], target: str) -> None:
    c = console()
    reply = c.http.request(
        "POST", "/console/login", data={"name": "alice", "next": target}, allow_redirects=False
    )
    assert reply.status == 303 and reply.headers["Location"] == "/console/"


def test_cookie_is_secure_when_the_gateway_serves_tls() -> None:
    settings = make_settings(tls_cert_file="/etc/stormwatch/cert.pem", tls_key_file="/etc/stormwatch/key.pem")
    assert WebConsole(settings, None).secure_cookie
    assert not WebConsole(make_settings(), None).secure_cookie


def test_sessions_expire_and_are_bounded() -> None:
    store = SessionStore(ttl_s=0.05, max_sessions=2)
    first, session = store.create("a")
    assert store.get(first) is session and csrf_ok(session, session.csrf)
    assert (
        not csrf_ok(session, "") and not csrf_ok(session, None) and not csrf_ok(session, session.csrf + "x")
    )
    store.create("b")
    store.create("c")
    assert store.get(first) is None  # the oldest made room
    second, _ = store.create("d")
    time.sleep(0.06)
    assert store.get(second) is None


# ---------------------------------------------------------------------------- CSRF and actions


@pytest.mark.parametrize("csrf", [None, "", "wrong"])
def test_actions_need_the_csrf_token(console: Callable[..., Console], csrf: str | None) -> None:
    c = console()
    c.login(token=None)
    data = {} if csrf is None else {"csrf": csrf}
    for path in (
        f"/console/incidents/{INC}/ack",
        "/console/silences",
        "/console/silences/preview",
        "/console/logout",
    ):
        reply = c.http.request("POST", path, data={**data, "matchers": 'alertname="ApiDown"'})
        assert reply.status == 403, path
        assert "CSRF" in reply.body.decode()
    assert not c.commands and not c.silences


def test_actions_send_the_cli_commands_as_the_signed_in_operator(console: Callable[..., Console]) -> None:
    c = console()
    csrf = c.login("alice", token=None)
    forms: list[tuple[str, dict[str, str]]] = [
        ("ack", {}),
        ("assign", {"assignee": "bob"}),
        ("annotate", {"note": "looking <b>now</b>"}),
        ("severity", {"level": "critical"}),
        ("resolve", {}),
        # merge, link (join) and split: the CLI's `merge --into`, `join --into` and `split`
        ("merge", {"into": OTHER}),
        ("join", {"into": OTHER}),
        ("split", {}),
    ]
    for action, fields in forms:
        reply = c.http.request(
            "POST",
            f"/console/incidents/{INC}/{action}",
            data={"csrf": csrf, **fields},
            headers={"Accept": "application/json"},
        )
        assert reply.status == 202, reply.body.decode()
        assert "sent as command" in reply.json()["message"]
    assert [cmd.action for cmd in c.commands] == [
        OperatorAction.ACKNOWLEDGE,
        OperatorAction.ASSIGN,
        OperatorAction.ANNOTATE,
        OperatorAction.SET_SEVERITY,
        OperatorAction.RESOLVE,
        OperatorAction.MERGE,
        OperatorAction.JOIN,
        OperatorAction.SPLIT,
    ]
    assert {cmd.by for cmd in c.commands} == {"alice"}
    assert {cmd.incident_id for cmd in c.commands} == {INC}
    assert c.commands[1].assignee == "bob"
    assert c.commands[2].note == "looking <b>now</b>"
    assert c.commands[3].severity is Severity.CRITICAL
    assert (c.commands[5].merge_into, c.commands[6].link_into) == (OTHER, OTHER)
    # without JavaScript: a plain form post answers with a redirect back to the incident
    reply = c.http.request(
        "POST", f"/console/incidents/{INC}/ack", data={"csrf": csrf}, allow_redirects=False
    )
    assert reply.status == 303 and reply.headers["Location"] == f"/console/incidents/{INC}"


def test_bad_actions_are_refused(console: Callable[..., Console]) -> None:
    c = console()
    csrf = c.login(token=None)
    json = {"Accept": "application/json"}
    cases = [
        (f"/console/incidents/{INC}/assign", {"assignee": " "}),
        (f"/console/incidents/{INC}/severity", {"level": "apocalyptic"}),
        (f"/console/incidents/{INC}/annotate", {"note": ""}),
        ("/console/incidents/not-an-id/ack", {}),
    ]
    for path, fields in cases:
        reply = c.http.request("POST", path, data={"csrf": csrf, **fields}, headers=json)
        assert reply.status == 400, (path, reply.body.decode())
    reply = c.http.request("POST", f"/console/incidents/{INC}/merge", data={"csrf": csrf}, headers=json)
    assert reply.status == 400 and "incident" in reply.json()["message"]  # merge into what?
    reply = c.http.request(
        "POST", f"/console/incidents/{INC}/join", data={"csrf": csrf, "into": INC}, headers=json
    )
    assert reply.status == 400 and "into itself" in reply.json()["message"]
    assert c.http.request("POST", f"/console/incidents/{INC}/reboot", data={"csrf": csrf}).status == 404
    assert not c.commands


def test_logout_ends_the_session(console: Callable[..., Console]) -> None:
    c = console()
    csrf = c.login(token=None)
    reply = c.http.request("POST", "/console/logout", data={"csrf": csrf}, allow_redirects=False)
    assert reply.status == 303
    c.http.client.session.cookie_jar.clear()
    assert c.http.request("GET", "/console/", allow_redirects=False).status == 303


# ---------------------------------------------------------------------------- pages


def test_incident_list_and_page(console: Callable[..., Console]) -> None:
    c = console()
    c.login(token=None)
    page = c.http.request("GET", "/console/").body.decode()
    assert f'data-incident="{INC}"' in page and "2/1" not in page
    assert (
        c.http.request("GET", "/console/", params={"q": "nothing-like-it"})
        .body.decode()
        .count("data-incident=")
        == 0
    )
    assert (
        f'data-incident="{INC}"' in c.http.request("GET", "/console/", params={"state": "open"}).body.decode()
    )
    assert (
        "data-incident=" not in c.http.request("GET", "/console/", params={"state": "closed"}).body.decode()
    )
    page = c.http.request("GET", f"/console/incidents/{INC}").body.decode()
    assert 'data-fingerprint="fa"' in page and 'data-fingerprint="fb"' in page
    assert c.http.request("GET", "/console/incidents/inc-ffffffffffffffff-1").status == 404


def test_silence_preview_create_and_expire(console: Callable[..., Console]) -> None:
    c = console()
    csrf = c.login("carol", token=None)
    form = {"csrf": csrf, "matchers": 'alertname="ApiDown"', "duration": "1h", "comment": "deploy"}
    reply = c.http.request(
        "POST", "/console/silences/preview", data=form, headers={"X-Console-Fragment": "1"}
    )
    assert 'data-count="1"' in reply.body.decode() and 'data-fingerprint="fa"' in reply.body.decode()
    assert 'data-fingerprint="fb"' not in reply.body.decode()
    bad = c.http.request("POST", "/console/silences/preview", data={**form, "matchers": 'x=~".*"'})
    assert "match every alert" in bad.body.decode()
    reply = c.http.request("POST", "/console/silences", data=form, allow_redirects=False)
    assert reply.status == 303, reply.body.decode()
    ((kind, silence_id),) = c.silences
    assert kind == "add"
    view = c.follower.model.silence(silence_id, NOW_MS)
    assert view is not None and view.silence.created_by == "carol"
    page = c.http.request("GET", f"/console/incidents/{INC}").body.decode()
    assert page.count("badge silenced") == 1  # fa only
    listing = c.http.request("GET", "/console/").body.decode()
    assert "silenced 1" in listing
    reply = c.http.request(
        "POST", f"/console/silences/{silence_id}/expire", data={"csrf": csrf}, allow_redirects=False
    )
    assert reply.status == 303
    assert c.silences[-1] == ("expire", f"{silence_id} by carol")
    refused = c.http.request("POST", "/console/silences", data={**form, "duration": "0s"})
    assert refused.status == 400


def test_event_stream_reports_changed_incidents(console: Callable[..., Console]) -> None:
    c = console()
    c.login(token=None)

    async def read_one() -> bytes:
        resp = await c.http.client.get("/console/events")
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        await resp.content.readuntil(b"\n\n")  # retry:
        await asyncio.sleep(0.7)  # the stream has seen the model as it is
        opened = datetime.fromtimestamp((NOW_MS - 120_000) / 1000, UTC)
        ack = build_event(
            INC, 5, IncidentEventType.ACKNOWLEDGED, IncidentState.OPEN, IncidentState.ACKNOWLEDGED, at=opened
        )
        c.follower.model.apply_incident(ack.to_bytes())
        chunk = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 5)
        resp.close()
        return chunk

    chunk = c.http.runner.run(read_one())
    assert chunk.startswith(b"event: change\n") and INC.encode() in chunk


def test_no_console_without_the_read_model(sink: KafkaSink) -> None:
    """A gateway started with --no-read-api serves no console either (it has nothing to show)."""
    gateway = Gateway(make_settings(), sink)
    assert gateway.console is None
    http = Harness(gateway)
    try:
        assert http.request("GET", "/console/", allow_redirects=False).status == 404
    finally:
        http.close()


# ---------------------------------------------------------------------------- approvals and overview


def test_incident_page_shows_its_steps_and_the_approvals_page_the_waiting_ones(
    console: Callable[..., Console],
) -> None:
    c = console()
    c.login(token=None)
    page = c.http.request("GET", f"/console/incidents/{INC}").body.decode()
    assert f'data-command="{DONE}" data-status="succeeded"' in page
    assert f'data-command="{ASKED}" data-status="awaiting_approval"' in page
    assert f'action="/console/approvals/{ASKED}/approve"' in page
    assert f'action="/console/approvals/{DONE}/approve"' not in page  # nothing to answer
    assert EVIL not in page  # the target came from a label: escaped
    listed = c.http.request("GET", "/console/approvals").body.decode()
    assert f'<tr data-command="{ASKED}"' in listed and f'<tr data-command="{DONE}"' not in listed
    assert f'href="/console/incidents/{INC}"' in listed and re.search(r"expires in \d+m", listed)


def test_approve_and_deny_send_the_cli_record_as_the_signed_in_operator(
    console: Callable[..., Console],
) -> None:
    c = console()
    csrf = c.login("alice", token=None)
    # no CSRF token: refused before anything is sent
    assert c.http.request("POST", f"/console/approvals/{ASKED}/approve", data={}).status == 403
    # a denial needs a reason
    json = {"Accept": "application/json"}
    reply = c.http.request("POST", f"/console/approvals/{ASKED}/deny", data={"csrf": csrf}, headers=json)
    assert reply.status == 400 and "reason" in reply.json()["message"]
    # a step that is not waiting, or no command at all
    for cid in (DONE, "c" * 32, "not-a-command"):
        reply = c.http.request("POST", f"/console/approvals/{cid}/approve", data={"csrf": csrf}, headers=json)
        assert reply.status == 409, reply.body.decode()
        assert "not awaiting approval" in reply.json()["message"]
    assert not c.decisions
    reply = c.http.request(
        "POST",
        f"/console/approvals/{ASKED}/approve",
        data={"csrf": csrf, "note": "go", "next": f"/console/incidents/{INC}"},
        allow_redirects=False,
    )
    assert reply.status == 303 and reply.headers["Location"] == f"/console/incidents/{INC}"
    [record] = c.decisions
    assert (record.command_id, record.decision, record.by, record.note) == (
        ASKED,
        Decision.APPROVE,
        "alice",
        "go",
    )
    # answered: it left the approvals page, and a second answer is refused
    assert f'<tr data-command="{ASKED}"' not in c.http.request("GET", "/console/approvals").body.decode()
    reply = c.http.request(
        "POST", f"/console/approvals/{ASKED}/deny", data={"csrf": csrf, "reason": "no"}, headers=json
    )
    assert reply.status == 409
    # next= never leaves the console
    reply = c.http.request(
        "POST",
        f"/console/approvals/{ASKED}/approve",
        data={"csrf": csrf, "next": "https://evil.example/"},
        allow_redirects=False,
    )
    assert reply.status == 409 and "evil" not in reply.headers.get("Location", "")


def test_overview_page(console: Callable[..., Console]) -> None:
    c = console()
    c.login(token=None)
    page = c.http.request("GET", "/console/overview", params={"window": "1h"}).body.decode()
    tiles = dict(
        re.findall(
            r'data-tile="([a-z-]+)"><div class="tile-label">[^<]*</div><div class="tile-value">([^<]*)<', page
        )
    )
    assert tiles["incidents"] == "1" and tiles["after-linking"] == "1"
    assert tiles["distinct"] == "1" and tiles["open"] == "1"
    assert '<option value="1h" selected>' in page
    # an unknown window falls back to 24h rather than failing
    assert (
        '<option value="24h" selected>'
        in c.http.request("GET", "/console/overview", params={"window": "x"}).body.decode()
    )
