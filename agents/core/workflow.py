"""The workflow file: which incidents trigger which guarded, ordered mitigation steps.

The format is pydantic models loaded from YAML (docs/workflows.md; example:
deploy/incident_workflow_config.yaml). Loading checks everything a mistake could hide in, and
reports every problem as ``file:line: path.inside[0].file: what is wrong; what is allowed``:
unknown and duplicate keys, durations, matchers, template syntax, unknown actions and their
parameters (each executor checks its own), and the cross-references pydantic cannot see
(``on_failure: escalate`` without escalation steps, duplicate names ...).

``compile`` turns the validated file into ``WorkflowConfig``: plain frozen dataclasses with every
default applied, which is what the planner runs on.

Approvals fail closed: a step whose action has side effects (every action but ``log``, and any
plugin that does not say otherwise) waits for an operator unless the step is exempted explicitly,
with a reason. Label matchers can add the requirement back to an exempted step, never lift it:
the alert's sender chooses the labels (docs/security.md, "Approvals").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from stormwatch.agents.core.templating import Template, TemplateError, parse_template, template_problems
from stormwatch.schemas.common import Severity
from stormwatch.schemas.durations import DURATION_HELP, format_duration, parse_duration
from stormwatch.schemas.matchers import Matcher, all_match
from stormwatch.schemas.yamlerrors import (
    ConfigFileError,
    ConfigFormat,
    Place,
    alias_or_name,
    bound_of,
    describe,
    matcher_from_yaml,
)

__all__ = [
    "MAX_STEP_TIMEOUT_MS",
    "WORKFLOW_FILE",
    "ActionChecker",
    "Approval",
    "ApprovalPolicy",
    "Backoff",
    "BlastRadius",
    "Conditions",
    "Escalation",
    "Guards",
    "OnFailure",
    "RateLimit",
    "Step",
    "StepDefaults",
    "StepSpec",
    "TimeWindow",
    "Trigger",
    "TriggerEvent",
    "Workflow",
    "WorkflowConfig",
    "WorkflowError",
    "WorkflowFile",
    "WorkflowSpec",
    "parse_workflows",
    "render_workflow_schema",
    "workflow_json_schema",
]

MAX_STEP_TIMEOUT_MS = 10 * 60_000
"""An action may take at most this long: the executor does not poll Kafka while it runs."""

MAX_RETRIES = 10

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_NAME_HELP = "1-100 letters, digits, '_', '.' or '-', starting with a letter or digit"
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")


class WorkflowError(ConfigFileError):
    """The workflow file cannot be used; one line per problem: ``file:line: path: message``."""


class ActionChecker(Protocol):
    """What checking a workflow file needs of an action: its pure check of a step's parameters.

    The executor classes of ``stormwatch.agents.executors`` (and plugins) satisfy it with their
    static ``check_params``. The callers pass them in, as ``{action name: checker}``, because
    importing them here would pull process, HTTP and Kafka I/O into the pure core.

    Two optional class attributes are read too (``getattr``, so plugins may leave them out):
    ``side_effects`` (default True: the step needs approval unless exempted) and ``url_params``
    (top-level parameters rendered as URLs, each value one encoded path segment).
    """

    def check_params(self, params: dict[str, Any], /) -> list[tuple[str, str]]:
        """(path inside params, message) for each problem; ``[]`` when the params are valid."""
        ...


# --------------------------------------------------------------------------------------------------
# Field types


def _to_ms(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"got {describe(value)}; {DURATION_HELP}")
    return parse_duration(value)


_DURATION_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "pattern": r"^(?:[0-9]+(?:\.[0-9]+)?|(?:[0-9]+(?:y|w|d|h|m|s|ms))+)$"},
        {"type": "number", "minimum": 0},
    ],
    "examples": ["30s", "5m", "1h30m"],
}

Duration = Annotated[int, BeforeValidator(_to_ms), WithJsonSchema(_DURATION_SCHEMA)]
"""A Prometheus-style duration in the file (``30s``, ``1h``; a number is seconds); ms in code."""


def _to_matcher(value: Any) -> Any:
    return matcher_from_yaml(
        value, "expected a matcher like 'env=\"production\"' or a mapping with name, op and value;"
    )


_MATCHER_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "description": "Alertmanager syntax: name=value, name!=value, name=~regex, name!~regex",
            "examples": ['env="production"', 'service=~"api|web"'],
        },
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "op": {"enum": ["=", "!=", "=~", "!~"], "default": "="},
                "value": {"type": "string", "default": ""},
            },
            "required": ["name"],
            "additionalProperties": False,
        },
    ]
}

MatcherItem = Annotated[Matcher, BeforeValidator(_to_matcher), WithJsonSchema(_MATCHER_SCHEMA)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"invalid name {value!r}: {_NAME_HELP}")
    return value


# --------------------------------------------------------------------------------------------------
# The file format


class OnFailure(StrEnum):
    """What a step that did not succeed (failed, refused, denied, expired) does to its workflow run."""

    CONTINUE = "continue"  # go on with the next step
    ABORT = "abort"  # stop the run
    ESCALATE = "escalate"  # stop the steps and run the workflow's escalation steps


class TriggerEvent(StrEnum):
    OPENED = "opened"
    UPDATED = "updated"
    SEVERITY_CHANGED = "severity_changed"
    REOPENED = "reopened"
    RESOLVED = "resolved"
    NOT_ACKNOWLEDGED = "not_acknowledged"  # still unacknowledged not_acknowledged_within after (re)opening


class Weekday(StrEnum):
    MON = "mon"
    TUE = "tue"
    WED = "wed"
    THU = "thu"
    FRI = "fri"
    SAT = "sat"
    SUN = "sun"


_WEEKDAYS = list(Weekday)


class Backoff(_Model):
    """Delay before retry n (n = 1, 2, ...): ``initial * multiplier**(n-1)``, at most ``max``."""

    initial_ms: Duration = Field(
        default=10_000, alias="initial", ge=0, description="Delay before the first retry"
    )
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0, description="Growth factor per retry")
    max_ms: Duration = Field(default=300_000, alias="max", ge=0, description="Longest delay")

    def delay_ms(self, retry: int) -> int:
        """Delay before retry number ``retry`` (1-based); deterministic, no jitter."""
        delay = self.initial_ms * self.multiplier ** max(retry - 1, 0)
        return int(min(delay, self.max_ms))


class RateLimit(_Model):
    """At most ``max`` executions of this action on one target within any ``per`` window."""

    max: int = Field(ge=1, description="Executions allowed per window")
    per_ms: Duration = Field(alias="per", gt=0, description="The sliding window, e.g. 1h")


class BlastRadius(_Model):
    """How many distinct targets automation may touch (targets of any action)."""

    per_incident: int | None = Field(default=None, ge=1, description="Distinct targets per incident")
    per_minute: int | None = Field(
        default=None, ge=1, description="Distinct targets in any 60s window, across all incidents"
    )


class Guards(_Model):
    """Execution guards of a step; a step's guards override the defaults' field by field."""

    rate_limit: RateLimit | None = Field(default=None, description="Executions per action and target")
    cooldown_ms: Duration | None = Field(
        default=None,
        alias="cooldown",
        description="Minimum time between two executions per action and target",
    )
    max_concurrent: int | None = Field(
        default=None, ge=1, description="Executions of this action running at once, across all incidents"
    )
    blast_radius: BlastRadius | None = Field(default=None, description="Distinct targets touched")

    def over(self, base: Guards) -> Guards:
        """These guards, with unset fields taken from ``base`` (values are already validated)."""
        return base.model_copy(
            update={
                "rate_limit": self.rate_limit or base.rate_limit,
                "cooldown_ms": self.cooldown_ms if self.cooldown_ms is not None else base.cooldown_ms,
                "max_concurrent": self.max_concurrent or base.max_concurrent,
                "blast_radius": self.blast_radius or base.blast_radius,
            }
        )

    @property
    def window_ms(self) -> int:
        """The longest history these guards look at."""
        return max(
            self.rate_limit.per_ms if self.rate_limit else 0,
            self.cooldown_ms or 0,
            60_000 if self.blast_radius and self.blast_radius.per_minute else 0,
        )


_EXEMPTION_NEEDS_REASON = (
    "an exemption needs a reason: write {required: false, reason: 'why this step may run without an "
    "operator'}"
)
_NO_LABEL_EXEMPTIONS = (
    "label matchers cannot lift an approval requirement: the alert's sender chooses label values "
    '(env="Production" does not match env="production"). Write approval: required, or exempt the '
    "step with {required: false, reason: '...'} and add the requirement back for matching incidents "
    "with required_when: [matchers] (docs/security.md, Approvals)"
)
_REQUIRE_APPROVAL_REPLACED = (
    "replaced by 'approval', which fails closed: a step whose action has side effects needs approval "
    "unless it says approval: {required: false, reason: '...'}; label matchers can only add the "
    "requirement back (required_when), never lift it. Write approval: required, or the exemption "
    "(docs/workflows.md, Approvals)"
)


def _approval(value: Any) -> Any:
    """The short forms: ``required`` or ``true``; ``false`` alone is refused (it gives no reason)."""
    if value is None or isinstance(value, Approval):
        return value
    if value is True or value == "required":
        return {"required": True}
    if value is False:
        raise ValueError(_EXEMPTION_NEEDS_REASON)
    if isinstance(value, dict):
        if "when" in value:
            raise ValueError(_NO_LABEL_EXEMPTIONS)
        return value
    raise ValueError(
        f"expected required, or a mapping {{required: false, reason: '...', required_when: [matchers]}}; "
        f"got {describe(value)}"
    )


def _replaced(value: Any) -> Any:
    raise ValueError(_REQUIRE_APPROVAL_REPLACED)


class Approval(_Model):
    """Whether an operator must approve a step's command first (the step's ``approval``).

    Without it, a step needs approval exactly when its action has side effects. An exemption
    names its reason, so a reviewer sees the decision; ``required_when`` puts the requirement
    back for incidents whose labels match, because labels may add caution but never remove it.
    """

    required: bool = Field(default=True, description="false: the step runs without an operator")
    reason: str | None = Field(
        default=None,
        max_length=500,
        description="Why the step may run without approval; required with required: false",
    )
    required_when: list[MatcherItem] = Field(
        default_factory=list,
        description="With required: false: label matchers (all must match) that make approval "
        "required again; they can only add the requirement",
    )

    @model_validator(mode="after")
    def _explicit_and_narrow(self) -> Approval:
        if not self.required and not (self.reason or "").strip():
            raise ValueError(_EXEMPTION_NEEDS_REASON)
        if self.required and self.required_when:
            raise ValueError(
                "required_when only adds a requirement to a step exempted with required: false; this "
                "step needs approval for every incident already"
            )
        return self


class StepDefaults(_Model):
    """Values for every step that does not set them itself."""

    timeout_ms: Duration = Field(default=30_000, alias="timeout", gt=0, description="Per attempt")
    retries: int = Field(default=0, ge=0, description="Extra attempts after a failure")
    backoff: Backoff = Field(default_factory=Backoff)
    on_failure: OnFailure = OnFailure.ABORT
    approval_ttl_ms: Duration = Field(
        default=30 * 60_000, alias="approval_ttl", gt=0, description="How long an approval request stays open"
    )
    guards: Guards = Field(default_factory=Guards)


class Step(_Model):
    """One action of a workflow, with its parameters, retry policy and guards."""

    name: str = Field(description="Unique within the workflow; part of the command id")
    action: str = Field(description="Executor: webhook, exec, kafka, log, or a plugin's name")
    description: str = ""
    target: str | None = Field(
        default=None,
        description="What the action acts on (templated, e.g. '{{ labels.service }}'); the key of "
        "rate limits, cooldowns and blast radius",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Action parameters; strings are templates"
    )
    timeout_ms: Duration | None = Field(default=None, alias="timeout", gt=0)
    retries: int | None = Field(default=None, ge=0)
    backoff: Backoff | None = None
    on_failure: OnFailure | None = None
    guards: Guards | None = None
    approval: Annotated[Approval | None, BeforeValidator(_approval)] = Field(
        default=None,
        description="required (the default for actions with side effects), or "
        "{required: false, reason: '...', required_when: [matchers]}",
    )
    require_approval: Annotated[Any, BeforeValidator(_replaced)] = Field(
        default=None, description="Replaced by approval; refused with the new spelling"
    )
    approval_ttl_ms: Duration | None = Field(default=None, alias="approval_ttl", gt=0)

    _name = field_validator("name")(_check_name)


class TimeWindow(_Model):
    """A weekly time window; ``start`` > ``end`` crosses midnight (the day is the start's)."""

    days: list[Weekday] = Field(default_factory=lambda: list(Weekday))
    start: str = Field(default="00:00", description="HH:MM")
    end: str = Field(default="24:00", description="HH:MM, or 24:00")
    timezone: str = Field(default="UTC", description="IANA name, e.g. Europe/Berlin")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.fullmatch(value):
            raise ValueError(f"expected a time of day as HH:MM (00:00 to 24:00); got {value!r}")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}; use an IANA name like UTC or Europe/Berlin"
            ) from None
        return value

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        start, end = _minutes(self.start), _minutes(self.end)
        today = _WEEKDAYS[local.weekday()]
        if start < end:
            return today in self.days and start <= minute < end
        yesterday = _WEEKDAYS[(local.weekday() - 1) % 7]
        return (today in self.days and minute >= start) or (yesterday in self.days and minute < end)


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


class Conditions(_Model):
    """All given conditions must hold for the workflow to run."""

    match: list[MatcherItem] = Field(
        default_factory=list, description="Matchers on the incident's group labels"
    )
    severity: list[Severity] = Field(default_factory=list, description="Any of these severities")
    min_severity: Severity | None = Field(default=None, description="This severity or more urgent")
    service: list[str] = Field(default_factory=list, description="The 'service' label is one of these")
    min_alerts: int | None = Field(default=None, ge=0, description="At least this many firing alerts")
    max_alerts: int | None = Field(default=None, ge=0, description="At most this many firing alerts")
    time_windows: list[TimeWindow] = Field(default_factory=list, description="Inside any of these windows")

    def holds(self, labels: dict[str, str], severity: Severity, firing: int, at: datetime) -> bool:
        if not all_match(self.match, labels):
            return False
        if self.severity and severity not in self.severity:
            return False
        if self.min_severity is not None and severity.rank > self.min_severity.rank:
            return False
        if self.service and labels.get("service", "") not in self.service:
            return False
        if self.min_alerts is not None and firing < self.min_alerts:
            return False
        if self.max_alerts is not None and firing > self.max_alerts:
            return False
        return not self.time_windows or any(w.contains(at) for w in self.time_windows)


class Trigger(_Model):
    events: list[TriggerEvent] = Field(min_length=1, description="Incident events that start the workflow")
    not_acknowledged_within_ms: Duration | None = Field(
        default=None,
        alias="not_acknowledged_within",
        gt=0,
        description="With event not_acknowledged: how long after (re)opening nobody acknowledged",
    )


class Escalation(_Model):
    """Steps run when a step fails with ``on_failure: escalate``, or when nobody acknowledged in time."""

    not_acknowledged_within_ms: Duration | None = Field(
        default=None, alias="not_acknowledged_within", gt=0, description="After the run started"
    )
    steps: list[Step] = Field(min_length=1)


class Workflow(_Model):
    name: str
    description: str = ""
    enabled: bool = True
    dry_run: bool = Field(default=False, description="Decide and record, but never execute")
    trigger: Trigger
    conditions: Conditions = Field(default_factory=Conditions)
    max_runs: int = Field(default=1, ge=1, description="Runs of this workflow per incident")
    cancel_when_resolved: bool = Field(
        default=True,
        description="Stop a run when its incident resolves (runs started by 'resolved' excepted)",
    )
    steps: list[Step] = Field(min_length=1)
    escalation: Escalation | None = None

    _name = field_validator("name")(_check_name)


class WorkflowFile(_Model):
    """The whole workflow file."""

    version: Literal[1] = 1
    dry_run: bool = Field(default=False, description="Every workflow in dry-run mode")
    defaults: StepDefaults = Field(default_factory=StepDefaults)
    workflows: list[Workflow] = Field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Compiled form (what the planner runs on)


@dataclass(frozen=True, slots=True)
class ApprovalPolicy:
    """A step's approval rule with its default applied: required, or exempt for ``reason``.

    ``required_when`` can only turn an exemption back into a requirement, so a sender who
    chooses label values can make a step wait for approval, never skip it.
    """

    required: bool
    reason: str | None = None
    required_when: tuple[Matcher, ...] = ()

    def needs(self, labels: dict[str, str]) -> bool:
        if self.required:
            return True
        return bool(self.required_when) and all_match(list(self.required_when), labels)


def _side_effects(checker: ActionChecker | None) -> bool:
    """Unknown or silent actions count as having side effects: fail closed."""
    return getattr(checker, "side_effects", True) is not False


def _approval_policy(rule: Approval | None, checker: ActionChecker | None) -> ApprovalPolicy:
    if rule is None:
        if _side_effects(checker):
            return ApprovalPolicy(required=True)
        return ApprovalPolicy(required=False, reason="the action has no side effects")
    if rule.required:
        return ApprovalPolicy(required=True)
    return ApprovalPolicy(required=False, reason=rule.reason, required_when=tuple(rule.required_when))


def _url_params(checker: ActionChecker | None) -> frozenset[str]:
    names = getattr(checker, "url_params", ())
    if not isinstance(names, (tuple, list, set, frozenset)):
        return frozenset()
    return frozenset(n for n in names if isinstance(n, str))


@dataclass(frozen=True, slots=True)
class StepSpec:
    workflow: str
    lane: str  # "steps" or "escalation"
    index: int
    name: str
    action: str
    target: Template | None
    params: dict[str, Any]
    timeout_ms: int
    retries: int
    backoff: Backoff
    on_failure: OnFailure
    guards: Guards
    approval: ApprovalPolicy
    approval_ttl_ms: int
    url_params: frozenset[str] = frozenset()  # top-level params rendered as URLs

    def needs_approval(self, labels: dict[str, str]) -> bool:
        return self.approval.needs(labels)


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    name: str
    enabled: bool
    dry_run: bool
    events: frozenset[TriggerEvent]
    not_acknowledged_within_ms: int | None
    conditions: Conditions
    max_runs: int
    cancel_when_resolved: bool
    steps: tuple[StepSpec, ...]
    escalation: tuple[StepSpec, ...]
    escalate_after_ms: int | None

    def lane(self, lane: str) -> tuple[StepSpec, ...]:
        return self.escalation if lane == "escalation" else self.steps


@dataclass(frozen=True, slots=True)
class WorkflowConfig:
    source: str
    dry_run: bool
    workflows: tuple[WorkflowSpec, ...]

    def get(self, name: str) -> WorkflowSpec | None:
        return next((w for w in self.workflows if w.name == name), None)

    @property
    def guard_window_ms(self) -> int:
        """How much execution history the guards need (older entries can be forgotten)."""
        windows = [s.guards.window_ms for w in self.workflows for s in (*w.steps, *w.escalation)]
        return max([60_000, *windows])

    @property
    def actions(self) -> set[str]:
        return {s.action for w in self.workflows for s in (*w.steps, *w.escalation)}


def _compile(model: WorkflowFile, source: str, executors: Mapping[str, ActionChecker]) -> WorkflowConfig:
    d = model.defaults
    specs = []
    for wf in model.workflows:

        def step_spec(step: Step, lane: str, index: int, wf: Workflow = wf) -> StepSpec:
            return StepSpec(
                workflow=wf.name,
                lane=lane,
                index=index,
                name=step.name,
                action=step.action,
                target=parse_template(step.target) if step.target is not None else None,
                params=step.params,
                timeout_ms=step.timeout_ms if step.timeout_ms is not None else d.timeout_ms,
                retries=step.retries if step.retries is not None else d.retries,
                backoff=step.backoff or d.backoff,
                on_failure=step.on_failure or d.on_failure,
                guards=(step.guards or Guards()).over(d.guards),
                approval=_approval_policy(step.approval, executors.get(step.action)),
                approval_ttl_ms=step.approval_ttl_ms or d.approval_ttl_ms,
                url_params=_url_params(executors.get(step.action)),
            )

        esc = wf.escalation
        specs.append(
            WorkflowSpec(
                name=wf.name,
                enabled=wf.enabled,
                dry_run=wf.dry_run or model.dry_run,
                events=frozenset(wf.trigger.events),
                not_acknowledged_within_ms=wf.trigger.not_acknowledged_within_ms,
                conditions=wf.conditions,
                max_runs=wf.max_runs,
                cancel_when_resolved=wf.cancel_when_resolved,
                steps=tuple(step_spec(s, "steps", i) for i, s in enumerate(wf.steps)),
                escalation=tuple(step_spec(s, "escalation", i) for i, s in enumerate(esc.steps))
                if esc
                else (),
                escalate_after_ms=esc.not_acknowledged_within_ms if esc else None,
            )
        )
    return WorkflowConfig(source=source, dry_run=model.dry_run, workflows=tuple(specs))


# --------------------------------------------------------------------------------------------------
# Checks pydantic cannot express (they need the whole file, or the executors)

Loc = tuple[str | int, ...]


def _path_segments(path: str) -> list[str | int]:
    """``a.b[0].c`` -> ['a', 'b', 0, 'c'] (paths reported by executors' check_params)."""
    out: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        out.append(int(part[1:-1]) if part.startswith("[") else part)
    return out


_M = TypeVar("_M", bound=BaseModel)


def _lenient(model: type[_M], raw: Any) -> _M | None:
    """``raw`` as ``model`` for the checks after validation, even when part of it is invalid.

    The keys pydantic objects to are dropped and the rest validated again, so one bad duration
    does not hide the semantic problems of its neighbours (pydantic reports it by itself); None
    when even that fails (a required key is missing) or ``raw`` is not a mapping.
    """
    if not isinstance(raw, dict):
        return None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        bad = {e["loc"][0] for e in exc.errors() if e["loc"] and isinstance(e["loc"][0], str)}
    try:
        return model.model_validate({k: v for k, v in raw.items() if k not in bad})
    except ValidationError:
        return None


def _semantic_problems(data: Any, executors: Mapping[str, ActionChecker]) -> list[tuple[Loc, str]]:
    """The checks pydantic cannot make, on the raw document so they run even when it is invalid.

    Each part is validated on its own (``_lenient``); a part that cannot be is skipped here
    (pydantic reports it), so one run reports every problem the file has.
    """
    problems: list[tuple[Loc, str]] = []
    if not isinstance(data, dict):
        return problems
    d = _lenient(StepDefaults, data.get("defaults", {})) or StepDefaults()
    if d.timeout_ms > MAX_STEP_TIMEOUT_MS:
        problems.append(
            (
                ("defaults", "timeout"),
                f"{format_duration(d.timeout_ms)} is longer than the maximum "
                f"{format_duration(MAX_STEP_TIMEOUT_MS)}",
            )
        )
    if d.retries > MAX_RETRIES:
        problems.append((("defaults", "retries"), f"at most {MAX_RETRIES} retries; got {d.retries}"))
    workflows = data.get("workflows")
    if not isinstance(workflows, list):
        return problems
    seen_workflows: dict[str, int] = {}
    for wi, wf in enumerate(workflows):
        if isinstance(wf, dict):
            problems.extend(_workflow_problems(wf, wi, d, executors, seen_workflows))
    return problems


def _workflow_problems(
    wf: dict[Any, Any],
    wi: int,
    d: StepDefaults,
    executors: Mapping[str, ActionChecker],
    seen_workflows: dict[str, int],
) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    wloc: Loc = ("workflows", wi)
    name = wf.get("name")
    if isinstance(name, str):
        if name in seen_workflows:
            problems.append(
                (
                    (*wloc, "name"),
                    f"workflow name {name!r} is already used by workflows[{seen_workflows[name]}]; "
                    "names must be unique (they are part of every command id)",
                )
            )
        seen_workflows.setdefault(name, wi)
    t = _lenient(Trigger, wf.get("trigger"))
    if t is not None:
        if TriggerEvent.NOT_ACKNOWLEDGED in t.events and t.not_acknowledged_within_ms is None:
            problems.append(
                ((*wloc, "trigger"), "event not_acknowledged needs not_acknowledged_within (e.g. 15m)")
            )
        if t.not_acknowledged_within_ms is not None and TriggerEvent.NOT_ACKNOWLEDGED not in t.events:
            problems.append(
                (
                    (*wloc, "trigger", "not_acknowledged_within"),
                    "only used with event not_acknowledged; add it to events or remove this key",
                )
            )
    c = _lenient(Conditions, wf.get("conditions", {}))
    if c is not None:
        if c.min_alerts is not None and c.max_alerts is not None and c.min_alerts > c.max_alerts:
            problems.append(
                ((*wloc, "conditions", "min_alerts"), "is larger than max_alerts; nothing could match")
            )
        for ti, window in enumerate(c.time_windows):
            if window.start == window.end:
                problems.append(
                    (
                        (*wloc, "conditions", "time_windows", ti),
                        "start equals end: an empty window (use 00:00 to 24:00 for the whole day)",
                    )
                )
    escalation = wf.get("escalation")
    lanes: list[tuple[str, Loc, Any]] = [("steps", (*wloc, "steps"), wf.get("steps"))]
    if isinstance(escalation, dict):
        lanes.append(("escalation", (*wloc, "escalation", "steps"), escalation.get("steps")))
    where = _Where(
        workflow=name if isinstance(name, str) else f"workflows[{wi}]",
        has_escalation=escalation is not None,
        defaults=d,
    )
    step_names: dict[str, str] = {}
    for lane, lane_loc, steps in lanes:
        if not isinstance(steps, list):
            continue
        for si, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            sloc: Loc = (*lane_loc, si)
            step_name = step.get("name")
            if isinstance(step_name, str):
                if step_name in step_names:
                    problems.append(
                        (
                            (*sloc, "name"),
                            f"step name {step_name!r} is already used by {step_names[step_name]}; "
                            "step names must be unique within a workflow, escalation steps included",
                        )
                    )
                step_names.setdefault(
                    step_name, f"{'escalation.steps' if lane == 'escalation' else 'steps'}[{si}]"
                )
            problems.extend(_action_problems(step, sloc, executors))
            valid = _lenient(Step, step)
            if valid is not None:
                problems.extend(_policy_problems(valid, sloc, lane, where))
    return problems


@dataclass(frozen=True, slots=True)
class _Where:
    """What a step's checks need to know about its workflow."""

    workflow: str
    has_escalation: bool
    defaults: StepDefaults


def _action_problems(
    step: dict[Any, Any], sloc: Loc, executors: Mapping[str, ActionChecker]
) -> list[tuple[Loc, str]]:
    """The action, its parameters and the templates, checked on the step as written."""
    problems: list[tuple[Loc, str]] = []
    action = step.get("action")
    params = step.get("params", {})
    target = step.get("target")
    params_ok = isinstance(params, dict) and all(isinstance(k, str) for k in params)
    if isinstance(action, str):
        executor = executors.get(action)
        if executor is None:
            problems.append(
                (
                    (*sloc, "action"),
                    f"unknown action {action!r}; available: {', '.join(sorted(executors))} "
                    "(plugins add more through the 'stormwatch.executors' entry point group)",
                )
            )
        elif params_ok:
            for path, message in executor.check_params(params):
                problems.append(((*sloc, "params", *_path_segments(path)), message))
    if params_ok:
        for path, message in template_problems(params):
            problems.append(((*sloc, "params", *_path_segments(path)), message))
    if isinstance(target, str):
        try:
            parse_template(target)
        except TemplateError as exc:
            problems.append(((*sloc, "target"), str(exc)))
    return problems


def _policy_problems(step: Step, sloc: Loc, lane: str, where: _Where) -> list[tuple[Loc, str]]:
    """Timeout, retries and on_failure against the limits and the workflow's escalation."""
    problems: list[tuple[Loc, str]] = []
    if step.timeout_ms is not None and step.timeout_ms > MAX_STEP_TIMEOUT_MS:
        problems.append(
            (
                (*sloc, "timeout"),
                f"{format_duration(step.timeout_ms)} is longer than the maximum "
                f"{format_duration(MAX_STEP_TIMEOUT_MS)} (the executor does not poll Kafka while it runs)",
            )
        )
    if step.retries is not None and step.retries > MAX_RETRIES:
        problems.append(((*sloc, "retries"), f"at most {MAX_RETRIES} retries; got {step.retries}"))
    on_failure = step.on_failure or where.defaults.on_failure
    inherited = "" if step.on_failure else " (inherited from defaults.on_failure)"
    if on_failure is OnFailure.ESCALATE:
        if lane == "escalation":
            problems.append(
                (
                    (*sloc, "on_failure") if step.on_failure else sloc,
                    f"escalation steps cannot escalate again{inherited}; use continue or abort",
                )
            )
        elif not where.has_escalation:
            problems.append(
                (
                    (*sloc, "on_failure") if step.on_failure else sloc,
                    f"on_failure is escalate{inherited} but workflow {where.workflow!r} has no escalation "
                    "steps; add an escalation block or use continue or abort",
                )
            )
    return problems


# --------------------------------------------------------------------------------------------------
# Loading with precise errors

_DURATION_FIELDS = frozenset(
    {
        "timeout_ms",
        "approval_ttl_ms",
        "initial_ms",
        "max_ms",
        "per_ms",
        "cooldown_ms",
        "not_acknowledged_within_ms",
    }
)
"""The Duration fields (Python names): their bounds are shown as durations."""


def _explain(error: ErrorDetails, place: Place) -> str | None:
    """Bounds of durations read as durations: ``must be longer than 0s; got 0s``."""
    bound = bound_of(error)
    value = error.get("input")
    if bound is None or place.field not in _DURATION_FIELDS or not isinstance(value, int):
        return None
    constraint, words, limit = bound
    shown = format_duration(int(limit)) if isinstance(limit, int) else limit
    words = "longer than" if constraint == "gt" else words
    return f"must be {words} {shown}; got {format_duration(value)}"


def _key_of(model: type[BaseModel], name: str) -> str | None:
    """YAML spelling of a field; the refused old ``require_approval`` is not offered in hints."""
    if model is Step and name == "require_approval":
        return None
    return alias_or_name(model, name)


# How the workflow file is parsed and explained; stormwatch.loaders reads it from disk.
WORKFLOW_FILE = ConfigFormat(WorkflowFile, WorkflowError, "workflow file", key_of=_key_of, explain=_explain)


def parse_workflows(
    text: str, source: str = "<workflows>", *, executors: Mapping[str, ActionChecker]
) -> WorkflowConfig:
    """Parse and check workflow YAML text; ``source`` names it in error messages.

    ``executors`` are the actions a step may name, each with its parameter check (pass
    ``stormwatch.agents.executors.available_executors()``): required, so no caller can skip it.
    """
    doc = WORKFLOW_FILE.parse(text, source)
    if not isinstance(doc.data, dict):
        keys = ", ".join(WORKFLOW_FILE.keys(WorkflowFile))
        raise WorkflowError(
            source, [("", f"expected a mapping with keys: {keys}; got {describe(doc.data)}", 1)]
        )
    semantic = WORKFLOW_FILE.problems(doc, _semantic_problems(doc.data, executors))
    try:
        model = WORKFLOW_FILE.validate(doc)
    except WorkflowError as exc:
        # Structural and semantic problems in one report, in line order (stable: on one line,
        # pydantic's come first).
        merged = sorted([*exc.problems, *semantic], key=lambda p: p[2] or 0)
        raise WorkflowError(source, merged) from None
    if semantic:
        raise WorkflowError(source, semantic)
    return _compile(model, source, executors)


# --------------------------------------------------------------------------------------------------
# JSON Schema (editor completion and validation)


def workflow_json_schema() -> dict[str, Any]:
    """JSON Schema (2020-12) of the workflow file, as editors load it."""
    schema = WorkflowFile.model_json_schema(mode="validation", by_alias=True)
    defs = schema.get("$defs", {})
    step = defs.get("Step", {}).get("properties", {})
    step.pop("require_approval", None)  # only there to refuse the old spelling with a hint
    if "approval" in step:
        step["approval"] = {
            "anyOf": [
                {"const": "required"},
                {"const": True},
                {"$ref": "#/$defs/Approval"},
                {"type": "null"},
            ],
            "default": None,
            "description": "Unset: required when the action has side effects (all but log). "
            "required, or {required: false, reason: '...', required_when: [matchers]}: label "
            "matchers can only add the requirement back",
        }
    if "Approval" in defs:
        # An exemption must say why (the model's validator; editors learn it here).
        defs["Approval"]["if"] = {"properties": {"required": {"const": False}}, "required": ["required"]}
        defs["Approval"]["then"] = {"required": ["reason"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "stormwatch workflow file",
        "description": "Mitigation workflows run by `stormwatch agent`; see docs/workflows.md.",
    }


def render_workflow_schema() -> str:
    """The schema file's exact text (byte-stable: sorted keys, indent 2, trailing newline)."""
    return json.dumps(workflow_json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
