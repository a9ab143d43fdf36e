"""Reads the rules and workflow files from disk for the stages and the CLI.

The pure core parses configuration from text; reading a file is I/O, so it lives here (layer 3).
"""

from __future__ import annotations

from pathlib import Path

from stormwatch.agents.core.workflow import WORKFLOW_FILE, WorkflowConfig, parse_workflows
from stormwatch.streams.core.rules import RULES_FILE, RulesConfig, parse_rules

__all__ = ["load_rules", "load_workflows"]


def load_rules(path: str | Path | None) -> RulesConfig:
    """Load the rules file; ``None`` gives the built-in default configuration."""
    if path is None:
        return RulesConfig()
    p = Path(path)
    return parse_rules(RULES_FILE.read_text(p), source=str(p))


def load_workflows(path: str | Path) -> WorkflowConfig:
    """Load and validate the workflow file (docs/workflows.md)."""
    p = Path(path)
    return parse_workflows(WORKFLOW_FILE.read_text(p), source=str(p))
