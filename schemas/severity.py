"""Map the severity words of every monitoring tool onto stormwatch's four levels.

The table is documented in docs/contracts.md ("Severity"); tests check it entry by entry.
Anything unknown or missing is ``warning``: loud enough to be seen, not loud enough to page.
"""

from __future__ import annotations

from stormwatch.schemas.common import Severity

__all__ = ["SEVERITY_ALIASES", "normalize_severity"]

SEVERITY_ALIASES: dict[Severity, tuple[str, ...]] = {
    Severity.CRITICAL: ("critical", "crit", "page", "fatal", "emergency", "alert", "p1", "sev1"),
    Severity.ERROR: ("error", "err", "high", "major", "p2", "sev2"),
    Severity.WARNING: ("warning", "warn", "medium", "minor", "p3", "sev3"),
    Severity.INFO: (
        "info",
        "informational",
        "low",
        "none",
        "notice",
        "debug",
        "ok",
        "p4",
        "p5",
        "sev4",
        "sev5",
    ),
}

_TABLE: dict[str, Severity] = {word: level for level, words in SEVERITY_ALIASES.items() for word in words}


def normalize_severity(value: str | None) -> Severity:
    """Case-insensitive lookup (surrounding whitespace ignored); unknown or missing -> WARNING."""
    if value is None:
        return Severity.WARNING
    found = _TABLE.get(value)  # fast path: already lower case, as most sources send it
    if found is None:
        found = _TABLE.get(value.strip().lower(), Severity.WARNING)
    return found
