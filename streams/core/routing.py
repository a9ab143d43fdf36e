"""Routing, the hot path: the rule that owns an alert and the alert's group key.

``Router`` turns the rules (stormwatch.streams.core.rules) into a per-alert decision, cached so a
re-sent alert costs one dict lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from stormwatch.schemas.fingerprint import group_hash
from stormwatch.schemas.matchers import Matcher
from stormwatch.streams.core.rules import (
    DEFAULT_RULE,
    LABEL_NAME,
    CorrelationRule,
    InhibitRule,
    RulesConfig,
    apply_defaults,
)

__all__ = ["Route", "Router", "format_group_key"]


@dataclass(frozen=True, slots=True)
class Route:
    """Where an alert belongs. Routes are cached and shared: treat ``group_labels`` as read-only."""

    rule: CorrelationRule
    group_key: str
    group_labels: dict[str, str]
    gkhash: str


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


@lru_cache(maxsize=8192)
def _label_name(name: str) -> str:
    # Classic names as-is; anything else quoted (as Prometheus 3 does for UTF-8 names), so no label
    # name or value can fake a separator and make two different groups share one key.
    return name if LABEL_NAME.fullmatch(name) else f'"{_escape(name)}"'


def format_group_key(rule_name: str, group_labels: dict[str, str]) -> str:
    """``rule:{a="x",b="y"}`` with sorted names and Prometheus escaping (\\\\, \\", \\n)."""
    return _group_key(rule_name, sorted(group_labels.items()))


def _group_key(rule_name: str, sorted_pairs: list[tuple[str, str]]) -> str:
    body = ",".join([f'{_label_name(k)}="{_escape(v)}"' for k, v in sorted_pairs])
    return f"{rule_name}:{{{body}}}"


@dataclass(frozen=True, slots=True)
class _CompiledRule:
    rule: CorrelationRule
    matchers: tuple[Matcher, ...]
    all_labels: bool
    group_by: tuple[str, ...]
    exclude: frozenset[str]


class Router:
    """Routes alerts to (rule, group key). Not thread-safe: one per processing loop.

    Results are cached in a bounded LRU by the alert fingerprint when given, else by the label set.
    The cache must never change a result (routing has to be deterministic across restarts), so only
    pass a fingerprint that is a function of the labels: ``label_fingerprint`` is, but a
    ``key_fingerprint`` (PagerDuty dedup_key, native key) is not; pass None for those.
    """

    __slots__ = ("_cache", "_cache_size", "_compiled", "_inhibitions", "_routes", "cache_misses", "config")

    def __init__(self, config: RulesConfig, *, cache_size: int = 65_536) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size}")
        self.config = config
        rules = list(config.rules)
        if not rules or rules[-1].match:  # only possible with model_construct(); validation appends it
            rules.append(apply_defaults(DEFAULT_RULE, config.defaults))
        self._compiled = tuple(
            _CompiledRule(
                rule=r,
                matchers=tuple(r.match),
                all_labels=r.groups_all_labels,
                group_by=tuple(sorted(r.group_by)),
                exclude=frozenset(r.group_by_exclude),
            )
            for r in rules
        )
        self._inhibitions = tuple(config.inhibit_rules)
        self._cache: OrderedDict[str | frozenset[tuple[str, str]], Route] = OrderedDict()
        self._cache_size = cache_size
        # One Route per group key, shared by the cache entries of the group's alerts: a cached alert
        # then costs its key and an entry, not a Route, a labels dict and two strings of its own.
        # Fewer long-lived objects per alert also means fewer for a burst to scatter over the new
        # memory arenas it needs, where they pin them (docs/performance.md, "Memory after faults").
        self._routes: dict[str, Route] = {}
        self.cache_misses = 0

    @property
    def inhibitions(self) -> tuple[InhibitRule, ...]:
        return self._inhibitions

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._routes.clear()

    def route(self, labels: dict[str, str], fingerprint: str | None = None) -> Route:
        key: str | frozenset[tuple[str, str]] = (
            fingerprint if fingerprint is not None else frozenset(labels.items())
        )
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        self.cache_misses += 1
        result = self._route_uncached(labels)
        cache[key] = result
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return result

    def _route_uncached(self, labels: dict[str, str]) -> Route:
        for compiled in self._compiled:
            if all(m.matches(labels) for m in compiled.matchers):
                break
        else:  # pragma: no cover - the last rule always matches everything (see __init__)
            raise AssertionError("no catch-all rule")
        # An empty value is the same as a missing label (as for matchers and in Prometheus).
        if compiled.all_labels:
            exclude = compiled.exclude
            pairs = sorted([(k, v) for k, v in labels.items() if v and k not in exclude])
        else:  # group_by is pre-sorted
            pairs = [(k, v) for k in compiled.group_by if (v := labels.get(k))]
        group_key = _group_key(compiled.rule.name, pairs)
        route = self._routes.get(group_key)
        if route is None:
            if len(self._routes) >= self._cache_size:
                self._routes.clear()  # the cache keeps the routes it still uses alive
            route = self._routes[group_key] = Route(
                compiled.rule, group_key, dict(pairs), group_hash(group_key)
            )
        return route
