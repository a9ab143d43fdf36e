"""Where things are in the repository: tests and workers run from its root."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = ROOT / "deploy" / "kafka" / "local-kafka.sh"
UNIT_FIXTURES = ROOT / "tests" / "unit" / "fixtures"
