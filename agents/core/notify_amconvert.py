"""An Alertmanager configuration as a notifier file: the route tree, receivers and time intervals.

``from_alertmanager(text)`` returns the notifier file as a mapping (``to_yaml()`` writes it with
the warnings on top) and a warning for everything that does not carry over, so nothing is lost
silently:

- ``group_by``/``group_wait`` are the correlator's (its rules file groups alerts into
  incidents); routes keep ``group_interval`` and ``repeat_interval``, which pace notifications;
- matchers are kept, but they now see the incident: its group labels plus ``severity``,
  ``rule``, ``state`` and ``root_cause``. Severity values are mapped onto the four normalized
  levels (``page`` becomes ``critical``), and the labels used are listed so the correlation
  rules' ``group_by`` can be checked for them;
- Go templates cannot run here (the template language is deliberately tiny, because label values
  are untrusted): a templated subject or body becomes the stormwatch default, with the original
  in the warning;
- secrets written inline are never copied into the output: the output names an environment
  variable to set instead (``*_env``); ``*_file`` references carry over;
- Slack, Discord, Microsoft Teams, Telegram, Opsgenie and Pushover become ``apprise_configs``;
  other integrations are listed as not converted;
- ``inhibit_rules`` belong in the correlator's rules file, ``templates`` have no equivalent.

Pure text to data: nothing is read or written, so ``stormwatch`` can wrap it in a command later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from stormwatch.agents.core.notify_config import DEFAULT_NOTIFY_ON, AfterAck
from stormwatch.agents.core.notify_routing import RESERVED_LABELS
from stormwatch.agents.core.timeintervals import TimeIntervalModel
from stormwatch.schemas.common import Severity
from stormwatch.schemas.durations import parse_duration
from stormwatch.schemas.matchers import Matcher, MatchOp
from stormwatch.schemas.severity import normalize_severity

__all__ = ["AlertmanagerConversion", "AlertmanagerConversionError", "from_alertmanager"]


class AlertmanagerConversionError(ValueError):
    """The text is not an Alertmanager configuration this can read (not YAML, no route)."""


@dataclass(frozen=True, slots=True)
class AlertmanagerConversion:
    """The notifier file (``config``) and what did not translate (``warnings``, in file order)."""

    config: dict[str, Any]
    warnings: tuple[str, ...]

    def to_yaml(self) -> str:
        """The notifier file as YAML, the warnings as comments above it."""
        lines = ["# Converted from an Alertmanager configuration (docs/notifications.md, Converting)."]
        if self.warnings:
            lines.append("# Review these before use:")
            for warning in self.warnings:
                first, *rest = warning.splitlines()
                lines.append(f"#  - {first}")
                lines.extend(f"#    {line}" for line in rest)
        body = yaml.safe_dump(self.config, sort_keys=False, allow_unicode=True, width=100)
        return "\n".join(lines) + "\n" + body


_NOT_CONVERTED = (
    "victorops_configs",
    "wechat_configs",
    "sns_configs",
    "webex_configs",
    "jira_configs",
    "rocketchat_configs",
    "incidentio_configs",
)
_APPRISE_KINDS = (
    "slack_configs",
    "discord_configs",
    "msteams_configs",
    "msteamsv2_configs",
    "telegram_configs",
    "opsgenie_configs",
    "pushover_configs",
)
_TEMPLATE_HINT = "rewrite it in stormwatch's template syntax (docs/notifications.md, Templates)"
_WORD = re.compile(r"[A-Za-z0-9_-]+")


def _short(text: str, limit: int = 120) -> str:
    one = " ".join(text.split())
    return repr(one if len(one) <= limit else one[: limit - 3] + "...")


def _is_template(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


def _env_var(receiver: str, kind: str, index: int, what: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", receiver).strip("_").upper() or "RECEIVER"
    return f"STORMWATCH_{slug}_{kind.upper()}_{index}_{what.upper()}"


@dataclass(slots=True)
class _Converter:
    data: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    matcher_labels: set[str] = field(default_factory=set)
    grouping: dict[str, list[str]] = field(default_factory=dict)

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}" if path else message)

    @property
    def globals(self) -> dict[str, Any]:
        g = self.data.get("global")
        return g if isinstance(g, dict) else {}

    # ------------------------------------------------------------------ the whole file

    def convert(self) -> dict[str, Any]:
        route = self.data.get("route")
        if not isinstance(route, dict):
            raise AlertmanagerConversionError("the Alertmanager configuration has no route: mapping")
        self._globals()
        out: dict[str, Any] = {
            "version": 1,
            "notify_on": [n.value for n in DEFAULT_NOTIFY_ON],
            "after_ack": AfterAck.RESOLVE_ONLY.value,
            "route": self._route(route, "route"),
            "receivers": self._receivers(),
        }
        intervals = self._time_intervals()
        if intervals:
            out["time_intervals"] = intervals
        self._summaries()
        return out

    def _globals(self) -> None:
        ignored = sorted(
            k
            for k in self.globals
            if k
            not in {
                "smtp_from",
                "smtp_smarthost",
                "smtp_auth_username",
                "smtp_auth_password",
                "smtp_auth_password_file",
                "smtp_require_tls",
                "pagerduty_url",
                "slack_api_url",
                "slack_api_url_file",
                "opsgenie_api_key",
                "opsgenie_api_key_file",
                "resolve_timeout",
            }
        )
        if "resolve_timeout" in self.globals:
            self.warn(
                "global.resolve_timeout",
                "not converted: when an alert counts as resolved is the correlator's decision (rules file, "
                "resolve_timeout)",
            )
        if ignored:
            self.warn("global", f"not converted: {', '.join(ignored)}")

    def _summaries(self) -> None:
        for key, what in (
            (
                "inhibit_rules",
                "inhibit rule(s) not converted: inhibition is done by the correlator (rules file "
                "inhibit_rules, docs/correlation-rules.md, Inhibition)",
            ),
            (
                "templates",
                "template file pattern(s) not converted: Go templates cannot run in stormwatch; "
                "the notifier's templates are written in the receivers (docs/notifications.md, Templates)",
            ),
        ):
            items = self.data.get(key)
            if isinstance(items, list) and items:
                self.warn(key, f"{len(items)} {what}")
        if self.grouping:
            listed = "; ".join(f"{by} at {', '.join(paths)}" for by, paths in self.grouping.items())
            self.warn(
                "route",
                "group_by and group_wait are not converted: the correlator groups alerts into incidents "
                f"(rules file, group_by and group_wait); the Alertmanager grouping was: {listed}",
            )
        plain = sorted(self.matcher_labels - set(RESERVED_LABELS))
        if plain:
            self.warn(
                "route",
                f"matchers use the labels {', '.join(plain)}: routes see an incident's group labels only, so "
                "make sure the correlation rules group by them (rules file, group_by)",
            )
        reserved = sorted(self.matcher_labels & {"rule", "state", "root_cause"})
        if reserved:
            self.warn(
                "route",
                f"matchers use {', '.join(reserved)}, which in stormwatch name the incident's own fields "
                "(the correlation rule, the incident state, the root cause), not alert labels",
            )

    # ------------------------------------------------------------------ routes

    def _route(self, route: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if isinstance(route.get("receiver"), str):
            out["receiver"] = route["receiver"]
        matchers = self._matchers(route, path)
        if matchers:
            out["matchers"] = matchers
        if route.get("continue"):
            out["continue"] = True
        for key in ("group_interval", "repeat_interval"):
            value = route.get(key)
            if value is None:
                continue
            try:
                parse_duration(value)
            except ValueError as exc:
                self.warn(f"{path}.{key}", f"kept as written, but it is not a duration here: {exc}")
            out[key] = value
        for key in ("mute_time_intervals", "active_time_intervals"):
            if route.get(key):
                out[key] = list(route[key])
        grouping = [k for k in ("group_by", "group_wait") if k in route]
        if grouping:
            by = route.get("group_by")
            labels = ", ".join(map(str, by)) if isinstance(by, list) else str(by)
            shown = f"group_by [{labels}]" if by is not None else "group_wait only"
            self.grouping.setdefault(shown, []).append(path)
        known = {
            "receiver",
            "matchers",
            "match",
            "match_re",
            "continue",
            "group_interval",
            "repeat_interval",
            "mute_time_intervals",
            "active_time_intervals",
            "group_by",
            "group_wait",
            "routes",
        }
        for key in sorted(set(route) - known):
            self.warn(f"{path}.{key}", "not converted (no equivalent)")
        children = route.get("routes")
        if isinstance(children, list) and children:
            out["routes"] = [
                self._route(child, f"{path}.routes[{i}]")
                for i, child in enumerate(children)
                if isinstance(child, dict)
            ]
        return out

    def _matchers(self, route: dict[str, Any], path: str) -> list[str]:
        texts: list[tuple[str, str]] = []
        for name, value in (route.get("match") or {}).items():
            texts.append(
                (f"{path}.match.{name}", str(Matcher(name=str(name), op=MatchOp.EQ, value=str(value))))
            )
        for name, value in (route.get("match_re") or {}).items():
            texts.append(
                (f"{path}.match_re.{name}", str(Matcher(name=str(name), op=MatchOp.RE, value=str(value))))
            )
        if route.get("match") or route.get("match_re"):
            self.warn(path, "match/match_re (deprecated in Alertmanager) became matchers")
        for i, text in enumerate(route.get("matchers") or []):
            texts.append((f"{path}.matchers[{i}]", str(text)))
        out: list[str] = []
        for where, text in texts:
            try:
                matcher = Matcher.parse(text)
            except (ValueError, ValidationError) as exc:
                self.warn(where, f"kept as written, but it does not parse here ({exc}); fix it before use")
                out.append(text)
                continue
            self.matcher_labels.add(matcher.name)
            if matcher.name == "severity":
                matcher = self._severity(matcher, where)
            out.append(str(matcher))
        return out

    def _severity(self, matcher: Matcher, where: str) -> Matcher:
        """Severity values onto the four levels the incident has (``page`` is ``critical``)."""
        levels = {s.value for s in Severity}
        if matcher.op in (MatchOp.EQ, MatchOp.NE):
            if matcher.value in levels or not matcher.value:
                return matcher
            mapped = normalize_severity(matcher.value).value
            self.warn(
                where,
                f"severity {matcher.value!r} is {mapped!r} in stormwatch's levels (docs/contracts.md, Severity)",
            )
            return Matcher(name="severity", op=matcher.op, value=mapped)
        words = matcher.value.split("|")
        if all(_WORD.fullmatch(w) for w in words):
            mapped_words = list(dict.fromkeys(normalize_severity(w).value for w in words))
            value = "|".join(mapped_words)
            if value != matcher.value:
                self.warn(
                    where, f"severity values {matcher.value!r} became {value!r} (the four normalized levels)"
                )
            return Matcher(name="severity", op=matcher.op, value=value)
        self.warn(
            where,
            f"severity regex {matcher.value!r} is matched against critical, error, warning and info only; check it",
        )
        return matcher

    # ------------------------------------------------------------------ receivers

    def _receivers(self) -> list[dict[str, Any]]:
        out = []
        receivers = self.data.get("receivers")
        for i, receiver in enumerate(receivers if isinstance(receivers, list) else []):
            if not isinstance(receiver, dict) or not isinstance(receiver.get("name"), str):
                self.warn(f"receivers[{i}]", "skipped: a receiver needs a name")
                continue
            out.append(self._receiver(receiver, f"receivers[{i}] ({receiver['name']})"))
        return out

    def _receiver(self, receiver: dict[str, Any], path: str) -> dict[str, Any]:
        name = receiver["name"]
        out: dict[str, Any] = {"name": name}
        webhooks = [
            self._webhook(c, f"{path}.webhook_configs[{i}]")
            for i, c in enumerate(_configs(receiver, "webhook_configs"))
        ]
        pagerduty = [
            p
            for i, c in enumerate(_configs(receiver, "pagerduty_configs"))
            if (p := self._pagerduty(c, name, i, f"{path}.pagerduty_configs[{i}]")) is not None
        ]
        email = [
            self._email(c, name, i, f"{path}.email_configs[{i}]")
            for i, c in enumerate(_configs(receiver, "email_configs"))
        ]
        apprise: list[dict[str, Any]] = []
        for kind in _APPRISE_KINDS:
            for i, c in enumerate(_configs(receiver, kind)):
                apprise.append(self._apprise(kind, c, name, i, f"{path}.{kind}[{i}]"))
        for kind, entries in (
            ("webhook_configs", webhooks),
            ("pagerduty_configs", pagerduty),
            ("email_configs", email),
            ("apprise_configs", apprise),
        ):
            if entries:
                out[kind] = entries
        for key in sorted(
            set(receiver) - {"name", "webhook_configs", "pagerduty_configs", "email_configs", *_APPRISE_KINDS}
        ):
            what = (
                "no stormwatch receiver for it yet; Apprise may speak it (apprise_configs)"
                if key in _NOT_CONVERTED
                else "not converted"
            )
            self.warn(f"{path}.{key}", what)
        return out

    def _common(
        self, config: dict[str, Any], path: str, handled: set[str], send_resolved_default: bool
    ) -> dict[str, Any]:
        """send_resolved written out (Alertmanager's defaults differ by integration); the rest listed."""
        rest = sorted(set(config) - handled - {"send_resolved"})
        if rest:
            self.warn(path, f"not converted: {', '.join(rest)}")
        value = config.get("send_resolved", send_resolved_default)
        return {"send_resolved": bool(value)}

    def _webhook(self, config: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if config.get("url_file"):
            out["url_file"] = config["url_file"]
        elif config.get("url"):
            out["url"] = config["url"]
        else:
            self.warn(path, "has no url; add url or url_file")
        if config.get("max_alerts"):
            out["max_alerts"] = config["max_alerts"]
        out.update(self._common(config, path, {"url", "url_file", "max_alerts"}, True))
        return out

    def _secret(
        self,
        config: dict[str, Any],
        key: str,
        out_key: str,
        receiver: str,
        kind: str,
        index: int,
        path: str,
        fallback: tuple[Any, Any] = (None, None),
    ) -> dict[str, str] | None:
        """``key_file`` carries over; an inline ``key`` becomes ``out_key_env`` (the value is not copied)."""
        file = config.get(f"{key}_file") or fallback[1]
        inline = config.get(key) or fallback[0]
        if file:
            return {f"{out_key}_file": str(file)}
        if inline:
            env = _env_var(receiver, kind, index, out_key)
            self.warn(
                f"{path}.{key}",
                f"secret written inline: not copied; set the environment variable {env} to it "
                f"(or write {out_key}_file)",
            )
            return {f"{out_key}_env": env}
        return None

    def _pagerduty(
        self, config: dict[str, Any], receiver: str, index: int, path: str
    ) -> dict[str, Any] | None:
        if config.get("service_key") or config.get("service_key_file"):
            self.warn(
                path,
                "service_key is PagerDuty's Events API v1, which stormwatch does not speak; "
                "create an Events API v2 integration and use its routing key. Not converted",
            )
            return None
        out: dict[str, Any] = {}
        secret = self._secret(config, "routing_key", "routing_key", receiver, "pagerduty", index, path)
        if secret is None:
            self.warn(path, "has no routing_key; add routing_key_file or routing_key_env")
        else:
            out.update(secret)
        url = config.get("url") or self.globals.get("pagerduty_url")
        if url:
            out["url"] = url
        severity = config.get("severity")
        if isinstance(severity, str) and not _is_template(severity):
            fixed = normalize_severity(severity).value
            out["severity"] = {s.value: fixed for s in Severity}
        elif severity is not None:
            self.warn(
                f"{path}.severity",
                f"Go template {_short(str(severity))} not converted; the incident's "
                "severity is sent (map it with severity: {critical: ..., ...})",
            )
        for key, target in (("description", "summary"), ("source", "source")):
            value = config.get(key)
            if value is None:
                continue
            if _is_template(value):
                self.warn(
                    f"{path}.{key}", f"Go template {_short(value)} replaced by the default; {_TEMPLATE_HINT}"
                )
            else:
                out[target] = value
        handled = {"routing_key", "routing_key_file", "url", "severity", "description", "source"}
        out.update(self._common(config, path, handled, True))
        return out

    def _email(self, config: dict[str, Any], receiver: str, index: int, path: str) -> dict[str, Any]:
        g = self.globals
        out: dict[str, Any] = {}
        to = config.get("to")
        if _is_template(to):
            self.warn(f"{path}.to", f"Go template {_short(str(to))}; write the addresses; kept as written")
        if to:
            out["to"] = to
        else:
            self.warn(path, "has no to; add the recipients")
        for key, global_key in (("from", "smtp_from"), ("smarthost", "smtp_smarthost")):
            value = config.get(key) or g.get(global_key)
            if value:
                out[key] = value
            else:
                self.warn(path, f"has no {key} (nor global.{global_key}); add it")
        username = config.get("auth_username") or g.get("smtp_auth_username")
        if username:
            out["auth_username"] = username
        secret = self._secret(
            config,
            "auth_password",
            "auth_password",
            receiver,
            "email",
            index,
            path,
            fallback=(g.get("smtp_auth_password"), g.get("smtp_auth_password_file")),
        )
        if secret is not None:
            out.update(secret)
        require_tls = config.get("require_tls", g.get("smtp_require_tls", True))
        out["require_tls"] = bool(require_tls)
        raw_headers = config.get("headers")
        headers: dict[Any, Any] = raw_headers if isinstance(raw_headers, dict) else {}
        subject = next((v for k, v in headers.items() if str(k).lower() == "subject"), None)
        self._text(out, "subject", subject, f"{path}.headers.Subject")
        other = sorted(k for k in headers if str(k).lower() not in ("subject", "to", "from"))
        if other:
            self.warn(f"{path}.headers", f"not converted: {', '.join(other)}")
        self._text(out, "text", config.get("text"), f"{path}.text")
        html = config.get("html")
        if html is not None and _is_template(html):
            self.warn(
                f"{path}.html",
                f"Go template {_short(html)} not converted: the email has a text part only "
                f"until you write html; {_TEMPLATE_HINT}",
            )
        elif html:
            out["html"] = html
        handled = {
            "to",
            "from",
            "smarthost",
            "auth_username",
            "auth_password",
            "auth_password_file",
            "require_tls",
            "headers",
            "text",
            "html",
        }
        out.update(self._common(config, path, handled, False))
        return out

    def _text(self, out: dict[str, Any], key: str, value: Any, path: str) -> None:
        """A literal text carries over; a Go template leaves the stormwatch default in place."""
        if value is None:
            return
        if _is_template(value):
            self.warn(
                path, f"Go template {_short(str(value))} replaced by the stormwatch default; {_TEMPLATE_HINT}"
            )
        else:
            out[key] = str(value)

    def _apprise(
        self, kind: str, config: dict[str, Any], receiver: str, index: int, path: str
    ) -> dict[str, Any]:
        service = kind.removesuffix("_configs")
        g = self.globals
        out: dict[str, Any] = {}
        handled: set[str] = set()
        source: dict[str, Any] | None = None
        shape = ""
        if service == "slack":
            handled = {"api_url", "api_url_file", "channel"}
            fallback = (g.get("slack_api_url"), g.get("slack_api_url_file"))
            source = self._url_source(config, "api_url", receiver, service, index, path, fallback)
            if config.get("channel"):
                self.warn(
                    f"{path}.channel",
                    "an incoming webhook posts to its own channel; to choose one, use Apprise's "
                    "slack://TokenA/TokenB/TokenC/#channel form",
                )
        elif service in ("discord", "msteams", "msteamsv2"):
            handled = {"webhook_url", "webhook_url_file"}
            source = self._url_source(config, "webhook_url", receiver, service, index, path)
        elif service == "telegram":
            handled = {"bot_token", "bot_token_file", "chat_id"}
            shape = f"tgram://BOT_TOKEN/{config.get('chat_id', 'CHAT_ID')}"
        elif service == "opsgenie":
            handled, shape = {"api_key", "api_key_file"}, "opsgenie://API_KEY"
        else:  # pushover
            handled, shape = {"user_key", "user_key_file", "token", "token_file"}, "pover://USER_KEY@TOKEN"
        if shape:
            env = _env_var(receiver, service, index, "urls")
            out["urls_env"] = env
            self.warn(
                path,
                f"{service} became an Apprise URL: set the environment variable {env} to {shape} "
                "(credentials are not copied)",
            )
        elif source is None:
            self.warn(path, "has no URL; add urls, urls_file or urls_env")
        else:
            out.update(source)
        title_key, body_key = {
            "slack": ("title", "text"),
            "discord": ("title", "message"),
            "msteams": ("title", "text"),
            "msteamsv2": ("title", "text"),
            "telegram": ("", "message"),
            "opsgenie": ("message", "description"),
            "pushover": ("title", "message"),
        }[service]
        for ours, theirs in (("title", title_key), ("body", body_key)):
            if theirs:
                handled.add(theirs)
                self._text(out, ours, config.get(theirs), f"{path}.{theirs}")
        # Alertmanager's own defaults: Slack does not send resolved notifications, the others do.
        out.update(self._common(config, path, handled, service != "slack"))
        return out

    def _url_source(
        self,
        config: dict[str, Any],
        key: str,
        receiver: str,
        service: str,
        index: int,
        path: str,
        fallback: tuple[Any, Any] = (None, None),
    ) -> dict[str, Any] | None:
        """A webhook URL Apprise reads as it is: its file carries over, an inline one becomes an
        environment variable (webhook URLs carry their token)."""
        file = config.get(f"{key}_file") or fallback[1]
        if file:
            return {"urls_file": str(file)}
        if config.get(key) or fallback[0]:
            env = _env_var(receiver, service, index, "urls")
            self.warn(
                f"{path}.{key}",
                f"webhook URL (it carries a token) not copied; set the environment "
                f"variable {env} to it (Apprise accepts {service} webhook URLs as they are)",
            )
            return {"urls_env": env}
        return None

    # ------------------------------------------------------------------ time intervals

    def _time_intervals(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for key in ("time_intervals", "mute_time_intervals"):
            entries = self.data.get(key)
            if not isinstance(entries, list):
                continue
            if key == "mute_time_intervals" and entries:
                self.warn(key, "(deprecated in Alertmanager) merged into time_intervals")
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                    self.warn(f"{key}[{i}]", "skipped: needs a name")
                    continue
                intervals = [
                    self._interval(t, f"{key}[{i}].time_intervals[{j}]")
                    for j, t in enumerate(entry.get("time_intervals") or [])
                    if isinstance(t, dict)
                ]
                out.append({"name": entry["name"], "time_intervals": intervals})
        return out

    def _interval(self, interval: dict[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("times", "weekdays", "days_of_month", "months", "years"):
            if interval.get(key) is not None:
                out[key] = interval[key]
        location = interval.get("location", interval.get("time_zone"))
        if location == "Local":
            self.warn(
                f"{path}.location", "'Local' is the Alertmanager host's zone; write its IANA name (UTC used)"
            )
        elif location is not None:
            out["location"] = location
        for key in sorted(
            set(interval) - {"times", "weekdays", "days_of_month", "months", "years", "location", "time_zone"}
        ):
            self.warn(f"{path}.{key}", "not converted (unknown key)")
        try:
            TimeIntervalModel.model_validate(out)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            self.warn(path, f"kept as written, but it does not load here: {problems}")
        return out


def _configs(receiver: dict[str, Any], key: str) -> list[dict[str, Any]]:
    items = receiver.get(key)
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def from_alertmanager(text: str) -> AlertmanagerConversion:
    """The notifier file for the Alertmanager configuration ``text``, and what did not translate."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise AlertmanagerConversionError(f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise AlertmanagerConversionError("an Alertmanager configuration is a YAML mapping")
    converter = _Converter(data)
    config = converter.convert()
    return AlertmanagerConversion(config, tuple(converter.warnings))
