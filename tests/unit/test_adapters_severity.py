"""The severity table of docs/contracts.md, entry by entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormwatch.schemas.common import Severity
from stormwatch.schemas.severity import SEVERITY_ALIASES, normalize_severity

TABLE = {
    Severity.CRITICAL: ["critical", "crit", "page", "fatal", "emergency", "alert", "p1", "sev1"],
    Severity.ERROR: ["error", "err", "high", "major", "p2", "sev2"],
    Severity.WARNING: ["warning", "warn", "medium", "minor", "p3", "sev3"],
    Severity.INFO: [
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
    ],
}
CASES = [(word, level) for level, words in TABLE.items() for word in words]


def test_table_is_exactly_the_documented_one() -> None:
    assert {level: list(words) for level, words in SEVERITY_ALIASES.items()} == TABLE


@pytest.mark.parametrize(("word", "level"), CASES)
def test_each_word(word: str, level: Severity) -> None:
    assert normalize_severity(word) is level
    assert normalize_severity(word.upper()) is level
    assert normalize_severity(word.title()) is level
    assert normalize_severity(f"  {word}\n") is level


@pytest.mark.parametrize("word", [None, "", "unknown", "severe", "p0", "sev0", "criticall", "5"])
def test_unknown_or_missing_is_warning(word: str | None) -> None:
    assert normalize_severity(word) is Severity.WARNING


def test_every_word_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "contracts.md").read_text(encoding="utf-8")
    for word, _ in CASES:
        assert f"`{word}`" in doc, f"severity word {word!r} missing from docs/contracts.md"
