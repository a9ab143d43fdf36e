"""Topology: which components an alert is about, how components depend on each other, and which
firing component is the root cause of the others (issue #12).

Label groups share no label across a cascade (a database outage and the error rates of the services
that use it), so no rule can put them together; a dependency graph can. This module is that graph,
for the linker stage to ask two questions: are two sets of components related (``related``), and
which firing component explains the rest (``root_cause``)? It is pure and deterministic: built from
the topology file's text, changed only by the records of the topology topic in log order
(``apply``), so a replay sees the topology that was in force. The file format and the rules are
documented in docs/correlation-rules.md, "Topology".

Direction: an edge goes from a *dependent* to its *dependency*; the dependency is *upstream* (its
failure can cause the dependent's). Sizes it is built for: up to ~100k declared components and
~1k link questions per second; only upward edges are followed (a component has few dependencies
but a hub may have thousands of dependents), and every search is bounded by ``link.max_hops``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, NamedTuple

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from stormwatch.schemas.durations import DURATION_HELP, parse_duration
from stormwatch.schemas.matchers import Matcher, all_match
from stormwatch.schemas.topology import (
    KIND,
    ComponentRef,
    ScopeItems,
    TopologyComponent,
    TopologyUpdate,
    component_key,
    parse_ref,
)
from stormwatch.schemas.yamlerrors import (
    ConfigFileError,
    ConfigFormat,
    ErrorCollector,
    Loc,
    Place,
    alias_or_name,
    describe,
    matcher_from_yaml,
    validate_with_checks,
)
from stormwatch.streams.core.rules import LABEL_NAME

__all__ = [
    "DEFAULT_IMPLIED",
    "DEFAULT_LABEL_COMPONENTS",
    "DEPENDS_ON",
    "MAX_HOPS_LIMIT",
    "REASON_PATHS",
    "TOPOLOGY_FILE",
    "ComponentId",
    "Edge",
    "ImpliedRelation",
    "LabelComponent",
    "LinkPolicy",
    "Relation",
    "RelationKind",
    "RootCause",
    "Scope",
    "Tiebreak",
    "Topology",
    "TopologyChangeError",
    "TopologyConfig",
    "TopologyError",
    "parse_topology",
]

Scope = tuple[str, ...]
"""The values of the topology's ``scope_labels``, in their order ("" for a missing label)."""

DEPENDS_ON = "depends_on"
"""The relation name of a declared edge (and the default of an implied one)."""

MAX_HOPS_LIMIT = 6
"""Past a few hops everything is related to everything in a real graph; the bound keeps the
linker's searches small as well."""

REASON_PATHS = 5
"""How many paths a root cause carries as its reason: enough to read, bounded for audit events."""


class ComponentId(NamedTuple):
    """A component in its scope. Tuples order lexically, which is the last tie-break of a root cause."""

    scope: Scope
    kind: str
    name: str

    @property
    def ref(self) -> ComponentRef:
        return ComponentRef(self.kind, self.name)


class Edge(NamedTuple):
    """``dependent`` depends on ``dependency`` (which is upstream), by ``relation``. ``mirrored``:
    the reverse edge of a mutual relation (the service back to its pod); it makes the two one tier
    but does not make the part a dependent of its whole when the tier names its root."""

    dependent: ComponentId
    dependency: ComponentId
    relation: str = DEPENDS_ON
    mirrored: bool = False


class TopologyError(ConfigFileError):
    """The topology file cannot be used; one ``file:line: path: message`` line per problem."""


class TopologyChangeError(ValueError):
    """A topology record that cannot be applied; the topology is unchanged (the stage dead-letters it)."""


# --------------------------------------------------------------------------------------------------
# The file


@dataclass(frozen=True, slots=True)
class _Written:
    """A duration as written under its file key (``window: 10m``; a plain number is seconds), as
    opposed to the field name (``window_ms``: milliseconds, what ``model_dump()`` writes)."""

    raw: object


def _to_ms(value: Any) -> Any:
    if isinstance(value, _Written):
        raw = value.raw
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            raise ValueError(f"got {describe(raw)}; {DURATION_HELP}")
        return parse_duration(raw)
    return value


def _to_matcher(value: Any) -> Any:
    return matcher_from_yaml(
        value, "expected a matcher like 'team=\"db\"' or a mapping with name, op and value,"
    )


MatcherItem = Annotated[Matcher, BeforeValidator(_to_matcher)]


def _label_name(value: str) -> str:
    if not LABEL_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a label name (letters, digits and '_', not starting with a digit)"
        )
    return value


def _kind(value: str) -> str:
    if not KIND.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a component kind (lower-case letters, digits, '_' and '-', "
            "starting with a letter)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class LabelComponent(_Model):
    """An alert label whose value names a component of ``kind`` (``node: ip-10-...`` is node/ip-10-...)."""

    label: str
    kind: str
    strip_port: bool = Field(default=False, description="instance=db-1:9100 names db-1")
    match: list[MatcherItem] = Field(
        default_factory=list,
        description="Only for alerts these match; the first entry of a label that matches wins",
    )

    _check_label = field_validator("label")(_label_name)
    _check_kind = field_validator("kind")(_kind)

    def name_of(self, value: str) -> str:
        return _strip_port(value) if self.strip_port else value


class ImpliedRelation(_Model):
    """Two components named on one alert are related: ``from`` depends on ``to`` (a pod runs on
    its node, so the node is upstream of the pod). ``mutual``: each depends on the other, for a
    part and its whole (a pod and its service fail together, whichever fails first), so they are
    one tier for the root cause."""

    from_: str = Field(alias="from")
    to: str
    relation: str = DEPENDS_ON
    mutual: bool = False

    _check_kinds = field_validator("from_", "to")(_kind)
    _check_relation = field_validator("relation")(_label_name)


class LinkPolicy(_Model):
    """How far the linker looks: a path of at most ``max_hops`` edges, groups opening within ``window``."""

    max_hops: int = Field(default=2, ge=1, le=MAX_HOPS_LIMIT)
    window_ms: int = Field(default=10 * 60_000, gt=0)
    common_upstream: bool = Field(
        default=False,
        description="Also relate two components that depend on a common one (siblings): finds more, "
        "but two independent failures under one shared dependency would be merged",
    )

    delay_ms: int = Field(
        default=10_000,
        gt=0,
        description="A decision about a note at t is applied at t + delay: the linker's head start. "
        "Keep it below group_wait, so a member is linked before it would notify",
    )
    max_wait_ms: int = Field(
        default=30_000,
        gt=0,
        description="How long (wall time) the correlator holds event time for a linker that sends "
        "no mark (down or stuck) before it goes on without it; its decisions then apply late (counted)",
    )

    @model_validator(mode="before")
    @classmethod
    def _written_durations(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for name in ("window", "delay", "max_wait"):
                if name in data:
                    raw = data.pop(name)
                    data[f"{name}_ms"] = _Both() if f"{name}_ms" in data else _Written(raw)
        return data

    @field_validator("window_ms", "delay_ms", "max_wait_ms", mode="before")
    @classmethod
    def _durations_ms(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, _Both):
            name = (info.field_name or "").removesuffix("_ms")
            raise ValueError(f"give {name} (a duration) or {name}_ms (milliseconds), not both")
        return _to_ms(value)


@dataclass(frozen=True, slots=True)
class _Both:
    """``window`` and ``window_ms`` both given: reported at the field, with the block's other mistakes."""


DEFAULT_LABEL_COMPONENTS: tuple[LabelComponent, ...] = (
    LabelComponent(label="node", kind="node"),
    LabelComponent(label="kubernetes_node", kind="node"),
    LabelComponent(label="pod", kind="pod"),
    LabelComponent(label="service", kind="service"),
    LabelComponent(label="deployment", kind="workload"),
)
"""Kubernetes' label conventions. ``instance`` is left out: on Kubernetes it is a pod address,
and two unrelated pods that reuse an address would look like one host."""

DEFAULT_IMPLIED: tuple[ImpliedRelation, ...] = (
    ImpliedRelation(from_="pod", to="node", relation="runs_on"),
    ImpliedRelation(from_="pod", to="service", relation="part_of", mutual=True),
    ImpliedRelation(from_="pod", to="workload", relation="part_of", mutual=True),
)


class TopologyConfig(_Model):
    """The whole topology file (docs/correlation-rules.md, "Topology"); every key is optional."""

    scope_labels: list[str] = Field(default_factory=lambda: ["cluster"])
    label_components: list[LabelComponent] = Field(default_factory=lambda: list(DEFAULT_LABEL_COMPONENTS))
    implied: list[ImpliedRelation] | None = Field(
        default=None, description="None: those of DEFAULT_IMPLIED whose kinds label_components name"
    )
    components: list[TopologyComponent] = Field(default_factory=list)
    link: LinkPolicy = Field(default_factory=LinkPolicy)

    @field_validator("scope_labels")
    @classmethod
    def _check_scope_labels(cls, value: list[str]) -> list[str]:
        errors = ErrorCollector()
        for i, name in enumerate(value):
            if name in value[:i]:
                errors.add((i,), f"label {name!r} is listed twice", name)
            elif not LABEL_NAME.fullmatch(name):
                errors.add((i,), f"{name!r} is not a label name", name)
        errors.raise_if_any("scope_labels")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _check_across(cls, data: Any, handler: ModelWrapValidatorHandler[TopologyConfig]) -> TopologyConfig:
        """The checks across entries run on the input as given, so they are reported in the same
        pass as the mistakes inside single entries (as field validators, pydantic would skip them)."""
        return validate_with_checks(cls.__name__, handler, data, _problems_across)

    def label_kinds(self) -> list[str]:
        return sorted({entry.kind for entry in self.label_components})

    @property
    def implied_relations(self) -> list[ImpliedRelation]:
        """The relations in force: as written, or the defaults between the kinds labels name (so
        a file that maps no ``pod`` label needs no ``implied`` key to say so)."""
        if self.implied is not None:
            return list(self.implied)
        kinds = set(self.label_kinds())
        return [r for r in DEFAULT_IMPLIED if r.from_ in kinds and r.to in kinds]


def _str_field(item: Any, key: str) -> str | None:
    value = item.get(key) if isinstance(item, dict) else None
    return value if isinstance(value, str) else None


def _problems_across(data: dict[str, Any]) -> Iterator[tuple[Loc, str]]:
    entries = data.get("label_components", list(DEFAULT_LABEL_COMPONENTS))
    entries = [e.model_dump(by_alias=True) if isinstance(e, BaseModel) else e for e in _list(entries)]
    label_kinds = {k for e in entries if (k := _str_field(e, "kind")) is not None and KIND.fullmatch(k)}
    yield from _label_problems(entries)
    implied = [
        e.model_dump(by_alias=True) if isinstance(e, BaseModel) else e for e in _list(data.get("implied"))
    ]
    yield from _implied_problems(implied, label_kinds)
    scope_labels = data.get("scope_labels", ["cluster"])
    yield from _component_problems(_list(data.get("components", [])), label_kinds, scope_labels)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []  # anything else has its own error


def _label_problems(entries: list[Any]) -> Iterator[tuple[Loc, str]]:
    """An entry after one for the same label without ``match`` can never apply."""
    catch_all: dict[str, int] = {}
    for i, entry in enumerate(entries):
        label = _str_field(entry, "label")
        if label is None:
            continue
        if label in catch_all:
            yield (
                ("label_components", i, "label"),
                f"label {label!r} is already mapped by label_components[{catch_all[label]}] for every "
                "alert, so this entry never applies; put entries with match first",
            )
        elif not (isinstance(entry, dict) and entry.get("match")):
            catch_all[label] = i


def _implied_problems(implied: list[Any], label_kinds: set[str]) -> Iterator[tuple[Loc, str]]:
    known = ", ".join(sorted(label_kinds)) or "none"
    seen: dict[tuple[str, str], int] = {}
    for i, entry in enumerate(implied):
        ends = {key: _str_field(entry, key) for key in ("from", "to")}
        for key, kind in ends.items():
            if kind is not None and KIND.fullmatch(kind) and kind not in label_kinds:
                yield (
                    ("implied", i, key),
                    f"no label names a component of kind {kind!r}, so no alert implies this relation; "
                    f"kinds of label_components: {known}",
                )
        start, end = ends["from"], ends["to"]
        if start is None or end is None:
            continue
        mutual = isinstance(entry, dict) and entry.get("mutual") is True
        pairs = [(start, end), (end, start)] if mutual else [(start, end)]
        if start == end:
            yield ("implied", i, "to"), f"a relation needs two kinds; from and to are both {start!r}"
        elif clash := next((p for p in pairs if p in seen), None):
            yield ("implied", i), f"{clash[0]} -> {clash[1]} is already implied by implied[{seen[clash]}]"
        else:
            seen.update(dict.fromkeys(pairs, i))


def _component_problems(
    components: list[Any], label_kinds: set[str], scope_labels: Any
) -> Iterator[tuple[Loc, str]]:
    """Unique components, scopes that name every scope label, and references to known kinds."""
    kinds = set(label_kinds)
    kinds.update(
        k for item in components if (k := _str_field(item, "kind")) is not None and KIND.fullmatch(k)
    )
    known = ", ".join(sorted(kinds)) or "none"
    first: dict[tuple[ScopeItems | None, str, str], int] = {}
    valid = isinstance(scope_labels, list) and all(
        isinstance(label, str) and LABEL_NAME.fullmatch(label) for label in scope_labels
    )
    wanted = sorted(set(scope_labels)) if valid else None  # else its own error
    for i, item in enumerate(components):
        if not isinstance(item, dict):
            continue
        scope = item.get("scope")
        keys_valid = isinstance(scope, dict) and all(LABEL_NAME.fullmatch(str(k)) for k in scope)
        if isinstance(scope, dict) and keys_valid and wanted is not None and sorted(scope) != wanted:
            yield (
                ("components", i, "scope"),
                f"a scope gives a value for every scope label ({', '.join(wanted) or 'none'}); "
                f"got {', '.join(sorted(map(str, scope))) or 'none'} (omit scope for every scope)",
            )
        refs = item.get("depends_on")
        for j, text in enumerate(_list(refs)):
            try:
                ref = parse_ref(text) if isinstance(text, str) else None
            except ValueError:
                continue  # its own error
            if ref is not None and ref.kind not in kinds:
                yield (
                    ("components", i, "depends_on", j),
                    f"unknown kind {ref.kind!r} in {text}; known kinds (label_components and "
                    f"declared components): {known}",
                )
        kind, name = _str_field(item, "kind"), _str_field(item, "name")
        if kind is None or name is None:
            continue
        scope_items = (
            tuple(sorted((str(k), str(v)) for k, v in scope.items())) if isinstance(scope, dict) else None
        )
        identity = (scope_items, kind, name)
        if identity in first:
            yield (
                ("components", i),
                f"{component_key(kind, name, scope_items)} is declared twice: components[{first[identity]}] "
                f"and components[{i}]; merge their depends_on",
            )
        else:
            first[identity] = i


_LINK_DURATIONS = frozenset({"window_ms", "delay_ms", "max_wait_ms"})


def _yaml_key(model: type[BaseModel], field: str) -> str | None:
    """``window_ms`` is written ``window`` (and so the other durations); the version field of the
    record and of a matcher is not written in the file."""
    if field in _LINK_DURATIONS:
        return field.removesuffix("_ms")
    return None if field == "schema_version" else alias_or_name(model, field)


def _explain(error: ErrorDetails, place: Place) -> str | None:
    if place.field in _LINK_DURATIONS and error["type"] == "greater_than":
        return f"must be longer than 0s; {DURATION_HELP}"
    return None


# How the topology file is parsed and explained; stormwatch.loaders reads it from disk.
TOPOLOGY_FILE = ConfigFormat(
    TopologyConfig, TopologyError, "topology file", key_of=_yaml_key, explain=_explain
)


def parse_topology(text: str, source: str = "<topology>") -> TopologyConfig:
    """Parse a topology file from YAML text; ``source`` names it in error messages."""
    return TOPOLOGY_FILE.validate(TOPOLOGY_FILE.parse(text, source))


def _strip_port(value: str) -> str:
    """``db-1:9100`` -> ``db-1``, ``[::1]:9100`` -> ``::1``; anything else unchanged (a bare IPv6
    address has colons but no port)."""
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if bracket and (not rest or (rest.startswith(":") and rest[1:].isdigit())):
            return host
        return value
    host, colon, port = value.rpartition(":")
    if colon and host and port.isdigit() and ":" not in host:
        return host
    return value


# --------------------------------------------------------------------------------------------------
# Answers


class RelationKind(StrEnum):
    """How two component sets are related, seen from the first: the component they meet at is..."""

    SHARED = "shared"  # in both sets (the same node, host or service)
    UPSTREAM = "upstream"  # in the second set, and the first depends on it
    DOWNSTREAM = "downstream"  # in the first set, and the second depends on it
    COMMON_UPSTREAM = "common_upstream"  # in neither: both depend on it


_KIND_RANK = {
    RelationKind.SHARED: 0,
    RelationKind.UPSTREAM: 1,
    RelationKind.DOWNSTREAM: 1,
    RelationKind.COMMON_UPSTREAM: 2,
}


@dataclass(frozen=True, slots=True)
class Relation:
    """Why two component sets are related: a path from a component of the first to one of the
    second, up to ``via`` and down from it; ``relations[i]`` names the edge between ``path[i]``
    and ``path[i + 1]``. ``related(b, a)`` is the same path reversed."""

    kind: RelationKind
    path: tuple[ComponentId, ...]
    relations: tuple[str, ...]
    via: ComponentId

    @property
    def hops(self) -> int:
        return len(self.relations)


class Tiebreak(StrEnum):
    """What chose the root among the firing components that nothing firing is upstream of."""

    ONLY = "only_candidate"
    FIRST_FIRING = "first_firing"
    DEPENDENTS = "direct_dependents"  # fired at the same time; more firing components depend on it
    ID = "id"


@dataclass(frozen=True, slots=True)
class RootCause:
    """The firing component that explains the others, and why.

    ``candidates`` are the firing components with nothing firing upstream of them (outside their
    own tier), best first, so ``candidates[0] == component``; ``tier`` the firing members of the
    root's tier (its dependency cycle, or the whole with its parts; just the root without one); ``explains`` how many other firing
    components are downstream of it; ``paths`` go from the root down to the earliest of those,
    in firing order (at most ``REASON_PATHS``).
    """

    component: ComponentId
    first_firing_ms: int
    decided_by: Tiebreak
    explains: int
    candidates: tuple[ComponentId, ...]
    tier: tuple[ComponentId, ...]
    paths: tuple[tuple[ComponentId, ...], ...]


_Up = Callable[[ComponentId], tuple[tuple[ComponentId, str], ...]]
"""The dependencies of a component, with the relation of each edge, sorted."""

_Ball = dict[ComponentId, tuple[int, ComponentId | None, str]]
"""Upward search result: component -> (hops from the sources, the component it was reached from, relation)."""

_UP_CACHE_LIMIT = 1 << 18


class Topology:
    """The declared components of a topology file plus the changes applied since, and the answers
    the linker needs. ``version`` counts the changes that changed something; answers are pure
    functions of the declared components and the arguments, never of call order or caches."""

    def __init__(self, config: TopologyConfig | None = None) -> None:
        self.config = config if config is not None else TopologyConfig()
        self.scope_labels: tuple[str, ...] = tuple(self.config.scope_labels)
        self.link = self.config.link
        self.version = 0
        by_label: dict[str, list[LabelComponent]] = {}
        for entry in self.config.label_components:
            by_label.setdefault(entry.label, []).append(entry)
        self._by_label = {label: tuple(entries) for label, entries in by_label.items()}
        matched = {m.name for entry in self.config.label_components for m in entry.match}
        self._naming_labels = tuple(sorted({*self.scope_labels, *self._by_label, *matched}))
        self._implied = tuple(self.config.implied_relations)
        # (scope, kind, name) -> its dependencies; scope None: declared in every scope
        self._declared: dict[tuple[Scope | None, str, str], TopologyComponent] = {}
        self._deps: dict[tuple[Scope | None, str, str], tuple[ComponentRef, ...]] = {}
        self._up_cache: dict[ComponentId, tuple[tuple[ComponentId, str], ...]] = {}
        for component in self.config.components:
            self._put(component)

    # ------------------------------------------------------------------------------ declarations

    def _scope_of_record(self, scope: Mapping[str, str] | ScopeItems | None) -> Scope | None:
        if scope is None:
            return None
        values = dict(scope)
        if sorted(values) != sorted(self.scope_labels):
            raise TopologyChangeError(
                f"the scope names {', '.join(sorted(values)) or 'no label'}; this topology's scope "
                f"labels are {', '.join(self.scope_labels) or 'none'} (omit the scope for every scope)"
            )
        return tuple(values[label] for label in self.scope_labels)

    def _put(self, component: TopologyComponent) -> bool:
        key = (self._scope_of_record(component.scope), component.kind, component.name)
        deps = tuple(sorted(component.dependencies))
        if self._declared.get(key) == component and self._deps.get(key) == deps:
            return False
        self._declared[key] = component
        self._deps[key] = deps
        return True

    def apply(self, update: TopologyUpdate) -> bool:
        """Apply one record of the topology topic, in log order: a component is declared,
        replaced (with its depends_on) or, for a tombstone, removed. Returns whether anything
        changed; raises ``TopologyChangeError`` (changing nothing) for a record that cannot apply."""
        if update.component is None:
            key = (self._scope_of_record(update.scope), update.ref.kind, update.ref.name)
            changed = self._declared.pop(key, None) is not None
            self._deps.pop(key, None)
        else:
            if update.component.ref != update.ref or update.component.scope_items != update.scope:
                raise TopologyChangeError(
                    f"the record for {update.key} carries {update.component.key}; key and value must "
                    "name the same component"
                )
            changed = self._put(update.component)
        if changed:
            self.version += 1
            self._up_cache.clear()
        return changed

    def declared(self) -> list[TopologyComponent]:
        """The declared components, by key: what a compacted topic would hold."""
        return sorted(self._declared.values(), key=lambda c: c.key)

    def describe(self, component: ComponentId) -> str:
        """The component as text, the way keys are written: ``{cluster="prod-eu-1"}node/ip-10-1``."""
        scope = tuple(zip(self.scope_labels, component.scope, strict=True)) if self.scope_labels else None
        return component_key(component.kind, component.name, scope)

    def dependencies(self, component: ComponentId) -> tuple[ComponentId, ...]:
        """What ``component`` is declared to depend on (in its scope): its own scope's declaration
        if there is one, else the one for every scope."""
        deps = self._deps.get((component.scope, component.kind, component.name))
        if deps is None:
            deps = self._deps.get((None, component.kind, component.name), ())
        return tuple(ComponentId(component.scope, ref.kind, ref.name) for ref in deps)

    # ---------------------------------------------------------------------------------- labels

    def scope_of(self, labels: Mapping[str, str]) -> Scope:
        return tuple(labels.get(label, "") for label in self.scope_labels)

    def naming_key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The values of the only labels ``components_of`` reads (a missing label is ''): alerts
        with equal keys name the same components, so a storm's alerts, which differ in labels no
        component is named by, can share one answer."""
        return tuple(labels.get(label, "") for label in self._naming_labels)

    def components_of(self, labels: Mapping[str, str]) -> frozenset[ComponentId]:
        """The components an alert's labels name (an empty value names nothing)."""
        scope = self.scope_of(labels)
        found: set[ComponentId] = set()
        as_dict: dict[str, str] | None = None
        for label, entries in self._by_label.items():
            value = labels.get(label)
            if not value:
                continue
            for entry in entries:
                if entry.match:
                    as_dict = as_dict if as_dict is not None else dict(labels)
                    if not all_match(entry.match, as_dict):
                        continue
                found.add(ComponentId(scope, entry.kind, entry.name_of(value)))
                break
        return frozenset(found)

    def implied_edges(self, labels: Mapping[str, str]) -> frozenset[Edge]:
        """The edges one alert implies between the components it names (its pod runs on its node)."""
        return self._implied_between(self.components_of(labels))

    def _implied_between(self, components: Iterable[ComponentId]) -> frozenset[Edge]:
        by_kind: dict[str, list[ComponentId]] = {}
        for component in components:
            by_kind.setdefault(component.kind, []).append(component)
        edges = set()
        for rule in self._implied:
            for dependent, dependency in itertools.product(
                by_kind.get(rule.from_, ()), by_kind.get(rule.to, ())
            ):
                edges.add(Edge(dependent, dependency, rule.relation))
                if rule.mutual:
                    edges.add(Edge(dependency, dependent, rule.relation, mirrored=True))
        return frozenset(edges)

    def failing_components(self, labels: Mapping[str, str]) -> frozenset[ComponentId]:
        """What an alert says is failing: the components it names, minus those strictly upstream
        of another it names by its own implied edges. A pod alert names the node the pod runs on
        as *where*, not as failing; otherwise a bad deploy over ten nodes would make a node its
        root cause. Only the alert's own labels decide, not declared edges."""
        named = self.components_of(labels)
        edges = self._implied_between(named)
        if not edges:
            return named
        above: dict[ComponentId, set[ComponentId]] = {}
        for edge in edges:
            above.setdefault(edge.dependent, set()).add(edge.dependency)
        reach = {c: _reachable(c, above) for c in named}
        return frozenset(c for c in named if not any(c in reach[o] and o not in reach[c] for o in named))

    # ---------------------------------------------------------------------------------- graph

    def _declared_up(self, component: ComponentId) -> tuple[tuple[ComponentId, str], ...]:
        cached = self._up_cache.get(component)
        if cached is None:
            cached = tuple((dep, DEPENDS_ON) for dep in self.dependencies(component))
            if len(self._up_cache) >= _UP_CACHE_LIMIT:
                self._up_cache.clear()
            self._up_cache[component] = cached
        return cached

    def _up(self, extra_edges: Iterable[Edge]) -> _Up:
        """Dependencies through declared and extra edges; extra edges across scopes are ignored,
        so nothing relates across scopes whatever the caller passes."""
        overlay: dict[ComponentId, set[tuple[ComponentId, str]]] = {}
        for edge in extra_edges:
            if edge.dependent.scope == edge.dependency.scope and edge.dependent != edge.dependency:
                overlay.setdefault(edge.dependent, set()).add((edge.dependency, edge.relation))
        if not overlay:
            return self._declared_up
        merged: dict[ComponentId, tuple[tuple[ComponentId, str], ...]] = {}

        def up(component: ComponentId) -> tuple[tuple[ComponentId, str], ...]:
            extra = overlay.get(component)
            if extra is None:
                return self._declared_up(component)
            found = merged.get(component)
            if found is None:
                found = tuple(sorted(extra.union(self._declared_up(component))))
                merged[component] = found
            return found

        return up

    @staticmethod
    def _ball(sources: Iterable[ComponentId], up: _Up, max_hops: int) -> _Ball:
        """Everything at most ``max_hops`` upward of the sources, breadth first in sorted order, so
        the recorded way back to a source is the same whatever order the sources came in."""
        ball: _Ball = {}
        frontier = sorted(set(sources))
        for source in frontier:
            ball[source] = (0, None, "")
        for hops in range(1, max_hops + 1):
            following: list[ComponentId] = []
            for component in frontier:
                for dependency, relation in up(component):
                    if dependency not in ball:
                        ball[dependency] = (hops, component, relation)
                        following.append(dependency)
            if not following:
                break
            frontier = following
        return ball

    @staticmethod
    def _way_back(ball: _Ball, component: ComponentId) -> tuple[list[ComponentId], list[str]]:
        """From ``component`` back down to the source it was reached from, with the relations."""
        path, relations = [component], []
        _hops, previous, relation = ball[component]
        while previous is not None:
            path.append(previous)
            relations.append(relation)
            _hops, previous, relation = ball[previous]
        return path, relations

    def related(
        self,
        a: Collection[ComponentId],
        b: Collection[ComponentId],
        *,
        extra_edges: Iterable[Edge] = (),
    ) -> Relation | None:
        """Whether two component sets are related, and the shortest reason: a component both name,
        a dependency path from one to the other, or (with ``link.common_upstream``) a component both
        depend on, within ``link.max_hops`` edges in total and in one scope. Symmetric: the
        relation of (b, a) is the same path reversed. Ties go to the fewest hops, then to the more
        direct kind (shared, then one way, then common upstream), then to the lowest meeting id."""
        if not a or not b or not {c.scope for c in a} & {c.scope for c in b}:
            return None
        up = self._up(extra_edges)
        max_hops = self.link.max_hops
        ball_a = self._ball(a, up, max_hops)
        ball_b = self._ball(b, up, max_hops)
        best: tuple[int, int, ComponentId, RelationKind] | None = None
        for meeting, (hops_a, _p, _r) in ball_a.items():
            found = ball_b.get(meeting)
            if found is None:
                continue
            hops_b = found[0]
            if hops_a + hops_b > max_hops:
                continue
            if hops_a == 0 and hops_b == 0:
                kind = RelationKind.SHARED
            elif hops_b == 0:
                kind = RelationKind.UPSTREAM
            elif hops_a == 0:
                kind = RelationKind.DOWNSTREAM
            elif self.link.common_upstream:
                kind = RelationKind.COMMON_UPSTREAM
            else:
                continue
            candidate = (hops_a + hops_b, _KIND_RANK[kind], meeting, kind)
            if best is None or candidate[:3] < best[:3]:
                best = candidate
        if best is None:
            return None
        meeting, kind = best[2], best[3]
        up_path, up_relations = self._way_back(ball_a, meeting)
        down_path, down_relations = self._way_back(ball_b, meeting)
        return Relation(
            kind=kind,
            path=(*reversed(up_path), *down_path[1:]),
            relations=(*reversed(up_relations), *down_relations),
            via=meeting,
        )

    # ------------------------------------------------------------------------------ root cause

    def root_cause(
        self, firing: Mapping[ComponentId, int], *, extra_edges: Collection[Edge] = ()
    ) -> RootCause:
        """The most upstream firing component: one with nothing firing upstream of it, through
        any number of edges (``firing`` maps each firing component to its first firing, epoch
        ms; see ``failing_components``). A dependency cycle, or a whole with its parts (mutual
        relations), is one tier: its members are not upstream of each other for this purpose.
        Among several candidates: the tier that fired first; inside it, the member with the most
        direct firing dependents (a service over its pods), then the earliest, then the lowest
        id. A pure function of ``firing`` (not of its order), so a late upstream alert re-roots
        the incident as soon as it is in the set."""
        if not firing:
            raise ValueError("a root cause needs at least one firing component")
        up = self._up(extra_edges)
        scc_of, sccs = _components_upward(sorted(firing), up)
        # Firing components upstream of each cycle-free tier, itself included; tiers come
        # upstream first, so every dependency's set is ready.
        closure: list[frozenset[ComponentId]] = []
        strictly_above: list[frozenset[ComponentId]] = []
        for index, members in enumerate(sccs):
            parts: list[frozenset[ComponentId]] = []
            for member in members:
                for dependency, _relation in up(member):
                    other = scc_of[dependency]
                    if other != index:
                        parts.append(closure[other])
            strictly = _union(parts)
            firing_members = {m for m in members if m in firing}
            strictly_above.append(strictly)
            closure.append(strictly | firing_members if firing_members else strictly)
        candidates = [c for c in firing if not strictly_above[scc_of[c]]]
        # A tier fired when its first member did. Inside it, the member with the most direct
        # firing dependents names it: a service over its pods, a database over its replicas.
        tier_first: dict[int, int] = {}
        for c in candidates:
            tier_first[scc_of[c]] = min(firing[c], tier_first.get(scc_of[c], firing[c]))
        mirrored = {(e.dependent, e.dependency) for e in extra_edges if e.mirrored}
        dependents = dict.fromkeys(candidates, 0)
        for component in firing:
            for dependency in {d for d, _relation in up(component)}:
                if dependency in dependents and (component, dependency) not in mirrored:
                    dependents[dependency] += 1

        def rank(c: ComponentId) -> tuple[int, int, int, ComponentId]:
            return (tier_first[scc_of[c]], -dependents[c], firing[c], c)

        ranked = sorted(candidates, key=rank)
        root = ranked[0]
        decided_by = Tiebreak.ONLY
        if len(ranked) > 1:
            first, second = rank(ranked[0]), rank(ranked[1])
            decided_by = (
                Tiebreak.FIRST_FIRING
                if first[0] != second[0] or (first[1] == second[1] and first[2] != second[2])
                else Tiebreak.DEPENDENTS
                if first[1] != second[1]
                else Tiebreak.ID
            )
        explained = sorted(
            (c for c in firing if c != root and root in closure[scc_of[c]]), key=lambda c: (firing[c], c)
        )
        paths = tuple(_path_up(c, root, up) for c in explained[:REASON_PATHS])
        tier = tuple(sorted(m for m in sccs[scc_of[root]] if m in firing))
        return RootCause(
            component=root,
            first_firing_ms=firing[root],
            decided_by=decided_by,
            explains=len(explained),
            candidates=tuple(ranked),
            tier=tier,
            paths=paths,
        )


def _reachable(start: ComponentId, above: Mapping[ComponentId, set[ComponentId]]) -> set[ComponentId]:
    seen: set[ComponentId] = set()
    todo = [start]
    while todo:
        for nxt in above.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def _union(parts: list[frozenset[ComponentId]]) -> frozenset[ComponentId]:
    """Shares the one set when there is one (long chains of non-firing components stay cheap)."""
    distinct = {id(p): p for p in parts if p}
    if not distinct:
        return frozenset()
    if len(distinct) == 1:
        return next(iter(distinct.values()))
    return frozenset().union(*distinct.values())


def _components_upward(
    sources: list[ComponentId], up: _Up
) -> tuple[dict[ComponentId, int], list[list[ComponentId]]]:
    """The strongly connected components of everything upward of ``sources`` (Tarjan, iterative),
    each one tier; listed so that a tier comes after every tier upstream of it."""
    index: dict[ComponentId, int] = {}
    low: dict[ComponentId, int] = {}
    stack: list[ComponentId] = []
    on_stack: set[ComponentId] = set()
    scc_of: dict[ComponentId, int] = {}
    sccs: list[list[ComponentId]] = []
    counter = 0
    for source in sources:
        if source in index:
            continue
        work: list[tuple[ComponentId, Iterator[tuple[ComponentId, str]]]] = []
        index[source] = low[source] = counter
        counter += 1
        stack.append(source)
        on_stack.add(source)
        work.append((source, iter(up(source))))
        while work:
            node, children = work[-1]
            advanced = False
            for child, _relation in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(up(child))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members: list[ComponentId] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    scc_of[member] = len(sccs)
                    members.append(member)
                    if member == node:
                        break
                sccs.append(members)
    return scc_of, sccs


def _path_up(start: ComponentId, goal: ComponentId, up: _Up) -> tuple[ComponentId, ...]:
    """The shortest dependency path from ``goal`` down to ``start`` (searched upward from
    ``start``: a component has few dependencies, a root may have thousands of dependents)."""
    came_from: dict[ComponentId, ComponentId | None] = {start: None}
    frontier = [start]
    while frontier and goal not in came_from:
        following = []
        for component in frontier:
            for dependency, _relation in up(component):
                if dependency not in came_from:
                    came_from[dependency] = component
                    following.append(dependency)
        frontier = following
    path = [goal]
    step = came_from[goal]
    while step is not None:
        path.append(step)
        step = came_from[step]
    return tuple(path)
