"""The read and silence half of Alertmanager's API v2, served by the gateway from its read model.

GET /api/v2/alerts, /alerts/groups, /silences, /silence/{id}, /receivers and /status; POST
/silences and DELETE /silence/{id}. Answers come from a read model that follows the audit log,
the correlator's state changelog and the silences topic (stormwatch.readmodel); silences are
created and expired with the CLI's own commands (stormwatch.commands.silences).
``AlertmanagerApi`` registers these routes on the gateway's aiohttp application, as the console
does (stormwatch.console.web); the gateway keeps auth, body reading and metrics for them.
docs/alertmanager-api.md describes the API.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from aiohttp import web

from stormwatch import __version__
from stormwatch.commands.silences import new_silence, publish_silence_add, publish_silence_expire
from stormwatch.config import Settings
from stormwatch.connguard import RETRY_AFTER_S
from stormwatch.errors import UserError
from stormwatch.loaders import load_rules
from stormwatch.readmodel import alertmanager as am
from stormwatch.readmodel.follower import ReadModelFollower
from stormwatch.readmodel.model import DEFAULT_RESOLVE_TIMEOUT_MS, ReadModel, SilenceView
from stormwatch.schemas.silence import Silence

log = logging.getLogger("stormwatch.gateway")  # the gateway's logger, as before the split

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.Response]]
JsonReader = Callable[[web.Request, Callable[[str], Exception]], Awaitable[Any]]

SILENCE_APPLY_WAIT_S = 10.0
"""POST /api/v2/silences and DELETE /api/v2/silence/{id} answer once the read model shows the
change (the correlator applied the command), or after this long (the command is in Kafka anyway)."""

API_ACTOR = "alertmanager-api"
"""The operator name of a silence expired through DELETE /api/v2/silence/{id} (it carries none)."""


class AlertmanagerApi:
    """Alertmanager's API v2 routes on the gateway's aiohttp application.

    ``guard`` wraps each handler with the gateway's auth (and its answer to a refused request);
    ``read_json`` reads a request's JSON body under the gateway's limits: it refuses another media
    type with the exception ``refuse(media)`` and raises ``orjson.JSONDecodeError`` for a body that
    is not JSON.
    """

    BODY_ROUTES = frozenset({"am_silences_post"})
    """The routes with a request body: the gateway's request read deadline runs until it is read."""

    def __init__(
        self,
        settings: Settings,
        follower: ReadModelFollower | None,
        *,
        guard: Callable[[Handler], Handler],
        read_json: JsonReader,
    ) -> None:
        self.settings = settings
        self.readmodel = follower
        self.started_ms = _now_ms()
        self._guard = guard
        self._read_json = read_json

    def register(self, app: web.Application) -> None:
        routes: list[tuple[str, str, str, Handler]] = [
            ("GET", "/api/v2/alerts", "am_alerts", self._am_alerts),
            ("GET", "/api/v2/alerts/groups", "am_alert_groups", self._am_alert_groups),
            ("GET", "/api/v2/silences", "am_silences", self._am_silences),
            ("POST", "/api/v2/silences", "am_silences_post", self._am_post_silence),
            ("GET", "/api/v2/silence/{silence_id}", "am_silence", self._am_silence),
            ("DELETE", "/api/v2/silence/{silence_id}", "am_silence_delete", self._am_delete_silence),
            ("GET", "/api/v2/status", "am_status", self._am_status),
            ("GET", "/api/v2/receivers", "am_receivers", self._am_receivers),
        ]
        for method, path, name, handler in routes:
            app.router.add_route(
                method, path, self._guard(functools.partial(self._am_call, handler)), name=name
            )

    async def _am_call(self, handler: Handler, request: web.Request) -> web.Response:
        """Errors as Alertmanager answers them: a JSON string (auth is the gateway's ``guard``)."""
        try:
            return await handler(request)
        except am.ApiError as exc:
            if exc.status >= 500:
                log.info("%s %s: %d %s", request.method, request.path, exc.status, exc.message)
            headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status == 503 else None
            # what web.json_response(exc.message, dumps=...) sends: text, so charset=utf-8
            return web.Response(
                text=orjson.dumps(exc.message).decode(),
                status=exc.status,
                headers=headers,
                content_type="application/json",
            )

    def _follower(self) -> ReadModelFollower:
        """The read model, once it has caught up with Kafka; else 503 saying why."""
        follower = self.readmodel
        if follower is None:
            raise am.ApiError(
                503,
                "the read API is off on this gateway (started with --no-read-api); restart it without "
                "that flag to list alerts and silences",
            )
        if not follower.ready:
            raise am.ApiError(503, f"the read model is not ready, retry in a few seconds: {follower.reason}")
        return follower

    async def _query(self, query: Callable[[ReadModel], T]) -> T:
        """Run a query on the read model off the event loop (100k alerts take a while to filter)."""
        follower = self._follower()
        return await asyncio.get_running_loop().run_in_executor(None, follower.read, query)

    async def _answer(self, query: Callable[[ReadModel], T], shape: Callable[[T], Any]) -> web.Response:
        """Query the read model (under its lock), then shape and encode the answer (outside the
        lock), both off the event loop: 100k alerts take a while to filter and to encode."""
        follower = self._follower()

        def run() -> bytes:
            return orjson.dumps(shape(follower.read(query)))

        body = await asyncio.get_running_loop().run_in_executor(None, run)
        return web.Response(body=body, content_type="application/json")

    async def _am_alerts(self, request: web.Request) -> web.Response:
        query = am.alert_query(_params(request))
        now_ms = _now_ms()
        return await self._answer(
            lambda m: m.alerts(query, now_ms), lambda page: [am.gettable_alert(a) for a in page.items]
        )

    async def _am_alert_groups(self, request: web.Request) -> web.Response:
        params = _params(request)
        query = am.alert_query(params)
        muted = am.parse_bool(params, "muted")
        now_ms = _now_ms()
        return await self._answer(
            lambda m: m.alert_groups(query, now_ms, muted=muted),
            lambda groups: [am.alert_group_json(g) for g in groups],
        )

    async def _am_receivers(self, request: web.Request) -> web.Response:
        names = await self._query(lambda m: m.receivers())
        return _json([{"name": name} for name in names])

    async def _am_silences(self, request: web.Request) -> web.Response:
        matchers, states = am.silence_filter(_params(request))
        now_ms = _now_ms()
        views = await self._query(lambda m: m.silences(now_ms, matchers=matchers, states=states))
        return _json([am.gettable_silence(v) for v in views])

    async def _silence_view(self, silence_id: str) -> SilenceView | None:
        now_ms = _now_ms()
        return await self._query(lambda m: m.silence(silence_id, now_ms))

    async def _am_silence(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["silence_id"]
        view = await self._silence_view(silence_id)
        if view is None:
            raise am.ApiError(404, _not_found(silence_id))
        return _json(am.gettable_silence(view))

    async def _am_post_silence(self, request: web.Request) -> web.Response:
        self._follower()  # before reading the body: refuse at once while not ready
        try:
            doc = await self._read_json(request, _not_json)
        except orjson.JSONDecodeError as exc:
            raise am.ApiError(
                400, f"the body is not valid JSON ({exc}); send a postableSilence object"
            ) from None
        posted = am.posted_silence(doc)
        now = datetime.now(UTC)
        silence_id = str(uuid.uuid4())
        starts = max(posted.starts_at, now)  # a start in the past means now, as in Alertmanager
        if posted.silence_id is not None:
            existing = await self._silence_view(posted.silence_id)
            if existing is None:
                raise am.ApiError(
                    404, f"{_not_found(posted.silence_id)}; leave id out to create a new silence"
                )
            if existing.state != "expired":  # an expired one is not revived: a new one is made
                silence_id = posted.silence_id
                starts = posted.starts_at
        try:
            silence = new_silence(
                silence_id=silence_id,
                matchers=posted.matchers,
                starts=starts,
                ends=posted.ends_at,
                created_by=posted.created_by,
                comment=posted.comment,
                now=now,
            )
        except UserError as exc:
            raise am.ApiError(400, str(exc)) from None
        await self._publish(publish_silence_add, self.settings, silence, now=now)
        await self._await_silence(silence_id, lambda s: s is not None and am.same_silence(silence, s))
        log.info("silence %s set by %s through the API", silence_id, silence.created_by)
        return _json({"silenceID": silence_id})

    async def _am_delete_silence(self, request: web.Request) -> web.Response:
        silence_id = request.match_info["silence_id"]
        view = await self._silence_view(silence_id)
        if view is None:
            raise am.ApiError(404, _not_found(silence_id))
        if view.state != "expired":
            now = datetime.now(UTC)
            await self._publish(publish_silence_expire, self.settings, silence_id, by=API_ACTOR, now=now)
            await self._await_silence(silence_id, lambda s: s is not None and s.expired_at is not None)
            log.info("silence %s expired through the API", silence_id)
        return web.Response(status=200)

    async def _publish(self, publish: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """The CLI's own publish (blocking: a producer of its own), off the event loop."""
        call = functools.partial(publish, *args, **kwargs)
        try:
            await asyncio.get_running_loop().run_in_executor(None, call)
        except UserError as exc:  # Kafka unreachable, the commands topic missing
            raise am.ApiError(503, f"the command could not be written to Kafka, retry later: {exc}") from None

    async def _await_silence(self, silence_id: str, done: Callable[[Silence | None], bool]) -> bool:
        """Wait until the read model shows the correlator applied the command (bounded)."""
        deadline = time.monotonic() + SILENCE_APPLY_WAIT_S
        while True:
            view = await self._silence_view(silence_id)
            if done(view.silence if view is not None else None):
                return True
            if time.monotonic() >= deadline:
                log.warning(
                    "silence %s: the command is in Kafka but the correlator did not apply it within %gs "
                    "(is `stormwatch correlate` running?)",
                    silence_id,
                    SILENCE_APPLY_WAIT_S,
                )
                return False
            await asyncio.sleep(0.05)

    async def _am_status(self, request: web.Request) -> web.Response:
        follower = self.readmodel
        read_model: dict[str, Any] = {"enabled": follower is not None}
        if follower is not None:
            read_model["ready"] = follower.ready
            read_model["reason"] = follower.reason
            read_model["catchUpSeconds"] = follower.catch_up_seconds
            if follower.ready:
                read_model.update(await self._query(lambda m: m.counts()))
        status = "ready" if follower is not None and follower.ready else "settling"
        body = {
            "cluster": {"name": "stormwatch", "status": status, "peers": []},
            "versionInfo": {
                "version": __version__,
                "revision": "",
                "branch": "",
                "buildUser": "",
                "buildDate": "",
                "goVersion": f"python{sys.version_info.major}.{sys.version_info.minor}",
            },
            "config": {
                "original": _CONFIG_NOTE.format(rules=self.settings.correlator.rules_file or "built-in")
            },
            "uptime": am.am_time(self.started_ms),
            "stormwatch": {"readModel": read_model},
        }
        return _json(body)


def _not_json(media: str) -> am.ApiError:
    return am.ApiError(415, f"Content-Type {media} is not JSON; send the silence as application/json")


def _json(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _params(request: web.Request) -> dict[str, list[str]]:
    """Query parameters, each with all its values (``filter`` repeats)."""
    params: dict[str, list[str]] = {}
    for name, value in request.query.items():
        params.setdefault(name, []).append(value)
    return params


def _now_ms() -> int:
    return int(time.time() * 1000)


def _not_found(silence_id: str) -> str:
    return f"silence {silence_id} not found; list the silences with GET /api/v2/silences or `stormwatch silence list --all`"


_CONFIG_NOTE = (
    "# stormwatch answers the Alertmanager API v2 from its read model (docs/alertmanager-api.md).\n"
    "# It has no Alertmanager configuration: alerts are grouped by correlation rules ({rules}),\n"
    "# and each rule is shown as a receiver.\n"
)


def rule_timeouts(settings: Settings) -> tuple[dict[str, int], int]:
    """resolve_timeout per correlation rule (for the endsAt of an alert without one), and the
    default; the built-in ones when the rules file cannot be read (the correlator says why)."""
    try:
        rules = load_rules(settings.correlator.rules_file)
    except (UserError, OSError, ValueError) as exc:
        log.warning(
            "cannot read the correlation rules for the read API (%s); assuming 5m resolve_timeout", exc
        )
        return {}, DEFAULT_RESOLVE_TIMEOUT_MS
    return {r.name: r.resolve_timeout_ms for r in rules.rules}, rules.defaults.resolve_timeout_ms
