"""``webhook``: an HTTP(S) POST of a JSON body, only to URLs on the configured allowlist.

The URL usually contains templated parts (a label value in the path). The agent renders them as
percent-encoded path segments (``Template.render_url``), and the executor checks the whole
rendered URL, structurally, because a forged command skips the agent: scheme, host and port must
equal an entry's; the path must be inside the entry's path on a segment boundary, with no dot
segments and no encoded ``.``, ``/`` or ``\\``; no credentials, no fragment, no backslash,
whitespace or control characters anywhere. A plain string-prefix check would let
``https://hooks.example.com.evil.net/`` or ``https://hooks.example.com@evil.net/`` through.
A query is allowed (the workflow's author wrote it; values in it are encoded).
Redirects are not followed (a redirect could leave the allowlist).

Header names must be HTTP tokens and values must not contain CR, LF or other control characters
(a tab excepted): ``http.client`` sends ``"ok\\n X-Folded: yes"`` as an obsolete folded line,
which some servers and proxies read as a second header.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from typing import Any, ClassVar
from urllib.parse import SplitResult, urlsplit

import orjson

from stormwatch.agents.core.templating import TemplateError, is_template, parse_template, url_template_problem
from stormwatch.agents.executors.base import (
    ExecutorPolicy,
    Outcome,
    ParamProblems,
    clip,
    refused,
    unknown_keys,
)
from stormwatch.schemas.commands import MitigationCommand

__all__ = ["UrlAllowlist", "WebhookExecutor", "check_allowlist_entry", "header_problem"]

_KEYS = ("url", "body", "headers")
_FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_RESPONSE_LIMIT = 4096
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_ENCODED_SEPARATORS = ("%2e", "%2f", "%5c")


def header_problem(name: object, value: object) -> tuple[str, str] | None:
    """(path, message) when a header cannot be sent as it is; None when it can.

    Any CR, LF or other control character (a tab excepted) in a value is refused: it could
    end the header, fold it (obs-fold) into one the receiver reads as a second header, or
    truncate it.
    """
    path = f"headers.{name}"
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        return path, (
            f"invalid header name {name!r}: letters, digits and !#$%&'*+-.^_`|~ only (no spaces or ':')"
        )
    if name.lower() in _FORBIDDEN_HEADERS:
        return path, f"header {name!r} is set by the executor"
    if not isinstance(value, str):
        return path, "header values must be strings"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return path, (
            "header values must not contain CR, LF or other control characters (a tab is allowed): "
            "they could fold or inject header lines"
        )
    return None


def _parts(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path) of an http(s) URL; raises ValueError with the reason."""
    split: SplitResult = urlsplit(url)
    scheme = split.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"only http and https URLs are allowed, got {url!r}")
    if split.username is not None or split.password is not None or "@" in split.netloc:
        raise ValueError("URLs with credentials (user@host) are not allowed; send them in headers")
    host = (split.hostname or "").lower()
    if not host:
        raise ValueError(f"URL {url!r} has no host")
    try:
        port = split.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError(f"URL {url!r} has an invalid port") from exc
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("URL contains whitespace or control characters")
    if "\\" in url:
        raise ValueError("URL contains a backslash")
    if "#" in url:
        raise ValueError(f"URL has a fragment ({url[url.index('#') :]!r}); a webhook URL cannot have one")
    return scheme, host, port, split.path or "/"


def check_allowlist_entry(entry: str) -> str:
    """Validate one allowlist entry (an http(s) URL prefix); returns it, or raises ValueError."""
    _parts(entry)
    if urlsplit(entry).query or urlsplit(entry).fragment:
        raise ValueError(f"allowlist entry {entry!r} must not have a query or fragment")
    return entry


class UrlAllowlist:
    def __init__(self, entries: tuple[str, ...]) -> None:
        self.entries = [_parts(check_allowlist_entry(e)) for e in entries]
        self.raw = entries

    def allows(self, url: str) -> tuple[bool, str]:
        try:
            scheme, host, port, path = _parts(url)
        except ValueError as exc:
            return False, str(exc)
        if not self.entries:
            return False, "no webhook URL is allowed (set agent.allow_urls or pass --allow-url)"
        segments = [s for s in path.split("/") if s]
        if any(s in (".", "..") or any(e in s.lower() for e in _ENCODED_SEPARATORS) for s in segments):
            return False, f"URL path {path!r} contains dot segments, or an encoded '.', '/' or '\\'"
        for e_scheme, e_host, e_port, e_path in self.entries:
            if (scheme, host, port) != (e_scheme, e_host, e_port):
                continue
            base = e_path.rstrip("/")
            if path in (e_path, base) or path.startswith(base + "/"):
                return True, ""
        return False, f"URL {url!r} is not on the allowlist ({', '.join(self.raw)})"


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx response


class WebhookExecutor:
    name: ClassVar[str] = "webhook"
    side_effects: ClassVar[bool] = True
    url_params: ClassVar[tuple[str, ...]] = ("url",)

    def __init__(self, policy: ExecutorPolicy) -> None:
        self.policy = policy
        self.allowlist = UrlAllowlist(policy.allow_urls)
        self._opener = urllib.request.build_opener(_NoRedirects())

    @staticmethod
    def check_params(params: dict[str, Any]) -> ParamProblems:
        problems = unknown_keys(params, _KEYS)
        url = params.get("url")
        if url is None:
            problems.append(("", "missing parameter 'url' (where to POST)"))
        elif not isinstance(url, str):
            problems.append(("url", "must be a string"))
        elif is_template(url):
            try:
                problem = url_template_problem(parse_template(url))
            except TemplateError:
                problem = None  # reported with the other template mistakes
            if problem is not None:
                problems.append(("url", problem))
        else:
            try:
                _parts(url)
            except ValueError as exc:
                problems.append(("url", str(exc)))
        headers = params.get("headers", {})
        if not isinstance(headers, dict):
            problems.append(("headers", "must be a mapping of header name to value"))
        else:
            # Checked as written here, and again once rendered (execute): a label may bring a CR.
            for k, v in headers.items():
                found = header_problem(k, v)
                if found is not None:
                    problems.append(found)
        return problems

    def execute(self, command: MitigationCommand, *, timeout_s: float, dry_run: bool) -> Outcome:
        params = command.params
        problems = self.check_params(params)
        if problems:
            path, message = problems[0]
            return refused(f"invalid parameters: {path + ': ' if path else ''}{message}")
        url = str(params["url"])
        ok, why = self.allowlist.allows(url)
        if not ok:
            return refused(why)
        body = orjson.dumps(params.get("body", {}))
        if dry_run:
            return Outcome(ok=True, output=f"would POST {len(body)} bytes to {url}")
        request = urllib.request.Request(url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("User-Agent", "stormwatch-executor")
        request.add_header("X-Stormwatch-Command-Id", command.command_id)
        request.add_header("X-Stormwatch-Incident-Id", command.incident_id)
        for k, v in dict(params.get("headers", {})).items():
            request.add_header(str(k), str(v))
        try:
            with self._opener.open(request, timeout=timeout_s) as response:
                text = response.read(_RESPONSE_LIMIT).decode("utf-8", "replace")
                return Outcome(ok=True, output=clip(f"HTTP {response.status}: {text}"))
        except urllib.error.HTTPError as exc:
            text = exc.read(_RESPONSE_LIMIT).decode("utf-8", "replace") if exc.fp is not None else ""
            if 300 <= exc.code < 400:
                return refused(f"HTTP {exc.code} redirect to {exc.headers.get('Location')!r} not followed")
            # 4xx other than 408/429 will not get better by retrying; 5xx, 408 and 429 may.
            retryable = exc.code >= 500 or exc.code in (408, 429)
            return Outcome(
                ok=False, output=clip(text), reason=f"HTTP {exc.code} {exc.reason}", retryable=retryable
            )
        except TimeoutError:
            return Outcome(ok=False, reason=f"no response within {timeout_s:g}s")
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                return Outcome(ok=False, reason=f"no response within {timeout_s:g}s")
            return Outcome(ok=False, reason=f"request failed: {reason}")
        except OSError as exc:
            return Outcome(ok=False, reason=f"request failed: {exc}")
