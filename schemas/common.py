"""Shared building blocks of every wire contract.

All contracts travel as orjson-encoded JSON with a ``schema_version`` so consumers can refuse
(dead-letter) records written by an incompatible future release instead of misreading them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum, StrEnum
from typing import Any, ClassVar, Self

import orjson
from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1


class Contract(BaseModel):
    """Base of every wire contract: strict about unknown fields, cheap to (de)serialize."""

    # cache_strings off: by default pydantic-core keeps the strings it parses (values too, up to
    # 16,384 of them) in one cache for the life of the process. A catch-up after a fault parses
    # thousands of records at once, and the strings it left in that cache each kept a memory arena
    # around them (issue #17). Parsing an incident event costs about 6% more without it.
    model_config = ConfigDict(extra="forbid", frozen=False, populate_by_name=True, cache_strings=False)

    schema_version: int = SCHEMA_VERSION

    plain_json: ClassVar[bool] = False
    """Set by a contract whose fields (and nested contracts') are plain JSON values, strings,
    numbers, enums and UTC datetimes, with no alias or serializer of their own: ``to_bytes`` then
    hands its attributes to orjson as they are, which writes the same bytes as pydantic-core in
    about a third of the time (an event of 100 new alerts: 225 → 62 µs; the first wave of a
    high-cardinality storm reports every alert once).
    tests/unit/test_contract_json.py holds it to that; any value orjson does not take falls back
    to pydantic-core."""

    def to_bytes(self) -> bytes:
        if self.plain_json:
            try:
                written = orjson.dumps(self.__dict__, default=_attributes, option=orjson.OPT_UTC_Z)
            except TypeError:
                pass
            else:
                # orjson's result keeps its whole output buffer (an event of 100 alerts: 60 KB in
                # 520 KB), and a transaction's events wait for the producer together: a copy of
                # exactly its size costs a few percent of what orjson saved.
                return written.decode().encode()
        # pydantic-core's own JSON writer: the same bytes as orjson over model_dump(mode="json"),
        # without building the intermediate dicts first (2.8x faster on an event listing
        # thousands of alert changes, high-cardinality's first wave; issue #16).
        return self.model_dump_json().encode()

    @classmethod
    def unchecked(cls, **values: Any) -> Self:
        """An instance of values the caller built from already validated state, of the fields'
        exact types, without validating them again: the correlator makes one ``AlertChange`` per
        alert an event reports, and validating its labels again (about 1 µs per label) was a tenth
        of the correlator stage's CPU per new alert at high cardinality (issue #16). Every field without a default must be given; an unknown
        name raises TypeError, as the constructor would."""
        template = _TEMPLATES.get(cls)
        if template is None:
            template = _TEMPLATES[cls] = _template(cls)
        fields = {**template, **values}
        if len(fields) != len(template) or _REQUIRED in fields.values():
            missing = sorted(k for k, v in fields.items() if v is _REQUIRED)
            unknown = sorted(set(values) - set(template))
            raise TypeError(f"{cls.__name__}.unchecked: missing {missing}, unknown {unknown}")
        instance = cls.__new__(cls)
        _set(instance, "__dict__", fields)
        _set(instance, "__pydantic_fields_set__", set(values))
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance

    @classmethod
    def from_bytes(cls, data: bytes | str) -> Self:
        return cls.model_validate_json(data)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_REQUIRED = object()
_SHAREABLE = (str, int, float, bool, type(None), Enum, tuple, frozenset)
_TEMPLATES: dict[type[Contract], dict[str, Any]] = {}
_set = object.__setattr__


def _template(cls: type[Contract]) -> dict[str, Any]:
    """Every field in declaration order (the order validation fills ``__dict__`` in), with its
    default, or ``_REQUIRED``. Only an immutable default can be shared between instances: a field
    whose default is made by a factory or is mutable is required of ``unchecked``'s callers."""
    return {
        name: _REQUIRED if field.is_required() or not isinstance(field.default, _SHAREABLE) else field.default
        for name, field in cls.model_fields.items()
    }


def _attributes(value: Any) -> Any:
    """orjson's ``default`` for ``Contract.to_bytes``: a nested contract is its attributes."""
    if isinstance(value, Contract) and value.plain_json:
        return value.__dict__
    raise TypeError


class Severity(StrEnum):
    """Normalized severity, ordered from most to least urgent."""

    CRITICAL = "critical"
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]

    @classmethod
    def most_severe(cls, values: list[Severity]) -> Severity:
        return min(values, key=lambda s: s.rank) if values else cls.WARNING


_SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.ERROR: 1, Severity.WARNING: 2, Severity.INFO: 3}


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def ms_from_dt(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def rfc3339(dt: datetime | None) -> str | None:
    """``2025-01-31T12:00:05.250Z``: UTC, millisecond precision, a fixed width that sorts as text.

    Naive datetimes are taken to be UTC, as everywhere in stormwatch. Here, in the contracts,
    because the pure core (streams.core.projection) writes it into the CLI's stable JSON.
    """
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
