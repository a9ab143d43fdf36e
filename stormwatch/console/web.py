"""The console's HTTP side, served by the gateway under /console (docs/console.md).

Sign-in exchanges the gateway's bearer token (and the operator's name) for a session cookie
(HttpOnly, SameSite=Strict, Secure when the gateway serves TLS). Every page needs a session; every
state-changing request (an incident action, a silence created or expired, sign-out) also needs the
session's CSRF token in its form, compared in constant time. Actions are the CLI's own commands:
``stormwatch.commands.operator.build_command`` / ``publish_command`` and the silence functions of
``stormwatch.commands.silences``, with the signed-in operator as ``by``. Pages are read from the
gateway's read model; an incident's timeline is read from the audit log itself (the read model
keeps no timelines). /console/events sends a server-sent event whenever the read model changes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import ValidationError

from stormwatch.agents.core.approvals import ApprovalDecision, Decision, is_command_id
from stormwatch.commands import agent as agent_commands
from stormwatch.commands import operator as operator_commands
from stormwatch.commands import silences as silence_commands
from stormwatch.commands.incidents import validate_incident_id
from stormwatch.config import Settings
from stormwatch.console import render
from stormwatch.console.assets import CSS, JS
from stormwatch.errors import UserError
from stormwatch.kafka.client import read_topic
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.readmodel.mitigations import MitigationView
from stormwatch.readmodel.model import AlertQuery, AlertView, IncidentQuery, ReadModel
from stormwatch.readmodel.overview import WINDOWS
from stormwatch.schemas.commands import OperatorAction
from stormwatch.schemas.durations import DURATION_HELP, parse_duration
from stormwatch.schemas.incident import IncidentEvent, IncidentState
from stormwatch.streams.core.projection import IncidentProjection

__all__ = ["COOKIE", "Console", "LoginThrottle", "Session", "SessionStore", "incident_marks", "read_timeline"]

log = logging.getLogger("stormwatch.console")

T = TypeVar("T")

COOKIE = "stormwatch_console"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 10_000
EVENT_POLL_S = 0.5
KEEPALIVE_S = 15.0
APPLY_WAIT_S = 5.0
PREVIEW_LIMIT = 100
LOGIN_FAILURES = 10  # wrong tokens from one address ...
LOGIN_WINDOW_S = 300.0  # ... in this long, and its sign-ins are refused (429) for the rest of it
_ACTIONS = {
    "ack": OperatorAction.ACKNOWLEDGE,
    "resolve": OperatorAction.RESOLVE,
    "assign": OperatorAction.ASSIGN,
    "annotate": OperatorAction.ANNOTATE,
    "severity": OperatorAction.SET_SEVERITY,
    "merge": OperatorAction.MERGE,
    "split": OperatorAction.SPLIT,
    "join": OperatorAction.JOIN,
}
_DECISIONS = {"approve": Decision.APPROVE, "deny": Decision.DENY}
SECURITY_HEADERS = {
    # No inline script or style anywhere: only the package's own assets run.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(slots=True)
class Session:
    user: str
    csrf: str
    expires: float  # time.monotonic()


class LoginThrottle:
    """At most ``limit`` wrong tokens per client address in ``window_s``; then 429 until the window
    has passed (guessing a token through the form is as slow as through the API is not: bounded)."""

    def __init__(self, limit: int = LOGIN_FAILURES, window_s: float = LOGIN_WINDOW_S) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def blocked(self, client: str) -> bool:
        return len(self._recent(client, time.monotonic())) >= self.limit

    def failed(self, client: str) -> None:
        now = time.monotonic()
        self._failures[client] = [*self._recent(client, now), now]
        self._failures.move_to_end(client)
        while len(self._failures) > MAX_SESSIONS:
            self._failures.popitem(last=False)


class SessionStore:
    """Sessions in the gateway's memory: a restart signs everyone out (they sign in again)."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, max_sessions: int = MAX_SESSIONS) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def create(self, user: str) -> tuple[str, Session]:
        while len(self._sessions) >= self.max_sessions:
            self._sessions.popitem(last=False)  # the oldest goes first
        session_id = secrets.token_urlsafe(32)
        session = Session(user, secrets.token_urlsafe(32), time.monotonic() + self.ttl_s)
        self._sessions[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires <= time.monotonic():
            del self._sessions[session_id]
            return None
        return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)


def csrf_ok(session: Session, presented: object) -> bool:
    """The form's CSRF token is the session's (compared in constant time)."""
    if not isinstance(presented, str) or not presented:
        return False
    return hmac.compare_digest(presented.encode(), session.csrf.encode())


def incident_marks(model: ReadModel, now_ms: int, incident_ids: set[str]) -> dict[str, render.IncidentMarks]:
    """For each of ``incident_ids``: its firing alerts, how many are silenced and flapping."""
    counts: dict[str, list[int]] = {}
    for alert in model.alerts(AlertQuery(), now_ms).items:
        iid = alert.incident_id
        if iid is None or iid not in incident_ids:
            continue
        c = counts.setdefault(iid, [0, 0, 0])
        c[0] += 1
        c[1] += bool(alert.silenced_by)
        c[2] += bool(alert.muted_by)
    return {iid: render.IncidentMarks(*c) for iid, c in counts.items()}


def incident_alerts(model: ReadModel, now_ms: int, incident_ids: set[str]) -> list[AlertView]:
    return [a for a in model.alerts(AlertQuery(), now_ms).items if a.incident_id in incident_ids]


def read_timeline(
    settings: Settings, incident_id: str, origin: tuple[int, int] | None = None
) -> list[IncidentEvent]:
    """The incident's events from the audit log, as `stormwatch timeline` reads them.

    With ``origin`` (the partition and offset of its first event, which the read model noted) only
    that partition is read, from there: an incident's events share its key, so its partition.
    """
    projection = IncidentProjection(keep_events=True)
    needle = incident_id.encode()
    where: dict[str, Any] = {}
    if origin is not None:
        where = {"partitions": [origin[0]], "start": {origin[0]: origin[1]}}
    for msg in read_topic(settings, settings.topics.incidents, **where):
        value = msg.value()
        if not value or needle not in value:
            continue
        try:
            event = IncidentEvent.from_bytes(value)
        except ValidationError:
            continue
        if event.incident_id == incident_id:
            projection.apply(event)
    return projection.timeline(incident_id)


def _page(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def _safe_next(path: object) -> str:
    """Only a path of this console: never another site (no open redirect)."""
    if isinstance(path, str) and path.startswith("/console/") and not any(c in path for c in "\\\r\n"):
        return path
    return "/console/"


class Console:
    """The console's routes on the gateway's aiohttp application."""

    def __init__(
        self,
        settings: Settings,
        follower: ReadModelFollower | None,
        *,
        timeline: Callable[[Settings, str, tuple[int, int] | None], list[IncidentEvent]] = read_timeline,
        body_read: Callable[[web.Request], None] | None = None,
    ) -> None:
        self.settings = settings
        self.follower = follower
        token = settings.gateway.bearer_token
        self._token = token.encode() if token is not None else None
        self.secure_cookie = bool(settings.gateway.tls_cert_file)
        self.sessions = SessionStore()
        self.throttle = LoginThrottle()
        self._timeline = timeline
        self._body_read = body_read  # the gateway's read deadline ends once a form is read
        self._timelines: OrderedDict[str, list[IncidentEvent]] = OrderedDict()
        self._closing = asyncio.Event()
        # The CLI's own publishing functions; tests replace them.
        self.publish_command = operator_commands.publish_command
        self.publish_silence_add = silence_commands.publish_silence_add
        self.publish_silence_expire = silence_commands.publish_silence_expire
        self.publish_decision = agent_commands.publish_decision

    BODY_ROUTES = frozenset(
        {
            "console_login",
            "console_logout",
            "console_action",
            "console_silence_create",
            "console_silence_preview",
            "console_silence_expire",
            "console_decision",
        }
    )
    """The routes with a form body: the gateway's request read deadline runs until it is read."""

    async def _form(self, request: web.Request) -> Any:
        form = await request.post()
        if self._body_read is not None:
            self._body_read(request)
        return form

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/console", self._root_redirect, name="console_root")
        r.add_get("/console/", self._incidents, name="console_incidents")
        r.add_get("/console/static/console.css", self._css, name="console_css")
        r.add_get("/console/static/console.js", self._js, name="console_js")
        r.add_get("/console/login", self._login_form, name="console_login_form")
        r.add_post("/console/login", self._login, name="console_login")
        r.add_post("/console/logout", self._logout, name="console_logout")
        r.add_get("/console/events", self._events, name="console_events")
        r.add_get("/console/incidents/{incident_id}", self._incident, name="console_incident")
        r.add_post("/console/incidents/{incident_id}/{action}", self._action, name="console_action")
        r.add_get("/console/approvals", self._approvals, name="console_approvals")
        r.add_post("/console/approvals/{command_id}/{decision}", self._decision, name="console_decision")
        r.add_get("/console/overview", self._overview, name="console_overview")
        r.add_get("/console/silences", self._silences, name="console_silences")
        r.add_post("/console/silences", self._silence_create, name="console_silence_create")
        r.add_post("/console/silences/preview", self._silence_preview, name="console_silence_preview")
        r.add_post(
            "/console/silences/{silence_id}/expire", self._silence_expire, name="console_silence_expire"
        )

        async def closing(app: web.Application) -> None:
            self._closing.set()  # ends the event streams, so a shutdown does not wait for them

        app.on_shutdown.append(closing)

    # -- sessions

    def _session(self, request: web.Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _need_session(self, request: web.Request) -> Session:
        session = self._session(request)
        if session is None:
            if request.method == "GET" and "X-Console-Live" not in request.headers:
                raise web.HTTPSeeOther(f"/console/login?next={request.rel_url.path}")
            raise web.HTTPUnauthorized(text="sign in first: /console/login\n", headers=SECURITY_HEADERS)
        return session

    async def _need_csrf(self, request: web.Request) -> tuple[Session, Any]:
        """The session and the form of a state-changing request whose CSRF token is right."""
        session = self._need_session(request)
        form = await self._form(request)
        if not csrf_ok(session, form.get("csrf")):
            log.warning(
                "console: %s %s refused: bad CSRF token (user %s)", request.method, request.path, session.user
            )
            raise web.HTTPForbidden(
                text="refused: the form's CSRF token is missing or wrong; reload the page and try again\n",
                headers=SECURITY_HEADERS,
            )
        return session, form

    async def _root_redirect(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    async def _css(self, request: web.Request) -> web.Response:
        return web.Response(text=CSS, content_type="text/css", headers={"Cache-Control": "max-age=300"})

    async def _js(self, request: web.Request) -> web.Response:
        return web.Response(
            text=JS, content_type="application/javascript", headers={"Cache-Control": "max-age=300"}
        )

    async def _login_form(self, request: web.Request) -> web.Response:
        return _page(
            render.login_page(
                need_token=self._token is not None, next_path=_safe_next(request.query.get("next"))
            )
        )

    async def _login(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        next_path = _safe_next(form.get("next"))
        name = form.get("name")
        name = name.strip() if isinstance(name, str) else ""
        if self._token is not None:
            client = request.remote or "?"
            if self.throttle.blocked(client):
                log.warning("console: sign-in from %s refused: too many wrong tokens", client)
                return _page(
                    render.login_page(
                        error="too many wrong tokens from your address; wait a few minutes",
                        need_token=True,
                        next_path=next_path,
                    ),
                    status=429,
                )
            token = form.get("token")
            presented = token.strip().encode("utf-8", "surrogateescape") if isinstance(token, str) else b""
            if not hmac.compare_digest(presented, self._token):
                self.throttle.failed(client)
                log.warning("console: sign-in refused (wrong token) from %s", client)
                return _page(
                    render.login_page(error="wrong token", need_token=True, next_path=next_path), status=401
                )
        if not name or len(name) > 64 or not name.isprintable():
            return _page(
                render.login_page(
                    error="give your name (1-64 printable characters): the audit log records it",
                    need_token=self._token is not None,
                    next_path=next_path,
                ),
                status=400,
            )
        session_id, _ = self.sessions.create(name)
        response = web.HTTPSeeOther(next_path)
        response.set_cookie(
            COOKIE,
            session_id,
            path="/console",
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookie,
            max_age=int(self.sessions.ttl_s),
        )
        log.info("console: %s signed in", name)
        raise response

    async def _logout(self, request: web.Request) -> web.Response:
        await self._need_csrf(request)
        self.sessions.drop(request.cookies.get(COOKIE))
        response = web.HTTPSeeOther("/console/login")
        response.del_cookie(COOKIE, path="/console")
        raise response

    # -- the read model

    async def _read(self, query: Callable[[ReadModel], T]) -> T:
        follower = self.follower
        if follower is None:
            raise web.HTTPServiceUnavailable(
                text="the read model is off on this gateway (--no-read-api): the console needs it\n"
            )
        if not follower.ready:
            raise web.HTTPServiceUnavailable(
                text=f"the read model is not ready, retry in a few seconds: {follower.reason}\n",
                headers={"Retry-After": "2"},
            )
        return await asyncio.get_running_loop().run_in_executor(None, follower.read, query)

    # -- pages

    async def _incidents(self, request: web.Request) -> web.Response:
        session = self._need_session(request)
        states = tuple(
            s for s in request.query.getall("state", []) if s in IncidentState.__members__.values()
        )
        try:
            offset = max(0, int(request.query.get("offset", "0")))
        except ValueError:
            offset = 0
        query = render.ListQuery(states=states, search=request.query.get("q", "")[:200], offset=offset)
        model_query = IncidentQuery(
            states=frozenset(IncidentState(s) for s in states),
            search=query.search,
            offset=query.offset,
            limit=query.limit,
        )
        now_ms = _now_ms()

        def run(model: ReadModel) -> tuple[Any, dict[str, render.IncidentMarks]]:
            page = model.incidents(model_query)
            return page, incident_marks(model, now_ms, {i.incident_id for i in page.items})

        page, marks = await self._read(run)
        return _page(render.incidents_page(page, marks, query, now_ms, user=session.user, csrf=session.csrf))

    async def _events_of(
        self, incident_id: str, last_seq: int, origin: tuple[int, int] | None
    ) -> list[IncidentEvent]:
        cached = self._timelines.get(incident_id)
        if cached is not None and cached and cached[-1].seq >= last_seq:
            return cached
        events = await asyncio.get_running_loop().run_in_executor(
            None, self._timeline, self.settings, incident_id, origin
        )
        self._timelines[incident_id] = events
        self._timelines.move_to_end(incident_id)
        while len(self._timelines) > 64:
            self._timelines.popitem(last=False)
        return events

    async def _incident(self, request: web.Request) -> web.Response:
        session = self._need_session(request)
        raw_id = request.match_info["incident_id"]
        try:
            incident_id = validate_incident_id(raw_id)
        except UserError as exc:
            return _page(
                render.message_page("Not found", str(exc), user=session.user, csrf=session.csrf), 404
            )
        now_ms = _now_ms()

        def run(model: ReadModel) -> tuple[Any, list[AlertView], list[MitigationView], Any]:
            incident = model.incident(incident_id)
            if incident is None:
                return None, [], [], None
            members = [incident_id, *incident.members]
            alerts = incident_alerts(model, now_ms, set(members))
            return incident, alerts, model.steps(members), model.origins.get(incident_id)

        incident, alerts, steps, origin = await self._read(run)
        if incident is None:
            return _page(
                render.message_page(
                    "Not found",
                    f"no incident {incident_id} in the read model",
                    user=session.user,
                    csrf=session.csrf,
                ),
                404,
            )
        try:
            events = await self._events_of(incident_id, incident.last_seq, origin)
        except UserError as exc:
            log.warning("console: cannot read the timeline of %s: %s", incident_id, exc)
            events = []
        return _page(
            render.incident_page(
                incident, events, alerts, now_ms, user=session.user, csrf=session.csrf, steps=steps
            )
        )

    async def _approvals(self, request: web.Request) -> web.Response:
        session = self._need_session(request)
        now_ms = _now_ms()

        def run(model: ReadModel) -> tuple[list[MitigationView], dict[str, str]]:
            steps = model.approvals(now_ms)
            titles = {}
            for v in steps:
                incident = model.incident(v.incident_id)
                titles[v.incident_id] = incident.title if incident is not None else ""
            return steps, titles

        steps, titles = await self._read(run)
        return _page(render.approvals_page(steps, titles, now_ms, user=session.user, csrf=session.csrf))

    async def _overview(self, request: web.Request) -> web.Response:
        session = self._need_session(request)
        window = request.query.get("window", "24h")
        if window not in WINDOWS:
            window = "24h"
        now_ms = _now_ms()
        view = await self._read(lambda m: m.overview(now_ms, WINDOWS[window]))
        return _page(render.overview_page(view, window, user=session.user, csrf=session.csrf))

    async def _silences(self, request: web.Request) -> web.Response:
        session = self._need_session(request)
        now_ms = _now_ms()
        views = await self._read(lambda m: m.silences(now_ms))
        return _page(render.silences_page(views, now_ms, user=session.user, csrf=session.csrf))

    # -- actions

    async def _action(self, request: web.Request) -> web.Response:
        session, form = await self._need_csrf(request)
        name = request.match_info["action"]
        action = _ACTIONS.get(name)
        if action is None:
            raise web.HTTPNotFound(text=f"no action {name!r}; one of {', '.join(_ACTIONS)}\n")
        args = argparse.Namespace(
            action=action,
            incident_id=request.match_info["incident_id"],
            by=session.user,
            command_id=None,
            note=_text(form.get("note")) if action is not OperatorAction.ANNOTATE else None,
            text=_text(form.get("note")),
            assignee=_text(form.get("assignee")),
            level=_text(form.get("level")),
            into=_text(form.get("into")).strip(),
        )
        wants_json = "application/json" in request.headers.get("Accept", "")
        try:
            if action is OperatorAction.SET_SEVERITY and args.level not in (
                "critical",
                "error",
                "warning",
                "info",
            ):
                raise UserError(f"unknown severity {args.level!r}: one of critical, error, warning, info")
            command = operator_commands.build_command(args)
        except (UserError, ValidationError) as exc:
            return _answer(wants_json, 400, f"refused: {exc}", f"/console/incidents/{args.incident_id}")
        assert command.incident_id is not None
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, self.publish_command, self.settings, command, command.incident_id
            )
        except UserError as exc:
            return _answer(wants_json, 503, f"could not send the command, retry: {exc}", None)
        log.info(
            "console: %s sent %s on %s (command %s)",
            session.user,
            name,
            command.incident_id,
            command.command_id,
        )
        return _answer(
            wants_json,
            202,
            f"{name} sent as command {command.command_id}; the timeline shows the outcome",
            f"/console/incidents/{command.incident_id}",
        )

    async def _decision(self, request: web.Request) -> web.Response:
        """Approve or deny a mitigation step: the record `stormwatch approve` / `deny` write."""
        session, form = await self._need_csrf(request)
        decision = _DECISIONS.get(request.match_info["decision"])
        if decision is None:
            raise web.HTTPNotFound(text="no such decision: approve or deny\n")
        command_id = request.match_info["command_id"].strip().lower()
        back = _safe_next(form.get("next") or "/console/approvals")
        wants_json = "application/json" in request.headers.get("Accept", "")
        note = _text(form.get("note" if decision is Decision.APPROVE else "reason")).strip()
        if decision is Decision.DENY and not note:
            return _answer(wants_json, 400, "refused: say why the step is denied (reason)", back)
        now_ms = _now_ms()
        view = (
            await self._read(lambda m: m.mitigations.get(command_id)) if is_command_id(command_id) else None
        )
        if view is None or not view.awaiting(now_ms):
            state = "unknown" if view is None else view.status.value
            return _answer(
                wants_json,
                409,
                f"refused: command {command_id} is not awaiting approval (it is {state}: answered, "
                "expired or never asked); the approvals page lists the steps that are",
                back,
            )
        record = ApprovalDecision(
            command_id=command_id,
            decision=decision,
            by=session.user,
            at=datetime.now(UTC),
            note=note or None,
        )
        await self._publish(lambda: self.publish_decision(self.settings, record))
        log.info("console: %s %s command %s", session.user, decision.value, command_id)

        def answered(m: ReadModel) -> bool:
            current = m.mitigations.get(command_id)
            return current is not None and current.seq > view.seq

        await self._await(answered)
        verb = "approved" if decision is Decision.APPROVE else "denied"
        return _answer(wants_json, 202, f"{command_id} {verb}; the step's status follows on the page", back)

    def _parse_silence_form(self, form: Any) -> tuple[render.SilenceForm, list[Any]]:
        values = render.SilenceForm(
            matchers=_text(form.get("matchers")),
            duration=_text(form.get("duration")) or "2h",
            comment=_text(form.get("comment")),
        )
        lines = [line.strip() for line in values.matchers.splitlines() if line.strip()]
        if not lines:
            raise UserError('give at least one matcher, e.g. alertname="HighLatency"')
        return values, silence_commands.parse_matchers(lines)

    async def _silence_preview(self, request: web.Request) -> web.Response:
        session, form = await self._need_csrf(request)
        now_ms = _now_ms()
        values = render.SilenceForm(
            matchers=_text(form.get("matchers")),
            duration=_text(form.get("duration")),
            comment=_text(form.get("comment")),
        )
        try:
            values, matchers = self._parse_silence_form(form)
        except UserError as exc:
            fragment = render.preview_fragment([], 0, now_ms, error=str(exc))
        else:
            query = AlertQuery(matchers=tuple(matchers), limit=PREVIEW_LIMIT)
            page = await self._read(lambda m: m.alerts(query, now_ms))
            fragment = render.preview_fragment(page.items, page.total, now_ms)
        if request.headers.get("X-Console-Fragment"):
            return _page(fragment)
        views = await self._read(lambda m: m.silences(now_ms))
        return _page(
            render.silences_page(
                views, now_ms, user=session.user, csrf=session.csrf, form=values, preview=fragment
            )
        )

    async def _silence_create(self, request: web.Request) -> web.Response:
        session, form = await self._need_csrf(request)
        now = datetime.now(UTC)
        values = render.SilenceForm(
            matchers=_text(form.get("matchers")),
            duration=_text(form.get("duration")),
            comment=_text(form.get("comment")),
        )
        try:
            values, matchers = self._parse_silence_form(form)
            try:
                ms = parse_duration(values.duration)
            except ValueError as exc:
                raise UserError(f"duration: {exc}") from None
            if ms <= 0:
                raise UserError(f"the duration must be longer than zero; {DURATION_HELP}")
            if not values.comment.strip():
                raise UserError("say why the alerts are silenced (comment)")
            silence = silence_commands.new_silence(
                silence_id=str(uuid.uuid4()),
                matchers=matchers,
                starts=now,
                ends=now + timedelta(milliseconds=ms),
                created_by=session.user,
                comment=values.comment.strip(),
                now=now,
            )
        except UserError as exc:
            now_ms = _now_ms()
            views = await self._read(lambda m: m.silences(now_ms))
            return _page(
                render.silences_page(
                    views, now_ms, user=session.user, csrf=session.csrf, form=values, error=str(exc)
                ),
                400,
            )
        await self._publish(lambda: self.publish_silence_add(self.settings, silence, now=now))
        log.info("console: %s created silence %s", session.user, silence.silence_id)
        await self._await(lambda m: m.silence(silence.silence_id, _now_ms()) is not None)
        raise web.HTTPSeeOther("/console/silences")

    async def _silence_expire(self, request: web.Request) -> web.Response:
        session, _ = await self._need_csrf(request)
        silence_id = request.match_info["silence_id"]
        view = await self._read(lambda m: m.silence(silence_id, _now_ms()))
        if view is None:
            raise web.HTTPNotFound(text=f"no silence {silence_id}\n")
        if view.state != "expired":
            now = datetime.now(UTC)
            await self._publish(
                lambda: self.publish_silence_expire(self.settings, silence_id, by=session.user, now=now)
            )
            log.info("console: %s expired silence %s", session.user, silence_id)

            def expired(m: ReadModel) -> bool:
                v = m.silence(silence_id, _now_ms())
                return v is not None and v.state == "expired"

            await self._await(expired)
        raise web.HTTPSeeOther("/console/silences")

    async def _publish(self, call: Callable[[], Any]) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, call)
        except UserError as exc:
            raise web.HTTPServiceUnavailable(text=f"could not send the command, retry: {exc}\n") from None

    async def _await(self, done: Callable[[ReadModel], bool]) -> None:
        """Until the read model shows the correlator applied the command (bounded)."""
        deadline = time.monotonic() + APPLY_WAIT_S
        while time.monotonic() < deadline and not await self._read(done):
            await asyncio.sleep(0.1)

    # -- live updates

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """``change`` events: the incidents whose audit log moved on, and whether alerts or
        silences changed; the page then re-fetches itself."""
        self._need_session(request)
        follower = self.follower
        if follower is None:
            raise web.HTTPServiceUnavailable(text="the read model is off on this gateway\n")
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        loop = asyncio.get_running_loop()

        def snapshot(model: ReadModel) -> tuple[int, int, dict[str, int]]:
            return (
                id(model),
                model.applied,
                {i.incident_id: i.last_seq for i in model.incident_log.incidents()},
            )

        seen: tuple[int, int, dict[str, int]] | None = None
        last_write = time.monotonic()
        try:
            while not self._closing.is_set():
                if follower.ready:
                    quick = follower.read(lambda m: (id(m), m.applied))
                    if seen is None or quick != seen[:2]:
                        current = await loop.run_in_executor(None, follower.read, snapshot)
                        if seen is not None:
                            changed = sorted(k for k, v in current[2].items() if seen[2].get(k) != v)
                            data = orjson.dumps({"incidents": changed, "alerts": not changed})
                            await response.write(b"event: change\ndata: " + data + b"\n\n")
                            last_write = time.monotonic()
                        seen = current
                if time.monotonic() - last_write > KEEPALIVE_S:
                    await response.write(b": keep-alive\n\n")
                    last_write = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), EVENT_POLL_S)
        except ConnectionResetError:
            pass  # the page was closed or left: every reload of a page ends its stream this way
        return response


def _answer(wants_json: bool, status: int, message: str, location: str | None) -> web.Response:
    if wants_json:
        return web.json_response({"message": message}, status=status, headers=SECURITY_HEADERS)
    if status < 400 and location is not None:
        raise web.HTTPSeeOther(location)
    return _page(render.message_page("Refused" if status < 500 else "Unavailable", message), status)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _now_ms() -> int:
    return int(time.time() * 1000)
