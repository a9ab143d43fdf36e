"""The topology record: one component of the service graph, as a catalog publishes it.

A service catalog, CMDB or Kubernetes exporter publishes components to the compacted topic
``stormwatch.topology``: the record key names the component (``component_key``), the value is a
``TopologyComponent`` as JSON, and a tombstone (no value) deletes it. Compaction keeps the last
record per key, so one component must have the same key bytes whoever writes it: hence one
canonical text form, checked on read. The topology file's ``components:`` entries are the same
model, so a file and a catalog describe a component in one way (docs/correlation-rules.md,
"Topology").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import Field, ValidationError, ValidationInfo, field_validator

from stormwatch.schemas.common import SCHEMA_VERSION, Contract
from stormwatch.schemas.yamlerrors import ErrorCollector

__all__ = [
    "KIND",
    "ComponentRef",
    "ScopeItems",
    "TopologyComponent",
    "TopologyUpdate",
    "component_key",
    "decode_topology_record",
    "parse_component_key",
    "parse_ref",
]

KIND = re.compile(r"[a-z][a-z0-9_-]*")
"""A component kind (``service``, ``database``, ``node``): lower case, so ``Service`` is no second kind."""

_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_KIND_HELP = "kinds are lower-case letters, digits, '_' and '-', starting with a letter"

ScopeItems = tuple[tuple[str, str], ...]
"""A scope as ``((label, value), ...)`` sorted by label: hashable, one spelling per scope."""


class ComponentRef(NamedTuple):
    """A component named without its scope: ``kind/name`` in files and records."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


def check_kind(kind: str) -> str:
    """``kind`` if it is a valid kind, else ValueError saying what is allowed."""
    if not KIND.fullmatch(kind):
        raise ValueError(f"{kind!r} is not a component kind ({_KIND_HELP})")
    return kind


def parse_ref(text: str) -> ComponentRef:
    """``database/orders-db`` -> ``ComponentRef("database", "orders-db")``; the name is everything
    after the first '/', so names may contain '/' themselves."""
    kind, slash, name = text.partition("/")
    if not slash or not name:
        raise ValueError(f"{text!r} is not a component reference; write kind/name, e.g. database/orders-db")
    check_kind(kind)
    return ComponentRef(kind, name)


class TopologyComponent(Contract):
    """A declared component and the components it depends on (its upstream, in its own scope).

    ``scope`` gives a value for every scope label of the topology (e.g. ``{cluster: prod-eu-1}``),
    or is omitted: then the component is declared in every scope, the way one service runs in
    every cluster. ``depends_on`` lists ``kind/name`` references resolved in the same scope:
    nothing depends across scopes.
    """

    kind: str = Field(json_schema_extra={"pattern": "^[a-z][a-z0-9_-]*$"})
    name: str = Field(min_length=1)
    scope: dict[str, str] | None = None
    depends_on: list[str] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _check_kind(cls, value: str) -> str:
        return check_kind(value)

    @field_validator("scope")
    @classmethod
    def _check_scope(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            errors = ErrorCollector()
            for label in value:
                if not _LABEL_NAME.fullmatch(label):
                    errors.add((label,), f"{label!r} is not a label name", label)
            errors.raise_if_any("scope")
        return value

    @field_validator("depends_on")
    @classmethod
    def _check_refs(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Every bad reference at its index, in one pass; a component upstream of itself would
        be its own root cause."""
        kind, name = info.data.get("kind"), info.data.get("name")
        itself = ComponentRef(kind, name) if kind is not None and name is not None else None
        errors = ErrorCollector()
        seen: set[ComponentRef] = set()
        for i, text in enumerate(value):
            try:
                ref = parse_ref(text)
            except ValueError as exc:
                errors.add((i,), str(exc), text)
                continue
            if ref == itself:
                errors.add((i,), f"{ref} cannot depend on itself", text)
            elif ref in seen:
                errors.add((i,), f"{text} is listed twice", text)
            seen.add(ref)
        errors.raise_if_any("depends_on")
        return value

    @property
    def ref(self) -> ComponentRef:
        return ComponentRef(self.kind, self.name)

    @property
    def dependencies(self) -> tuple[ComponentRef, ...]:
        return tuple(parse_ref(text) for text in self.depends_on)

    @property
    def scope_items(self) -> ScopeItems | None:
        return None if self.scope is None else tuple(sorted(self.scope.items()))

    @property
    def key(self) -> str:
        """The record key this component is published under."""
        return component_key(self.kind, self.name, self.scope)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def component_key(kind: str, name: str, scope: Mapping[str, str] | ScopeItems | None = None) -> str:
    """The canonical key text: ``kind/name`` in every scope, ``{cluster="prod-eu-1"}kind/name`` in
    one (labels sorted, values escaped as Prometheus does: ``\\\\``, ``\\"``, ``\\n``)."""
    if scope is None:
        return f"{kind}/{name}"
    items = sorted(scope.items() if isinstance(scope, Mapping) else scope)
    labels = ",".join(f'{label}="{_escape(value)}"' for label, value in items)
    return f"{{{labels}}}{kind}/{name}"


_KEY_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def parse_component_key(text: str) -> tuple[ComponentRef, ScopeItems | None]:
    """``component_key``'s inverse; ValueError unless ``text`` is exactly the canonical form, so
    two spellings of one component can never survive compaction side by side."""
    scope: ScopeItems | None = None
    rest = text
    if text.startswith("{"):
        items: list[tuple[str, str]] = []
        pos = 1
        while not text.startswith("}", pos):
            if items:
                if not text.startswith(",", pos):
                    raise ValueError(f"{text!r}: expected ',' or '}}' after a scope label")
                pos += 1
            m = _KEY_LABEL.match(text, pos)
            if m is None:
                raise ValueError(f'{text!r}: expected label="value" in the scope')
            pos = m.end()
            value: list[str] = []
            while pos < len(text) and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < len(text):
                    value.append({"n": "\n"}.get(text[pos + 1], text[pos + 1]))
                    pos += 2
                else:
                    value.append(text[pos])
                    pos += 1
            if pos >= len(text):
                raise ValueError(f"{text!r}: a scope value has no closing double quote")
            items.append((m.group(1), "".join(value)))
            pos += 1
            if pos >= len(text):
                raise ValueError(f"{text!r}: the scope has no closing '}}'")
        scope = tuple(items)
        rest = text[pos + 1 :]
    ref = parse_ref(rest)
    if component_key(ref.kind, ref.name, scope) != text:
        raise ValueError(
            f"{text!r} is not in canonical form; write {component_key(ref.kind, ref.name, scope)!r}"
        )
    return ref, scope


@dataclass(frozen=True, slots=True)
class TopologyUpdate:
    """One record of the topology topic: the component it names and its new declaration, or
    ``component=None`` for a tombstone (the component is no longer declared)."""

    ref: ComponentRef
    scope: ScopeItems | None
    component: TopologyComponent | None

    @classmethod
    def put(cls, component: TopologyComponent) -> TopologyUpdate:
        return cls(component.ref, component.scope_items, component)

    @classmethod
    def delete(cls, kind: str, name: str, scope: Mapping[str, str] | None = None) -> TopologyUpdate:
        return cls(ComponentRef(kind, name), None if scope is None else tuple(sorted(scope.items())), None)

    @property
    def key(self) -> str:
        return component_key(self.ref.kind, self.ref.name, self.scope)


def decode_topology_record(key: bytes | None, value: bytes | None) -> TopologyUpdate:
    """A topic record as an update; ValueError with the reason for one that cannot be used (the
    stage dead-letters it), including a value whose component is not the one its key names."""
    if key is None:
        raise ValueError("a topology record needs a key naming its component (kind/name)")
    try:
        key_text = key.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the key is not UTF-8: {exc}") from None
    ref, scope = parse_component_key(key_text)
    if value is None:
        return TopologyUpdate(ref, scope, None)
    try:
        component = TopologyComponent.from_bytes(value)
    except ValidationError as exc:
        raise ValueError(f"invalid component {key_text}: {_first_error(exc)}") from None
    if component.schema_version > SCHEMA_VERSION:
        raise ValueError(
            f"schema_version {component.schema_version} is newer than this stormwatch reads ({SCHEMA_VERSION})"
        )
    if component.key != key_text:
        raise ValueError(f"the key {key_text!r} names another component than its value ({component.key!r})")
    return TopologyUpdate(ref, scope, component)


def _first_error(exc: ValidationError) -> str:
    error: Any = exc.errors()[0]
    where = ".".join(str(s) for s in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message
