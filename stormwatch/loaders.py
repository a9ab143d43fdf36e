"""Reads the rules, topology and workflow files from disk for the stages and the CLI.

The pure core parses configuration from text; reading a file is I/O, so it lives here (layer 3).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stormwatch.agents.core.workflow import WORKFLOW_FILE, ActionChecker, WorkflowConfig, parse_workflows
from stormwatch.schemas.yamlerrors import ConfigFormat
from stormwatch.streams.core.rules import RULES_FILE, RulesConfig, parse_rules
from stormwatch.streams.core.topology import TOPOLOGY_FILE, TopologyConfig, parse_topology

__all__ = ["load_rules", "load_topology", "load_workflows", "read_config_text"]


def read_config_text(fmt: ConfigFormat[Any], path: Path) -> str:
    """The file's text, or ``fmt``'s error naming the kind of file and why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fmt.unreadable(str(path), exc) from None


def load_rules(path: str | Path | None) -> RulesConfig:
    """Load the rules file; ``None`` gives the built-in default configuration."""
    if path is None:
        return RulesConfig()
    p = Path(path)
    return parse_rules(read_config_text(RULES_FILE, p), source=str(p))


def load_topology(path: str | Path) -> TopologyConfig:
    """Load and validate the topology file (docs/correlation-rules.md, "Topology"). There is no
    built-in topology: without a file the caller links nothing, so no path is a caller's decision."""
    p = Path(path)
    return parse_topology(read_config_text(TOPOLOGY_FILE, p), source=str(p))


def load_workflows(path: str | Path, *, executors: Mapping[str, ActionChecker]) -> WorkflowConfig:
    """Load and validate the workflow file (docs/workflows.md).

    ``executors`` come from the caller (``stormwatch.agents.executors.available_executors()``):
    this layer may not import the executors, which do process, HTTP and Kafka I/O.
    """
    p = Path(path)
    return parse_workflows(read_config_text(WORKFLOW_FILE, p), source=str(p), executors=executors)
