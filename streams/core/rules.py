"""Correlation rules: which alerts belong together, for how long, and what suppresses what.

The configuration is pure data (pydantic models loaded from YAML, see docs/correlation-rules.md);
``stormwatch.streams.core.routing`` turns it into the per-alert decision the pipeline needs on its
hot path: the rule that owns an alert and the alert's *group key*.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from stormwatch.schemas.durations import DURATION_HELP, format_duration, parse_duration
from stormwatch.schemas.matchers import Matcher, all_match
from stormwatch.schemas.yamlerrors import (
    ConfigFileError,
    ConfigFormat,
    ErrorCollector,
    Loc,
    Place,
    describe,
    matcher_from_yaml,
    validate_with_checks,
)

__all__ = [
    "ALL_LABELS",
    "BUILTIN_RULES",
    "DEFAULT_RULE",
    "LABEL_NAME",
    "PER_REPLICA_LABELS",
    "PLACEMENT_LABELS",
    "RULES_FILE",
    "WORKLOAD_RULE",
    "CorrelationRule",
    "FlapPolicy",
    "InhibitRule",
    "LatePolicy",
    "RuleDefaults",
    "RulesConfig",
    "RulesError",
    "apply_defaults",
    "parse_rules",
]

ALL_LABELS = "..."
"""``group_by: ["..."]`` groups by every label of the alert (minus ``group_by_exclude``)."""

PER_REPLICA_LABELS: tuple[str, ...] = (
    "instance",
    "pod",
    "pod_name",
    "pod_ip",
    "container",
    "container_id",
    "container_name",
    "replica",
    "prometheus_replica",
    "endpoint",
    "host_ip",
    "uid",
    "id",
    "dedup_key",
)
"""Labels that tell replicas of one thing apart; the default rule leaves them out of the group key
so the same failure on 40 pods is one incident, not 40."""

PLACEMENT_LABELS: tuple[str, ...] = ("node", "kubernetes_node", "nodename", "host", "hostname")
"""Labels that say where a replica runs. For an alert about a pod they are placement, not identity:
the built-in ``workload`` rule leaves them out too, so a bad deploy over 10 nodes is one incident.
For an alert about the node itself (no ``pod`` label) they are its identity and stay in the key."""

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RULE_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
_NAME_HELP = "names may only contain letters, digits, '_', '.' and '-'"

_MINUTE = 60_000
_HOUR = 60 * _MINUTE


class RulesError(ConfigFileError):
    """The rules file cannot be used; the message names the file, the place in it and the fix.

    ``problems`` holds one ``(path, message, line)`` per problem (``line`` is 1-based or None).
    """


class LatePolicy(StrEnum):
    """What happens to an alert whose event time is older than the watermark minus the allowed lateness.

    APPLY keeps the promise "nothing lost": the alert is applied at the current watermark (not at its
    own, already-closed, time), marked ``late`` in the audit log and counted. DEAD_LETTER is for
    deployments that would rather inspect late input than let it change incidents after the fact.
    """

    APPLY = "apply"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class _Human:
    """A value given under a human key (``group_wait: 30s``): parsed as a duration, plain numbers
    being seconds. Values given under the field name (``group_wait_ms``) are milliseconds."""

    raw: object


@dataclass(frozen=True, slots=True)
class _Both:
    """A duration given under both spellings: the field's own check reports it, so the other fields
    of the block are still checked in the same pass."""

    human: str


def _to_ms(value: Any, positive: bool) -> int:
    """A duration field's value in milliseconds (``_Human``: written under the human key)."""
    if isinstance(value, _Human):
        raw = value.raw
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError(f"got {describe(raw)}; {DURATION_HELP}")
        ms = parse_duration(raw)
    elif isinstance(value, int) and not isinstance(value, bool):
        ms = value
    elif isinstance(value, str):
        ms = parse_duration(value)
    else:
        raise ValueError(f"got {describe(value)}; {DURATION_HELP}")
    if ms < 0:
        raise ValueError(f"must not be negative, got {ms} ms")
    if positive and ms == 0:
        raise ValueError(f"must be longer than 0s; {DURATION_HELP}")
    return ms


class _Config(BaseModel):
    """Base of the rule models: unknown keys are errors, and duration fields have two spellings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # field name -> (YAML key, must be > 0)
    _DURATIONS: ClassVar[dict[str, tuple[str, bool]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _mark_human_durations(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not cls._DURATIONS:
            return data
        out = dict(data)
        for field, (human, _positive) in cls._DURATIONS.items():
            if human in out:
                raw = out.pop(human)
                out[field] = _Both(human) if field in out else _Human(raw)
        return out

    @field_validator("*", mode="before")
    @classmethod
    def _parse_durations(cls, value: Any, info: ValidationInfo) -> Any:
        spec = cls._DURATIONS.get(info.field_name or "")
        if spec is None:
            return value
        if isinstance(value, _Both):
            name = info.field_name
            raise ValueError(f"give {value.human} (a duration) or {name} (milliseconds), not both")
        return _to_ms(value, spec[1])

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys this block accepts in YAML (durations under their human names), sorted."""
        keys = [cls._DURATIONS[f][0] if f in cls._DURATIONS else f for f in cls.model_fields]
        return sorted(keys)


def _duration(default_ms: int, description: str) -> Any:
    return Field(default=default_ms, description=description)


def _check_label_names(
    names: list[str], *, allow_all: bool, errors: ErrorCollector | None = None
) -> list[str]:
    """Every bad or repeated label of the list, each at its index (adds to ``errors`` if given)."""
    found = ErrorCollector() if errors is None else errors
    if allow_all and ALL_LABELS in names and len(names) > 1:
        found.add(
            (),
            f"'{ALL_LABELS}' (all labels) cannot be combined with other labels; "
            "use group_by_exclude to leave labels out",
            names,
        )
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            found.add((i,), f"label {name!r} is listed twice", name)
        elif not (allow_all and name == ALL_LABELS) and not LABEL_NAME.fullmatch(name):
            extra = f", or '{ALL_LABELS}' alone for all labels" if allow_all else ""
            found.add(
                (i,),
                f"{name!r} is not a label name (letters, digits and '_', not starting with a digit{extra})",
                name,
            )
        seen.add(name)
    found.raise_if_any("labels")
    return names


def _check_name(value: str) -> str:
    if not _RULE_NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: {_NAME_HELP}")
    return value


def _to_matcher(value: Any) -> Any:
    """Matchers are written as strings (``severity=~"critical|error"``) or {name, op, value} maps."""
    return matcher_from_yaml(
        value, "expected a matcher like 'severity=~\"critical|error\"' or a mapping with name, op and value,"
    )


MatcherItem = Annotated[Matcher, BeforeValidator(_to_matcher)]


class _Timings(_Config):
    """The timing options of a correlation rule (shared by rules and the ``defaults`` block)."""

    _DURATIONS: ClassVar[dict[str, tuple[str, bool]]] = {
        "group_wait_ms": ("group_wait", False),
        "group_interval_ms": ("group_interval", True),
        "max_lifetime_ms": ("max_lifetime", True),
        "reopen_window_ms": ("reopen_window", False),
        "resolve_timeout_ms": ("resolve_timeout", True),
        "close_after_ms": ("close_after", False),
    }

    group_wait_ms: int = _duration(30_000, "Collect alerts this long before opening an incident")
    group_interval_ms: int = _duration(5 * _MINUTE, "At most one coalesced update event per group this often")
    max_lifetime_ms: int = _duration(
        24 * _HOUR,
        "An incident older than this is closed (cause 'max lifetime'); later alerts open a new one",
    )
    reopen_window_ms: int = _duration(
        _HOUR, "A resolved incident whose group fires again within this long reopens; 0 never reopens"
    )
    resolve_timeout_ms: int = _duration(
        5 * _MINUTE, "A firing alert without endsAt that is not re-sent within this long counts as resolved"
    )
    close_after_ms: int = _duration(15 * _MINUTE, "Quiet period after resolution before the incident closes")


class RuleDefaults(_Timings):
    """The ``defaults:`` block: timing values for every rule that does not set them itself."""


class CorrelationRule(_Timings):
    """Which alerts a rule owns (``match``) and how they are grouped into incidents (``group_by``)."""

    name: str
    match: list[MatcherItem] = Field(default_factory=list, description="All must match; empty matches all")
    group_by: list[str] = Field(default_factory=lambda: [ALL_LABELS])
    group_by_exclude: list[str] = Field(default_factory=lambda: list(PER_REPLICA_LABELS))

    _check_rule_name = field_validator("name")(_check_name)

    @model_validator(mode="before")
    @classmethod
    def _no_exclude_without_all(cls, data: Any) -> Any:
        """The per-replica default for group_by_exclude only means something with "..."; a rule with
        explicit group_by gets [] instead, so its model_dump() validates back."""
        if isinstance(data, dict) and "group_by_exclude" not in data:
            group_by = data.get("group_by")
            if isinstance(group_by, list) and group_by != [ALL_LABELS]:
                return {**data, "group_by_exclude": []}
        return data

    @field_validator("group_by")
    @classmethod
    def _check_group_by(cls, value: list[str]) -> list[str]:
        return _check_label_names(value, allow_all=True)

    @field_validator("group_by_exclude")
    @classmethod
    def _check_exclude(cls, value: list[str], info: ValidationInfo) -> list[str]:
        # Runs only when the key is given (defaults are not validated), i.e. when the user set it.
        group_by = info.data.get("group_by", [ALL_LABELS])
        errors = ErrorCollector()
        if value and group_by != [ALL_LABELS]:
            errors.add(
                (),
                f"only applies with group_by: ['{ALL_LABELS}']; this rule groups by "
                f"{', '.join(group_by)}, so list just the labels you want there",
                value,
            )
        return _check_label_names(value, allow_all=False, errors=errors)

    @property
    def groups_all_labels(self) -> bool:
        return self.group_by == [ALL_LABELS]

    @property
    def close_delay_ms(self) -> int:
        """How long after resolution the incident closes: ``close_after``, but never before
        ``reopen_window`` has passed, because a closed incident cannot reopen."""
        return max(self.close_after_ms, self.reopen_window_ms)

    def matches(self, labels: dict[str, str]) -> bool:
        return all_match(self.match, labels)


class InhibitRule(_Config):
    """While an alert matching ``source_match`` fires, alerts matching ``target_match`` with the same
    values of the ``equal`` labels are inhibited (Alertmanager semantics)."""

    name: str
    source_match: list[MatcherItem] = Field(min_length=1)
    target_match: list[MatcherItem] = Field(min_length=1)
    equal: list[str] = Field(default_factory=list)

    _check_inhibit_name = field_validator("name")(_check_name)

    @field_validator("equal")
    @classmethod
    def _check_equal(cls, value: list[str]) -> list[str]:
        return _check_label_names(value, allow_all=False)

    def inhibits(self, source_labels: dict[str, str], target_labels: dict[str, str]) -> bool:
        """Whether a firing alert with ``source_labels`` inhibits one with ``target_labels``.

        Every ``equal`` label must be present, non-empty and the same on both alerts. Alertmanager
        counts a label missing on both sides as equal; then one source without the label (a
        PagerDuty ``NodeDown`` has no ``node``) mutes every target without it, a whole storm. As in
        Alertmanager, when both alerts match both sides (including an alert compared with itself),
        neither inhibits the other: otherwise two such alerts would silence each other and nobody
        would be told.
        """
        if not all_match(self.target_match, target_labels) or not all_match(self.source_match, source_labels):
            return False
        for name in self.equal:
            value = source_labels.get(name, "")
            if not value or value != target_labels.get(name, ""):
                return False
        two_sided = all_match(self.source_match, target_labels) and all_match(
            self.target_match, source_labels
        )
        return not two_sided


class FlapPolicy(_Config):
    """Flap detection: an alert that keeps changing between firing and resolved is held back."""

    _DURATIONS: ClassVar[dict[str, tuple[str, bool]]] = {
        "window_ms": ("window", True),
        "settle_ms": ("settle", True),
    }

    enabled: bool = True
    max_flips: int = Field(default=4, ge=1, description="Status changes tolerated within window")
    window_ms: int = _duration(10 * _MINUTE, "Flips are counted over this sliding window")
    settle_ms: int = _duration(10 * _MINUTE, "No flip for this long and the alert is no longer flapping")


DEFAULT_RULE = CorrelationRule(
    name="default",
    match=[],
    group_by=[ALL_LABELS],
    group_by_exclude=list(PER_REPLICA_LABELS),
)
"""Catch-all: groups alerts that differ only in per-replica labels (instance, pod, ...)."""

WORKLOAD_RULE = CorrelationRule(
    name="workload",
    match=[Matcher.parse('pod=~".+"')],
    group_by=[ALL_LABELS],
    group_by_exclude=[*PER_REPLICA_LABELS, *PLACEMENT_LABELS],
)
"""Alerts about a pod: grouped like the catch-all, and also without the node or host it runs on."""

BUILTIN_RULES: tuple[CorrelationRule, ...] = (WORKLOAD_RULE, DEFAULT_RULE)
"""The rules without a rules file. A rules file replaces them (and gets the catch-all appended)."""


def apply_defaults(rule: CorrelationRule, defaults: RuleDefaults) -> CorrelationRule:
    unset = {f: getattr(defaults, f) for f in _Timings._DURATIONS if f not in rule.model_fields_set}
    return rule.model_copy(update=unset) if unset else rule


class RulesConfig(_Config):
    """The whole rules file. Rules are tried in order; the first whose ``match`` matches wins."""

    _DURATIONS: ClassVar[dict[str, tuple[str, bool]]] = {
        "allowed_lateness_ms": ("allowed_lateness", False),
        "state_time_resolution_ms": ("state_time_resolution", True),
    }

    defaults: RuleDefaults = Field(default_factory=RuleDefaults)
    rules: list[CorrelationRule] = Field(default_factory=lambda: list(BUILTIN_RULES), validate_default=True)
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)
    flap: FlapPolicy = Field(default_factory=FlapPolicy)
    # 50 ms covers a producer's own latency (linger, acks=all) between stamping a record and the
    # broker having it, and it is part of every timer's delay: see docs/performance.md, "Latency".
    allowed_lateness_ms: int = _duration(50, "Alerts up to this much out of order are reordered exactly")
    late_policy: LatePolicy = LatePolicy.APPLY
    state_time_resolution_ms: int = _duration(
        10_000, "last_seen / ends_at are kept rounded up to this, so unchanged re-sends do not dirty state"
    )

    @field_validator("rules")
    @classmethod
    def _finish_rules(cls, rules: list[CorrelationRule], info: ValidationInfo) -> list[CorrelationRule]:
        """Defaults applied, and the built-in catch-all appended when the last rule has match
        conditions. The checks across rules are ``_check_across``'s."""
        defaults = info.data.get("defaults")
        if not isinstance(defaults, RuleDefaults):  # its own error is reported already
            defaults = RuleDefaults()
        if rules and rules[-1].match:
            rules = [*rules, DEFAULT_RULE]
        return [apply_defaults(rule, defaults) for rule in rules]

    @model_validator(mode="wrap")
    @classmethod
    def _check_across(cls, data: Any, handler: ModelWrapValidatorHandler[RulesConfig]) -> RulesConfig:
        """The checks across rules (unique names, catch-all last, the state time resolution) run on
        the input as given, so they are reported in the same pass as the mistakes inside single
        rules; as field validators pydantic would skip them while any rule is invalid."""
        return validate_with_checks(cls.__name__, handler, data, _problems_across)

    def get_rule(self, name: str) -> CorrelationRule | None:
        return next((r for r in self.rules if r.name == name), None)


# --------------------------------------------------------------------------------------------------
# Checks across rules, on the input as written (valid or not)


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the checks across rules need of one list item: its name and whether it has match
    conditions (None: not known, because the item is not even a mapping)."""

    index: int
    name: str | None
    has_match: bool | None

    @classmethod
    def of(cls, index: int, item: Any) -> _Entry:
        if isinstance(item, BaseModel):
            item = dict(item)
        if not isinstance(item, dict):
            return cls(index, None, None)
        name = item.get("name")
        return cls(index, name if isinstance(name, str) else None, bool(item.get("match")))

    def __str__(self) -> str:
        return f"rules[{self.index}] ({self.name!r})" if self.name is not None else f"rules[{self.index}]"


def _entries(items: Any) -> list[_Entry]:
    return [_Entry.of(i, item) for i, item in enumerate(items)] if isinstance(items, list) else []


def _duplicate_names(entries: list[_Entry], key: str, what: str, rest: str) -> Iterator[tuple[Loc, str]]:
    first: dict[str, int] = {}
    for entry in entries:
        if entry.name is None:
            continue
        if entry.name in first:
            yield (
                (key, entry.index, "name"),
                f"{what} {entry.name!r} is used by {key}[{first[entry.name]}] and {key}[{entry.index}]; {rest}",
            )
        else:
            first[entry.name] = entry.index


def _rule_list_problems(items: Any) -> Iterator[tuple[Loc, str]]:
    """Unique names, catch-all rules last, no rule named like the appended catch-all."""
    if not isinstance(items, list):
        return  # its own error
    if not items:
        yield ("rules",), "needs at least one rule (omit 'rules' to use the built-in default rule)"
        return
    entries = _entries(items)
    yield from _duplicate_names(entries, "rules", "rule name", "rule names must be unique")
    for entry, following in itertools.pairwise(entries):
        if entry.has_match is False:
            yield (
                ("rules", entry.index),
                f"{following} can never match: {entry} has no match conditions and takes every alert "
                "first; move catch-all rules to the end",
            )
    if entries[-1].has_match:
        for entry in entries:
            if entry.name == DEFAULT_RULE.name:
                yield (
                    ("rules", entry.index, "name"),
                    f"rules[{entry.index}] is named {DEFAULT_RULE.name!r}, the name of the built-in "
                    "catch-all rule that is appended because the last rule has match conditions; "
                    "rename it, or end the list with a rule without match",
                )


def _given_ms(data: dict[str, Any], model: type[_Config], field: str) -> int | None:
    """A top-level duration as given (or its default); None when it has an error of its own."""
    human, positive = model._DURATIONS[field]
    value = data.get(field, model.model_fields[field].default)
    if human in data:
        value = _Both(human) if field in data else _Human(data[human])
    if isinstance(value, _Both):
        return None
    try:
        return _to_ms(value, positive)
    except ValueError:
        return None


def _valid(model: type[_Config], value: Any) -> Any:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None  # its own error


def _resolution_problems(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    """The state time resolution against the resolve_timeout of every rule that is valid itself."""
    resolution = _given_ms(data, RulesConfig, "state_time_resolution_ms")
    if resolution is None:
        return
    defaults = _valid(RuleDefaults, data.get("defaults", {})) or RuleDefaults()
    items = data.get("rules", list(BUILTIN_RULES))
    if not isinstance(items, list):
        return
    rules = [rule for item in items if (rule := _valid(CorrelationRule, item)) is not None]
    if items and _Entry.of(len(items) - 1, items[-1]).has_match:
        rules.append(DEFAULT_RULE)
    for rule in rules:
        timeout = apply_defaults(rule, defaults).resolve_timeout_ms
        if resolution > timeout:
            yield (
                ("state_time_resolution_ms",),
                f"{format_duration(resolution)} is longer than the resolve_timeout "
                f"({format_duration(timeout)}) of rule {rule.name!r}: times are rounded "
                "up to this resolution, which would stretch the timeout; use a smaller value",
            )


def _problems_across(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    yield from _rule_list_problems(data.get("rules"))
    yield from _duplicate_names(
        _entries(data.get("inhibit_rules")), "inhibit_rules", "inhibit rule name", "names must be unique"
    )
    yield from _resolution_problems(data)


# --------------------------------------------------------------------------------------------------
# Loading


def _yaml_key(model: type[BaseModel], field: str) -> str | None:
    """Durations are written under their human names; a matcher's schema_version is not written."""
    if issubclass(model, _Config):
        return model._DURATIONS[field][0] if field in model._DURATIONS else field
    return None if field == "schema_version" else field


def _explain(error: ErrorDetails, place: Place) -> str | None:
    """An inhibition without matchers would inhibit everything: say so, not just "too short"."""
    if error["type"] == "too_short" and place.last in ("source_match", "target_match"):
        return "needs at least one matcher (without one, the inhibition would apply to every alert)"
    return None


# How the rules file is parsed and explained; stormwatch.loaders reads it from disk.
RULES_FILE = ConfigFormat(RulesConfig, RulesError, "rules file", key_of=_yaml_key, explain=_explain)


def parse_rules(text: str, source: str = "<rules>") -> RulesConfig:
    """Parse rules from YAML text; ``source`` names it in error messages."""
    return RULES_FILE.validate(RULES_FILE.parse(text, source))
