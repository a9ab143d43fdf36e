"""Unique topic names for a test, derived from the settings model.

Every name comes from ``TopicSettings.name_fields()``: a topic added to the settings is named
here too (a hand-kept list once lost ``approvals``, so every run shared the default one).
"""

from __future__ import annotations

import uuid
from typing import Any

from stormwatch.config import Settings, TopicSettings, load_settings


def topic_names(suffix: str, *, prefix: str = "t", **overrides: Any) -> dict[str, Any]:
    """``{field: "{prefix}.{field}.{suffix}"}`` for every topic; ``overrides`` replace names or add
    other TopicSettings fields (partitions ...)."""
    return TopicSettings.with_prefix(prefix, f".{suffix}", **overrides)


def suffixed_defaults(suffix: str) -> dict[str, str]:
    """Every default topic name with ``.suffix`` appended (the names keep their meaning)."""
    return {field: f"{name}.{suffix}" for field, name in TopicSettings().names().items()}


def make_settings(bootstrap: str, suffix: str | None = None, **topics: Any) -> Settings:
    """Settings for ``bootstrap`` whose topic names carry a unique suffix; ``topics`` overrides
    TopicSettings fields (partitions, replication_factor ...)."""
    names = suffixed_defaults(suffix or uuid.uuid4().hex[:10])
    return load_settings(kafka={"bootstrap_servers": bootstrap}, topics={**names, **topics})


def all_topics(settings: Settings) -> list[str]:
    """Every topic name of ``settings`` (to delete them after a test)."""
    return list(settings.topics.names().values())
