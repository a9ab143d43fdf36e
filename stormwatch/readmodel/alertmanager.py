"""Alertmanager API v2 on the read model: query parameters in, Alertmanager's JSON shapes out.

Pure: the gateway's API (stormwatch.amapi) reads the request and writes the answer; everything about
what the request means and what the answer looks like is here, so it is tested without a server.
The shapes follow Alertmanager's api/v2/openapi.yaml (gettableAlert, alertGroup, gettableSilence,
alertmanagerStatus); docs/alertmanager-api.md says what is supported and what is answered instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from stormwatch.readmodel.model import AlertQuery, AlertView, GroupView, SilenceView
from stormwatch.schemas.common import rfc3339, utc_from_ms
from stormwatch.schemas.matchers import Matcher, MatchOp
from stormwatch.schemas.silence import Silence

__all__ = [
    "ApiError",
    "PostedSilence",
    "alert_group_json",
    "alert_query",
    "gettable_alert",
    "gettable_silence",
    "matcher_json",
    "parse_filter",
    "posted_silence",
    "silence_filter",
]

FILTER_HELP = 'write each matcher as its own filter parameter: filter=alertname="HighLatency"'

_OPS = {
    (False, True): MatchOp.EQ,
    (False, False): MatchOp.NE,
    (True, True): MatchOp.RE,
    (True, False): MatchOp.NRE,
}


class ApiError(Exception):
    """A request the API refuses: ``status`` and a message saying what was wrong and how to fix
    it. Alertmanager's error bodies are one JSON string, which is what its clients decode."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_TIMES: dict[int, str] = {}
_TIMES_MAX = 65_536


def am_time(ms: int) -> str:
    """``2025-01-31T12:00:05.250Z``: Alertmanager's date-time format (RFC 3339, UTC).

    Remembered per value: alerts share few distinct (rounded) times, and formatting one takes
    several microseconds, three times per alert of an answer."""
    text = _TIMES.get(ms)
    if text is None:
        if len(_TIMES) >= _TIMES_MAX:
            _TIMES.clear()
        text = _TIMES[ms] = str(rfc3339(utc_from_ms(ms)))
    return text


def _dt(value: datetime) -> str:
    return str(rfc3339(value))


# ---------------------------------------------------------------------------- query parameters


def parse_bool(params: Mapping[str, Sequence[str]], name: str, default: bool = True) -> bool:
    values = params.get(name)
    if not values:
        return default
    text = values[-1].strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ApiError(400, f"invalid {name}={values[-1]!r}: use {name}=true or {name}=false")


def parse_filter(values: Sequence[str], param: str = "filter") -> tuple[Matcher, ...]:
    """Matchers from repeated ``filter`` parameters (``alertname="X"``, ``job=~"api|web"``)."""
    out = []
    for raw in values:
        text = raw.strip()
        parts = [text]
        if text.startswith("{") and text.endswith("}"):
            parts = _split_selector(text[1:-1])  # {a="b", c=~"d"}: a selector of several matchers
        for part in parts:
            if not part.strip():
                continue
            try:
                out.append(Matcher.parse(part))
            except ValidationError as exc:
                reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
                raise ApiError(
                    400, f"bad matcher format in {param} {raw!r}: {reasons}; {FILTER_HELP}"
                ) from None
            except ValueError as exc:
                raise ApiError(400, f"bad matcher format in {param} {raw!r}: {exc}; {FILTER_HELP}") from None
    return tuple(out)


def _split_selector(text: str) -> list[str]:
    """The matchers of a selector body, split at the commas outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _receiver(params: Mapping[str, Sequence[str]]) -> re.Pattern[str] | None:
    values = params.get("receiver")
    if not values or not values[-1]:
        return None
    try:
        return re.compile(f"(?:{values[-1]})")
    except re.error as exc:
        raise ApiError(
            400,
            f"failed to parse receiver param {values[-1]!r}: {exc}; it is a regex matched against "
            'the whole correlation rule name, e.g. receiver=default or receiver="db-.*"',
        ) from None


def alert_query(params: Mapping[str, Sequence[str]]) -> AlertQuery:
    """An AlertQuery from GET /api/v2/alerts (or /alerts/groups) query parameters."""
    unsupported = params.get("receiver_matchers")
    if unsupported and any(v.strip() for v in unsupported):
        raise ApiError(
            400,
            "receiver_matchers is not supported: stormwatch receivers (correlation rules) have no "
            "labels; filter by name with receiver=REGEX instead",
        )
    return AlertQuery(
        matchers=parse_filter(params.get("filter", ())),
        active=parse_bool(params, "active"),
        silenced=parse_bool(params, "silenced"),
        inhibited=parse_bool(params, "inhibited"),
        unprocessed=parse_bool(params, "unprocessed"),
        receiver=_receiver(params),
    )


def silence_filter(params: Mapping[str, Sequence[str]]) -> tuple[tuple[Matcher, ...], list[str]]:
    """The matchers and the states GET /api/v2/silences asks for."""
    matchers = parse_filter(params.get("filter", ()))
    states = [s for s in ("active", "pending", "expired") if parse_bool(params, s)]
    return matchers, states


# ---------------------------------------------------------------------------- answers


def gettable_alert(view: AlertView) -> dict[str, Any]:
    return {
        "annotations": view.annotations,
        "endsAt": am_time(view.ends_ms),
        "fingerprint": view.fingerprint,
        "receivers": [{"name": name} for name in view.receivers],
        "startsAt": am_time(view.starts_ms),
        "status": {
            "inhibitedBy": list(view.inhibited_by),
            "mutedBy": list(view.muted_by),
            "silencedBy": list(view.silenced_by),
            "state": view.state,
        },
        "updatedAt": am_time(view.updated_ms),
        "labels": view.labels,
    }


def alert_group_json(group: GroupView) -> dict[str, Any]:
    return {
        "alerts": [gettable_alert(a) for a in group.alerts],
        "labels": group.labels,
        "receiver": {"name": group.rule},
        "routeLabels": {},
    }


def matcher_json(matcher: Matcher) -> dict[str, Any]:
    return {
        "isEqual": matcher.op in (MatchOp.EQ, MatchOp.RE),
        "isRegex": matcher.op in (MatchOp.RE, MatchOp.NRE),
        "name": matcher.name,
        "value": matcher.value,
    }


def gettable_silence(view: SilenceView) -> dict[str, Any]:
    """A silence expired early shows the time it was expired as its end, as in Alertmanager."""
    silence = view.silence
    ends = silence.ends_at
    if silence.expired_at is not None and silence.expired_at < ends:
        ends = silence.expired_at
    return {
        "id": silence.silence_id,
        "status": {"state": view.state},
        "updatedAt": am_time(view.updated_ms),
        "annotations": {},
        "comment": silence.comment,
        "createdBy": silence.created_by,
        "endsAt": _dt(ends),
        "matchers": [matcher_json(m) for m in silence.matchers],
        "startsAt": _dt(silence.starts_at),
    }


# ---------------------------------------------------------------------------- POST /silences


@dataclass(frozen=True)
class PostedSilence:
    """What a postableSilence asks for; stormwatch.commands.silences validates it against now."""

    silence_id: str | None
    matchers: list[Matcher]
    starts_at: datetime
    ends_at: datetime
    created_by: str
    comment: str


def _field(doc: Mapping[str, Any], name: str, kind: type, example: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind):
        got = "missing" if name not in doc else f"{type(value).__name__} {value!r}"
        raise ApiError(400, f"{name} is {got}: it must be a {kind.__name__}, e.g. {example}")
    return value


def _time(doc: Mapping[str, Any], name: str) -> datetime:
    text = _field(doc, name, str, '"2025-01-31T18:00:00Z"')
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise ApiError(400, f"{name} {text!r} is not an RFC 3339 time, e.g. 2025-01-31T18:00:00Z") from None
    if value.tzinfo is None:
        raise ApiError(400, f"{name} {text!r} has no time zone: end it with Z or an offset like +02:00")
    return value


def _matcher(item: Any, i: int) -> Matcher:
    where = f"matchers[{i}]"
    if not isinstance(item, Mapping):
        raise ApiError(
            400, f'{where} must be an object like {{"name": "alertname", "value": "X", "isRegex": false}}'
        )
    name = item.get("name")
    value = item.get("value")
    is_regex = item.get("isRegex", False)
    is_equal = item.get("isEqual", True)
    if not isinstance(name, str) or not name:
        raise ApiError(400, f"{where}.name must be a non-empty string (a label name)")
    if not isinstance(value, str):
        raise ApiError(400, f"{where}.value must be a string")
    if not isinstance(is_regex, bool) or not isinstance(is_equal, bool):
        raise ApiError(400, f"{where}.isRegex and {where}.isEqual must be true or false")
    try:
        return Matcher(name=name, op=_OPS[(is_regex, is_equal)], value=value)
    except ValidationError as exc:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise ApiError(400, f"{where}: {reasons}") from None


def posted_silence(doc: Any) -> PostedSilence:
    """A postableSilence body, checked for shape (the times are checked against now later)."""
    if not isinstance(doc, Mapping):
        raise ApiError(
            400,
            "the body must be a JSON object: a postableSilence with matchers, startsAt, endsAt, "
            "createdBy and comment",
        )
    raw_id = doc.get("id")
    if raw_id is not None and not isinstance(raw_id, str):
        raise ApiError(400, "id must be a string: the id of the silence to update, or absent to create one")
    matchers_doc = doc.get("matchers")
    if not isinstance(matchers_doc, list) or not matchers_doc:
        raise ApiError(
            400,
            'matchers must be a non-empty array, e.g. [{"name": "alertname", "value": "X", "isRegex": false}]',
        )
    matchers = [_matcher(item, i) for i, item in enumerate(matchers_doc)]
    created_by = _field(doc, "createdBy", str, '"alice"').strip()
    if not created_by:
        raise ApiError(400, "createdBy must name who creates the silence (it goes into the audit log)")
    comment = doc.get("comment", "")
    if not isinstance(comment, str):
        raise ApiError(400, "comment must be a string saying why the alerts are silenced")
    return PostedSilence(
        silence_id=raw_id or None,
        matchers=matchers,
        starts_at=_time(doc, "startsAt"),
        ends_at=_time(doc, "endsAt"),
        created_by=created_by,
        comment=comment.strip(),
    )


def same_silence(a: Silence, b: Silence) -> bool:
    """True when ``b`` is ``a`` as the silences topic holds it (what a write waits to see)."""
    return a.model_dump(mode="json") == b.model_dump(mode="json")
