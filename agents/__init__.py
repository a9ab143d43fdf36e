"""Downstream agents: the mitigation agent, its workflow engine and the executors.

``stormwatch.agents.core`` (workflows, templating, guards, the planner) decides what to do and
holds no I/O; ``agent`` and ``executor`` wire it to Kafka with the same transactional loop as the
pipeline stages, and ``executors`` are the actions themselves. docs/workflows.md describes the
workflow file and the guarantees.
"""

__all__ = ["agent", "core", "executor", "executors", "metrics"]
