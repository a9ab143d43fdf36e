"""The notifier file: which incidents reach which receivers, when, and how they read.

Its shape is Alertmanager's (``route:``, ``receivers:``, ``time_intervals:``) so that existing
route trees translate (``notify_amconvert``), with what an incident needs on top: which incident
events notify (``notify_on``), what still notifies after an acknowledgement (``after_ack``), and
per-receiver delivery settings (``retry``, ``rate_limit``) for the ``stormwatch notify`` stage
(issue #13). The reference is docs/notifications.md.

Loading reports every problem in one pass as ``file:line: path: what is wrong; what is allowed``
(``stormwatch.schemas.yamlerrors``): unknown keys, durations, matchers, templates, time
intervals, and the references pydantic cannot see (an unknown receiver or time interval, a root
route with matchers ...).

Secrets never sit in the file: the file is configuration, kept in git and shown in reviews and
logs. A PagerDuty routing key or an SMTP password is named by ``*_file`` (a path the stage
reads) or ``*_env`` (an environment variable); written inline it is refused. URLs may be inline
(a loopback webhook or a self-hosted ntfy topic is no secret), are masked wherever the config is
shown, and have ``url_file``/``urls_file`` and ``*_env`` forms for those that carry a token; a
password inside a URL (``user:pass@``) is refused. The core reads neither files nor the
environment: ``SecretRef`` says where, the stage reads.

Templates (subjects, bodies, PagerDuty summaries) are the workflow template language
(``templating``): fields of ``incident``, ``event`` and ``labels`` only, substituted as text and
never parsed again, because label values come from the monitored systems.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    model_validator,
)
from pydantic_core import ErrorDetails

from stormwatch.agents.core.templating import Context, Template, TemplateError, parse_template
from stormwatch.agents.core.timeintervals import (
    NamedTimeIntervalModel,
    TimeIntervalSet,
    compile_time_interval,
)
from stormwatch.agents.core.workflow import Duration, MatcherItem
from stormwatch.schemas.common import Severity, rfc3339
from stormwatch.schemas.durations import format_duration
from stormwatch.schemas.incident import IncidentEvent
from stormwatch.schemas.matchers import Matcher
from stormwatch.schemas.yamlerrors import (
    ConfigFileError,
    ConfigFormat,
    ErrorCollector,
    Loc,
    Place,
    alias_or_name,
    bound_of,
    describe,
)

__all__ = [
    "DEFAULT_GROUP_INTERVAL_MS",
    "DEFAULT_NOTIFY_ON",
    "DEFAULT_REPEAT_INTERVAL_MS",
    "NOTIFIER_FILE",
    "NOTIFY_NAMESPACES",
    "AfterAck",
    "AppriseConfig",
    "EmailConfig",
    "NotifierConfig",
    "NotifierConfigError",
    "NotifierFile",
    "NotifyOn",
    "PagerDutyConfig",
    "RateLimitConfig",
    "Receiver",
    "ReceiverModel",
    "Retry",
    "RouteModel",
    "RouteNode",
    "SecretRef",
    "WebhookConfig",
    "notification_context",
    "parse_notifier_config",
    "render_header",
    "render_html",
    "render_text",
]

DEFAULT_GROUP_INTERVAL_MS = 5 * 60_000
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000


class NotifierConfigError(ConfigFileError):
    """The notifier file cannot be used; one line per problem: ``file:line: path: message``."""


class NotifyOn(StrEnum):
    """What an incident event means to a receiver; ``notify_on`` lists the ones that notify.

    The incident event types, except that ``severity_changed`` splits by direction, and
    ``resolved`` also covers an incident that ends while still active (closed by its maximum
    lifetime, or merged into another): a receiver told it opened is told it ended.
    """

    OPENED = "opened"
    UPDATED = "updated"
    SEVERITY_RAISED = "severity_raised"  # the "escalated": IncidentEventType has no escalation
    SEVERITY_LOWERED = "severity_lowered"
    ACKNOWLEDGED = "acknowledged"
    MITIGATING = "mitigating"
    MITIGATION = "mitigation"
    ASSIGNED = "assigned"
    ANNOTATED = "annotated"
    ABSORBED = "absorbed"
    REFUSED = "refused"
    RESOLVED = "resolved"
    REOPENED = "reopened"
    CLOSED = "closed"  # closed after it was resolved (an active incident closing is "resolved")
    MERGED = "merged"  # merged after it was resolved (an active incident merging is "resolved")


DEFAULT_NOTIFY_ON: tuple[NotifyOn, ...] = (
    NotifyOn.OPENED,
    NotifyOn.SEVERITY_RAISED,
    NotifyOn.REOPENED,
    NotifyOn.RESOLVED,
)


class AfterAck(StrEnum):
    """What notifies once someone acknowledged the incident (until it reopens)."""

    RESOLVE_ONLY = "resolve_only"  # only resolved (and acknowledged itself, if notify_on lists it)
    ALL = "all"  # everything notify_on lists


NOTIFY_NAMESPACES = frozenset({"incident", "event", "labels"})
"""The template namespaces a notification has (workflow, step and command are the agent's)."""

_NAME_HELP = "1-200 characters, no control characters"
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HTTP_URL = re.compile(r"https?://(?:([^/?#@\s]*)@)?[^/?#@\s]+(?:[/?#]\S*)?")
_ANY_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:([^/?#@\s]*)@)?\S*")
_ADDRESS = re.compile(r"[^\s@<>,;\"]+@[^\s@<>,;\"]+")
_SMARTHOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})")


# --------------------------------------------------------------------------------------------------
# Field types


def _name(value: str) -> str:
    if not 1 <= len(value) <= 200 or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"invalid name {value!r}: {_NAME_HELP}")
    return value


Name = Annotated[str, AfterValidator(_name)]


def _env_name(value: str) -> str:
    if not _ENV.fullmatch(value):
        raise ValueError(f"{value!r} is not an environment variable name (letters, digits and '_')")
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]


def _path(value: str) -> str:
    if not value.strip() or "\n" in value or "\x00" in value:
        raise ValueError(f"expected a file path; got {describe(value)}")
    return value


FilePath = Annotated[str, AfterValidator(_path)]


def _template_problem(text: str) -> str | None:
    try:
        template = parse_template(text)
    except TemplateError as exc:
        return str(exc)
    for field in template.fields:
        namespace = re.split(r"[.\[]", field, maxsplit=1)[0]
        if namespace not in NOTIFY_NAMESPACES:
            return (
                f"{field}: a notification has no {namespace!r}; use fields of "
                f"{', '.join(sorted(NOTIFY_NAMESPACES))} (docs/notifications.md, Templates)"
            )
    return None


def _template(value: str) -> str:
    problem = _template_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


TemplateText = Annotated[str, AfterValidator(_template)]
"""A string in the workflow template language, limited to the notification namespaces."""


def _refuse_inline_secret(key: str) -> Any:
    def refuse(value: Any) -> Any:
        raise ValueError(
            f"secrets are not written into the notifier file (it is kept in git and shown in logs); "
            f"use {key}_file (a path the notifier reads) or {key}_env (an environment variable)"
        )

    return BeforeValidator(refuse)


def _refuse_grouping(key: str) -> Any:
    def refuse(value: Any) -> Any:
        raise ValueError(
            f"{key}: incidents are grouped by the correlator (the rules file's group_by and "
            "group_wait), so routes have no grouping of their own; remove this key"
        )

    return BeforeValidator(refuse)


def _refuse_old_matcher(key: str) -> Any:
    def refuse(value: Any) -> Any:
        raise ValueError(
            f"{key} is Alertmanager's deprecated form; write matchers: ['name=\"value\"'] "
            '(name=~"regex" for match_re); notify_amconvert translates it'
        )

    return BeforeValidator(refuse)


_M = TypeVar("_M", bound=BaseModel)

_HIDDEN = frozenset({"routing_key", "auth_password", "group_by", "group_wait", "match", "match_re"})
"""Fields that exist only to refuse a key with a hint; not offered in 'allowed keys'."""


def _no_password_in(url: str) -> None:
    m = _ANY_URL.match(url)
    if m is not None and m.group(1) and ":" in m.group(1):
        raise ValueError(
            "a password inside the URL (user:password@) is an inline secret; put the URL in a file "
            "(url_file, urls_file) or an environment variable (url_env, urls_env)"
        )


# --------------------------------------------------------------------------------------------------
# Receivers


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where the stage finds a value: a file, an environment variable, or the file itself (URLs only).

    ``repr`` never shows an inline value: a URL may carry a token.
    """

    source: Literal["file", "env", "inline"]
    value: str

    def __repr__(self) -> str:
        shown = _mask_url(self.value) if self.source == "inline" else self.value
        return f"SecretRef({self.source}: {shown})"

    __str__ = __repr__


def _mask_url(url: str) -> str:
    """``https://hooks.example.com/***``: an http(s) host is no secret, its path may be; any
    other scheme may keep its token where the host would be (``tgram://TOKEN/chat``)."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)", url)
    if m is None:
        return "***"
    if m.group(1).lower() not in ("http", "https"):
        return f"{m.group(1)}://***"
    host = m.group(2).rsplit("@", 1)[-1]
    return f"{m.group(1)}://{host}{'/***' if url[m.end() :].strip('/') else ''}"


def _ref(inline: str | None, file: str | None, env: str | None) -> SecretRef:
    if file is not None:
        return SecretRef("file", file)
    if env is not None:
        return SecretRef("env", env)
    assert inline is not None  # validation requires one of the three
    return SecretRef("inline", inline)


def _http_url(value: str) -> str:
    if not _HTTP_URL.fullmatch(value):
        raise ValueError(f"expected an http:// or https:// URL; got {describe(value)}")
    _no_password_in(value)
    return value


def _apprise_url(value: str) -> str:
    if not _ANY_URL.fullmatch(value):
        raise ValueError(f"expected an Apprise URL like ntfy://host/topic; got {describe(value)}")
    _no_password_in(value)
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
AppriseUrl = Annotated[str, AfterValidator(_apprise_url)]


def _smarthost(value: str) -> str:
    m = _SMARTHOST.fullmatch(value)
    if m is None or not 1 <= int(m.group(2)) <= 65535:
        raise ValueError(f"expected host:port (port 1-65535); got {describe(value)}")
    return value


def _cross_checked(
    value: Any,
    handler: Callable[[Any], _M],
    check: Callable[[dict[Any, Any], ErrorCollector], None],
    title: str,
) -> _M:
    """pydantic's own errors of a mapping and the checks across its keys, reported together."""
    errors = ErrorCollector()
    _ok, model = errors.run(handler, value)
    if isinstance(value, dict):
        check(value, errors)
    errors.raise_if_any(title)
    assert model is not None
    return model


def _one_source(
    raw: dict[Any, Any], errors: ErrorCollector, keys: tuple[str, ...], required: bool = True
) -> None:
    """Exactly one (or, not required, at most one) of ``keys`` is given."""
    given = [k for k in keys if raw.get(k) is not None]
    if len(given) > 1:
        errors.add((given[1],), f"give only one of {', '.join(given)}")
    elif required and not given:
        errors.add((), f"missing {' or '.join(keys)}")


class WebhookConfig(_Model):
    """POST of the Alertmanager webhook v4 payload (the stage builds it)."""

    url: HttpUrl | None = Field(
        default=None, repr=False, description="http(s) URL; inline is allowed, masked when shown"
    )
    url_file: FilePath | None = Field(default=None, description="File holding the URL (it carries a token)")
    url_env: EnvName | None = Field(default=None, description="Environment variable holding the URL")
    max_alerts: int = Field(default=0, ge=0, description="Alerts per payload, 0 for all")
    send_resolved: bool = True

    @model_validator(mode="wrap")
    @classmethod
    def _sources(cls, value: Any, handler: ModelWrapValidatorHandler[WebhookConfig]) -> WebhookConfig:
        def check(raw: dict[Any, Any], errors: ErrorCollector) -> None:
            _one_source(raw, errors, ("url", "url_file", "url_env"))

        return _cross_checked(value, handler, check, cls.__name__)

    @property
    def url_ref(self) -> SecretRef:
        return _ref(self.url, self.url_file, self.url_env)


PagerDutySeverity = Literal["critical", "error", "warning", "info"]


class PagerDutyConfig(_Model):
    """PagerDuty Events v2 with ``dedup_key`` = incident id (trigger, acknowledge, resolve)."""

    routing_key: Annotated[Any, _refuse_inline_secret("routing_key")] = None
    routing_key_file: FilePath | None = Field(default=None, description="File holding the routing key")
    routing_key_env: EnvName | None = Field(default=None, description="Variable holding the routing key")
    url: HttpUrl = Field(
        default="https://events.pagerduty.com/v2/enqueue", description="Events API v2 endpoint"
    )
    severity: dict[Severity, PagerDutySeverity] = Field(
        default_factory=dict, description="stormwatch severity -> PagerDuty severity (unlisted: the same)"
    )
    summary: TemplateText = Field(default="{{ incident.title }}", description="payload.summary")
    source: TemplateText = Field(default="stormwatch", description="payload.source")
    send_resolved: bool = True

    @model_validator(mode="wrap")
    @classmethod
    def _sources(cls, value: Any, handler: ModelWrapValidatorHandler[PagerDutyConfig]) -> PagerDutyConfig:
        def check(raw: dict[Any, Any], errors: ErrorCollector) -> None:
            if raw.get("routing_key") is None:  # an inline key has its own message
                _one_source(raw, errors, ("routing_key_file", "routing_key_env"))

        return _cross_checked(value, handler, check, cls.__name__)

    @property
    def routing_key_ref(self) -> SecretRef:
        return _ref(None, self.routing_key_file, self.routing_key_env)

    def pagerduty_severity(self, severity: Severity) -> str:
        return self.severity.get(severity, severity.value)


DEFAULT_SUBJECT = "[{{ incident.severity | upper }}] {{ incident.title }} ({{ event.type }})"
DEFAULT_TEXT = """{{ incident.title }}

Incident:  {{ incident.id }}
State:     {{ incident.state }}
Severity:  {{ incident.severity }}
Alerts:    {{ incident.firing_count }} firing of {{ incident.alert_count }}
Group:     {{ incident.group_key }}
Rule:      {{ incident.rule }}
Opened:    {{ incident.opened_at }}
Assignee:  {{ incident.assignee | default("nobody") }}

{{ event.type }} at {{ event.at }} by {{ event.actor }}: {{ event.cause }}
"""
DEFAULT_BODY = (
    "{{ incident.state }}: {{ incident.firing_count }} of {{ incident.alert_count }} alerts firing "
    "({{ incident.group_key }}). {{ event.type }}: {{ event.cause }} [{{ incident.id }}]"
)


def _address_list(value: Any) -> Any:
    """``to`` as a list, or Alertmanager's comma-separated text."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _address(value: str) -> str:
    if "\r" in value or "\n" in value or not _ADDRESS.search(value):
        raise ValueError(f"expected an email address like ops@example.com; got {describe(value)}")
    return value


Address = Annotated[str, AfterValidator(_address)]


class EmailConfig(_Model):
    """Email over SMTP (STARTTLS unless ``require_tls: false``), plain text and optional HTML."""

    to: Annotated[list[Address], BeforeValidator(_address_list)] = Field(
        min_length=1, description="Recipients; a list, or comma-separated text"
    )
    from_: Address = Field(alias="from", description="Sender, e.g. 'stormwatch <alerts@example.com>'")
    smarthost: Annotated[str, AfterValidator(_smarthost)] = Field(description="SMTP server as host:port")
    auth_username: str | None = None
    auth_password: Annotated[Any, _refuse_inline_secret("auth_password")] = None
    auth_password_file: FilePath | None = None
    auth_password_env: EnvName | None = None
    require_tls: bool = Field(default=True, description="Refuse to send without STARTTLS")
    subject: TemplateText = DEFAULT_SUBJECT
    text: TemplateText = DEFAULT_TEXT
    html: TemplateText | None = Field(default=None, description="HTML part; values are HTML-escaped")
    send_resolved: bool = True

    @model_validator(mode="wrap")
    @classmethod
    def _password(cls, value: Any, handler: ModelWrapValidatorHandler[EmailConfig]) -> EmailConfig:
        def check(raw: dict[Any, Any], errors: ErrorCollector) -> None:
            _one_source(raw, errors, ("auth_password_file", "auth_password_env"), required=False)
            has_password = any(raw.get(k) is not None for k in ("auth_password_file", "auth_password_env"))
            if has_password and not raw.get("auth_username"):
                errors.add((), "a password (auth_password_file or auth_password_env) needs auth_username")

        return _cross_checked(value, handler, check, cls.__name__)

    @property
    def password_ref(self) -> SecretRef | None:
        if self.auth_password_file is None and self.auth_password_env is None:
            return None
        return _ref(None, self.auth_password_file, self.auth_password_env)


class AppriseConfig(_Model):
    """Chat and push services through Apprise URLs (Slack, Teams, Matrix, ntfy, Telegram ...)."""

    urls: list[AppriseUrl] | None = Field(
        default=None, min_length=1, repr=False, description="Apprise URLs; inline is allowed, masked"
    )
    urls_file: FilePath | None = Field(default=None, description="File with one URL per line")
    urls_env: EnvName | None = Field(default=None, description="Variable with URLs, separated by spaces")
    title: TemplateText = DEFAULT_SUBJECT
    body: TemplateText = DEFAULT_BODY
    send_resolved: bool = True

    @model_validator(mode="wrap")
    @classmethod
    def _sources(cls, value: Any, handler: ModelWrapValidatorHandler[AppriseConfig]) -> AppriseConfig:
        def check(raw: dict[Any, Any], errors: ErrorCollector) -> None:
            _one_source(raw, errors, ("urls", "urls_file", "urls_env"))

        return _cross_checked(value, handler, check, cls.__name__)

    @property
    def url_refs(self) -> tuple[SecretRef, ...]:
        if self.urls is not None:
            return tuple(SecretRef("inline", u) for u in self.urls)
        return (_ref(None, self.urls_file, self.urls_env),)


class Retry(_Model):
    """Exponential backoff with jitter, per receiver; ``budget`` bounds the time spent retrying."""

    initial_ms: Duration = Field(default=1_000, alias="initial", gt=0, description="First delay")
    max_ms: Duration = Field(default=300_000, alias="max", gt=0, description="Longest delay")
    budget_ms: Duration = Field(
        default=3_600_000, alias="budget", gt=0, description="Give up (dead letter) after this long"
    )

    @model_validator(mode="after")
    def _order(self) -> Retry:
        errors = ErrorCollector()
        if self.max_ms < self.initial_ms:
            errors.add(("max",), f"is shorter than initial ({format_duration(self.initial_ms)})")
        if self.budget_ms < self.initial_ms:
            errors.add(("budget",), f"is shorter than initial ({format_duration(self.initial_ms)})")
        errors.raise_if_any("retry")
        return self

    def delay_ms(self, retry: int, jitter: float) -> int:
        """Delay before retry ``retry`` (1-based): ``initial * 2**(retry-1)`` capped at ``max``,
        of which the upper half is scaled by ``jitter`` in [0, 1) (the stage's random draw), so
        receivers that came back are not hit by every notifier at once."""
        doublings: int = min(max(retry - 1, 0), 62)
        base = min(self.max_ms, self.initial_ms << doublings)
        return base // 2 + int((base - base // 2) * min(max(jitter, 0.0), 1.0))

    def exhausted(self, first_attempt_ms: int, now_ms: int) -> bool:
        """Whether a notification first tried at ``first_attempt_ms`` has used its budget."""
        return now_ms - first_attempt_ms >= self.budget_ms


class RateLimitConfig(_Model):
    """A token bucket per receiver: ``per_second`` sustained, ``burst`` at once."""

    per_second: float = Field(gt=0, le=10_000, description="Messages per second, sustained")
    burst: int = Field(default=1, ge=1, le=10_000, description="Messages sent back to back")


class ReceiverModel(_Model):
    """A named receiver: every integration it lists gets each notification routed to it."""

    name: Name
    webhook_configs: list[WebhookConfig] = Field(default_factory=list)
    pagerduty_configs: list[PagerDutyConfig] = Field(default_factory=list)
    email_configs: list[EmailConfig] = Field(default_factory=list)
    apprise_configs: list[AppriseConfig] = Field(default_factory=list)
    retry: Retry = Field(default_factory=Retry)
    rate_limit: RateLimitConfig | None = Field(default=None, description="Unset: no limit")


# --------------------------------------------------------------------------------------------------
# Routes


class RouteModel(_Model):
    """A node of the route tree (Alertmanager's ``route``); unset settings come from the parent."""

    receiver: Name | None = Field(default=None, description="Required on the root; else inherited")
    matchers: list[MatcherItem] = Field(
        default_factory=list, description="On group labels, severity, rule, state, root_cause"
    )
    continue_: bool = Field(default=False, alias="continue", description="Go on to the next siblings")
    group_interval_ms: Duration | None = Field(
        default=None, alias="group_interval", ge=0, description="At most one message per this, per incident"
    )
    repeat_interval_ms: Duration | None = Field(
        default=None,
        alias="repeat_interval",
        ge=0,
        description="Re-send while open and unacknowledged; 0: never",
    )
    mute_time_intervals: list[Name] = Field(default_factory=list, description="Not inherited (Alertmanager)")
    active_time_intervals: list[Name] = Field(
        default_factory=list, description="Not inherited (Alertmanager)"
    )
    notify_on: list[NotifyOn] | None = Field(default=None, min_length=1, description="Overrides the parent's")
    after_ack: AfterAck | None = Field(default=None, description="Overrides the parent's")
    routes: list[RouteModel] = Field(default_factory=list)
    group_by: Annotated[Any, _refuse_grouping("group_by")] = None
    group_wait: Annotated[Any, _refuse_grouping("group_wait")] = None
    match: Annotated[Any, _refuse_old_matcher("match")] = None
    match_re: Annotated[Any, _refuse_old_matcher("match_re")] = None


class NotifierFile(_Model):
    """The whole notifier file."""

    version: Literal[1] = 1
    notify_on: list[NotifyOn] = Field(
        default_factory=lambda: list(DEFAULT_NOTIFY_ON), min_length=1, description="The root's notify_on"
    )
    after_ack: AfterAck = Field(default=AfterAck.RESOLVE_ONLY, description="The root's after_ack")
    route: RouteModel
    receivers: list[ReceiverModel] = Field(min_length=1)
    time_intervals: list[NamedTimeIntervalModel] = Field(default_factory=list)
    link_wait_ms: Duration | None = Field(
        default=None,
        alias="link_wait",
        ge=0,
        description="Hold an incident's first message this long after it opened, so the linker can "
        "make it a member first; unset: the topology's link.delay + 5s with a topology, else 0",
    )


# --------------------------------------------------------------------------------------------------
# Compiled form (what routing and the policy run on)


@dataclass(frozen=True, slots=True)
class RouteNode:
    """A route with every inherited setting applied; ``path`` is where it is in the file."""

    path: str
    receiver: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    group_interval_ms: int
    repeat_interval_ms: int
    mute_time_intervals: tuple[str, ...]
    active_time_intervals: tuple[str, ...]
    notify_on: frozenset[NotifyOn]
    after_ack: AfterAck
    routes: tuple[RouteNode, ...] = ()


@dataclass(frozen=True, slots=True)
class Receiver:
    name: str
    webhook: tuple[WebhookConfig, ...]
    pagerduty: tuple[PagerDutyConfig, ...]
    email: tuple[EmailConfig, ...]
    apprise: tuple[AppriseConfig, ...]
    retry: Retry
    rate_limit: RateLimitConfig | None

    @property
    def integrations(self) -> int:
        """How many integrations the receiver has; 0 is a receiver that drops what it gets."""
        return len(self.webhook) + len(self.pagerduty) + len(self.email) + len(self.apprise)


@dataclass(frozen=True, slots=True)
class NotifierConfig:
    source: str
    route: RouteNode
    receivers: Mapping[str, Receiver]
    time_intervals: Mapping[str, TimeIntervalSet]
    link_wait_ms: int | None = None  # None: the stage decides from the topology (notify_policy)


def _compile_route(model: RouteModel, parent: RouteNode | None, path: str, file: NotifierFile) -> RouteNode:
    receiver = model.receiver or (parent.receiver if parent else "")
    node = RouteNode(
        path=path,
        receiver=receiver,
        matchers=tuple(model.matchers),
        continue_=model.continue_,
        group_interval_ms=_inherit(
            model.group_interval_ms, parent, "group_interval_ms", DEFAULT_GROUP_INTERVAL_MS
        ),
        repeat_interval_ms=_inherit(
            model.repeat_interval_ms, parent, "repeat_interval_ms", DEFAULT_REPEAT_INTERVAL_MS
        ),
        mute_time_intervals=tuple(model.mute_time_intervals),
        active_time_intervals=tuple(model.active_time_intervals),
        notify_on=frozenset(model.notify_on)
        if model.notify_on is not None
        else (parent.notify_on if parent else frozenset(file.notify_on)),
        after_ack=model.after_ack or (parent.after_ack if parent else file.after_ack),
    )
    children = tuple(
        _compile_route(child, node, f"{path}.routes[{i}]", file) for i, child in enumerate(model.routes)
    )
    return replace(node, routes=children)


def _inherit(value: int | None, parent: RouteNode | None, name: str, default: int) -> int:
    if value is not None:
        return value
    return int(getattr(parent, name)) if parent is not None else default


def _compile(model: NotifierFile, source: str) -> NotifierConfig:
    receivers = {
        r.name: Receiver(
            name=r.name,
            webhook=tuple(r.webhook_configs),
            pagerduty=tuple(r.pagerduty_configs),
            email=tuple(r.email_configs),
            apprise=tuple(r.apprise_configs),
            retry=r.retry,
            rate_limit=r.rate_limit,
        )
        for r in model.receivers
    }
    intervals = {
        t.name: TimeIntervalSet(t.name, tuple(compile_time_interval(i) for i in t.time_intervals))
        for t in model.time_intervals
    }
    return NotifierConfig(
        source=source,
        route=_compile_route(model.route, None, "route", model),
        receivers=receivers,
        time_intervals=intervals,
        link_wait_ms=model.link_wait_ms,
    )


# --------------------------------------------------------------------------------------------------
# Rendering (the stage renders; the rules live here, next to the templates they apply to)


def notification_context(event: IncidentEvent) -> Context:
    """The template values of one incident event: its incident, the event, the group labels."""
    s = event.snapshot
    return {
        "incident": {
            "id": event.incident_id,
            "title": s.title,
            "severity": s.severity.value,
            "state": s.state.value,
            "group_key": s.group_key,
            "rule": s.rule,
            "alert_count": str(s.alert_count),
            "firing_count": str(s.firing_count),
            "opened_at": rfc3339(s.opened_at),
            "acknowledged_at": rfc3339(s.acknowledged_at),
            "assignee": s.assignee,
            "reopen_count": str(s.reopen_count),
            # linking (issue #12): a primary's members and root cause; a member's primary
            "members": ", ".join(s.members) if s.members else None,
            "member_count": str(len(s.members)),
            "root_cause": s.root_cause.component if s.root_cause else None,
            "linked_into": s.linked_into,
        },
        "event": {
            "type": event.type.value,
            "seq": str(event.seq),
            "at": rfc3339(event.at),
            "actor": event.actor,
            "cause": event.cause,
        },
        "labels": dict(s.group_labels),
    }


@lru_cache(maxsize=1024)
def _parsed(text: str) -> Template:
    return parse_template(text)


def render_text(template: str, context: Context) -> str:
    """A plain-text body: values inserted as they are (the text is never interpreted)."""
    return _parsed(template).render(context)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def render_header(template: str, context: Context) -> str:
    """A one-line value (subject, title, summary): control characters, line breaks included,
    become one space, so a label value cannot add a mail header or a second line."""
    return _CONTROL.sub(" ", _parsed(template).render(context)).strip()


def render_html(template: str, context: Context) -> str:
    """An HTML body: every value is HTML-escaped before it is inserted (the template's own text
    and its ``default("...")`` literals are configuration, and stay as written)."""
    escaped = {
        ns: {k: (html.escape(v, quote=True) if v is not None else None) for k, v in fields.items()}
        for ns, fields in context.items()
    }
    return _parsed(template).render(escaped)


# --------------------------------------------------------------------------------------------------
# Checks across the file (on the raw document, so they run even when parts of it are invalid)


def _semantic_problems(data: Any) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        return problems
    receivers: dict[str, int] = {}
    raw_receivers = data.get("receivers")
    for i, r in enumerate(raw_receivers if isinstance(raw_receivers, list) else []):
        name = r.get("name") if isinstance(r, dict) else None
        if isinstance(name, str):
            if name in receivers:
                problems.append(
                    (
                        ("receivers", i, "name"),
                        f"receiver {name!r} is already defined at receivers[{receivers[name]}]",
                    )
                )
            receivers.setdefault(name, i)
    intervals: dict[str, int] = {}
    raw_intervals = data.get("time_intervals")
    for i, t in enumerate(raw_intervals if isinstance(raw_intervals, list) else []):
        name = t.get("name") if isinstance(t, dict) else None
        if isinstance(name, str):
            if name in intervals:
                problems.append(
                    (
                        ("time_intervals", i, "name"),
                        f"time interval {name!r} is already defined at time_intervals[{intervals[name]}]",
                    )
                )
            intervals.setdefault(name, i)
    root = data.get("route")
    if isinstance(root, dict):
        problems.extend(_root_problems(root))
        problems.extend(_route_problems(root, ("route",), set(receivers), set(intervals)))
    return problems


def _root_problems(root: dict[Any, Any]) -> list[tuple[Loc, str]]:
    """Alertmanager's rules for the root: it catches everything, always, with a receiver."""
    problems: list[tuple[Loc, str]] = []
    if not root.get("receiver"):
        problems.append((("route",), "the root route needs a receiver (every incident reaches it)"))
    if root.get("matchers"):
        problems.append((("route", "matchers"), "the root route matches every incident; it has no matchers"))
    if root.get("continue"):
        problems.append((("route", "continue"), "the root route has no siblings to continue to"))
    for key in ("mute_time_intervals", "active_time_intervals"):
        if root.get(key):
            problems.append(
                (
                    ("route", key),
                    f"the root route cannot have {key} (as in Alertmanager); put them on a child route",
                )
            )
    return problems


def _route_problems(
    route: dict[Any, Any], loc: Loc, receivers: set[str], intervals: set[str]
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    receiver = route.get("receiver")
    if isinstance(receiver, str) and receivers and receiver not in receivers:
        problems.append(
            ((*loc, "receiver"), f"unknown receiver {receiver!r}; defined: {', '.join(sorted(receivers))}")
        )
    for key in ("mute_time_intervals", "active_time_intervals"):
        names = route.get(key)
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in intervals:
                known = ", ".join(sorted(intervals)) or "none (add a time_intervals entry)"
                problems.append(((*loc, key, j), f"unknown time interval {name!r}; defined: {known}"))
    children = route.get("routes")
    for i, child in enumerate(children if isinstance(children, list) else []):
        if isinstance(child, dict):
            problems.extend(_route_problems(child, (*loc, "routes", i), receivers, intervals))
    return problems


# --------------------------------------------------------------------------------------------------
# Loading

_DURATION_FIELDS = frozenset(
    {"group_interval_ms", "repeat_interval_ms", "initial_ms", "max_ms", "budget_ms", "link_wait_ms"}
)


def _explain(error: ErrorDetails, place: Place) -> str | None:
    """Bounds of durations read as durations: ``must be greater than 0s; got 0s``."""
    bound = bound_of(error)
    value = error.get("input")
    if bound is None or place.field not in _DURATION_FIELDS or not isinstance(value, int):
        return None
    _constraint, words, limit = bound
    shown = format_duration(int(limit)) if isinstance(limit, int) else limit
    return f"must be {words} {shown}; got {format_duration(value)}"


def _key_of(model: type[BaseModel], name: str) -> str | None:
    return None if name in _HIDDEN else alias_or_name(model, name)


NOTIFIER_FILE = ConfigFormat(
    NotifierFile, NotifierConfigError, "notifier file", key_of=_key_of, explain=_explain
)
"""How the notifier file is parsed and explained; reading it from disk is the stage's job."""


def parse_notifier_config(text: str, source: str = "<notifier>") -> NotifierConfig:
    """Parse and check notifier YAML text; ``source`` names it in error messages. Every problem
    of the file is in the one ``NotifierConfigError``, in line order."""
    doc = NOTIFIER_FILE.parse(text, source)
    if not isinstance(doc.data, dict):
        keys = ", ".join(NOTIFIER_FILE.keys(NotifierFile))
        raise NotifierConfigError(
            source, [("", f"expected a mapping with keys: {keys}; got {describe(doc.data)}", 1)]
        )
    semantic = NOTIFIER_FILE.problems(doc, _semantic_problems(doc.data))
    try:
        model = NOTIFIER_FILE.validate(doc)
    except NotifierConfigError as exc:
        merged = sorted([*exc.problems, *semantic], key=lambda p: p[2] or 0)
        raise NotifierConfigError(source, merged) from None
    if semantic:
        raise NotifierConfigError(source, semantic)
    return _compile(model, source)
